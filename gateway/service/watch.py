"""Periodic work of the daemon: what must happen on a clock rather than on a message.

Takes a `Context`; `Watch.tick` is called by the runner's loop and does whatever is due: every
half minute, escalation (`escalate`); at start-up and then daily, the retention purge and the
key check (a gateway key whose overlap has ended is retired; a pinned key that expires within
30, 14, 7 or 1 days raises a warning and an alert, once per threshold). Each job catches its
own failure, so one broken job never stops the runner or the others.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.core.records import from_iso
from gateway.core.schedule import deadline
from gateway.crypto.keyadmin import list_key_infos
from gateway.notify.alerts import send_alert
from gateway.observe import metrics
from gateway.observe.logs import get_logger, safe_exception
from gateway.pipeline.context import Context
from gateway.service import retention
from gateway.service.escalate import escalate
from gateway.service.keys import key_owners, retire_gateway_key
from gateway.store.api import Tx
from gateway.store.views import queue_counts

log = get_logger("watch")

DAILY = dt.timedelta(days=1)
ESCALATION_CHECK = dt.timedelta(seconds=30)  # also how often the metrics gauges are updated
KEY_GAUGE_EVERY = dt.timedelta(minutes=5)
WARN_DAYS = (30, 14, 7, 1)


def warning_threshold(expires: dt.datetime, now: dt.datetime) -> int | None:
    """The smallest of WARN_DAYS that the time left is within, or None when it is further off."""
    left = expires - now
    within = [days for days in WARN_DAYS if left <= dt.timedelta(days=days)]
    return min(within) if within else None


async def retire_ended_overlaps(ctx: Context, now: dt.datetime) -> list[str]:
    retired = []
    for row in await ctx.store.directory.gateway_keys():
        if row.state == "previous" and row.decrypt_until and \
                from_iso(row.decrypt_until) <= now:
            await retire_gateway_key(ctx, row.fingerprint, "its overlap ended")
            log.info("key.retired", fingerprint=row.fingerprint)
            retired.append(row.fingerprint)
    return retired


async def expiring_keys(ctx: Context) -> list[tuple[str, str, dt.datetime]]:
    """(fingerprint, owner, expiry) of every pinned key in use that has an expiry date."""
    owners = await key_owners(ctx)
    found = []
    for info in await asyncio.to_thread(list_key_infos, ctx.gpg):
        owner = owners.get(info.fingerprint)
        if owner is not None and info.expires is not None and "retired" not in owner[0]:
            found.append((info.fingerprint, owner[0], info.expires))
    return found


async def warn_expiring(ctx: Context, now: dt.datetime) -> list[tuple[str, int]]:
    """Warn once per key and threshold; returns what was warned about."""
    warned = []
    for fingerprint, owner, expires in await expiring_keys(ctx):
        threshold = warning_threshold(expires, now)
        if threshold is None:
            continue
        key = f"key_warned:{fingerprint}:{expires.isoformat()}"
        last = await ctx.store.meta.get(key)
        if last is not None and int(last) <= threshold:
            continue

        async def record(tx: Tx, key: str = key, threshold: int = threshold,
                         fingerprint: str = fingerprint, owner: str = owner,
                         expires: dt.datetime = expires) -> None:
            await tx.meta.set(key, str(threshold))
            await tx.receipts.append("key.expiring", at=now, fingerprint=fingerprint,
                                     owner=owner, expires=expires.isoformat(),
                                     within_days=threshold)

        await ctx.store.write(record)
        log.warning("key.expiring", fingerprint=fingerprint, owner=owner,
                    expires=expires.isoformat(), within_days=threshold)
        await send_alert(ctx, "key.expiring", f"a key expires within {threshold} days", [
            f"Key {fingerprint} ({owner}) expires on {expires:%Y-%m-%d %H:%M} UTC.",
            "Ask its owner for an updated key and take it in with `hwc-gateway keys update`,"
            " or replace it (`schools set-key`, `senders add-key`, `keys rotate`).",
        ])
        warned.append((fingerprint, threshold))
    return warned


async def update_metrics(ctx: Context, now: dt.datetime, with_keys: bool) -> None:
    """The gauges, from one look at the store (and, now and then, at the keys)."""
    counts = await queue_counts(ctx.store)
    first = await ctx.store.notices.oldest_queued()
    oldest = now - from_iso(first) if first else None
    deadlines = [deadline(from_iso(r.accepted_at), ctx.config.schedule)
                 for r in await ctx.store.signals.open()]
    expiry = [(owner.split(" ", 1)[0], expires - now)
              for _, owner, expires in (await expiring_keys(ctx) if with_keys else [])]
    waiting = await ctx.store.pickups.waiting()
    metrics.set_gauges(counts=counts, oldest=oldest,
                       next_deadline=min(deadlines) - now if deadlines else None,
                       key_expiry=expiry, pickup_waiting=len(waiting),
                       pickup_expiry=min(from_iso(p.expires_at) for p in waiting) - now
                       if waiting else None)


@dataclass
class Watch:
    next_daily: dt.datetime | None = None
    next_escalation: dt.datetime | None = None
    next_keys_gauge: dt.datetime | None = None

    async def tick(self, ctx: Context) -> None:
        now = ctx.clock()
        jobs: list[Callable[[Context, dt.datetime], Awaitable[object]]] = []
        if self.next_escalation is None or now >= self.next_escalation:
            self.next_escalation = now + ESCALATION_CHECK
            with_keys = self.next_keys_gauge is None or now >= self.next_keys_gauge
            if with_keys:
                self.next_keys_gauge = now + KEY_GAUGE_EVERY
            jobs += [escalate, functools.partial(update_metrics, with_keys=with_keys)]
        if self.next_daily is None or now >= self.next_daily:
            self.next_daily = now + DAILY
            jobs += [retention.purge, retire_ended_overlaps, warn_expiring]
        for job in jobs:
            try:
                await job(ctx, now)
            except Exception as exc:
                name = getattr(getattr(job, "func", job), "__name__", "job")
                log.error("watch.job_failed", job=name,
                          **safe_exception(exc))
