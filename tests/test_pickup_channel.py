"""The pickup channel: who it reaches, the neutral notification mail on the real path, the box
only its link opens, and what the database keeps (issue 15)."""

from __future__ import annotations

import datetime as dt
import re
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

from conftest import (
    CONTACT_A,
    PUPILS_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    Harness,
    HarnessFactory,
    free_port,
    raw_sql,
)
from test_process import CANARY_BIRTH, CANARY_NAME, CANARY_STRINGS

from gateway.admin.pupils import pupils_import
from gateway.admin.status import status
from gateway.core.model import CODEWORD, Contact
from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.core.timetext import moment_nl
from gateway.crypto import pickupbox
from gateway.delivery.channel import CHANNELS, ContactEntry, hold_reason, reachable_contacts
from gateway.delivery.pickup import (
    HELD_NO_PAGE,
    STALE_CHANNEL,
    STALE_NOT_ENROLLED,
    STALE_REMOVED,
    PickupChannel,
)
from gateway.delivery.pickupmail import SUBJECT, notification_text
from gateway.devkit.demokit import Received, json_payload
from gateway.pipeline.directory import Snapshot
from gateway.store.api import Tx

CHANNEL = PickupChannel()
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
URL = "https://ophalen.gemeente.example"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/bericht/([A-Za-z0-9_-]+)")


def web_config() -> str:
    """`[web]` on loopback, as behind a reverse proxy (a free port: the daemon may serve it)."""
    port = free_port()
    return f'[web]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://127.0.0.1:{port}"\n'


async def make_pickup_school(h: Harness, *, enrol: bool = True) -> None:
    """School A's contact becomes a pickup contact (no key); with `enrol`, with a passkey."""
    async def body(tx: Tx) -> None:
        await tx.directory.set_contact(SCHOOL_A, CONTACT_A, None, "pickup")
        if enrol:
            await enrol_contact(tx, h)

    await h.ctx.store.write(body)
    await h.ctx.refresh(force=True)


async def enrol_contact(tx: Tx, h: Harness) -> None:
    """A passkey for school A's contact, as the enrolment page would store it."""
    await tx.pickups.add_credential(SCHOOL_A, CONTACT_A, "passkey", h.clock(),
                                    credential_id="Y3JlZGVudGlhbC1h", public_key=b"\xa5\x01")


def mail_of(item: Received) -> tuple[EmailMessage, str]:
    """The notification mail as the contact's mail client shows it: headers and text."""
    msg = BytesParser(policy=policy.default).parsebytes(item.data)
    assert isinstance(msg, EmailMessage)
    return msg, str(msg.get_content())


def link_of(text: str) -> tuple[str, str]:
    """The page's origin and the link's token in a notification's text."""
    found = LINK.search(text)
    assert found is not None, text
    return found.group(1), found.group(2)


def database_bytes(h: Harness) -> bytes:
    """Everything the database files hold, as a thief of the disk or a backup would see it."""
    path = Path(h.ctx.config.storage.path)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


# -- the rules, pure ------------------------------------------------------------------------


def snapshot(url: str = URL, enrolled: bool = True) -> Snapshot:
    contacts = {SCHOOL_A: (Contact("p@s.nl", "", "pickup"), Contact("q@s.nl", "", "pickup")),
                SCHOOL_B: (Contact("k@s.nl", "b" * 40),)}
    return Snapshot("1", NOW, contacts=contacts, signing_key=None, pickup_url=url,
                    enrolled=frozenset({(SCHOOL_A, "p@s.nl"), (SCHOOL_B, "k@s.nl")})
                    if enrolled else frozenset())


