"""The throttles: decisions pinned where a mutation run (`make mutate`, mutate/run.py) found that
the tests would not notice a wrong answer: each test here fails on at least one mutant that
survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import pytest

from gateway.ingress.throttle import (
    AuthThrottle,
    ClientRefusals,
    SessionLimits,
    StallCounter,
    progressed,
)

# -- throttle: the AUTH throttle's policy, session slots and refusals ----------------------------


def test_auth_failures_are_answered_slower_and_slower_up_to_the_cap() -> None:
    """The first three failures are answered at once; from the fourth each waits 0.5 s, doubled
    per failure, at most 8 s."""
    throttle = AuthThrottle()
    delays = [throttle.record_failure("192.0.2.1", "vt", 1000.0 + i) for i in range(9)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_the_delay_follows_the_worse_of_address_and_login() -> None:
    """A login tried from many addresses is slowed by its own count, not the address's."""
    throttle = AuthThrottle()
    delays = [throttle.record_failure(f"192.0.2.{i}", "vt", 1000.0) for i in range(5)]
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_an_address_is_refused_from_its_tenth_failure_in_the_window() -> None:
    """Nine failures from one address are let through; the tenth refuses it, for any login."""
    throttle = AuthThrottle()
    for i in range(9):
        throttle.record_failure("192.0.2.1", f"login{i}", 1000.0)
    assert not throttle.refused("192.0.2.1", "other", 1000.0)
    throttle.record_failure("192.0.2.1", "login9", 1000.0)
    assert throttle.refused("192.0.2.1", "other", 1000.0)
    assert not throttle.refused("192.0.2.2", "other", 1000.0)


def test_a_login_is_refused_from_its_twentieth_failure_from_any_addresses() -> None:
    """Nineteen failures of one login from many addresses are let through; the twentieth
    refuses that login everywhere."""
    throttle = AuthThrottle()
    for i in range(19):
        throttle.record_failure(f"192.0.2.{i}", "vt", 1000.0)
    assert not throttle.refused("198.51.100.1", "vt", 1000.0)
    throttle.record_failure("192.0.2.99", "vt", 1000.0)
    assert throttle.refused("198.51.100.1", "vt", 1000.0)
    assert not throttle.refused("198.51.100.1", "other", 1000.0)


def test_failures_are_forgotten_after_exactly_fifteen_minutes() -> None:
    """A failure counts for 15 minutes: a second before, the address is refused; at 15:00 it is
    forgotten, and the key is dropped."""
    throttle = AuthThrottle()
    for _ in range(10):
        throttle.record_failure("192.0.2.1", "vt", 1000.0)
    assert throttle.refused("192.0.2.1", "x", 1000.0 + 15 * 60 - 1)
    assert not throttle.refused("192.0.2.1", "vt", 1000.0 + 15 * 60)
    assert len(throttle) == 0


def test_a_good_login_forgets_only_that_logins_failures() -> None:
    """A success clears its login's failures; the address and other logins keep theirs."""
    throttle = AuthThrottle()
    throttle.record_failure("192.0.2.1", "vt", 1000.0)
    throttle.record_failure("192.0.2.2", "other", 1000.0)
    throttle.record_success("192.0.2.1", "vt")
    assert set(throttle.failures) == {"addr:192.0.2.1", "addr:192.0.2.2", "login:other"}


def test_past_ten_thousand_keys_the_expired_ones_are_dropped() -> None:
    """Beyond 10,000 keys a failure first drops every key whose failures have expired; up to
    it, nothing is swept."""
    throttle = AuthThrottle()
    for i in range(5000):
        throttle.record_failure(f"10.0.{i // 256}.{i % 256}", f"l{i}", 0.0)
    assert len(throttle) == 10_000
    throttle.record_failure("192.0.2.1", "vt", 2000.0)
    assert len(throttle) == 10_002  # not more than MAX_KEYS before: no sweep
    throttle.record_failure("192.0.2.2", "vt2", 2000.0)
    assert set(throttle.failures) == {"addr:192.0.2.1", "login:vt", "addr:192.0.2.2",
                                      "login:vt2"}


def test_session_slots_per_address_and_in_total() -> None:
    """Sessions are let in up to the per-address and the total cap; closing frees a slot, and
    `idle` is set exactly while none is open."""
    limits = SessionLimits(max_total=3, max_per_address=2)
    assert limits.idle.is_set()
    assert limits.try_open("a") and limits.try_open("a")
    assert not limits.idle.is_set()
    assert not limits.try_open("a")
    assert limits.try_open("b")
    assert not limits.try_open("c")
    assert limits.total == 3
    limits.close("a")
    assert limits.open == {"a": 1, "b": 1}
    assert not limits.idle.is_set()
    assert limits.try_open("c")
    for address in ("a", "b", "c"):
        limits.close(address)
    assert limits.open == {}
    assert limits.idle.is_set()
    limits.close("a")  # closing what is not open changes nothing
    assert limits.open == {}
    assert limits.total == 0
    one_each = SessionLimits(max_total=5, max_per_address=1)
    assert one_each.try_open("a") and not one_each.try_open("a")


