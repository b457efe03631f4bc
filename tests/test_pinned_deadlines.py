"""The school calendar and escalation: decisions pinned where a mutation run (`make mutate`,
mutate/run.py) found that the tests would not notice a wrong answer: each test here fails on at
least one mutant that survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Iterator

import pytest

from gateway.core.config import ScheduleSection
from gateway.core.schedule import deadline, is_school_day, time_left
from gateway.service.escalate import Escalation, due_escalations

# -- schedule: the edges of a holiday --------------------------------------------------------------

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
# The autumn holiday of 2026 runs Monday 19 to Friday 23 October: both edges are weekdays.
AUTUMN = ScheduleSection(holidays=((dt.date(2026, 10, 19), dt.date(2026, 10, 23)),))


def test_first_and_last_day_of_a_holiday_are_not_school_days() -> None:
    """A holiday range includes its first and its last day; the days around it are school days."""
    assert is_school_day(dt.date(2026, 10, 16), AUTUMN)
    assert not is_school_day(dt.date(2026, 10, 19), AUTUMN)
    assert not is_school_day(dt.date(2026, 10, 23), AUTUMN)
    assert is_school_day(dt.date(2026, 10, 26), AUTUMN)


def test_a_signal_before_a_holiday_is_due_after_it() -> None:
    """A signal on the Friday before the holiday is due on the Monday after it."""
    accepted = dt.datetime(2026, 10, 16, 10, 0, tzinfo=AMS).astimezone(dt.UTC)
    due = dt.datetime(2026, 10, 26, 8, 30, tzinfo=AMS).astimezone(dt.UTC)
    assert deadline(accepted, AUTUMN) == due
    one_day = ScheduleSection(holidays=((dt.date(2026, 10, 19), dt.date(2026, 10, 19)),))
    due_tuesday = dt.datetime(2026, 10, 20, 8, 30, tzinfo=AMS).astimezone(dt.UTC)
    assert deadline(accepted, one_day) == due_tuesday


@pytest.fixture
def far_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC+14, far from UTC and the schools, for the test."""
    monkeypatch.setenv("TZ", "Pacific/Kiritimati")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_local_time")
def test_deadline_is_in_utc_whatever_the_local_time_zone() -> None:
    """The deadline is returned in UTC (it is stored and compared as such), not in local time."""
    accepted = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)
    due = deadline(accepted, ScheduleSection())
    assert due.utcoffset() == dt.timedelta(0)
    assert due == dt.datetime(2026, 11, 24, 7, 30, tzinfo=dt.UTC)


@pytest.mark.usefixtures("far_local_time")
def test_deadline_counts_days_in_the_schools_zone_not_the_machines() -> None:
    """The school day is that of the schools' zone: 03:00 on a Tuesday in Pago Pago (UTC-11) is
    due at 08:30 that Tuesday, though the machine's own clock (UTC+14) already says Wednesday."""
    schedule = ScheduleSection(timezone="Pacific/Pago_Pago")
    pago = zoneinfo.ZoneInfo("Pacific/Pago_Pago")
    accepted = dt.datetime(2026, 11, 24, 3, 0, tzinfo=pago).astimezone(dt.UTC)
    assert deadline(accepted, schedule) == dt.datetime(2026, 11, 24, 8, 30, tzinfo=pago)


def test_no_school_day_in_a_year_says_so() -> None:
    """The error for a schedule without school days tells the administrator what to check."""
    always = ScheduleSection(holidays=((dt.date(2026, 1, 1), dt.date(2030, 1, 1)),))
    exact = r"^no school day within a year: check \[schedule\] holidays$"
    with pytest.raises(ValueError, match=exact):
        deadline(dt.datetime(2026, 6, 1, tzinfo=dt.UTC), always)