def test_a_pickup_contact_is_reachable_once_enrolled_and_the_page_is_on() -> None:
    """Reachable: a pickup contact of its school with a second factor, while `[web]` is on;
    no signing key is needed; a school whose contacts are not enrolled is held as having no
    usable contact, and released once one enrols."""
    p = ContactEntry(SCHOOL_A, "p@s.nl", "", "pickup")
    assert reachable_contacts(SCHOOL_A, snapshot(), NOW) == (p,)
    assert hold_reason(SCHOOL_A, snapshot(), NOW) is None
    assert not CHANNEL.reachable(ContactEntry(SCHOOL_B, "p@s.nl", "", "pickup"),
                                 snapshot(), NOW).ok
    assert not CHANNEL.reachable(ContactEntry(SCHOOL_B, "k@s.nl", "", "pickup"),
                                 snapshot(), NOW).ok, "an openpgp contact is not a pickup one"
    assert reachable_contacts(SCHOOL_A, snapshot(enrolled=False), NOW) == ()
    assert hold_reason(SCHOOL_A, snapshot(enrolled=False), NOW) == HELD_NO_USABLE_KEY
    assert reachable_contacts(SCHOOL_A, snapshot(url=""), NOW) == ()
    assert CHANNEL.ready(snapshot(url="")) == HELD_NO_PAGE
    assert CHANNEL.ready(snapshot()) is None
    assert CHANNELS["pickup"].name == "pickup"


def test_still_valid_only_while_every_recipient_is_an_enrolled_pickup_contact() -> None:
    """A sealed notification may go out while every recipient is still an enrolled pickup
    contact (keys play no part); a page switched off meanwhile does not stop it; the reason
    names removal, another channel, or a lost second factor."""
    snap = snapshot()
    assert CHANNEL.still_valid(["p@s.nl"], [], snap, SCHOOL_A, NOW) == []
    assert CHANNEL.still_valid(["p@s.nl"], [], snapshot(url=""), SCHOOL_A, NOW) == []
    assert CHANNEL.still_valid(["p@s.nl", "q@s.nl"], [], snap, SCHOOL_A, NOW) == [("q@s.nl", "")]
    assert CHANNEL.still_valid(["k@s.nl"], [], snap, SCHOOL_B, NOW) == [("k@s.nl", "")]
    assert CHANNEL.still_valid([], [], snap, SCHOOL_A, NOW) == [("", "")]
    assert CHANNEL.stale_reason([("x@s.nl", "")], {"p@s.nl": ""}) == STALE_REMOVED
    assert CHANNEL.stale_reason([("p@s.nl", "")], {"p@s.nl": "F" * 40}) == STALE_CHANNEL
    assert CHANNEL.stale_reason([("p@s.nl", "")], {"p@s.nl": ""}) == STALE_NOT_ENROLLED


def test_the_notification_text_is_plain_dutch_with_the_link_and_the_expiry() -> None:
    """The text names the link, the passkey (and the app only where allowed), the expiry on
    the schools' wall clock in Dutch, and the helpdesk."""
    expires = dt.datetime(2026, 12, 2, 7, 30, tzinfo=dt.UTC)  # 08:30 in Amsterdam
    assert moment_nl(expires, "Europe/Amsterdam") == "woensdag 2 december 2026 om 08:30 uur"
    text = notification_text(f"{URL}/bericht/TOKEN", moment_nl(expires, "Europe/Amsterdam"),
                             "Bel 030-1234567.", allow_app=True)
    assert f"    {URL}/bericht/TOKEN\n" in text and "passkey of met de code uit uw app" in text
    assert "De link werkt tot woensdag 2 december 2026 om 08:30 uur." in text
    assert "Vragen? Bel 030-1234567." in text and "Leerplicht" in text
    assert "app" not in notification_text("L", "X", "H", allow_app=False)


# -- the real path --------------------------------------------------------------------------


