"""Times as people read them: in the configured zone, with its offset.

Takes a time as the store keeps it (UTC ISO text, `2026-12-01T08:30:00Z`), any ISO text with an
offset, or an aware datetime, and a zone name (`[schedule] timezone`). Produces
`2026-12-01 09:30 +01:00`: the local wall clock the administrator lives by, with the offset that
says which one it is (a time in the hour after the autumn change is otherwise ambiguous). Never
raises: text that is not a time comes back as it was, so one odd value cannot break a listing.
`--json` does not use this: programs get ISO UTC. For what school contacts read (mails, the
pickup page), `moment_nl` says a moment the Dutch way: `woensdag 2 december 2026 om 08:30 uur`.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from typing import Any

# The keys under which listings, status and receipts carry a time.
TIME_KEYS = frozenset({
    "at", "accepted", "created", "deadline", "decrypt_until", "delivered", "expires",
    "next_attempt", "next_attempt_at", "oldest_queued", "overlap_until",
})


def local_time_text(value: str | dt.datetime, zone: str) -> str:
    """`value` in `zone`, to the minute, with its UTC offset as `+01:00`."""
    if isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    else:
        moment = value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # the store writes UTC only
    local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    offset = local.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, mins = divmod(abs(minutes), 60)
    return f"{local:%Y-%m-%d %H:%M} {sign}{hours:02d}:{mins:02d}"


def local_times(value: Any, zone: str) -> Any:
    """A copy of `value` (a row, a status, lists and dicts within) with the value of every time
    key shown in `zone`; everything else, None included, as it was."""
    if isinstance(value, Mapping):
        return {key: local_time_text(item, zone)
                if key in TIME_KEYS and isinstance(item, str | dt.datetime)
                else local_times(item, zone) for key, item in value.items()}
    if isinstance(value, list):
        return [local_times(item, zone) for item in value]
    return value


_WEEKDAYS_NL = ("maandag", "dinsdag", "woensdag", "donderdag", "vrijdag", "zaterdag", "zondag")
_MONTHS_NL = ("januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
              "september", "oktober", "november", "december")


def moment_nl(moment: dt.datetime, zone: str) -> str:
    """Pure: `woensdag 2 december 2026 om 08:30 uur`, a moment as a Dutch reader says it, on
    the schools' wall clock (`[schedule] timezone`), summer or winter."""
    local = moment.astimezone(zoneinfo.ZoneInfo(zone))
    return (f"{_WEEKDAYS_NL[local.weekday()]} {local.day} {_MONTHS_NL[local.month - 1]} "
            f"{local.year} om {local:%H:%M} uur")

