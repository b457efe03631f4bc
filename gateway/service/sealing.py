"""The seal stage: routed children become one sealed notice per signal and school.

Takes the context (store, vault, directory snapshot, gpg); produces queued notices, each the
parcel of the channel that reaches the school (`gateway.delivery.channel`), with a `sealed`
receipt. It runs under the runner discipline of `gateway.pipeline.stage`: the children of one
signal for one school are one item, claimed with a lease naming this node (a row of the
store's seal attempts); the stage function (`seal_one`) decides only that item's fate:
- sealed (`Done`): the notice is queued and its children are `sealed`, in one transaction;
- held (`Held`): the school is not reachable (no contact reachable on its channel,
  resolve.HELD_NO_USABLE_KEY) or its channel is not ready (no signing key): the children are
  `held` with that reason and a `held` receipt each; `release_reachable` lets them go on once
  the school is reachable;
- a seal failure (the channel's `SealError`: gpg refused a key): logged `notice.seal_failed`,
  counted durably per (signal, school), retried after the policy's backoff, and at the
  MAX_CRASHES-th failure parked: its children held with policy.HELD_SEAL_PARKED, a `held`
  receipt each and one `parked` receipt, the `seal.parked` event and an alert.
An exception while sealing is a crash of the stage (`seal.attempt_crashed`), counted the same
way. Fails: only a store error while claiming propagates (the loop logs it, tries next round).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from gateway.core.faults import crash_point
from gateway.core.policy import (
    HELD_SEAL_PARKED,
    Counters,
    Done,
    Fate,
    Held,
    Outcome,
    Parked,
    Retry,
    RetryRules,
    Verdict,
    lease_is_dead,
)
from gateway.core.records import ChildRecord, iso
from gateway.core.resolve import HELD_NO_USABLE_KEY, HELD_NOT_IN_DIRECTORY
from gateway.delivery.channel import (
    CHANNELS,
    Parcel,
    SealError,
    hold_reason,
    reachable_by_channel,
    reachable_contacts,
)
from gateway.delivery.seal import NoticeChild
from gateway.notify.alerts import send_alert
from gateway.observe import metrics
from gateway.observe.logs import get_logger, safe_exception
from gateway.pipeline.context import Context
from gateway.pipeline.directory import Snapshot
from gateway.pipeline.stage import Stage
from gateway.store.api import Conflict, Tx

log = get_logger("runner")

SEALING_AT_ONCE = 4  # notices sealed concurrently (gpg's own limit still bounds the processes)
# Holds that only wait for the school to become reachable: the routing itself was decided.
RELEASABLE = (HELD_NO_USABLE_KEY, HELD_NOT_IN_DIRECTORY)
# The events `Stage` logs for this stage under its kind "seal" (their README rows).
STAGE_EVENTS = ("seal.attempt_crashed", "seal.parked", "seal.lease_recovered")


@dataclass
class SealItem:
    """The routed children of one signal for one school, as claimed; `parcel` and `notice`
    are filled in by the stage function and by recording (what the log events name)."""

    ref: str
    school: str
    children: tuple[ChildRecord, ...]
    failures: int
    since: dt.datetime
    parcel: Parcel | None = field(default=None, repr=False)
    notice: int | None = None

    @property
    def counters(self) -> Counters:
        return Counters(1, self.failures, self.since)

    def log_fields(self) -> dict[str, object]:
        return {"ref": self.ref, "school": self.school}

    @property
    def numbers(self) -> list[int]:
        return [child.n for child in self.children]


def rules_of(ctx: Context) -> RetryRules:
    delivery = ctx.config.delivery
    return RetryRules(delivery.give_up_after_hours, delivery.retry_min_seconds,
                      delivery.retry_max_seconds)


async def release_reachable(ctx: Context) -> int:
    """Children held only because their school could not be reached go on once it can."""
    snapshot = await ctx.refresh()
    released = 0
    for row in await ctx.store.children.all(state="held"):
        school = row.school
        now = ctx.clock()
        if row.reason not in RELEASABLE or not school or \
                not reachable_contacts(school, snapshot, now):
            continue

        async def release(tx: Tx, row: ChildRecord = row, school: str = school,
                          now: dt.datetime = now) -> bool:
            if not await tx.children.set_state(row.ref, row.n, "routed", now, expect=("held",)):
                return False
            await tx.receipts.append("released", at=now, ref=f"{row.ref}-{row.n}",
                                     school=school, reason=row.reason)
            return True

        if await ctx.store.write(release):
            released += 1
            log.info("child.released", ref=row.ref, school=school)
    return released


class SealQueue:
    """The seal stage's queue (`gateway.pipeline.stage.Queue`) over the store."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def claim_due(self, now: dt.datetime, node: str,
                        lease_until: dt.datetime) -> list[SealItem]:
        groups: dict[tuple[str, str], list[ChildRecord]] = defaultdict(list)
        for row in await self.ctx.store.children.all(state="routed"):
            groups[(row.ref, row.school or "")].append(row)
        # A group whose children have no sealed data left has nothing to seal (as before).
        wanted = {key: rows for key, rows in groups.items()
                  if any(row.blob is not None for row in rows)}

        async def claim(tx: Tx) -> list[SealItem]:
            items = []
            for (ref, school), rows in wanted.items():
                attempt = await tx.children.claim_seal(ref, school, lease_until, now)
                if attempt is not None:
                    items.append(SealItem(ref, school, tuple(rows), attempt.failures, now))
            return items

        return await self.ctx.store.write(claim) if wanted else []

    async def record(self, item: SealItem, fate: Fate, verdict: Verdict,
                     now: dt.datetime) -> bool:
        if isinstance(fate, Held):
            await self.ctx.store.write(lambda tx: _hold(tx, item, fate.reason, now))
            return True
        parcel = item.parcel
        if not isinstance(fate, Done) or parcel is None:
            raise ValueError(f"a seal item cannot end {type(fate).__name__}")

        async def keep(tx: Tx) -> int:
            notice_id = await tx.notices.insert(
                item.ref, item.school, parcel.message_id, parcel.recipients, parcel.keys,
                parcel.body, item.numbers, now, parcel.ack_digest, channel=parcel.channel)
            if parcel.pickup is not None:
                box = parcel.pickup
                await tx.pickups.put(notice_id, box.token_digest, box.sealed, box.expires_at)
            await tx.children.seal_finished(item.ref, item.school)
            await tx.receipts.append("sealed", at=now, ref=item.ref, school=item.school,
                                     notice=notice_id,
                                     children=[f"{item.ref}-{n}" for n in item.numbers],
                                     fingerprints=list(parcel.keys), signer=parcel.signed_by,
                                     channel=parcel.channel)
            return notice_id

        try:
            item.notice = await self.ctx.store.write(keep)
        except Conflict:
            await self.ctx.store.write(lambda tx: tx.children.seal_finished(item.ref,
                                                                           item.school))
            log.info("notice.seal_skipped", ref=item.ref, school=item.school)
            return False
        return True

    async def record_crash(self, item: SealItem, fate: Retry | Parked, why: str,
                           now: dt.datetime) -> bool:
        async def body(tx: Tx) -> bool:
            await tx.children.seal_failed(item.ref, item.school, fate.next_at)
            if isinstance(fate, Parked):
                held = await _hold(tx, item, HELD_SEAL_PARKED, now)
                await tx.receipts.append("parked", at=now, ref=item.ref, school=item.school,
                                         why=why, children=[f"{item.ref}-{n}" for n in held])
            return True

        return await self.ctx.store.write(body)

    async def leased(self, node: str) -> list[SealItem]:
        now = self.ctx.clock()
        items = []
        for lease in await self.ctx.store.children.seal_leases():
            if lease_is_dead(lease.owner, lease.until or iso(now), iso(now), node):
                rows = [row for row in await self.ctx.store.children.all("routed", lease.ref)
                        if row.school == lease.school]
                items.append(SealItem(lease.ref, lease.school, tuple(rows), lease.failures,
                                      now))
        return items