async def test_a_pickup_school_gets_a_neutral_mail_whose_link_opens_the_notice(
        harness_factory: HarnessFactory) -> None:
    """A signal for a pupil of a pickup school: the school's server gets one plain mail (the
    neutral subject, Auto-Submitted, over the same verified TLS) without name, birth date,
    school, reference, case reference or codeword; its link's token opens the box to the
    children; the database never holds the token, and once delivered no mail."""
    h = await harness_factory(extra_config=web_config())
    csv = PUPILS_CSV + f";{CANARY_NAME};{CANARY_BIRTH:%d-%m-%Y};{SCHOOL_A}\n"
    await pupils_import(h.ctx, csv.encode(), False)
    await make_pickup_school(h)
    payload = json_payload([{"name": CANARY_NAME, "birthdate": CANARY_BIRTH.isoformat()},
                            {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}],
                           reference="VT-CANARY-0042")
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    ref = (await h.send(h.signal(payload))).text.rsplit(" ", 1)[1]
    await h.drain()
    [queued] = raw_sql(h.ctx.config.storage.path, "SELECT id, parcel, channel FROM notices")
    assert queued["channel"] == "pickup" and queued["parcel"] != b""
    h.clock.advance(minutes=5)
    await h.drain()

    [item] = h.inboxes[SCHOOL_A].received
    msg, text = mail_of(item)
    assert (msg["Subject"], msg["From"], msg["To"]) == (SUBJECT, h.ctx.config.gateway.address,
                                                        CONTACT_A)
    assert msg["Auto-Submitted"] == "auto-generated" and item.rcpt_tos == [CONTACT_A]
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    origin, token = link_of(text)
    assert origin == h.ctx.config.web.public_url and pickupbox.well_formed_token(token)
    shown = item.data.decode("utf-8", "replace") + text
    for secret in [*CANARY_STRINGS, "Sanne", "Vries", SANNE_BIRTH.isoformat(),
                   f"{SANNE_BIRTH:%d-%m-%Y}", ref, SCHOOL_A, "Regenboog", CODEWORD]:
        assert secret not in shown, secret

    record = await h.ctx.store.pickups.get(pickupbox.token_digest(h.ctx.vault, token))
    assert record is not None and record.sealed is not None and record.ref == ref
    box = pickupbox.open_box(token, record.sealed, f"pickup:{msg['Message-ID']}")
    assert box["children"] == [
        {"name": CANARY_NAME, "birthdate": CANARY_BIRTH.isoformat(), "ref": f"{ref}-1"},
        {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(), "ref": f"{ref}-2"}]
    assert box["teacher_text"] == h.ctx.config.gateway.teacher_text
    [row] = raw_sql(h.ctx.config.storage.path, "SELECT parcel, state, ack_digest FROM notices")
    assert row["state"] == "delivered" and row["parcel"] == b""
    assert row["ack_digest"] == pickupbox.ack_digest(h.ctx.vault, token)
    stored = database_bytes(h)
    assert token.encode() not in stored and CANARY_NAME.encode() not in stored


async def test_the_queued_mail_is_sealed_under_the_vault(harness_factory: HarnessFactory) -> None:
    """While the notification waits for the school's server, the database holds neither the
    link nor the mail's text: only the vault opens the queued parcel."""
    h = await harness_factory(extra_config=web_config())
    await make_pickup_school(h)
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    await h.send(h.signal(sanne()))
    await h.drain()
    [row] = raw_sql(h.ctx.config.storage.path, "SELECT message_id, parcel FROM notices")
    stored = database_bytes(h)
    assert b"/bericht/" not in stored and SUBJECT.encode() not in stored
    opened = h.ctx.vault.open(bytes(row["parcel"]), f"pickup-mail:{row['message_id']}")
    assert set(opened) == {"mail"}


