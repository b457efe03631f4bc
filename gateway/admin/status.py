"""What the `status` verb does: is everything all right, and if not, what needs attention.

Takes a `Context` and whether the listener answers; produces a `Status`: the data for
`status --json` and one line per thing that needs the administrator (the exit is 1 when there
is one), and the pickup notices delivered and waiting to be read (`pickup_lines`). Reads only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from gateway.admin.common import signal_deadline
from gateway.admin.keys import keys_list
from gateway.admin.receipts import receipts_verify
from gateway.core.records import iso
from gateway.core.schedule import time_left
from gateway.delivery.deliver import FIXES
from gateway.pipeline.context import Context
from gateway.store.views import queue_counts


@dataclass(frozen=True)
class Status:
    data: dict[str, Any]
    attention: list[str]


async def status(ctx: Context, listener_up: bool) -> Status:
    now = ctx.clock()
    counts = await queue_counts(ctx.store)
    oldest = await ctx.store.notices.oldest_queued()
    attention = []
    if not listener_up:
        attention.append("the listener is not answering")
    if counts.get("child.held"):
        attention.append(f"{counts['child.held']} held children wait for an administrator")
    if counts.get("notice.failed"):
        attention.append(f"{counts['notice.failed']} notices failed: see `queue list --failed`,"
                         " then `queue retry ID` once the cause is fixed")
    if counts.get("notice.parked"):
        attention.append(f"{counts['notice.parked']} notices parked after crashing the gateway:"
                         " see `queue list --failed` and the logs, then `queue retry ID`")
    setup, setup_data = await setup_problems(ctx, now)
    attention += setup
    if ctx.snapshot.signing_key is None:
        attention.append("there is no gateway key")
    expiring = await keys_list(ctx, now, 30)
    gateway_keys = await ctx.store.directory.gateway_keys()
    if expiring:
        attention.append(f"{len(expiring)} keys expire within 30 days")
    count, problems = await receipts_verify(ctx.store)
    if problems:
        attention.append("the receipt chain is broken: run `receipts verify`")
    open_rows = await ctx.store.signals.open()
    deadlines = sorted((signal_deadline(ctx, r.accepted_at), r.ref) for r in open_rows)
    done = await ctx.store.receipts.escalations()
    escalated = [r.ref for r in open_rows if r.ref in done]
    if escalated:
        attention.append(f"{len(escalated)} signals escalated: {', '.join(escalated[:5])}")
    unacked = await ctx.store.notices.unacknowledged()
    pickup = await pickup_waiting(ctx)
    last = await ctx.store.receipts.last("delivered")
    data = {"listener": {"address": str(ctx.config.smtp.listen), "up": listener_up},
            "counts": counts, "queued": counts.get("notice.queued", 0), "oldest_queued": oldest,
            "held": counts.get("child.held", 0), "signing_key": ctx.snapshot.signing_key,
            "gateway_keys": [{"fingerprint": r.fingerprint, "state": r.state,
                              "overlap_until": r.decrypt_until if r.state == "previous"
                              else None} for r in gateway_keys if r.state != "retired"],
            "keys_expiring_30_days": [k["fingerprint"] for k in expiring],
            "next_deadline": ({"ref": deadlines[0][1], "deadline": iso(deadlines[0][0]),
                               "time_left": time_left(deadlines[0][0], now)}
                              if deadlines else None),
            "escalated": escalated, "unacknowledged": len(unacked), "pickup_waiting": pickup,
            "last_delivery": ({"at": last.at, "ref": last.ref, "school": last.school}
                              if last else None),
            "receipts": count, **setup_data, "attention": attention}
    return Status(data, attention)


async def pickup_waiting(ctx: Context) -> dict[str, Any]:
    """Pickup notices delivered and not yet read: how many, the earliest deadline of their
    signals and the earliest expiry of their links (None while none waits)."""
    rows = await ctx.store.pickups.waiting()
    deadlines = []
    for row in rows:
        signal = await ctx.store.signals.get(row.ref)
        deadlines.append(signal_deadline(ctx, signal.accepted_at if signal else row.created_at))
    return {"count": len(rows), "deadline": iso(min(deadlines)) if deadlines else None,
            "expires": min(row.expires_at for row in rows) if rows else None}


def pickup_lines(data: dict[str, Any]) -> list[str]:
    """`status`'s lines for the pickup page, from `data` (times already as a person reads
    them): added after the others, which stay as they were."""
    waiting = data.get("pickup_waiting") or {"count": 0}
    if not waiting["count"]:
        return ["pickup    nothing waiting to be read"]
    return [f"pickup    {waiting['count']} waiting to be read on the pickup page"
            f" (first due {waiting['deadline']}, first link expires {waiting['expires']})"]


async def setup_problems(ctx: Context, now: dt.datetime) -> tuple[list[str], dict[str, Any]]:
    """What in the set-up keeps signals, notices, status mails or alerts from going anywhere
    (issue 12: `status` said "attention none" while each of these held): each as a line for
    `attention`, and the details for `status --json`."""
    config, snapshot = ctx.config, await ctx.refresh()
    lines: list[str] = []
    relay = config.delivery.relay
    contacts = await ctx.store.directory.contacts()
    with_contacts = sorted({str(c.school) for c in contacts})
    unreachable = [code for code in with_contacts if relay is None
                   and code not in snapshot.routes]
    if unreachable:
        lines.append(f"{len(unreachable)} schools have a contact but no route, and [delivery] "
                     f"relay is empty: their notices are never delivered "
                     f"({', '.join(unreachable[:5])}); `schools add CODE ... --route` or set"
                     " the relay")
    no_page = [] if config.web.enabled else sorted(
        {str(c.school) for c in contacts if c.channel == "pickup"})
    if no_page:
        lines.append(f"{len(no_page)} schools are reached through the pickup page, but [web] is"
                     f" off: their children are held ({', '.join(no_page[:5])}); set [web]"
                     " listen and public_url")
    keyless = sorted(name for name, sender in snapshot.senders.items()
                     if not sender.fingerprints)
    if keyless:
        lines.append(f"senders without a usable key, every signal refused (554 5.7.7): "
                     f"{', '.join(keyless)}; `senders add-key`")
    wanting = await ctx.store.directory.status_mail_senders()
    if relay is None and wanting:
        lines.append(f"[delivery] relay is empty: status mails to {len(wanting)} senders"
                     " cannot be sent")
    if not config.alerts.address:
        lines.append("[alerts] address is empty: alerts (failed notices, escalations, keys"
                     " expiring) reach only the log")
    elif relay is None:
        lines.append("[delivery] relay is empty: alerts to [alerts] address cannot be sent")
    elif config.alerts.key and config.alerts.key not in snapshot.alert_keys:
        lines.append("[alerts] key is not usable: alerts are not sent (`keys pin-alerts`)")
    waiting_on_us = await ctx.store.notices.queued_for_reasons(sorted(FIXES))
    if waiting_on_us:
        lines.append(f"{len(waiting_on_us)} notices wait because a school server says the"
                     " gateway is set up wrong (see `queue list` and the alert): fix it, then"
                     " `queue retry ID`")
    lockouts = [{"scope": r.scope, "subject": r.subject, "login": r.login,
                 "since": r.since, "until": r.until} for r in await ctx.store.lockouts.running(now)]
    locked: dict[str, list[dict[str, Any]]] = {}
    for lockout in lockouts:
        if lockout["login"] in snapshot.senders:
            locked.setdefault(lockout["login"], []).append(lockout)
    for name, items in sorted(locked.items()):
        what = ", ".join(f"{i['scope']} {i['subject']}" for i in items)
        until = max(i["until"] for i in items)
        lines.append(f"sender {name} is locked out of AUTH until {until} ({what}):"
                     f" `senders unlock {name}` once its password is right")
    data = {"unreachable_schools": unreachable, "pickup_without_web": no_page,
            "senders_without_key": keyless,
            "relay": str(relay) if relay else None, "alerts_address": config.alerts.address,
            "auth_lockouts": lockouts, "waiting_on_setup": waiting_on_us}
    return lines, data