async def _hold(tx: Tx, item: SealItem, reason: str, now: dt.datetime) -> list[int]:
    """Hold the item's children still routed, each with a `held` receipt; forget its seal
    attempts. The numbers held."""
    held = []
    for n in item.numbers:
        if await tx.children.set_state(item.ref, n, "held", now, reason=reason,
                                       expect=("routed",)):
            await tx.receipts.append("held", at=now, ref=f"{item.ref}-{n}", school=item.school,
                                     reason=reason)
            held.append(n)
    await tx.children.seal_finished(item.ref, item.school)
    return held


async def seal_one(ctx: Context, snapshot: Snapshot, item: SealItem) -> Verdict:
    """The stage function: seal one item's notice, or say why its children must wait. A
    sealed parcel is a `DELIVERED` verdict (the item is done: its notice is queued)."""
    crash_point("before-seal")
    now = ctx.clock()
    reason = hold_reason(item.school, snapshot, now)
    if reason is not None:
        return Verdict(Outcome.HELD, reason=reason)
    children = []
    for row in item.children:
        if row.blob is None:
            continue
        record = ctx.vault.open(row.blob, f"{item.ref}-{row.n}")
        children.append(NoticeChild(str(record["name"]),
                                    dt.date.fromisoformat(str(record["birthdate"])),
                                    f"{item.ref}-{row.n}"))
    # One notice per signal and school: for the channel of the school's first reachable
    # contact. A school's contacts share one channel (openpgp or pickup: the admin verbs keep
    # it so), so this is every reachable contact of the school (docs/architecture.md §7).
    name, contacts = next(iter(reachable_by_channel(item.school, snapshot, now).items()))
    try:
        item.parcel = await CHANNELS[name].seal(ctx, item.school, contacts, children, now)
    except SealError as exc:
        log.error("notice.seal_failed", ref=item.ref, school=item.school, **safe_exception(exc))
        return Verdict(Outcome.CRASH, reason=str(exc))
    return Verdict(Outcome.DELIVERED)


