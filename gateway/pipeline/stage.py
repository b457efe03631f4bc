"""One runner discipline for every queue (seal, deliver, outbox): claim, decide, record.

Takes a `Queue` (the store's repository for one kind of item, whatever database is behind it),
a stage function that decides one claimed item's `Verdict` (it sends, seals, or finds the
item stale; it records nothing), the `RetryRules`, this node's id and a clock. `Stage` then:
- claims the due items with a lease that carries the node id (`Queue.claim_due`);
- runs the stage function on each, turns its verdict into a fate by `gateway.core.policy`,
  and has the queue record fate and receipt in one transaction (`Queue.record`);
- turns an exception of the stage function (or of recording) into a crash: logged as
  `<kind>.attempt_crashed`, counted, retried after the crash backoff, parked at the
  `max_crashes`-th crash with a `parked` receipt (`Queue.record_crash`), a `<kind>.parked`
  log event and the `on_parked` callback (the alert); a recorded fate is followed by the
  optional `on_recorded` callback (the stage's own log event and alerts); a verdict of
  `Outcome.CRASH` (a seal failure) takes the same path without the `attempt_crashed` event;
- at start, takes back the leases this node held when it died (`<kind>.lease_recovered`),
  each counted as a crash.
Fails: an exception of `Queue.record_crash`, `Queue.claim_due` or `on_parked` propagates (the
loop around the stage logs it and tries again next round); one failing item never stops the
others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.core.policy import (
    Counters,
    Fate,
    Outcome,
    Parked,
    Retry,
    RetryRules,
    Verdict,
    crash_fate,
    decide,
)
from gateway.observe.logs import get_logger, safe_exception

log = get_logger("stage")

LEASE = dt.timedelta(minutes=10)
CRASHED = "the stage failed"
DIED = "the process ended during an attempt"


class Item(Protocol):
    """A claimed queue item as the stage needs it: its counters (attempts including this
    one) and the fields its log events carry (references and school codes only)."""

    @property
    def counters(self) -> Counters: ...

    def log_fields(self) -> Mapping[str, object]: ...


T = TypeVar("T", bound=Item)


class Queue(Protocol[T]):
    """The durable queue one stage works on. Each method is one transaction; an item whose
    state changed meanwhile (finished by another node, requeued by an administrator) is left
    as it is and the method returns False. Times are UTC; nodes are opaque id strings."""

    async def claim_due(self, now: dt.datetime, node: str,
                        lease_until: dt.datetime) -> list[T]:
        """Lease to `node` until `lease_until` every item due at `now` whose lease is free or
        expired, counting the attempt; the items as claimed."""
        ...

    async def record(self, item: T, fate: Fate, verdict: Verdict, now: dt.datetime) -> bool:
        """Apply `fate` (state, next attempt, erasing the message when `fate.erase`, the
        lease released) with its receipt naming `verdict.reply` or `verdict.reason`."""
        ...

    async def record_crash(self, item: T, fate: Retry | Parked, why: str,
                           now: dt.datetime) -> bool:
        """Count one crash, release the lease, set the next attempt; on `Parked` also park
        the item (a seal item: hold its children with policy.HELD_SEAL_PARKED) and write a
        `parked` receipt naming `why`."""
        ...

    async def leased(self, node: str) -> list[T]:
        """The queued items whose lease `node` holds: at `node`'s start, attempts that died
        with it (another node's leases simply expire)."""
        ...


@dataclass
class Stage(Generic[T]):
    """The discipline for one kind of item; `kind` names its log events."""

    kind: str
    queue: Queue[T]
    function: Callable[[T], Awaitable[Verdict]]
    rules: RetryRules
    node: str
    clock: Callable[[], dt.datetime]
    on_parked: Callable[[T, int], Awaitable[None]]
    lease: dt.timedelta = LEASE
    beat: Callable[[], None] = lambda: None  # after each item: the watchdog's pulse
    # After a fate was recorded (not a crash's): the stage's own log event and alert.
    on_recorded: Callable[[T, Fate, Verdict], Awaitable[None]] | None = None
    why_crashed: str = CRASHED  # the `why` of the parked receipt after an exception

    async def claim(self) -> list[T]:
        """The due items, leased to this node."""
        now = self.clock()
        return await self.queue.claim_due(now, self.node, now + self.lease)

    async def run_once(self) -> list[Fate]:
        """Claim and handle every due item, one after the other; their fates."""
        fates = [await self.handle(item) for item in await self.claim()]
        return fates

    async def handle(self, item: T) -> Fate:
        """Decide and record one claimed item's fate; a crash is counted, never raised."""
        try:
            verdict = await self.function(item)
            if verdict.outcome is Outcome.CRASH:
                fate: Fate = await self.crashed(item, verdict.reason or CRASHED)
            else:
                now = self.clock()
                fate = decide(verdict, item.counters, now, self.rules)
                if await self.queue.record(item, fate, verdict, now) and self.on_recorded:
                    await self.on_recorded(item, fate, verdict)
        except Exception as exc:
            # Tried again after a backoff; never dropped on our error, parked if it recurs.
            log.error(f"{self.kind}.attempt_crashed", **item.log_fields(),
                      **safe_exception(exc))
            fate = await self.crashed(item, self.why_crashed)
        self.beat()
        return fate

    async def crashed(self, item: T, why: str) -> Retry | Parked:
        """Count a crash of `item`; park it, log and alert when it crashed too often."""
        now = self.clock()
        fate = crash_fate(item.counters.crashes, now, self.rules)
        applied = await self.queue.record_crash(item, fate, why, now)
        if applied and isinstance(fate, Parked):
            log.error(f"{self.kind}.parked", **item.log_fields())
            await self.on_parked(item, item.counters.crashes + 1)
        return fate

    async def recover(self) -> int:
        """At start: each lease this node still holds belongs to an attempt that died with
        the process; counted as a crash. How many there were."""
        leased = await self.queue.leased(self.node)
        for item in leased:
            log.warning(f"{self.kind}.lease_recovered", **item.log_fields())
            await self.crashed(item, DIED)
        return len(leased)
