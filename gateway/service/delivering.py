"""The deliver stage: one attempt for each due notice, by the channel named on the notice.

Takes the context and the SMTP `Sessions`; produces delivery attempts and their receipts. It
runs under the runner discipline of `gateway.pipeline.stage`: a due notice is claimed with a
lease naming this node (the attempt counted in the same statement), and the stage function
(`deliver_one`) decides only that notice's fate:
- before the attempt, the notice's recipients and keys are checked against the directory as
  it is then (`Channel.still_valid`): a notice sealed to a contact or key no longer pinned and
  reachable (removed, replaced, revoked, expired; a pickup contact removed or without a second
  factor) never goes out; it is superseded, its parcel (and a pickup notice's box) erased, and
  its children go back to be sealed again (or held: `gateway.service.sealing`);
- else its channel delivers the parcel (`Channel.deliver`), and `gateway.core.policy.decide`
  makes the outcome delivered (parcel erased), deferred (retried with backoff) or failed
  (kept, alert), recorded with its receipt in one transaction.
An exception is a crash (`notice.attempt_crashed`), retried after backoff and parked at
MAX_CRASHES (`notice.parked`, a `parked` receipt, an alert); a lease that died with its process
is taken back at start-up (`notice.lease_recovered`). A retried notice goes out with the same
bytes and the same Message-ID (docs/architecture.md invariant 2). Nothing is deleted on error;
one failing notice never stops the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from gateway.core.faults import crash_point
from gateway.core.inert import inert
from gateway.core.policy import (
    Counters,
    Done,
    Failed,
    Fate,
    Outcome,
    Parked,
    Retry,
    Superseded,
    Verdict,
    erase_notice,
    lease_is_dead,
)
from gateway.core.records import NoticeRecord, from_iso, iso
from gateway.core.validate import HostPort
from gateway.delivery import deliver
from gateway.delivery.channel import CHANNELS, Parcel
from gateway.delivery.sessions import Sessions
from gateway.notify.alerts import send_alert
from gateway.observe import metrics
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.pipeline.stage import Stage
from gateway.service.sealing import rules_of
from gateway.store.api import Tx

log = get_logger("runner")

PER_DESTINATION = 4  # sessions at once to one school server or relay
CRASHED = "the delivery stage failed"
# The events `Stage` logs for this stage under its kind "notice" (their README rows).
STAGE_EVENTS = ("notice.attempt_crashed", "notice.parked", "notice.lease_recovered")


@dataclass
class ClaimedNotice:
    """A notice as claimed (attempts include this one), as the stage sees it; `gave_back`:
    how many children its supersession put back to be sealed again."""

    row: NoticeRecord
    gave_back: int = 0

    @property
    def counters(self) -> Counters:
        # Counted from `queue retry` when the administrator queued it again after a failure.
        row = self.row
        return Counters(row.attempts, row.crashes, from_iso(row.requeued_at or row.created_at))

    def log_fields(self) -> dict[str, object]:
        return {"ref": self.row.ref, "school": self.row.school, "notice": self.row.id}

    def parcel(self) -> Parcel:
        row = self.row
        return Parcel(row.channel, row.recipients, row.fingerprints, row.message_id,
                      row.parcel, "")


class NoticeQueue:
    """The deliver stage's queue (`gateway.pipeline.stage.Queue`) over the store."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def claim_due(self, now: dt.datetime, node: str,
                        lease_until: dt.datetime) -> list[ClaimedNotice]:
        due = await self.ctx.store.notices.due(now)

        async def claim(tx: Tx) -> list[ClaimedNotice]:
            claimed = [await tx.notices.claim(notice_id, lease_until, now) for notice_id in due]
            return [ClaimedNotice(row) for row in claimed if row is not None]

        return await self.ctx.store.write(claim) if due else []

    async def record(self, item: ClaimedNotice, fate: Fate, verdict: Verdict,
                     now: dt.datetime) -> bool:
        row = item.row
        if isinstance(fate, Superseded):
            numbers = await self.ctx.store.write(lambda tx: _supersede(tx, row, fate.reason,
                                                                       now))
            item.gave_back = len(numbers or ())
            return numbers is not None

        async def body(tx: Tx) -> bool:
            reply = verdict.reply
            attempt: dict[str, Any] = {"notice": row.id, "attempt": row.attempts,
                                       "reply": reply}
            await tx.notices.note_reason(row.id, verdict.reason)
            if isinstance(fate, Done):
                await tx.notices.finish(row.id, "delivered", reply, now, "delivered",
                                        erase=erase_notice("delivered"))
                attempt["message_id"] = row.message_id
            elif isinstance(fate, Failed):
                await tx.notices.finish(row.id, "failed", reply, now, "failed",
                                        erase=erase_notice("failed"))
            elif isinstance(fate, Retry):
                await tx.notices.defer(row.id, reply, fate.next_at)
                attempt["next_attempt_at"] = fate.next_at.isoformat()
            else:
                raise ValueError(f"a notice cannot end {type(fate).__name__}")
            event = {Done: "delivered", Failed: "failed", Retry: "deferred"}[type(fate)]
            await tx.receipts.append(event, at=now, ref=row.ref, school=row.school, **attempt)
            return True

        return await self.ctx.store.write(body)

    async def record_crash(self, item: ClaimedNotice, fate: Retry | Parked, why: str,
                           now: dt.datetime) -> bool:
        row = item.row

        async def body(tx: Tx) -> bool:
            await tx.notices.record_crash(row.id, fate.next_at)
            if not isinstance(fate, Parked) or not await tx.notices.park(row.id):
                return False
            await tx.receipts.append("parked", at=now, ref=row.ref, school=row.school,
                                     notice=row.id, why=why)
            return True

        parked = await self.ctx.store.write(body)
        return parked or isinstance(fate, Retry)

    async def leased(self, node: str) -> list[ClaimedNotice]:
        now = iso(self.ctx.clock())
        dead = [lease.id for lease in await self.ctx.store.notices.leased()
                if lease_is_dead(lease.owner, lease.until, now, node)]
        rows = [await self.ctx.store.notices.get(notice_id) for notice_id in dead]
        return [ClaimedNotice(row) for row in rows if row is not None]