async def _recorded(ctx: Context, item: SealItem, fate: Fate, verdict: Verdict) -> None:
    if isinstance(fate, Held):
        log.warning("child.held", ref=item.ref, school=item.school, reason=fate.reason,
                    count=len(item.children))
        metrics.HELD.inc(len(item.children))
        return
    log.info("notice.sealed", ref=item.ref, school=item.school, notice=item.notice,
             children=len(item.children),
             channel=item.parcel.channel if item.parcel else None)
    ctx.sealed.set()
    crash_point("after-seal")


async def _parked(ctx: Context, item: SealItem, failures: int) -> None:
    metrics.HELD.inc(len(item.children))
    await send_alert(ctx, "seal.parked", f"notice {item.ref} for {item.school} not sealed", [
        f"The notice of signal {item.ref} for school {item.school} could not be sealed"
        f" {failures} times; its children are held ({HELD_SEAL_PARKED}).",
        "Look at the logs (notice.seal_failed) and fix the school's keys; then send each"
        f" child on: `hwc-gateway held route {item.ref}-N --school {item.school}`.",
    ])


def seal_stage(ctx: Context, snapshot: Snapshot) -> Stage[SealItem]:
    """The seal stage over `snapshot` (the directory as it was at the start of the round)."""
    return Stage("seal", SealQueue(ctx), lambda item: seal_one(ctx, snapshot, item),
                 rules_of(ctx), ctx.store.node, ctx.clock,
                 lambda item, n: _parked(ctx, item, n), beat=ctx.pulse.beat,
                 on_recorded=lambda item, fate, verdict: _recorded(ctx, item, fate, verdict))


async def seal_routed(ctx: Context) -> tuple[int, int]:
    """Seal every routed child that is due, a few notices at a time (each waits mostly on its
    gpg process); (notices sealed, children held)."""
    stage = seal_stage(ctx, await ctx.refresh())
    items = await stage.claim()
    limit = asyncio.Semaphore(SEALING_AT_ONCE)

    async def one(item: SealItem) -> Fate:
        async with limit:
            return await stage.handle(item)

    fates = await asyncio.gather(*(one(item) for item in items))
    sealed = sum(1 for item, fate in zip(items, fates, strict=True)
                 if isinstance(fate, Done) and item.notice is not None)
    held = sum(len(item.children) for item, fate in zip(items, fates, strict=True)
               if isinstance(fate, Held))
    return sealed, held


async def recover_seal_leases(ctx: Context) -> int:
    """At start-up: seal attempts whose lease died with its process count as crashes."""
    return await seal_stage(ctx, ctx.snapshot).recover()
