"""The enrolment mail of a pickup contact: queued by the command line, sent by the running
gateway's outbox to a real loopback relay over verified STARTTLS, holding the only copy of the
link (real gateway, real SQLite, real SMTP)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import re
from pathlib import Path

import pytest
from conftest import GATEWAY, SCHOOL_C, Harness, HarnessFactory, raw_sql, start_relay
from structlog.testing import capture_logs
from test_cli import run_async
from test_cli_pickup import CODE_LINE, web_config

from gateway.core.records import from_iso
from gateway.core.timetext import moment_nl
from gateway.crypto import pickupbox
from gateway.devkit.demokit import Received, SchoolInbox
from gateway.notify.enrolment import SUBJECT, enrolment_body

PICKUP = "ib@sintjozef.example.nl"
HELPDESK = "Bel Leerplicht Utrecht: 030 123 45 67."
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/inschrijven/([A-Za-z0-9_-]{43})\b")


def state_bytes(h: Harness) -> bytes:
    """Everything the database holds on disk: the file, its write-ahead log and its index."""
    path = h.ctx.config.storage.path
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
                    if p.exists())


def to_contact(relay: SchoolInbox) -> list[Received]:
    return [m for m in relay.received if m.rcpt_tos == [PICKUP]]


def body_of(mail: Received) -> str:
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


async def invite(h: Harness, capsys: pytest.CaptureFixture[str], *verb: str) -> str:
    """Run `schools add --pickup` (or the verb given) on the running gateway's config; the
    printed code."""
    args = verb or ("add", SCHOOL_C, "--email", PICKUP, "--pickup")
    code, out, err = await run_async(capsys, "--config", str(h.ctx.config.path), "schools",
                                     *args)
    assert code == 0, err
    found = CODE_LINE.search(out)
    assert found, out
    return found["code"]


async def test_enrolment_mail_is_sent_by_the_outbox_and_only_it_holds_the_link(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """`schools add --pickup` queues the enrolment mail; the running gateway's outbox sends it
    through the relay (verified STARTTLS). The mail is Dutch, plain, machine-sent, holds the
    link whose token's digest finds the invitation, the end of the invitation in the
    configured zone and the helpdesk, and nothing of a child; the code printed is the
    invitation's. Neither the token nor the code is in the database before or after sending,
    nor in any log line; the sent mail is erased from the outbox."""
    h = await harness_factory(extra_config=web_config())
    relay = await start_relay(h)
    with capture_logs() as logged:
        phone_code = await invite(h, capsys)
        queued = state_bytes(h)
        await h.drain()
    [mail] = to_contact(relay)
    assert mail.mail_from == GATEWAY
    assert max(mail.data) < 128, "7-bit clean for every relay"
    assert (mail.header("From"), mail.header("To"), mail.header("Subject"),
            mail.header("Auto-Submitted")) == (GATEWAY, PICKUP, SUBJECT, "auto-generated")
    body = body_of(mail)
    [(origin, token)] = LINK.findall(body)
    assert origin == h.ctx.config.web.public_url
    invitation = await h.ctx.store.pickups.enrolment(pickupbox.token_digest(h.ctx.vault, token))
    assert invitation is not None and (invitation.school, invitation.email) == (SCHOOL_C, PICKUP)
    assert invitation.used_at is None
    assert invitation.code_digest == pickupbox.code_digest(h.ctx.vault, SCHOOL_C, PICKUP,
                                                           phone_code)
    until = moment_nl(from_iso(invitation.expires_at), h.ctx.config.schedule.timezone)
    for said in ("Leerplicht van uw gemeente", GATEWAY, "Sint-Jozefschool", "telefonisch",
                 "passkey", "authenticator-app", f"De link werkt tot {until}.", HELPDESK):
        assert said in " ".join(body.split()), said
    assert "kind" not in body.lower().replace("handle with care", "")
    secrets = (token, phone_code, phone_code.replace("-", ""))
    sent = state_bytes(h)
    for secret in secrets:
        assert secret.encode() not in queued and secret.encode() not in sent, secret
    assert not any(s in json.dumps(logged, default=str) for s in (*secrets, PICKUP))
    assert any(e["event"] == "enrolment_mail.sent" and e["school"] == SCHOOL_C for e in logged)
    [row] = raw_sql(h.ctx.config.storage.path, "SELECT * FROM outbox WHERE kind = 'enrol'")
    assert (row["state"], bytes(row["message"])) == ("sent", b"")
    receipts = [r for r in await h.receipts() if r.event == "enrolment_sent"]
    assert len(receipts) == 1 and receipts[0].school == SCHOOL_C
    assert receipts[0].detail["contact"] == PICKUP


async def test_reenrolment_mails_a_new_link_and_the_old_one_opens_nothing(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """After `schools reenrol` the contact's passkey is gone from the store and the running
    gateway's directory, the first link's token finds no invitation, and a second mail brings
    a new link that does, with a new code."""
    h = await harness_factory(extra_config=web_config())
    relay = await start_relay(h)
    first_code = await invite(h, capsys)
    await h.drain()
    [(_, first)] = LINK.findall(body_of(to_contact(relay)[0]))
    now = dt.datetime.now(dt.UTC)
    await h.ctx.store.write(lambda tx: tx.pickups.add_credential(
        SCHOOL_C, PICKUP, "passkey", now, credential_id="cred-1", public_key=b"cose"))
    assert (SCHOOL_C, PICKUP) in (await h.ctx.refresh()).enrolled
    second_code = await invite(h, capsys, "reenrol", SCHOOL_C, "--email", PICKUP)
    assert second_code != first_code
    assert await h.ctx.store.pickups.credential("cred-1") is None
    assert (SCHOOL_C, PICKUP) not in (await h.ctx.refresh()).enrolled
    await h.drain()
    mails = to_contact(relay)
    assert len(mails) == 2
    [(_, second)] = LINK.findall(body_of(mails[1]))
    vault = h.ctx.vault
    assert await h.ctx.store.pickups.enrolment(pickupbox.token_digest(vault, first)) is None
    invitation = await h.ctx.store.pickups.enrolment(pickupbox.token_digest(vault, second))
    assert invitation is not None and invitation.code_digest == pickupbox.code_digest(
        vault, SCHOOL_C, PICKUP, second_code)


async def test_a_mail_superseded_before_it_went_is_never_sent(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """Re-enrolled before the outbox sent the first mail: only the second one goes; the
    first is erased unsent."""
    h = await harness_factory(extra_config=web_config())
    relay = await start_relay(h)
    await invite(h, capsys)
    await invite(h, capsys, "reenrol", SCHOOL_C, "--email", PICKUP)
    await h.drain()
    [mail] = to_contact(relay)
    [(_, token)] = LINK.findall(body_of(mail))
    assert await h.ctx.store.pickups.enrolment(pickupbox.token_digest(h.ctx.vault, token))


async def test_an_invitation_that_expired_in_the_queue_is_not_mailed(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """An enrolment mail whose invitation ended before the outbox could send it (the relay was
    down for days) is not sent: receipt `enrolment_failed`, an alert, nothing at the contact,
    and the stored mail (with its link) is erased."""
    h = await harness_factory(extra_config=web_config(enrolment_hours=1))
    relay = await start_relay(h)
    await invite(h, capsys)
    h.clock.advance(hours=2)
    with capture_logs() as logged:
        await h.drain()
    assert to_contact(relay) == []
    [failed] = [r for r in await h.receipts() if r.event == "enrolment_failed"]
    assert failed.school == SCHOOL_C and "expired" in failed.detail["reply"]
    [row] = raw_sql(h.ctx.config.storage.path, "SELECT * FROM outbox WHERE kind = 'enrol'")
    assert (row["state"], bytes(row["message"])) == ("failed", b""), "the link stays behind"
    assert any(e["event"] == "alert.raised" and e["kind"] == "enrolment_mail.failed"
               for e in logged)


def test_enrolment_text_follows_the_deployment() -> None:
    """Pure: the app paragraph only where `[web] allow_totp`; a school name from DUO is made
    inert; the end of the invitation is said the Dutch way in the zone, summer or winter."""
    args = {"school": "De Regenboog\x1b[2J", "link": "https://ophalen.example.nl/inschrijven/t",
            "until": "x", "helpdesk": HELPDESK, "gateway_address": GATEWAY}
    with_app = enrolment_body(allow_totp=True, **args)
    without = enrolment_body(allow_totp=False, **args)
    assert "authenticator-app" in with_app and "authenticator-app" not in without
    assert "\x1b" not in with_app and "De Regenboog\\x1b[2J" in with_app
    zone = "Europe/Amsterdam"
    assert moment_nl(dt.datetime(2026, 12, 4, 18, 30, tzinfo=dt.UTC), zone) == \
        "vrijdag 4 december 2026 om 19:30 uur"
    assert moment_nl(dt.datetime(2026, 7, 1, 6, 5, tzinfo=dt.UTC), zone) == \
        "woensdag 1 juli 2026 om 08:05 uur"