async def _supersede(tx: Tx, row: NoticeRecord, reason: str,
                     now: dt.datetime) -> list[int] | None:
    """Never send a notice whose keys no longer hold: superseded with a receipt naming why
    and the keys it was sealed to; its children back to be sealed again. Their numbers, or
    None when another attempt finished it meanwhile (nothing changed)."""
    numbers = await tx.notices.supersede(row.id, reason, now)
    if numbers is not None:
        # A pickup notice's box: its link went with the parcel, so nobody can open it any more.
        await tx.pickups.erase(row.id)
        await tx.receipts.append("superseded", at=now, ref=row.ref, school=row.school,
                                 notice=row.id, reason=reason,
                                 fingerprints=list(row.fingerprints),
                                 children=[f"{row.ref}-{n}" for n in numbers])
    return numbers


async def deliver_one(ctx: Context, item: ClaimedNotice,
                      connection: deliver.Connection | None) -> Verdict:
    """The stage function: one attempt for one claimed notice, or its supersession when the
    keys it was sealed to no longer hold. Decides; records nothing."""
    row = item.row
    channel = CHANNELS[row.channel]
    # The directory as it was at the start of this round (`deliver_due`), not as it was at
    # sealing: a revocation taken in while the notice waited on the school's 451 must stop it
    # (issue 11).
    stale = channel.still_valid(row.recipients, row.fingerprints, ctx.snapshot, row.school,
                                ctx.clock())
    if stale:
        pinned = {c.email: c.fingerprint or "" for c in
                  await ctx.store.directory.contacts(row.school)}
        return Verdict(Outcome.SUPERSEDED, reason=channel.stale_reason(stale, pinned))
    outcome = await channel.deliver(ctx, item.parcel(), connection)
    if outcome.result is deliver.Result.DELIVERED:
        crash_point("after-remote-250")
    return Verdict(Outcome(outcome.result.value), outcome.reply, outcome.reason)


async def _recorded(ctx: Context, item: ClaimedNotice, fate: Fate, verdict: Verdict) -> None:
    """The log event of a recorded attempt, and the alerts a person must see."""
    row, reply = item.row, verdict.reply
    if isinstance(fate, Superseded):
        log.warning("notice.superseded", ref=row.ref, school=row.school, notice=row.id,
                    reason=fate.reason, children=item.gave_back)
        ctx.wake.set()  # the sealing loop seals them again now, not at its next poll
        return
    # The reply is from outside: inert, so that it cannot forge a console line.
    ref, school, notice, attempt = row.ref, row.school, row.id, row.attempts
    code, reason, text = reply[:3] if reply[:3].isdigit() else None, verdict.reason, inert(reply)
    if isinstance(fate, Done):
        log.info("notice.delivered", ref=ref, school=school, notice=notice, attempt=attempt,
                 smtp_code=code, reason=reason, reply=text)
        metrics.NOTICES.labels("delivered").inc()
    elif isinstance(fate, Failed):
        log.warning("notice.failed", ref=ref, school=school, notice=notice, attempt=attempt,
                    smtp_code=code, reason=reason, reply=text)
        metrics.NOTICES.labels("failed").inc()
        await _alert_failed(ctx, row, verdict)
    else:
        log.warning("notice.deferred", ref=ref, school=school, notice=notice, attempt=attempt,
                    smtp_code=code, reason=reason, reply=text)
        metrics.NOTICES.labels("deferred").inc()
        if verdict.reason in deliver.FIXES and row.last_reply != reply:
            await _alert_misconfigured(ctx, row, verdict)


