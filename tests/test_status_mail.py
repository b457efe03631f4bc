"""The status mail to the sender: queued in the store and retried like a notice, Dutch with
local times, honest about what leerplicht knows, and followed up when a held child is settled."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import MutableMapping, Sequence
from typing import Any

from conftest import (
    EVA_BIRTH,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SENDER,
    SENDER_ADDRESS,
    Harness,
    HarnessFactory,
    raw_sql,
    start_relay,
)
from structlog.testing import capture_logs
from test_signals_privacy import database_bytes

from gateway.admin.held import held_drop, held_route
from gateway.admin.senders import senders_remove
from gateway.devkit.demokit import Received, SchoolInbox, json_payload, read_notice
from gateway.notify.report import local_time
from gateway.service import retention
from gateway.store.chainkey import open_store

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")
ADMIN = "beheer@leerplicht.example.nl"
ALERTS = f'[alerts]\naddress = "{ADMIN}"\n'
SANNE = {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}  # in the register
NOOR = {"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}  # not: held


def to_sender(relay: SchoolInbox) -> list[Received]:
    return [m for m in relay.received if m.rcpt_tos == [SENDER_ADDRESS]]


def to_admin(relay: SchoolInbox) -> list[Received]:
    return [m for m in relay.received if m.rcpt_tos == [ADMIN]]


def status_events(logged: Sequence[MutableMapping[str, Any]]) -> list[str]:
    """The status mail's log events among those captured (structlog's own spy)."""
    return [str(e["event"]) for e in logged if str(e["event"]).startswith("status_mail.")]


async def accept(h: Harness, *children: dict[str, str], reference: str) -> str:
    reply = await h.send(h.signal(json_payload(list(children), reference=reference)))
    assert reply.code == 250, reply
    return reply.text.rsplit(" ", 1)[1]


async def receipts_of(h: Harness, prefix: str) -> list[Any]:
    return [r for r in await h.receipts() if r.event.startswith(prefix)]


def next_winter_morning() -> dt.datetime:
    """09:30 UTC on the next day on which Amsterdam keeps winter time (UTC+1)."""
    day = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    while True:
        moment = dt.datetime(day.year, day.month, day.day, 9, 30, tzinfo=dt.UTC)
        if moment.astimezone(AMS).utcoffset() == dt.timedelta(hours=1):
            return moment
        day += dt.timedelta(days=1)


async def test_status_mail_arrives_once_after_the_relay_recovers(
        harness_factory: HarnessFactory) -> None:
    """A relay answering 451 defers the status mail (kept sealed in SQLite); after the backoff
    it goes out, and the sender gets it exactly once."""
    h = await harness_factory()
    relay = await start_relay(h)
    relay.fail_next("451 4.3.0 try later")
    ref = await accept(h, SANNE, reference="VT-RELAY-1")
    with capture_logs() as logged:
        await h.drain()
    assert relay.received == []
    [mail_row] = await h.ctx.store.status_mails.all(ref)
    assert (mail_row.state, mail_row.attempts) == ("queued", 1)
    assert mail_row.last_reply is not None and mail_row.last_reply.startswith("451")
    # At rest only as the sealed mail: no case reference, no text of the mail.
    assert b"VT-RELAY-1" not in database_bytes(h.ctx.config.storage.path)
    assert b"Kind 1" not in database_bytes(h.ctx.config.storage.path)
    [deferred] = await receipts_of(h, "status_deferred")
    assert deferred.ref == ref and deferred.detail["reply"].startswith("451")
    await h.drain()
    assert relay.received == [], "retried before the backoff"

    h.clock.advance(seconds=61)
    with capture_logs() as later:
        await h.drain()
        h.clock.advance(hours=1)
        await h.drain()
    [mail] = relay.received
    text, result = read_notice(mail, h.ids.sender)
    assert result.valid and "Status van uw signaal VT-RELAY-1" in text
    assert "Kind 1: afgeleverd bij de school" in text
    assert [r.event for r in await receipts_of(h, "status_")] == [
        "status_queued", "status_deferred", "status_sent"]
    [sent] = await h.ctx.store.status_mails.all(ref)
    assert sent.state == "sent" and sent.attempts == 2
    assert status_events(logged + later) == [
        "status_mail.queued", "status_mail.deferred", "status_mail.sent"]


async def test_refused_status_mail_fails_with_a_receipt_and_an_alert(
        harness_factory: HarnessFactory) -> None:
    """A 550 for the sender's address fails the status mail at once: a receipt, a log event,
    and an alert to the administrator naming the reference, never the case or a name."""
    h = await harness_factory(extra_config=ALERTS)
    relay = await start_relay(h)
    relay.fail_next("550 5.1.1 No such mailbox")
    ref = await accept(h, SANNE, reference="VT-REFUSED-1")
    with capture_logs() as logged:
        await h.drain()
        h.clock.advance(hours=2)
        await h.drain()
    assert to_sender(relay) == [], "a refused status mail was tried again"
    [failed] = await receipts_of(h, "status_failed")
    assert failed.ref == ref and failed.detail["reply"].startswith("550 5.1.1")
    [row] = await h.ctx.store.status_mails.all(ref)
    assert row.state == "failed"
    [alert] = to_admin(relay)
    assert ref.encode() in alert.data and b"550 5.1.1" in alert.data
    for secret in (b"VT-REFUSED-1", b"Sanne", SANNE_BIRTH.isoformat().encode()):
        assert secret not in alert.data
    assert status_events(logged) == ["status_mail.queued", "status_mail.failed"]


async def test_status_mail_gives_up_after_the_configured_hours(
        harness_factory: HarnessFactory) -> None:
    """A status mail still refused with 4xx after `give_up_after_hours` fails, with an alert."""
    h = await harness_factory(extra_config=ALERTS)
    relay = await start_relay(h)
    relay.fail_next("451 4.3.0 try later", times=2)
    ref = await accept(h, SANNE, reference="VT-GIVEUP-1")
    await h.drain()
    h.clock.advance(hours=h.ctx.config.delivery.give_up_after_hours, seconds=1)
    await h.drain()
    assert to_sender(relay) == []
    [failed] = await receipts_of(h, "status_failed")
    assert failed.ref == ref and failed.detail["reply"].startswith("451")
    [alert] = to_admin(relay)
    assert ref.encode() in alert.data


async def test_times_are_local_with_their_offset_in_winter(
        harness_factory: HarnessFactory) -> None:
    """In winter the status mail gives the time in Europe/Amsterdam with +01:00, not UTC."""
    h = await harness_factory()
    relay = await start_relay(h)
    h.clock.set(next_winter_morning())
    ref = await accept(h, SANNE, reference="VT-TIJD-1")
    await h.drain()
    [mail] = relay.received
    text, _ = read_notice(mail, h.ids.sender)
    local = h.clock().astimezone(AMS)
    assert f"Kind 1: afgeleverd bij de school, {local:%d-%m-%Y} 10:" in text
    assert re.search(rf"{local:%d-%m-%Y} 10:3\d \+01:00 \(referentie {ref}-1\)", text), text
    assert "UTC" not in text
    assert mail.header("Date").endswith("+0100")


def test_local_time_names_the_summer_offset() -> None:
    """Summer time is written with +02:00: the offset always says which time it is."""
    assert local_time("2026-07-01T06:05:00Z", AMS) == "01-07-2026 08:05 +02:00"
    assert local_time("2026-01-15T09:30:00Z", AMS) == "15-01-2026 10:30 +01:00"


async def test_status_mail_never_says_leerplicht_was_told(harness_factory: HarnessFactory) -> None:
    """With no alert sent (no [alerts] address), the mail about a held child claims nothing
    of leerplicht having been told or working on it: only what the gateway will do."""
    h = await harness_factory()
    relay = await start_relay(h)
    await accept(h, NOOR, reference="VT-EERLIJK-1")
    await h.drain()
    [mail] = relay.received
    text, _ = read_notice(mail, h.ids.sender)
    assert "Kind 1: in behandeling bij leerplicht" in text
    for claim in ("gewaarschuwd", "op de hoogte", "medewerker", "uitgezocht", "niets te doen"):
        assert claim not in text
    assert "vervolgbericht" in text
    # Dutch throughout: none of the gateway's English reasons or words.
    assert not re.search(r"\b(the|and|not|with|sender|relay|UTC)\b", text), text


async def test_follow_up_after_held_route_and_delivery(harness_factory: HarnessFactory) -> None:
    """A held child later routed by hand and delivered gets one short follow-up: delivered,
    no school code, no hold reason; nothing more on later rounds."""
    h = await harness_factory()
    relay = await start_relay(h)
    ref = await accept(h, SANNE, NOOR, reference="VT-VERVOLG-1")
    await h.drain()
    [first] = relay.received
    text, _ = read_notice(first, h.ids.sender)
    assert "Kind 1: afgeleverd bij de school" in text
    assert "Kind 2: in behandeling bij leerplicht" in text

    print(await held_route(h.ctx, f"{ref}-2", SCHOOL_B))
    await h.drain()
    await h.drain()
    assert len(h.inboxes[SCHOOL_B].received) == 1
    [_, follow_up] = relay.received
    text, result = read_notice(follow_up, h.ids.sender)
    assert result.valid and "Vervolg op de status van uw signaal" in text
    assert "Kind 2: afgeleverd bij de school, " in text and f"(referentie {ref}-2)" in text
    assert "Kind 1" not in text and "eerdere statusbericht" in text
    for inside in (SCHOOL_B, SCHOOL_A, "register", "Noor", "VT-VERVOLG-1"):
        assert inside not in text
    h.clock.advance(hours=1)
    await h.drain()
    assert len(relay.received) == 2
    assert [(r.event, r.ref) for r in await receipts_of(h, "status_sent")] == [
        ("status_sent", ref), ("status_sent", f"{ref}-2")]


async def test_follow_up_after_held_drop(harness_factory: HarnessFactory) -> None:
    """A held child dropped by leerplicht gets a follow-up saying so, without the reason."""
    h = await harness_factory()
    relay = await start_relay(h)
    ref = await accept(h, NOOR, reference="VT-VERVOLG-2")
    await h.drain()
    assert len(relay.received) == 1
    print(await held_drop(h.ctx, f"{ref}-1", "geen leerling hier"))
    await h.drain()
    [_, follow_up] = relay.received
    text, _ = read_notice(follow_up, h.ids.sender)
    assert ("Kind 1: afgehandeld door leerplicht, niet doorgestuurd naar een school, "
            in text)
    assert "geen leerling" not in text
    await h.drain()
    assert len(relay.received) == 2


async def test_follow_up_waits_for_the_first_status_mail(harness_factory: HarnessFactory) -> None:
    """While the first status mail waits on the relay, a follow-up is not queued ahead of it:
    the sender reads them in order."""
    h = await harness_factory()
    relay = await start_relay(h)
    relay.fail_next("451 4.3.0 try later")
    ref = await accept(h, NOOR, reference="VT-VOLGORDE-1")
    await h.drain()
    print(await held_drop(h.ctx, f"{ref}-1", "geen leerling hier"))
    await h.drain()
    assert [r.child for r in await h.ctx.store.status_mails.all(ref)] == [0]
    h.clock.advance(seconds=61)
    await h.drain()
    texts = [read_notice(m, h.ids.sender)[0] for m in relay.received]
    assert [t.splitlines()[0] for t in texts] == ["Status van uw signaal VT-VOLGORDE-1",
                                                  "Vervolg op de status van uw signaal"]


async def test_signals_reported_before_the_upgrade_get_no_second_mail(
        harness_factory: HarnessFactory) -> None:
    """A database from before status mails were queued (no `status_mails` table): its signals
    already reported get neither a second status mail nor a follow-up after the upgrade."""
    h = await harness_factory()
    relay = await start_relay(h)
    ref = await accept(h, NOOR, reference="VT-OUD-1")
    await h.drain()
    assert len(relay.received) == 1
    # What an older gateway left: the signal reported, and no table of status mails.
    raw_sql(h.ctx.config.storage.path, "DROP TABLE outbox")  # now the outbox
    upgraded = await open_store(h.ctx.config.storage.path, h.ctx.config.secrets_dir)
    await upgraded.close()
    print(await held_route(h.ctx, f"{ref}-1", SCHOOL_A))
    await h.drain()
    h.clock.advance(hours=1)
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert len(relay.received) == 1, "a signal reported before the upgrade was mailed again"
    assert await h.ctx.store.status_mails.all(ref) == []


async def test_status_mail_of_a_removed_sender_is_not_sent(
        harness_factory: HarnessFactory) -> None:
    """A status mail whose sender was removed while it waited is not sent: it fails, with a
    receipt, instead of going to an address nobody vouches for any more."""
    h = await harness_factory()
    relay = await start_relay(h)
    relay.fail_next("451 4.3.0 try later")
    ref = await accept(h, SANNE, reference="VT-WEG-1")
    await h.drain()
    await senders_remove(h.ctx, SENDER)
    h.clock.advance(seconds=61)
    await h.drain()
    assert relay.received == []
    [failed] = await receipts_of(h, "status_failed")
    assert failed.ref == ref and "no longer pinned" in failed.detail["reply"]


async def test_expired_child_is_followed_up_and_old_status_mails_are_purged(
        harness_factory: HarnessFactory) -> None:
    """A held child dropped by retention (held too long) gets its follow-up; once the signal
    itself is purged, so are its status mails."""
    h = await harness_factory()
    relay = await start_relay(h)
    ref = await accept(h, NOOR, reference="VT-VERLOPEN-1")
    await h.drain()
    h.clock.advance(days=h.ctx.config.retention.held_days + 1)
    assert (await retention.purge(h.ctx, h.clock())).expired == [f"{ref}-1"]
    await h.drain()
    [_, follow_up] = relay.received
    assert "Kind 1: afgehandeld door leerplicht" in read_notice(follow_up, h.ids.sender)[0]
    assert len(await h.ctx.store.status_mails.all(ref)) == 2
    h.clock.advance(days=800)
    assert (await retention.purge(h.ctx, h.clock())).signals == 1
    assert await h.ctx.store.status_mails.all(ref) == []


async def test_status_mail_waits_for_a_relay_to_be_configured(
        harness_factory: HarnessFactory) -> None:
    """Without a relay the status mail is made and waits in the queue (deferred, no route),
    never dropped; once a relay is configured it goes out."""
    h = await harness_factory()
    ref = await accept(h, SANNE, reference="VT-NORELAY-1")
    await h.drain()
    [waiting] = await h.ctx.store.status_mails.all(ref)
    assert waiting.state == "queued" and "no [delivery] relay" in (waiting.last_reply or "")
    assert [r.event for r in await receipts_of(h, "status_")] == [
        "status_queued", "status_deferred"]
    relay = await start_relay(h)
    h.clock.advance(seconds=61)
    await h.drain()
    [mail] = to_sender(relay)
    text, result = read_notice(mail, h.ids.sender)
    assert result.valid and "Status van uw signaal VT-NORELAY-1" in text
