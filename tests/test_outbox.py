"""The outbox: alerts and status mails through one queued, retried, signed path (real loopback
SMTP relay that can be told to fail, real gpg, real SQLite)."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from conftest import SANNE_BIRTH, SENDER, Harness, HarnessFactory, Identities, start_relay
from structlog.testing import capture_logs
from test_leases import KEY, T0

from gateway.admin.keys import keys_pin_alerts
from gateway.core.policy import MAX_CRASHES
from gateway.core.records import iso
from gateway.core.validate import HostPort
from gateway.devkit.demokit import Received, SchoolInbox, json_payload, read_notice
from gateway.notify.alerts import send_alert
from gateway.store.sqlite.connection import SqliteStore

ADMIN = "beheer@leerplicht.example.nl"
ALERTS = f'[alerts]\naddress = "{ADMIN}"\n'
SANNE = {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}
LINE = "Signal HWC-20260302-TESTTEST waits on school 00AA."


def to_admin(relay: SchoolInbox) -> list[Received]:
    return [m for m in relay.received if m.rcpt_tos == [ADMIN]]


async def test_alert_is_retried_after_451_and_delivered_later(
        harness_factory: HarnessFactory) -> None:
    """An alert the relay answers 451 is logged at once, kept, and delivered once after the
    backoff by the delivery loop."""
    h = await harness_factory(extra_config=ALERTS)
    relay = await start_relay(h)
    relay.fail_next("451 4.3.0 try later")
    with capture_logs() as logged:
        assert await send_alert(h.ctx, "test.alert", "a test alert", [LINE]) is False
        assert to_admin(relay) == []
        await h.drain()
        assert to_admin(relay) == [], "retried before the backoff"
        h.clock.advance(seconds=61)
        await h.drain()
        h.clock.advance(seconds=3600)
        await h.drain()
    [mail] = to_admin(relay)
    assert LINE.encode() in mail.data and b"hwc-gateway: a test alert" in mail.data
    events = [e["event"] for e in logged if str(e["event"]).startswith("alert.")]
    assert events[0] == "alert.raised" and events[-1] == "alert.sent"
    assert "alert.not_sent" not in events


async def test_alert_sealed_to_the_alerts_key_decrypts_there_after_a_retry(
        harness_factory: HarnessFactory, identities: Identities) -> None:
    """With [alerts] key set, the alert kept in the outbox is the sealed one: delivered after a
    451, it decrypts with that key, signed by the gateway, and was never stored in clear."""
    h = await harness_factory(extra_config=(
        f'{ALERTS}key = "{identities.other_sender.fingerprint}"\n'))
    relay = await start_relay(h)
    await keys_pin_alerts(h.ctx, identities.other_sender.public_key())
    relay.fail_next("451 4.3.0 try later")
    assert await send_alert(h.ctx, "test.alert", "a sealed alert", [LINE]) is False
    database = h.ctx.config.storage.path.read_bytes()
    assert LINE.encode() not in database, "the alert was stored in plaintext"
    h.clock.advance(seconds=61)
    await h.drain()
    [mail] = to_admin(relay)
    assert LINE.encode() not in mail.data, "alert sent in plaintext"
    text, result = read_notice(mail, identities.other_sender)
    assert LINE in text and result.valid


async def test_status_mails_of_before_the_outbox_are_kept_at_the_upgrade(
        tmp_path: Path) -> None:
    """A database whose status mails are in the table `status_mails` (before the outbox) keeps
    every row at the upgrade: ids, states, messages, leases, pending follow-ups."""
    path = tmp_path / "old.sqlite3"
    store = await SqliteStore.open(path, KEY)
    await store.close()
    with sqlite3.connect(path, isolation_level=None) as db:  # as an older gateway left it
        db.executescript("""
            DROP TABLE IF EXISTS outbox;
            CREATE TABLE IF NOT EXISTS status_mails (
                id INTEGER PRIMARY KEY, ref TEXT NOT NULL, child INTEGER NOT NULL,
                sender TEXT NOT NULL, recipient TEXT NOT NULL, fingerprint TEXT NOT NULL,
                message_id TEXT NOT NULL, message BLOB NOT NULL, state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,
                lease_until TEXT, created_at TEXT NOT NULL, last_reply TEXT, pending TEXT,
                UNIQUE (ref, child));""")
        db.executemany(
            "INSERT INTO status_mails VALUES (?, ?, ?, 'vt', 'a@vt', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(3, "HWC-1", 0, "F" * 40, "<a@gw>", b"", "sent", 1, iso(T0), None, iso(T0),
              "250 ok", "[1, 2]"),
             (7, "HWC-2", 0, "E" * 40, "<b@gw>", b"sealed", "queued", 2, iso(T0),
              "2026-03-02T07:10:00Z", iso(T0), "451 later", None)])
    store = await SqliteStore.open(path, KEY)
    try:
        sent, queued = await store.status_mails.all()
        assert (sent.id, sent.ref, sent.child, sent.state, sent.pending, sent.message_id) == \
            (3, "HWC-1", 0, "sent", (1, 2), "<a@gw>")
        assert (queued.id, queued.state, queued.message, queued.attempts, queued.fingerprint,
                queued.lease_until, queued.last_reply) == \
            (7, "queued", b"sealed", 2, "E" * 40, "2026-03-02T07:10:00Z", "451 later")
        assert {(s.kind, s.sender, s.recipient) for s in (sent, queued)} == {
            ("status", "vt", "a@vt")}
        [follow_up] = await store.status_mails.pending_follow_ups()
        assert (follow_up.id, follow_up.pending) == (3, (1, 2))
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "status_mails" not in tables


async def _crash_status_mails(h: Harness) -> None:
    """Point the relay where no socket can go (port 99999: aiosmtplib raises OverflowError,
    which the send path does not classify), so that every attempt crashes for real."""
    delivery = dataclasses.replace(h.ctx.config.delivery, relay=HostPort("127.0.0.1", 99999))
    h.ctx.config = dataclasses.replace(h.ctx.config, delivery=delivery)


async def test_status_mail_that_keeps_crashing_is_parked_with_a_receipt(
        harness_factory: HarnessFactory) -> None:
    """A status mail whose sending keeps crashing is parked at the MAX_CRASHES-th crash, with a
    `status_parked` receipt, the `status_mail.parked` event and an alert, and left alone."""
    h = await harness_factory(extra_config=ALERTS)
    await start_relay(h)
    await _crash_status_mails(h)
    reply = await h.send(h.signal(json_payload([SANNE], reference="VT-PARK-9")))
    ref = reply.text.rsplit(" ", 1)[1]
    with capture_logs() as logged:
        await h.drain()
        for _ in range(MAX_CRASHES):
            h.clock.advance(seconds=700)  # past the longest backoff
            await h.drain()
    [mail] = await h.ctx.store.status_mails.all(ref)
    assert mail.state == "parked" and mail.message, "parked, and kept sealed"
    parked = [r for r in await h.receipts() if r.event == "status_parked"]
    assert len(parked) == 1 and parked[0].ref == ref and parked[0].detail["sender"] == SENDER
    events = [str(e["event"]) for e in logged]
    assert events.count("status_mail.parked") == 1
    assert events.count("status_mail.attempt_crashed") == MAX_CRASHES
    assert any(e["event"] == "alert.raised" and e["kind"] == "status_mail.parked"
               for e in logged)
    h.clock.advance(seconds=7200)
    await h.drain()
    [still] = await h.ctx.store.status_mails.all(ref)
    assert (still.state, still.attempts) == ("parked", MAX_CRASHES)
