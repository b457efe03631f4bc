"""Escalation: a person is told before a school day starts without the notice it needs.

Takes a `Context` and `now`; for every signal that still has a child undelivered (routed, sealed
or held) at its deadline minus `[schedule] escalate_before_minutes`, and for every delivered
notice that its school has not acknowledged by the deadline itself, it raises an alert once:
a receipt `escalated`, a log event `signal.escalated`, and a mail to `[alerts] address`. The
alert names references, school codes and what is missing, never a child. A pickup notice is
acknowledged by "Gelezen" on the pickup page, so one nobody read yet is an unacknowledged
notice like any other; its alert says it was not read on the pickup page.

Runs on one node only (`SINGLE_NODE`): two nodes would each see the escalation not yet raised
and both alert.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway.core.config import ScheduleSection
from gateway.core.records import from_iso, iso
from gateway.core.schedule import deadline
from gateway.notify.alerts import send_alert
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("escalate")

SINGLE_NODE = True  # a job for one node only: see the module docstring


@dataclass(frozen=True)
class Escalation:
    ref: str
    what: str  # "undelivered" or "unacknowledged"
    schools: tuple[str, ...]
    deadline: dt.datetime
    states: tuple[str, ...] = ()


def due_escalations(open_signals: list[tuple[str, dt.datetime, tuple[str, ...], tuple[str, ...]]],
                    unacknowledged: list[tuple[str, str, dt.datetime]], *, now: dt.datetime,
                    schedule: ScheduleSection, before: dt.timedelta,
                    done: dict[str, set[str]]) -> list[Escalation]:
    """Pure: which escalations are due now and not yet raised."""
    due = []
    for ref, accepted, states, schools in open_signals:
        at = deadline(accepted, schedule)
        if now >= at - before and "undelivered" not in done.get(ref, set()):
            due.append(Escalation(ref, "undelivered", schools, at, states))
    unacked: dict[str, tuple[dt.datetime, list[str]]] = {}
    for ref, school, accepted in unacknowledged:
        unacked.setdefault(ref, (accepted, []))[1].append(school)
    for ref, (accepted, waiting) in unacked.items():
        at = deadline(accepted, schedule)
        if now >= at and "unacknowledged" not in done.get(ref, set()):
            due.append(Escalation(ref, "unacknowledged", tuple(sorted(waiting)), at))
    return due


async def escalate(ctx: Context, now: dt.datetime) -> list[Escalation]:
    store = ctx.store
    open_rows = await store.signals.open()
    unacked_rows = await store.notices.unacknowledged()
    done = await store.receipts.escalations()
    on_page = {p.notice_id for p in await store.pickups.waiting()}
    pickup_schools: dict[str, set[str]] = {}
    for r in unacked_rows:
        if r.id in on_page:
            pickup_schools.setdefault(r.ref, set()).add(r.school)
    due = due_escalations(
        [(r.ref, from_iso(r.accepted_at), tuple(str(r.states).split(",")),
          tuple(s for s in str(r.schools or "").split(",") if s)) for r in open_rows],
        [(r.ref, r.school, from_iso(r.accepted_at)) for r in unacked_rows],
        now=now, schedule=ctx.config.schedule,
        before=dt.timedelta(minutes=ctx.config.schedule.escalate_before_minutes), done=done)
    for item in due:
        async def record(tx: Tx, item: Escalation = item) -> None:
            await tx.receipts.append("escalated", at=now, ref=item.ref, what=item.what,
                                     schools=list(item.schools), states=list(item.states),
                                     deadline=iso(item.deadline))

        await store.write(record)
        log.warning("signal.escalated", ref=item.ref, what=item.what,
                    schools=list(item.schools), deadline=iso(item.deadline))
        missing = _missing(item, pickup_schools)
        await send_alert(ctx, "signal.escalated", f"signal {item.ref} {missing}",
                         _alert_lines(item, missing, pickup_schools))
    return due


def _missing(item: Escalation, pickup_schools: dict[str, set[str]]) -> str:
    """What is missing: delivery, or a confirmation (on the pickup page: reading)."""
    if item.what == "undelivered":
        return "is not delivered yet"
    if set(item.schools) <= pickup_schools.get(item.ref, set()):
        return "was delivered but not read on the pickup page"
    return "was delivered but its school has not confirmed receipt"


def _alert_lines(item: Escalation, missing: str,
                 pickup_schools: dict[str, set[str]]) -> list[str]:
    """The alert's text: references, school codes, states and times only."""
    on_page = sorted(set(item.schools) & pickup_schools.get(item.ref, set()))
    return [
        f"Signal {item.ref} {missing}; the school day starts at "
        f"{item.deadline:%Y-%m-%d %H:%M} UTC.",
        f"Schools: {', '.join(item.schools) or '(not known yet)'}; "
        f"state: {', '.join(item.states) or 'delivered'}.",
        *([f"Not read on the pickup page yet: {', '.join(on_page)}."]
          if item.what == "unacknowledged" and on_page else []),
        "See `hwc-gateway held list` and `hwc-gateway queue list`; call the school if"
        " the notice cannot reach it in time.",
    ]
