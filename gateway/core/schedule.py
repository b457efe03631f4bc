"""The school day: when must a school have its notice?

Takes a moment (UTC) and the `[schedule]` settings; produces the deadline: the start of the next
school day after that moment, in the schools' time zone. A school day is a weekday that is not in
a holiday range. Pure: the caller passes `now`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from gateway.core.config import ScheduleSection

_MAX_DAYS_AHEAD = 400  # a holiday list that covers every day must not loop forever


def is_school_day(day: dt.date, schedule: ScheduleSection) -> bool:
    if day.weekday() >= 5:
        return False
    return not any(first <= day <= last for first, last in schedule.holidays)


def deadline(after: dt.datetime, schedule: ScheduleSection) -> dt.datetime:
    """The first school-day start strictly after `after` (a signal at 03:00 on a Tuesday is due
    at 08:30 that Tuesday; one at 10:00 is due at 08:30 on Wednesday)."""
    zone = zoneinfo.ZoneInfo(schedule.timezone)
    local = after.astimezone(zone)
    day = local.date()
    for _ in range(_MAX_DAYS_AHEAD):
        start = dt.datetime.combine(day, schedule.school_day_start, tzinfo=zone)
        if start > local and is_school_day(day, schedule):
            return start.astimezone(dt.UTC)
        day += dt.timedelta(days=1)
    raise ValueError("no school day within a year: check [schedule] holidays")


def time_left(deadline_at: dt.datetime, now: dt.datetime) -> str:
    """`3h05m` before the deadline, `-0h20m` past it: for the administrator's listings."""
    seconds = int((deadline_at - now).total_seconds())
    sign = "-" if seconds < 0 else ""
    hours, rest = divmod(abs(seconds), 3600)
    return f"{sign}{hours}h{rest // 60:02d}m"
