"""The fate policy of queued items: every outcome class, the backoff numbers, the give-up."""

from __future__ import annotations

import datetime as dt
import itertools

from gateway.core.policy import (
    HELD_SEAL_PARKED,
    MAX_CRASHES,
    Counters,
    Done,
    Failed,
    Held,
    Outcome,
    Parked,
    Retry,
    RetryRules,
    Superseded,
    Verdict,
    backoff_at,
    crash_fate,
    decide,
)
from gateway.core.resolve import HELD_NO_USABLE_KEY, HELD_REASONS
from gateway.delivery.deliver import Result

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
RULES = RetryRules(give_up_hours=48, retry_min_seconds=60, retry_max_seconds=3600)


def counters(attempts: int = 1, crashes: int = 0, hours_ago: float = 0) -> Counters:
    return Counters(attempts, crashes, NOW - dt.timedelta(hours=hours_ago))


def test_backoff_numbers() -> None:
    """Minimum after the first failure, doubling, capped at the maximum; exponent capped at 30."""
    delays = [(backoff_at(n, NOW, 60, 3600) - NOW).total_seconds() for n in range(0, 9)]
    assert delays == [60, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    huge = 2**40
    assert backoff_at(32, NOW, 1, huge) == NOW + dt.timedelta(seconds=2**30)


def test_delivered_is_done_and_erases() -> None:
    """A delivered item is done and its sealed message erased, whatever its counters."""
    for item in (counters(), counters(attempts=9, crashes=4, hours_ago=100)):
        fate = decide(Verdict(Outcome.DELIVERED, "250 ok"), item, NOW, RULES)
        assert fate == Done() and fate.erase


def test_permanent_fails_and_keeps() -> None:
    """A permanent refusal fails at once and keeps the message (it may be queued again)."""
    fate = decide(Verdict(Outcome.PERMANENT, "550 no"), counters(), NOW, RULES)
    assert fate == Failed() and not fate.erase


def test_temporary_retries_with_the_attempts_backoff() -> None:
    """A temporary failure before give-up is retried after the backoff of its attempt count."""
    for attempts, seconds in [(1, 60), (2, 120), (3, 240), (8, 3600)]:
        fate = decide(Verdict(Outcome.TEMPORARY, "451"), counters(attempts, hours_ago=47),
                      NOW, RULES)
        assert fate == Retry(NOW + dt.timedelta(seconds=seconds)) and not fate.erase


def test_temporary_fails_at_give_up() -> None:
    """Temporary failures stop at exactly give_up_hours after the item was (re)queued."""
    at_limit = decide(Verdict(Outcome.TEMPORARY), counters(hours_ago=48), NOW, RULES)
    just_before = decide(Verdict(Outcome.TEMPORARY),
                         Counters(1, 0, NOW - dt.timedelta(hours=48) + dt.timedelta(seconds=1)),
                         NOW, RULES)
    assert at_limit == Failed()
    assert isinstance(just_before, Retry)


def test_crash_retries_then_parks_at_max_crashes() -> None:
    """Crashes retry with the backoff of the crash count; the MAX_CRASHES-th one parks."""
    fates = [decide(Verdict(Outcome.CRASH), counters(attempts=1, crashes=n), NOW, RULES)
             for n in range(MAX_CRASHES + 2)]
    assert fates[:MAX_CRASHES - 1] == [Retry(backoff_at(n + 1, NOW, 60, 3600))
                                       for n in range(MAX_CRASHES - 1)]
    assert fates[MAX_CRASHES - 1:] == [Parked(backoff_at(n + 1, NOW, 60, 3600))
                                       for n in range(MAX_CRASHES - 1, MAX_CRASHES + 2)]
    assert not any(f.erase for f in fates)


def test_crash_ignores_give_up_and_attempts() -> None:
    """A crash long past give-up is still a crash (retried), never a failure."""
    fate = decide(Verdict(Outcome.CRASH), counters(attempts=50, crashes=0, hours_ago=1000),
                  NOW, RULES)
    assert fate == Retry(NOW + dt.timedelta(seconds=60))


def test_max_crashes_is_a_rule() -> None:
    """The parking threshold comes from the rules (MAX_CRASHES by default, 5 as today)."""
    assert MAX_CRASHES == 5 and RULES.max_crashes == MAX_CRASHES
    one = RetryRules(48, 60, 3600, max_crashes=1)
    assert isinstance(crash_fate(0, NOW, one), Parked)


def test_seal_failure_counts_like_a_crash() -> None:
    """A seal failure is retried with the crash backoff and parked at the MAX_CRASHES-th."""
    assert crash_fate(0, NOW, RULES) == Retry(NOW + dt.timedelta(seconds=60))
    assert crash_fate(3, NOW, RULES) == Retry(NOW + dt.timedelta(seconds=480))
    assert crash_fate(MAX_CRASHES - 1, NOW, RULES) == Parked(NOW + dt.timedelta(seconds=960))
    assert HELD_SEAL_PARKED not in HELD_REASONS  # not a routing decision: a person must look


def test_superseded_and_held_carry_their_reason() -> None:
    """Superseded erases and keeps its reason; held keeps the message and its reason."""
    superseded = decide(Verdict(Outcome.SUPERSEDED, reason="stale"), counters(), NOW, RULES)
    held = decide(Verdict(Outcome.HELD, reason=HELD_NO_USABLE_KEY), counters(), NOW, RULES)
    assert superseded == Superseded("stale") and superseded.erase
    assert held == Held(HELD_NO_USABLE_KEY) and not held.erase


def test_outcome_values_match_delivery_results() -> None:
    """Each delivery Result maps onto the policy's outcome of the same value."""
    assert [Outcome(r.value) for r in Result] == [Outcome.DELIVERED, Outcome.TEMPORARY,
                                                  Outcome.PERMANENT]


def test_every_outcome_has_a_fate() -> None:
    """The table is total: every outcome, at and past each limit, gets one fate."""
    kinds = (Done, Retry, Failed, Parked, Superseded, Held)
    for outcome, attempts, crashes, hours in itertools.product(
            Outcome, [1, 2, 40], [0, MAX_CRASHES - 1, MAX_CRASHES], [0, 47.9, 48, 500]):
        fate = decide(Verdict(outcome), counters(attempts, crashes, hours), NOW, RULES)
        assert isinstance(fate, kinds)