def test_time_left_at_the_deadline_is_not_negative() -> None:
    """At the deadline itself no time is left and none is overdue: `0h00m`, no minus sign."""
    now = dt.datetime(2026, 11, 24, 7, 30, tzinfo=dt.UTC)
    assert time_left(now, now) == "0h00m"
    assert time_left(now + dt.timedelta(seconds=59), now) == "0h00m"
    assert time_left(now - dt.timedelta(seconds=1), now) == "-0h00m"


# -- escalate: which escalations are due ---------------------------------------------------------

# A signal accepted on Tuesday 24 November 2026 at 10:00 in Amsterdam is due on Wednesday 25 at
# 08:30 local time, 07:30 UTC.
ACCEPTED = dt.datetime(2026, 11, 24, 9, 0, tzinfo=dt.UTC)
DUE = dt.datetime(2026, 11, 25, 7, 30, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
SECOND = dt.timedelta(seconds=1)


OpenSignal = tuple[str, dt.datetime, tuple[str, ...], tuple[str, ...]]


def _due(now: dt.datetime, *, open_signals: list[OpenSignal] | None = None,
         unacknowledged: list[tuple[str, str, dt.datetime]] | None = None,
         done: dict[str, set[str]] | None = None) -> list[Escalation]:
    return due_escalations(open_signals or [], unacknowledged or [], now=now,
                           schedule=ScheduleSection(), before=HOUR, done=done or {})


def test_an_undelivered_signal_escalates_the_set_time_before_the_deadline() -> None:
    """An undelivered signal escalates from `before` ahead of its deadline, not a second
    earlier, with its reference, states, schools and deadline."""
    signal: list[OpenSignal] = [("R1", ACCEPTED, ("held",), ("12AB00",))]
    assert _due(DUE - HOUR - SECOND, open_signals=signal) == []
    expected = [Escalation("R1", "undelivered", ("12AB00",), DUE, ("held",))]
    assert _due(DUE - HOUR, open_signals=signal) == expected
    assert _due(DUE + HOUR, open_signals=signal) == expected


def test_an_escalation_already_raised_is_not_raised_again() -> None:
    """Once raised (by kind, per reference), an escalation is not due again; another signal's
    or another kind's record does not count."""
    signal: list[OpenSignal] = [("R1", ACCEPTED, ("held",), ("12AB00",))]
    assert _due(DUE, open_signals=signal, done={"R1": {"undelivered"}}) == []
    assert len(_due(DUE, open_signals=signal, done={"R1": {"unacknowledged"}})) == 1
    assert len(_due(DUE, open_signals=signal, done={"R2": {"undelivered"}})) == 1
    waiting = [("R1", "12AB00", ACCEPTED)]
    assert _due(DUE, unacknowledged=waiting, done={"R1": {"unacknowledged"}}) == []
    assert len(_due(DUE, unacknowledged=waiting, done={"R1": {"undelivered"}})) == 1


def test_an_unacknowledged_notice_escalates_at_the_deadline_itself() -> None:
    """An unacknowledged notice escalates at its deadline (not `before` it), once per signal,
    naming every school still to acknowledge, sorted."""
    waiting = [("R1", "56EF00", ACCEPTED), ("R1", "12AB00", ACCEPTED),
               ("R2", "34CD00", ACCEPTED + dt.timedelta(days=1))]
    assert _due(DUE - SECOND, unacknowledged=waiting) == []
    assert _due(DUE, unacknowledged=waiting) == [
        Escalation("R1", "unacknowledged", ("12AB00", "56EF00"), DUE)]


def test_both_kinds_escalate_in_one_pass() -> None:
    """One pass returns the undelivered and the unacknowledged escalations that are due."""
    due = _due(DUE, open_signals=[("R1", ACCEPTED, ("sent", "held"), ("12AB00", "34CD00"))],
               unacknowledged=[("R1", "12AB00", ACCEPTED)])
    assert [(e.ref, e.what, e.schools) for e in due] == [
        ("R1", "undelivered", ("12AB00", "34CD00")), ("R1", "unacknowledged", ("12AB00",))]
