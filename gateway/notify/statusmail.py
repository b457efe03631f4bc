"""Status mails in the outbox: what is particular to them when the outbox delivers one.

Takes a claimed status mail (an `OutboxRecord` of kind "status", queued by
gateway.notify.report) and the fate the outbox's stage gave its attempt. Produces, in the
transaction that applies the fate, its receipt (`status_sent`, `status_deferred`,
`status_failed`; a crash: `status_deferred`, or `status_parked` at the last one) and, once
applied, its log event (`status_mail.sent`, `.deferred`, `.failed`) and, when it failed or was
parked, an alert: the sender has not been told what became of the signal. A mail whose sender,
or whose key, is no longer pinned when it is due is not sent (it fails, with an alert), as a
notice is never sent to a key the directory no longer holds (issue 11).
Fails: as the store and gateway.notify.alerts.
"""

from __future__ import annotations

import datetime as dt

from gateway.core.policy import Fate, Parked, Retry, Verdict
from gateway.core.records import OutboxRecord
from gateway.notify.alerts import send_alert
from gateway.notify.outbox import Kind, attempt_detail, crash_detail, fate_word
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("report")

NOT_PINNED = "the sender or its key is no longer pinned"


async def _check(ctx: Context, item: OutboxRecord) -> str | None:
    snapshot = await ctx.refresh()
    sender = snapshot.senders.get(str(item.sender))
    if sender is None or item.fingerprint not in sender.fingerprints:
        return NOT_PINNED
    return None


async def _receipt(tx: Tx, item: OutboxRecord, fate: Fate, verdict: Verdict,
                   now: dt.datetime) -> None:
    detail = attempt_detail(item, fate, verdict, sender=item.sender, status_mail=item.id)
    await tx.receipts.append(f"status_{fate_word(fate)}", at=now, ref=item.about, **detail)


async def _after(ctx: Context, item: OutboxRecord, fate: Fate, verdict: Verdict) -> None:
    event = fate_word(fate)
    code = verdict.reply[:3] if verdict.reply[:3].isdigit() else None
    if event == "sent":
        log.info("status_mail.sent", ref=item.ref, child=item.child, sender=item.sender,
                 status_mail=item.id, attempt=item.attempts, smtp_code=code)
    elif event == "deferred":
        log.warning("status_mail.deferred", ref=item.ref, child=item.child, sender=item.sender,
                    status_mail=item.id, attempt=item.attempts, smtp_code=code)
    else:
        log.warning("status_mail.failed", ref=item.ref, child=item.child, sender=item.sender,
                    status_mail=item.id, attempt=item.attempts, smtp_code=code)
    if event == "failed":
        await send_alert(ctx, "status_mail.failed",
                         f"status mail {item.about} to {item.sender} failed", [
            f"The status mail about {item.about} for sender {item.sender} could not be"
            f" delivered after {item.attempts} attempt(s).",
            f"The answer was: {verdict.reply}",
            "The sender has not been told what became of this signal: tell them another way"
            " (`hwc-gateway receipts list` shows the outcomes by reference).",
        ])


async def _crashed(tx: Tx, item: OutboxRecord, fate: Retry | Parked, why: str,
                   now: dt.datetime) -> None:
    word, detail = crash_detail(item, fate, why, sender=item.sender, status_mail=item.id)
    await tx.receipts.append(f"status_{word}", at=now, ref=item.about, **detail)


async def _parked(ctx: Context, item: OutboxRecord, crashes: int) -> None:
    await send_alert(ctx, "status_mail.parked",
                     f"status mail {item.about} to {item.sender} parked", [
        f"The status mail about {item.about} for sender {item.sender} crashed the gateway"
        f" {crashes} times and is parked: it is not tried again.",
        "The sender has not been told what became of this signal: tell them another way"
        " (`hwc-gateway receipts list` shows the outcomes by reference).",
    ])


STATUS_MAILS = Kind("status", "status_mail", _check, _receipt, _after, _crashed, _parked)
