"""Alerts: telling a person, by mail, what needs a person.

Takes a subject and lines of text that hold references, school codes and fingerprints only,
never personal data (what others wrote into them, such as a school server's reply, is made
inert: gateway.core.inert); sends one mail to `[alerts] address` through `[delivery] relay` with
STARTTLS verified, signed by the gateway and encrypted to `[alerts] key` when one is set (and
never in plaintext when one is set but unusable). Every alert is also a log event, so with no
address configured, or when the mail fails, the journal still has it. One attempt: an alert
about a failing delivery path must not wait in that same path.
"""

from __future__ import annotations

import email.utils
from collections.abc import Sequence

from gateway.core.inert import inert
from gateway.crypto.gpg import GpgError
from gateway.delivery import deliver
from gateway.delivery.seal import make_message_id, seal_text
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context

log = get_logger("alerts")


def plain_message(body: str, *, subject: str, sender: str, recipient: str, message_id: str,
                  date: str) -> bytes:
    headers = [("From", sender), ("To", recipient), ("Subject", subject), ("Date", date),
               ("Message-ID", message_id), ("MIME-Version", "1.0"),
               ("Content-Type", 'text/plain; charset="utf-8"'),
               ("Content-Transfer-Encoding", "8bit")]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8")


async def send_alert(ctx: Context, kind: str, subject: str, lines: Sequence[str]) -> bool:
    """Log the alert and mail it where configured; True when a server accepted the mail."""
    config = ctx.config
    log.warning("alert.raised", kind=kind, subject=inert(subject))
    if not config.alerts.address:
        return False
    relay = config.delivery.relay
    if relay is None:
        log.error("alert.not_sent", kind=kind, reason="no [delivery] relay to send alerts through")
        return False
    sender = config.gateway.address
    now = ctx.clock()
    message_id = make_message_id(sender.rpartition("@")[2])
    # Lines carry what others wrote (a school server's reply, a key's owner): made inert, so
    # the mail cannot steer the reader's terminal or fake a line or a header (issue 11).
    body = "\n".join([*(inert(line) for line in lines), "", "-- hwc-gateway"]) + "\n"
    full_subject = f"hwc-gateway: {inert(subject)}"
    snapshot = ctx.snapshot
    if config.alerts.key:
        if config.alerts.key not in snapshot.alert_keys or snapshot.signing_key is None:
            log.error("alert.not_sent", kind=kind, reason="[alerts] key is not usable")
            return False
        try:
            message = await seal_text(ctx.gpg, body, subject=full_subject, sender=sender,
                                      recipients=[config.alerts.address],
                                      fingerprints=[config.alerts.key],
                                      signer=snapshot.signing_key, message_id=message_id,
                                      now=now)
        except GpgError:
            log.error("alert.not_sent", kind=kind, reason="gpg could not seal the alert")
            return False
    else:
        message = plain_message(body, subject=full_subject, sender=sender,
                                recipient=config.alerts.address, message_id=message_id,
                                date=email.utils.format_datetime(now))
    outcome = await deliver.send(message, mail_from=sender, recipients=[config.alerts.address],
                                 destination=relay,
                                 context=deliver.tls_context(config.delivery.ca_file),
                                 timeout=config.delivery.timeout_seconds,
                                 local_hostname=config.smtp.hostname)
    if outcome.result is deliver.Result.DELIVERED:
        log.info("alert.sent", kind=kind, reply=inert(outcome.reply))
        return True
    log.error("alert.not_sent", kind=kind, reason=inert(outcome.reply))
    return False