@pytest.mark.parametrize(("command", "reply", "forward"), [
    ("starttls", "220 2.0.0 Ready", True), ("AUTH", "235 2.7.0 OK", True),
    ("RCPT", "250 OK", True), ("DATA", "250 2.0.0 queued", True),
    ("AUTH", "535 5.7.8 no", False), ("MAIL", "250 OK", False), ("NOOP", "250 OK", False),
    ("RCPT", "550 5.1.1 unknown", False), ("DATA", "354 go ahead", False),
])
def test_progress_is_a_command_with_its_success_reply(command: str, reply: str,
                                                      forward: bool) -> None:
    """Only STARTTLS 220, AUTH 235, RCPT 250 and DATA 250 (any case) move a session forward."""
    assert progressed(command, reply) is forward


def test_the_stall_counter_is_exhausted_at_its_limit() -> None:
    """`limit` commands that go nowhere exhaust it; one that progresses starts it again."""
    counter = StallCounter(limit=2)
    counter.record("NOOP", "250 OK")
    assert not counter.exhausted()
    counter.record("NOOP", "250 OK")
    assert counter.exhausted()
    counter.record("STARTTLS", "220 Ready")
    assert counter.count == 0


def test_refusals_block_at_the_limit_until_exactly_the_block_ends() -> None:
    """The `limit`-th refusal within `block_seconds` blocks; the block ends at exactly
    `block_seconds` later, and refusals while blocked do not count."""
    refusals = ClientRefusals(limit=3, block_seconds=60.0)
    assert not refusals.record("a", 0.0)
    assert not refusals.record("a", 1.0)
    assert refusals.record("a", 2.0)
    assert refusals.recent == {}
    assert refusals.blocked("a", 61.0)
    assert not refusals.record("a", 61.0)
    assert refusals.recent == {}  # not counted while blocked
    assert not refusals.blocked("a", 62.0)
    assert refusals.blocked_until == {}


def test_refusals_older_than_the_block_time_are_forgotten() -> None:
    """A refusal counts for `block_seconds`: at exactly that age it is forgotten."""
    refusals = ClientRefusals(limit=2, block_seconds=60.0)
    refusals.record("a", 0.0)
    assert not refusals.record("a", 60.0)
    assert refusals.recent == {"a": [60.0]}
    assert refusals.record("a", 119.0)


def test_past_ten_thousand_refused_addresses_the_stale_ones_are_dropped() -> None:
    """Beyond 10,000 addresses (not at 10,000) a refusal first drops the expired counts and the
    ended blocks, a block ending that very second included; recent counts stay."""
    refusals = ClientRefusals(limit=2, block_seconds=60.0)
    for i in range(9_999):
        refusals.record(f"10.0.{i // 256}.{i % 256}", 0.0)
    refusals.record("192.0.2.5", 90.0)
    refusals.blocked_until.update({"192.0.2.9": 30.0, "192.0.2.7": 100.0, "192.0.2.8": 500.0})
    assert len(refusals.recent) == 10_000
    assert not refusals.record("192.0.2.1", 100.0)
    assert len(refusals.recent) == 10_001  # at 10,000 nothing is swept
    assert not refusals.record("192.0.2.2", 100.0)
    assert refusals.recent == {"192.0.2.5": [90.0], "192.0.2.1": [100.0], "192.0.2.2": [100.0]}
    assert refusals.blocked_until == {"192.0.2.8": 500.0}


def test_a_limit_of_one_blocks_at_the_first_refusal() -> None:
    """With a limit of one, the first refusal blocks at once."""
    refusals = ClientRefusals(limit=1, block_seconds=60.0)
    assert refusals.record("a", 0.0)
    assert refusals.blocked("a", 59.0)


def test_lift_forgets_one_subject_and_is_quiet_about_none() -> None:
    """`lift` ends the failures of one login or address (by scope, or by its raw prefix) and
    says nothing when there were none."""
    throttle = AuthThrottle(max_delay=0)
    for i in range(3):
        throttle.record_failure("192.0.2.1", "vt", float(i))
    throttle.lift("addr", "192.0.2.1")
    throttle.lift("login", "nobody")
    assert "addr:192.0.2.1" not in throttle.failures and "login:vt" in throttle.failures