async def _alert_failed(ctx: Context, row: NoticeRecord, verdict: Verdict) -> None:
    ref, school = row.ref, row.school
    await send_alert(ctx, "notice.failed", f"notice {ref} for {school} failed", [
        f"The notice of signal {ref} for school {school} could not be delivered.",
        f"The school's server answered: {verdict.reply}",
        *([f"What to fix: {deliver.FIXES[verdict.reason]}."]
          if verdict.reason in deliver.FIXES else []),
        "The notice and its children are kept. Once the cause is fixed (or the school's"
        f" mail works again), queue it again: `hwc-gateway queue retry {row.id}`.",
    ])


async def _alert_misconfigured(ctx: Context, row: NoticeRecord, verdict: Verdict) -> None:
    # Once per notice and reply, not at every retry: the gateway is set up wrong.
    ref, school = row.ref, row.school
    await send_alert(ctx, "notice.misconfigured",
                     f"notice {ref} for {school} waits on the gateway's set-up", [
        f"The notice of signal {ref} for school {school} was not taken: the server"
        f" answered: {verdict.reply}",
        f"What to fix: {deliver.FIXES[verdict.reason]}.",
        "The notice is retried with backoff until then; `hwc-gateway queue retry"
        f" {row.id}` tries it at once.",
    ])


async def _parked(ctx: Context, item: ClaimedNotice, crashes: int) -> None:
    row = item.row
    await send_alert(ctx, "notice.parked", f"notice {row.ref} for {row.school} parked",
                     [f"Notice {row.id} of signal {row.ref} for school {row.school}"
                      f" crashed the gateway {crashes} times and is parked.",
                      "It is kept; look at the logs (notice.attempt_crashed) and tell the"
                      " maintainers."])


def deliver_stage(ctx: Context, connection: deliver.Connection | None) -> Stage[ClaimedNotice]:
    """The deliver stage, its attempts going over `connection` (None: no route)."""
    return Stage("notice", NoticeQueue(ctx), lambda item: deliver_one(ctx, item, connection),
                 rules_of(ctx), ctx.store.node, ctx.clock,
                 lambda item, n: _parked(ctx, item, n), beat=ctx.pulse.beat,
                 on_recorded=lambda item, fate, verdict: _recorded(ctx, item, fate, verdict),
                 why_crashed=CRASHED)


async def deliver_due(ctx: Context, sessions: Sessions) -> int:
    """One attempt for each due notice, concurrently; how many were attempted."""
    claimed = await deliver_stage(ctx, None).claim()
    if claimed:
        # The directory as it is now, once per round of at most 50 notices (a second or so of
        # sending): each attempt checks its keys against it (`deliver_one`). Once per notice
        # cost a database hop each, a third more of the daemon's CPU per delivery (make bench).
        await ctx.refresh()
    # Per destination, a few connections each carry several notices: a school server that
    # comes back after hours gets its backlog without a handshake per notice, and is never
    # hit by more than PER_DESTINATION sessions at once.
    queues: dict[HostPort | None, list[ClaimedNotice]] = defaultdict(list)
    for item in claimed:
        route = ctx.snapshot.routes.get(item.row.school) or ctx.config.delivery.relay
        queues[route].append(item)
    await asyncio.gather(*(_destination_worker(ctx, sessions, destination, pending)
                           for destination, pending in queues.items()
                           for _ in range(min(PER_DESTINATION, len(pending)))))
    return len(claimed)


async def _destination_worker(ctx: Context, sessions: Sessions, destination: HostPort | None,
                              pending: list[ClaimedNotice]) -> None:
    """Take notices for one destination off the shared list and send them over one session."""
    connection = None if destination is None else sessions.take(destination)
    stage = deliver_stage(ctx, connection)
    try:
        while pending:
            await stage.handle(pending.pop(0))
    finally:
        if connection is not None:
            sessions.give_back(connection)


async def recover_notice_leases(ctx: Context) -> int:
    """At start-up: a dead lease (`lease_is_dead`) belongs to an attempt that died with its
    process: counted as a crash. A live lease of another node is that node's."""
    return await deliver_stage(ctx, None).recover()
