"""The school day: deadlines in the schools' time zone, weekends and holidays skipped."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, ScheduleSection, load_config
from gateway.core.schedule import deadline, is_school_day, time_left

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
SCHEDULE = ScheduleSection(holidays=((dt.date(2026, 12, 19), dt.date(2027, 1, 3)),))


def local(year: int, month: int, day: int, hour: int, minute: int) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=AMS)


@pytest.mark.parametrize(("accepted", "due", "why"), [
    (local(2026, 11, 24, 3, 0), local(2026, 11, 24, 8, 30), "a night signal is due that morning"),
    (local(2026, 11, 24, 8, 29), local(2026, 11, 24, 8, 30), "one minute before the start"),
    (local(2026, 11, 24, 8, 30), local(2026, 11, 25, 8, 30), "at the start: the next day"),
    (local(2026, 11, 24, 10, 0), local(2026, 11, 25, 8, 30), "during the day: the next day"),
    (local(2026, 11, 27, 22, 0), local(2026, 11, 30, 8, 30), "Friday night: Monday"),
    (local(2026, 11, 28, 12, 0), local(2026, 11, 30, 8, 30), "Saturday: Monday"),
    (local(2026, 12, 18, 20, 0), local(2027, 1, 4, 8, 30), "before the Christmas holiday"),
    (local(2027, 3, 28, 1, 0), local(2027, 3, 29, 8, 30), "the night clocks go forward"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_deadline(accepted: dt.datetime, due: dt.datetime, why: str) -> None:
    """The deadline is the first school-day start strictly after acceptance."""
    assert deadline(accepted.astimezone(dt.UTC), SCHEDULE) == due.astimezone(dt.UTC), why


def test_school_days() -> None:
    """Weekends and days inside a holiday range are not school days."""
    assert is_school_day(dt.date(2026, 11, 27), SCHEDULE)
    assert not is_school_day(dt.date(2026, 11, 28), SCHEDULE)
    assert not is_school_day(dt.date(2026, 12, 21), SCHEDULE)


def test_a_year_of_holidays_is_an_error() -> None:
    """A holiday list covering every day is reported instead of looping."""
    always = ScheduleSection(holidays=((dt.date(2026, 1, 1), dt.date(2030, 1, 1)),))
    with pytest.raises(ValueError, match="holidays"):
        deadline(dt.datetime(2026, 6, 1, tzinfo=dt.UTC), always)


def test_time_left_formats() -> None:
    """Time left reads as hours and minutes, negative once past."""
    now = dt.datetime(2026, 11, 24, 5, 0, tzinfo=dt.UTC)
    assert time_left(now + dt.timedelta(hours=3, minutes=5), now) == "3h05m"
    assert time_left(now - dt.timedelta(minutes=20), now) == "-0h20m"


def test_regional_holiday_file(tmp_path: Path) -> None:
    """A holiday file per region adds the national and that region's holidays, no others."""
    (tmp_path / "holidays.toml").write_text(
        '[landelijk]\nholidays = [["2026-12-19", "2027-01-03"]]\n'
        '[noord]\nholidays = [["2027-02-20", "2027-02-28"]]\n'
        '[zuid]\nholidays = [["2027-02-13", "2027-02-21"]]\n')
    (tmp_path / "config.toml").write_text(
        '[gateway]\naddress = "a@b.nl"\n'
        '[schedule]\nholidays_file = "holidays.toml"\nregion = "noord"\n')
    schedule = load_config(tmp_path / "config.toml").schedule
    assert not is_school_day(dt.date(2026, 12, 21), schedule)
    assert not is_school_day(dt.date(2027, 2, 22), schedule)
    assert is_school_day(dt.date(2027, 2, 15), schedule), "zuid's holiday is not noord's"


def test_region_must_be_known(tmp_path: Path) -> None:
    """An unknown region is a configuration error naming schedule.region."""
    (tmp_path / "h.toml").write_text("")
    (tmp_path / "config.toml").write_text(
        '[gateway]\naddress = "a@b.nl"\n[schedule]\nholidays_file = "h.toml"\nregion = "west"\n')
    with pytest.raises(ConfigError, match=r"schedule\.region"):
        load_config(tmp_path / "config.toml")
