"""The fate of a queued item: one pure policy for every stage (seal, deliver, outbox).

Takes what a stage function said about one attempt (a `Verdict`: delivered, temporary,
permanent, crash, superseded or held), the item's counters as claimed (`Counters`: attempts,
crashes, since when it is queued) and the configured `RetryRules`; produces its `Fate`: `Done`,
`Retry(next_at)`, `Failed`, `Parked`, `Superseded` or `Held`, and with it whether the item's
sealed message is to be erased (`Fate.erase`). Never fails; a rule set that makes no sense
(a negative minimum, say) is the configuration's job to refuse.

The rules, as the delivery stage has applied them to notices:
- delivered: done, and the sealed message is erased (the recipient has it; a copy kept here
  would only wait for the day its recipients' keys leak);
- permanent: failed, kept (an administrator may queue it again or route the child elsewhere);
- temporary: retried with exponential backoff until `give_up_hours` after it was queued (or
  queued again by `queue retry`), then failed;
- crash (an exception of ours, or a process that died holding the lease): counted, retried
  with the backoff of the crash count, parked for a person at the `max_crashes`-th crash;
- superseded: the message was made for keys no longer pinned and is erased.
A seal failure (gpg refusing a key) counts as a crash of the seal stage (`crash_fate`).
Also here: when a notice is parked (`parked_after`), what is erased when a notice finishes
(`erase_notice`; an outbox mail goes by its fate's `erase`), and whether a lease found at
start-up is dead (`lease_is_dead`): the store only records what these decide, whatever database
is behind it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

MAX_CRASHES = 5  # attempts that ended in a crash before an item is parked for a person

# Why children are held when sealing their notice kept failing (receipts, `held list`).
HELD_SEAL_PARKED = "the notice could not be sealed"


class Outcome(Enum):
    """What one attempt came to; the first three values are deliver.Result's."""

    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"
    CRASH = "crash"
    SUPERSEDED = "superseded"
    HELD = "held"


@dataclass(frozen=True)
class Verdict:
    """A stage function's word on one item: the outcome, the remote reply (or a fixed text
    of ours), and a fixed reason key for logs (deliver.REASONS, a STALE_* or HELD_* text)."""

    outcome: Outcome
    reply: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Counters:
    """An item as claimed: attempts so far (this one included), crashes so far (this one
    not included), and since when it is queued (`requeued_at` or else `created_at`)."""

    attempts: int
    crashes: int
    since: dt.datetime


@dataclass(frozen=True)
class RetryRules:
    give_up_hours: float
    retry_min_seconds: int
    retry_max_seconds: int
    max_crashes: int = MAX_CRASHES


@dataclass(frozen=True)
class Done:
    erase: ClassVar[bool] = True


@dataclass(frozen=True)
class Retry:
    next_at: dt.datetime
    erase: ClassVar[bool] = False


@dataclass(frozen=True)
class Failed:
    erase: ClassVar[bool] = False


@dataclass(frozen=True)
class Parked:
    next_at: dt.datetime  # kept on the row as today; a parked item is not claimed
    erase: ClassVar[bool] = False


@dataclass(frozen=True)
class Superseded:
    reason: str
    erase: ClassVar[bool] = True


@dataclass(frozen=True)
class Held:
    reason: str
    erase: ClassVar[bool] = False


Fate = Done | Retry | Failed | Parked | Superseded | Held


def backoff_at(attempts: int, now: dt.datetime, minimum: int, maximum: int) -> dt.datetime:
    """Exponential backoff: `minimum` seconds after the first failure, doubling, capped at
    `maximum` (the exponent is capped at 30 so that a huge count cannot overflow)."""
    delay = min(maximum, minimum * 2 ** max(0, min(attempts - 1, 30)))
    return now + dt.timedelta(seconds=delay)


def crash_fate(crashes_before: int, now: dt.datetime, rules: RetryRules) -> Retry | Parked:
    """One more crash: retried after the backoff of the new crash count, or parked when that
    count reaches `rules.max_crashes`."""
    crashes = crashes_before + 1
    next_at = backoff_at(crashes, now, rules.retry_min_seconds, rules.retry_max_seconds)
    if parked_after(crashes, rules.max_crashes):
        return Parked(next_at)
    return Retry(next_at)


def decide(verdict: Verdict, item: Counters, now: dt.datetime, rules: RetryRules) -> Fate:
    """The fate of one attempt's item under `rules` (the table in this module's docstring)."""
    outcome = verdict.outcome
    if outcome is Outcome.DELIVERED:
        return Done()
    if outcome is Outcome.SUPERSEDED:
        return Superseded(verdict.reason)
    if outcome is Outcome.HELD:
        return Held(verdict.reason)
    if outcome is Outcome.CRASH:
        return crash_fate(item.crashes, now, rules)
    give_up = item.since + dt.timedelta(hours=rules.give_up_hours)
    if outcome is Outcome.PERMANENT or now >= give_up:
        return Failed()
    return Retry(backoff_at(item.attempts, now, rules.retry_min_seconds,
                            rules.retry_max_seconds))


def parked_after(crashes: int, max_crashes: int = MAX_CRASHES) -> bool:
    """Whether an item that has now crashed `crashes` times is parked for a person: an item
    that keeps crashing the gateway must stop being tried, but is never dropped."""
    return crashes >= max_crashes


def erase_notice(state: str) -> bool:
    """Whether a finished notice's ciphertext and its children's sealed data go. Delivered:
    the school has it, and a copy kept here would only wait for the day its recipients' keys
    leak. Failed: kept (sealed), so that an administrator can still route the child elsewhere
    or queue it again."""
    return state == "delivered"


def lease_is_dead(owner: str | None, until: str, now: str, node: str) -> bool:
    """Whether a lease found held at start-up may be released: it expired (`until` before
    `now`, both `records.iso` text), it has no owner (written before leases carried one, by
    a single node), or its owner is a process of this host (`host:pid`) other than this one:
    that process is gone, since only one daemon runs per host and database (the instance
    lock). A live lease of another node is left to that node."""
    if until < now or owner is None:
        return True
    host, _, pid = owner.rpartition(":")
    this_host, _, this_pid = node.rpartition(":")
    return host == this_host and pid != this_pid
