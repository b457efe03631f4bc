"""The enrolment mail: how a pickup contact learns where to enrol, and the outbox kind that
sends it.

Takes a `Context`, the contact's school, address and link token, and until when the invitation
holds. `enrolment_body` (pure) writes the Dutch text for a school's contact person: who sends it
(leerplicht of the municipality, from the gateway's address), what the pickup page is, the link
`{public_url}/inschrijven/{token}`, that the code comes by phone, that they then make a passkey
(or, where `[web] allow_totp`, use an authenticator app), until when the link works (in
`[schedule] timezone`) and whom to ask (`[web] helpdesk`). Nothing about a child.

`queue_enrolment` composes the mail (plain text, quoted-printable: it carries a link, not a
notice) and queues it in the outbox as kind "enrol", inside the caller's transaction. The mail
holds the token, so it is stored sealed with the gateway's vault, bound to its Message-ID
(`enrol:<message-id>`): the database alone does not carry a usable link. `ENROLMENTS` is the
outbox kind: it opens the mail only to send it, over the outbox's verified-TLS path; sent, the
stored mail is erased as every sent outbox mail is, and failed as well (a new invitation, not a
retry, renews a link). Before each attempt it checks that the invitation is still the
contact's open one (not replaced by a re-enrolment, used, expired, or its contact removed) and
that the pickup page is on.
Receipts `enrolment_sent`, `enrolment_deferred`, `enrolment_failed`, `enrolment_parked` name
the school and the contact; log events `enrolment_mail.*` the school and the outbox id only.
Fails: `queue_enrolment` raises nothing of its own (the store's errors pass); the kind's
`message` raises VaultError on a blob that does not open (a crash, counted as such).
"""

from __future__ import annotations

import datetime as dt
import email.message
import email.policy
import email.utils
from typing import Any

from gateway.core.inert import inert
from gateway.core.policy import Done, Failed, Fate, Parked, Retry, Verdict
from gateway.core.records import OutboxRecord, from_iso
from gateway.core.timetext import moment_nl
from gateway.core.validate import HostPort
from gateway.crypto.pickupbox import token_digest
from gateway.delivery.seal import make_message_id
from gateway.notify.alerts import send_alert
from gateway.notify.outbox import Kind, attempt_detail, crash_detail, fate_word
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("enrolment")

SUBJECT = "Uitnodiging voor de beveiligde ophaalpagina van Handle with Care"
ENROL_PATH = "/inschrijven/"
REPLACED = "the invitation was replaced or its contact removed"
USED = "the invitation was used already"
EXPIRED = "the invitation expired before its mail could go"
WEB_OFF = "the pickup page is off ([web] listen is empty)"


def enrolment_link(public_url: str, token: str) -> str:
    """The page where the contact enrols."""
    return f"{public_url.rstrip('/')}{ENROL_PATH}{token}"


def enrolment_body(*, school: str, link: str, until: str, allow_totp: bool, helpdesk: str,
                   gateway_address: str) -> str:
    """Pure: the text of the enrolment mail. `school` is the school's name as the directory has
    it (made inert here), `until` the end of the invitation as `moment_nl` says it."""
    app = ([
        "   Lukt het niet met een passkey? Dan kunt u in plaats daarvan een app op uw",
        "   telefoon gebruiken die inlogcodes maakt (een authenticator-app, zoals Microsoft",
        "   Authenticator of Google Authenticator). De pagina legt uit hoe.",
    ] if allow_totp else [])
    lines = [
        "Beste contactpersoon,",
        "",
        "Dit bericht komt van de afdeling Leerplicht van uw gemeente, verstuurd via het",
        f"beveiligde berichtensysteem van Handle with Care ({gateway_address}).",
        "",
        f"U bent aangemeld als contactpersoon van {inert(school)} voor Handle with Care.",
        "Via Handle with Care krijgt uw school vertrouwelijke berichten van de gemeente. U",
        "leest zo'n bericht op een beveiligde webpagina: u krijgt dan een e-mail met een link,",
        "en opent het bericht met uw telefoon of computer.",
        "",
        "Daarvoor meldt u zich nu eenmalig aan:",
        "",
        "1. Open deze link:",
        f"   {link}",
        "2. Vul de code in die u telefonisch krijgt van de afdeling Leerplicht. De code",
        "   staat bewust niet in deze e-mail.",
        "3. Maak een passkey aan op uw telefoon of computer. U bevestigt die later met uw",
        "   vingerafdruk, uw gezicht of de pincode van uw apparaat; een wachtwoord is niet",
        "   nodig.",
        *app,
        "",
        f"De link werkt tot {until}.",
        "Daarna kunt u een nieuwe uitnodiging vragen.",
        "",
        f"Vragen, of werkt de link niet? {inert(helpdesk)}",
        "",
        "Hebt u deze uitnodiging niet verwacht? Open de link dan niet en neem contact op met",
        "de afdeling Leerplicht van uw gemeente.",
    ]
    return "\n".join(lines) + "\n"