async def test_held_until_enrolled_then_released(harness_factory: HarnessFactory) -> None:
    """A child of a pickup school whose contact has no second factor yet is held (nothing is
    mailed); once a passkey is stored it is released, sealed and its notification sent."""
    h = await harness_factory(extra_config=web_config())
    await make_pickup_school(h, enrol=False)
    ref = (await h.send(h.signal(sanne()))).text.rsplit(" ", 1)[1]
    await h.drain()
    child = await h.ctx.store.children.get(ref, 1)
    assert child is not None and (child.state, child.reason) == ("held", HELD_NO_USABLE_KEY)
    assert h.inboxes[SCHOOL_A].received == []
    await h.ctx.store.write(lambda tx: enrol_contact(tx, h))
    await h.drain()
    events = [r.event for r in await h.receipts() if r.ref in (ref, f"{ref}-1")]
    assert "released" in events and "sealed" in events and "delivered" in events
    [item] = h.inboxes[SCHOOL_A].received
    assert mail_of(item)[0]["Subject"] == SUBJECT


async def test_held_while_the_page_is_off(harness: Harness) -> None:
    """Without `[web]` an enrolled pickup contact is not reachable: the child is held and
    nothing is mailed (never a fallback to ordinary mail); `status` says why."""
    await make_pickup_school(harness)
    ref = (await harness.send(harness.signal(sanne()))).text.rsplit(" ", 1)[1]
    await harness.drain()
    child = await harness.ctx.store.children.get(ref, 1)
    assert child is not None and child.state == "held"
    assert harness.inboxes[SCHOOL_A].received == []
    assert len(harness.inboxes[SCHOOL_B].received) == 0
    shown = await status(harness.ctx, True)
    assert shown.data["pickup_without_web"] == [SCHOOL_A]
    assert any("pickup page, but [web] is off" in line for line in shown.attention)


async def test_superseded_when_the_contact_is_removed_before_delivery(
        harness_factory: HarnessFactory) -> None:
    """A notification still waiting when its contact is removed never goes out: superseded
    with a fixed reason, its box erased, its child held again."""
    h = await harness_factory(extra_config=web_config())
    await make_pickup_school(h)
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    ref = (await h.send(h.signal(sanne()))).text.rsplit(" ", 1)[1]
    await h.drain()
    [notice] = await h.ctx.store.notices.all(states=("queued",))
    await h.ctx.store.write(lambda tx: tx.directory.remove_contact(SCHOOL_A, CONTACT_A))
    h.clock.advance(minutes=5)
    await h.drain()
    assert h.inboxes[SCHOOL_A].received == []
    [superseded] = [r for r in await h.receipts() if r.event == "superseded"]
    assert superseded.detail["reason"] == STALE_REMOVED
    box = await h.ctx.store.pickups.of_notice(notice.id)
    assert box is not None and box.sealed is None
    child = await h.ctx.store.children.get(ref, 1)
    assert child is not None and child.state == "held"


async def test_a_reenrolment_before_delivery_supersedes_and_the_new_passkey_releases(
        harness_factory: HarnessFactory) -> None:
    """Re-enrolment (every second factor dropped: a lost phone) while a notification waits:
    it never goes out and its child is held; the new passkey releases the child into a fresh
    notification with a new link."""
    h = await harness_factory(extra_config=web_config())
    await make_pickup_school(h)
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    ref = (await h.send(h.signal(sanne()))).text.rsplit(" ", 1)[1]
    await h.drain()
    await h.ctx.store.write(lambda tx: tx.pickups.drop_credentials(SCHOOL_A, CONTACT_A))
    h.clock.advance(minutes=5)
    await h.drain()
    [superseded] = [r for r in await h.receipts() if r.event == "superseded"]
    assert superseded.detail["reason"] == STALE_NOT_ENROLLED
    child = await h.ctx.store.children.get(ref, 1)
    assert child is not None and child.state == "held" and h.inboxes[SCHOOL_A].received == []
    await h.ctx.store.write(lambda tx: enrol_contact(tx, h))
    await h.drain()
    [item] = h.inboxes[SCHOOL_A].received
    _, token = link_of(mail_of(item)[1])
    record = await h.ctx.store.pickups.get(pickupbox.token_digest(h.ctx.vault, token))
    assert record is not None and record.ref == ref and record.state == "delivered"
