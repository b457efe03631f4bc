"""Alerts: telling a person, by mail, what needs a person.

Takes a subject and lines of text that hold references, school codes and fingerprints only,
never personal data (what others wrote into them, such as a school server's reply, is made
inert: gateway.core.inert). Every alert is first a log event (`alert.raised`), so with no
address configured, or when the mail never goes out, the journal still has it. With
`[alerts] address` set, the mail is composed once (signed by the gateway and encrypted to
`[alerts] key` when one is set, and never in plaintext when one is set but unusable; plain
text only when none is set) and queued in the outbox (gateway.notify.outbox), which makes one
attempt at once through `[delivery] relay` over a connection of its own (STARTTLS verified)
and then retries it with the notices' backoff from the delivery loop, as long as a notice
would be retried: an alert about a failing school server does not wait behind that server.
`alert.sent` or `alert.not_sent` is logged when the outbox is done with it. An alert whose own
attempts keep crashing is parked and logged (`alert.parked`), never alerted about: an alert
about an alert would loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from gateway.core.inert import inert
from gateway.core.policy import Done, Failed, Fate, Parked, Retry, Verdict
from gateway.core.records import OutboxRecord
from gateway.crypto.gpg import GpgError
from gateway.notify.outbox import Kind, compose, deliver_now
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("alerts")


async def send_alert(ctx: Context, kind: str, subject: str, lines: Sequence[str]) -> bool:
    """Log the alert and queue its mail where configured, with one attempt at once; True
    when a server accepted the mail at that attempt."""
    config = ctx.config
    log.warning("alert.raised", kind=kind, subject=inert(subject))
    address = config.alerts.address
    if not address:
        return False
    if config.delivery.relay is None:
        log.error("alert.not_sent", kind=kind, reason="no [delivery] relay to send alerts through")
        return False
    # Lines carry what others wrote (a school server's reply, a key's owner): made inert, so
    # the mail cannot steer the reader's terminal or fake a line or a header (issue 11).
    body = "\n".join([*(inert(line) for line in lines), "", "-- hwc-gateway"]) + "\n"
    snapshot = ctx.snapshot
    key = config.alerts.key or None
    if key is not None and (key not in snapshot.alert_keys or snapshot.signing_key is None):
        log.error("alert.not_sent", kind=kind, reason="[alerts] key is not usable")
        return False
    now = ctx.clock()
    try:
        mail = await compose(ctx, body, subject=f"hwc-gateway: {inert(subject)}",
                             recipient=address, fingerprint=key, signer=snapshot.signing_key,
                             now=now)
    except GpgError:
        log.error("alert.not_sent", kind=kind, reason="gpg could not seal the alert")
        return False
    alert_id = await ctx.store.write(lambda tx: tx.outbox.insert_alert(
        kind, address, key or "", mail.message_id, mail.message, now))
    log.info("alert.queued", kind=kind, alert=alert_id)
    return isinstance(await deliver_now(ctx, ALERTS, alert_id), Done)


async def _check(ctx: Context, item: OutboxRecord) -> str | None:
    return None  # sealed to the key that was pinned when it was raised: still the reader's


async def _receipt(tx: Tx, item: OutboxRecord, fate: Fate, verdict: Verdict,
                   now: dt.datetime) -> None:
    return None  # alerts are in the journal, not in the receipts (as before the outbox)


async def _after(ctx: Context, item: OutboxRecord, fate: Fate, verdict: Verdict) -> None:
    reply = inert(verdict.reply)
    if isinstance(fate, Done):
        log.info("alert.sent", kind=item.topic, alert=item.id, reply=reply)
    elif isinstance(fate, Retry):
        log.warning("alert.deferred", kind=item.topic, alert=item.id, attempt=item.attempts,
                    reply=reply)
    elif isinstance(fate, Failed):
        log.error("alert.not_sent", kind=item.topic, alert=item.id, reason=reply)


async def _crashed(tx: Tx, item: OutboxRecord, fate: Retry | Parked, why: str,
                   now: dt.datetime) -> None:
    return None


async def _parked(ctx: Context, item: OutboxRecord, crashes: int) -> None:
    # Logged only: queuing an alert about an alert that cannot be sent would loop.
    log.error("alert.not_sent", kind=item.topic, alert=item.id,
              reason=f"parked after {crashes} crashes")


ALERTS = Kind("alert", "alert", _check, _receipt, _after, _crashed, _parked)