def enrolment_mail(body: str, *, sender: str, recipient: str, message_id: str,
                   now: dt.datetime) -> bytes:
    """Pure: the mail, text/plain in UTF-8 quoted-printable (7-bit clean for every relay),
    CRLF line ends, marked as sent by a machine (RFC 3834: no auto-replies)."""
    mail = email.message.EmailMessage(policy=email.policy.SMTP)
    mail["From"] = sender
    mail["To"] = recipient
    mail["Subject"] = SUBJECT
    mail["Date"] = email.utils.format_datetime(now)
    mail["Message-ID"] = message_id
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(body, charset="utf-8", cte="quoted-printable")
    return mail.as_bytes()


def sealed_aad(message_id: str) -> str:
    """What binds the stored mail to its outbox row (the row's Message-ID)."""
    return f"enrol:{message_id}"


async def queue_enrolment(ctx: Context, tx: Tx, *, school: str, school_name: str, email: str,
                          token: str, expires_at: dt.datetime, now: dt.datetime) -> int:
    """Compose the enrolment mail and queue it, vault-sealed, in the caller's transaction
    (the one that makes the invitation); the outbox id."""
    config = ctx.config
    body = enrolment_body(
        school=school_name or school, link=enrolment_link(config.web.public_url, token),
        until=moment_nl(expires_at, config.schedule.timezone), allow_totp=config.web.allow_totp,
        helpdesk=config.web.helpdesk, gateway_address=config.gateway.address)
    sender = config.gateway.address
    message_id = make_message_id(sender.rpartition("@")[2])
    message = enrolment_mail(body, sender=sender, recipient=email, message_id=message_id,
                             now=now)
    sealed = ctx.vault.seal({"token": token, "message": message.decode("ascii")},
                            sealed_aad(message_id))
    return await tx.outbox.insert_enrolment(school, email, message_id, sealed, now)


def _opened(ctx: Context, item: OutboxRecord) -> dict[str, Any]:
    return ctx.vault.open(item.message, sealed_aad(item.message_id))


def _message(ctx: Context, item: OutboxRecord) -> bytes:
    return str(_opened(ctx, item)["message"]).encode("ascii")


async def _check(ctx: Context, item: OutboxRecord) -> str | None:
    if not ctx.config.web.enabled:
        return WEB_OFF
    invitation = await ctx.store.pickups.enrolment_of(str(item.topic), item.recipient)
    if invitation is None or invitation.token_digest != token_digest(
            ctx.vault, str(_opened(ctx, item)["token"])):
        return REPLACED
    if invitation.used_at is not None:
        return USED
    if from_iso(invitation.expires_at) <= ctx.clock():
        return EXPIRED
    return None


async def _receipt(tx: Tx, item: OutboxRecord, fate: Fate, verdict: Verdict,
                   now: dt.datetime) -> None:
    detail = attempt_detail(item, fate, verdict, contact=item.recipient,
                            enrolment_mail=item.id)
    await tx.receipts.append(f"enrolment_{fate_word(fate)}", at=now, school=item.topic,
                             **detail)


async def _after(ctx: Context, item: OutboxRecord, fate: Fate, verdict: Verdict) -> None:
    code = verdict.reply[:3] if verdict.reply[:3].isdigit() else None
    if isinstance(fate, Done):
        log.info("enrolment_mail.sent", school=item.topic, enrolment_mail=item.id,
                 attempt=item.attempts, smtp_code=code)
    elif isinstance(fate, Retry):
        log.warning("enrolment_mail.deferred", school=item.topic, enrolment_mail=item.id,
                    attempt=item.attempts, smtp_code=code)
    elif isinstance(fate, Failed):
        log.warning("enrolment_mail.failed", school=item.topic, enrolment_mail=item.id,
                    attempt=item.attempts, smtp_code=code)
        await send_alert(ctx, "enrolment_mail.failed",
                         f"enrolment mail for school {item.topic} not sent", [
            f"The enrolment mail to a contact of school {item.topic} was not sent after"
            f" {item.attempts} attempt(s): {verdict.reply}",
            "The contact cannot enrol with it. `hwc-gateway receipts list` names the contact;"
            f" `hwc-gateway schools reenrol {item.topic} --email ADDR` sends a new invitation"
            " once the cause is fixed.",
        ])


async def _crashed(tx: Tx, item: OutboxRecord, fate: Retry | Parked, why: str,
                   now: dt.datetime) -> None:
    word, detail = crash_detail(item, fate, why, contact=item.recipient,
                                enrolment_mail=item.id)
    await tx.receipts.append(f"enrolment_{word}", at=now, school=item.topic, **detail)


async def _parked(ctx: Context, item: OutboxRecord, crashes: int) -> None:
    await send_alert(ctx, "enrolment_mail.parked",
                     f"enrolment mail for school {item.topic} parked", [
        f"The enrolment mail to a contact of school {item.topic} crashed the gateway"
        f" {crashes} times and is parked: it is not tried again.",
        f"`hwc-gateway schools reenrol {item.topic} --email ADDR` sends a new invitation.",
    ])


def _destination(ctx: Context, item: OutboxRecord) -> HostPort | None:
    """The contact's school's route, as its notices take, else the relay."""
    return ctx.snapshot.routes.get(str(item.topic)) or ctx.config.delivery.relay


ENROLMENTS = Kind("enrol", "enrolment_mail", _check, _receipt, _after, _crashed, _parked,
                  _message, erase_failed=True, destination=_destination)
