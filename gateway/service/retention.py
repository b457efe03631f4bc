"""Retention: what the gateway forgets, and when (docs/protocol.md §16 `[retention]`).

Takes a `Context` and `now`; deletes receipts older than `receipts_days` (the chain then starts at
a recorded anchor, so `receipts verify` still proves the rest), drops children held longer than
`held_days` (their sealed data erased, a receipt and a warning left), erases the box of every
pickup notice whose link expired, read or not (a `pickup_erased` receipt and the event
`pickup.erased` each), and forgets finished signals older than both the receipt period and the
replay window. A dry run does all of it in a transaction that is rolled back, so it reports
exactly what a real run would remove.

Runs on one node only (`SINGLE_NODE`): the purge re-anchors the receipt chain, and two nodes
purging at once would each record a `purged` receipt for the same work.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.pipeline.intake import REPLAY_WINDOW
from gateway.store.api import Tx

log = get_logger("retention")

EXPIRED_REASON = "held longer than [retention] held_days"
SINGLE_NODE = True  # a job for one node only: see the module docstring


class _RollBack(Exception):
    """Raised inside the purge transaction of a dry run."""


@dataclass
class PurgeReport:
    dry_run: bool
    receipts: int = 0
    signals: int = 0
    expired: list[str] = field(default_factory=list)
    # Pickup notices whose box was erased: (notice id, ref, school, whether it was read).
    pickups: list[tuple[int, str, str, bool]] = field(default_factory=list)

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        return [f"{verb} {self.receipts} receipts older than the retention period",
                f"{verb} {self.signals} finished signals",
                f"{verb} {len(self.expired)} children held too long"
                + (f": {', '.join(self.expired)}" if self.expired else ""),
                *([f"{verb} {len(self.pickups)} pickup notices whose link expired: "
                   + ", ".join(str(p[0]) for p in self.pickups)] if self.pickups else [])]


async def purge(ctx: Context, now: dt.datetime, dry_run: bool = False) -> PurgeReport:
    days = ctx.config.retention
    report = PurgeReport(dry_run)
    # Read before the transaction: its body may await only the transaction's own work.
    too_long = await ctx.store.children.held_before(now - dt.timedelta(days=days.held_days))
    links_expired = await ctx.store.pickups.expired(now)

    async def body(tx: Tx) -> None:
        for box in links_expired:
            # Read or not: after its link expired nobody may open it, and the database keeps
            # no notice longer than it must (issue 15).
            read = box.read_at is not None or box.acked_at is not None
            if await tx.pickups.erase(box.notice_id):
                await tx.receipts.append("pickup_erased", at=now, ref=box.ref,
                                         school=box.school, notice=box.notice_id, read=read)
                report.pickups.append((box.notice_id, box.ref, box.school, read))
        for row in too_long:
            child_id = f"{row.ref}-{row.n}"
            if await tx.children.set_state(row.ref, row.n, "dropped", now,
                                           reason=EXPIRED_REASON, erase=True, expect=("held",)):
                await tx.receipts.append("expired", at=now, ref=child_id, school=row.school,
                                         reason=EXPIRED_REASON, held_reason=row.reason)
                report.expired.append(child_id)
        keep = max(dt.timedelta(days=days.receipts_days), REPLAY_WINDOW)
        report.signals = await tx.signals.purge_finished_before(now - keep)
        report.receipts, anchor = await tx.receipts.purge_before(
            now - dt.timedelta(days=days.receipts_days))
        if report.receipts or report.signals or report.expired:
            await tx.receipts.append("purged", at=now, receipts=report.receipts,
                                     signals=report.signals, expired=len(report.expired),
                                     anchor=[anchor.seq, anchor.hash] if anchor else None)
        if dry_run:
            raise _RollBack

    try:
        await ctx.store.write(body)
    except _RollBack:
        return report
    for notice_id, ref, school, read in report.pickups:
        log.info("pickup.erased", ref=ref, school=school, notice=notice_id, read=read)
    for child_id in report.expired:
        # An administrator must know a child was never routed: this is the last word on it.
        log.warning("child.expired", ref=child_id)
    if report.receipts or report.signals or report.expired:
        log.info("retention.purged", receipts=report.receipts, signals=report.signals,
                 expired=len(report.expired))
    return report
