"""The school day: escalation before the first lesson, and schools acknowledging notices."""

from __future__ import annotations

import asyncio
import datetime as dt
import zoneinfo

from conftest import (
    EVA_BIRTH,
    GATEWAY,
    SANNE_BIRTH,
    SCHOOL_A,
    SENDER_ADDRESS,
    Harness,
    HarnessFactory,
    start_relay,
)

from gateway.admin.queue import queue_list
from gateway.admin.status import status as gateway_status
from gateway.devkit.demokit import json_payload, notice_header, read_notice, submit
from gateway.service import runner
from gateway.service.escalate import escalate

AMS = zoneinfo.ZoneInfo("Europe/Amsterdam")


def next_tuesday_at(hour: int, minute: int) -> dt.datetime:
    """A Tuesday night in the coming week, in UTC: a school day follows it."""
    day = dt.datetime.now(AMS).date() + dt.timedelta(days=1)
    while day.weekday() != 1:
        day += dt.timedelta(days=1)
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=AMS).astimezone(dt.UTC)


async def test_held_child_escalates_an_hour_before_school_starts(harness: Harness) -> None:
    """A child still held at 07:30 (school at 08:30, escalate 60 minutes before) escalates once."""
    harness.clock.set(next_tuesday_at(3, 0))
    payload = json_payload([{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}])
    ref = (await harness.send(harness.signal(payload))).text.rsplit(" ", 1)[1]
    await harness.drain()
    harness.clock.set(next_tuesday_at(7, 29))
    assert await escalate(harness.ctx, harness.clock()) == []
    harness.clock.set(next_tuesday_at(7, 31))
    [item] = await escalate(harness.ctx, harness.clock())
    assert (item.ref, item.what) == (ref, "undelivered") and "held" in item.states
    assert await escalate(harness.ctx, harness.clock()) == [], "escalated twice"
    receipts = [r for r in await harness.receipts() if r.event == "escalated"]
    assert len(receipts) == 1 and "Noor" not in str(receipts[0].detail)
    status = await gateway_status(harness.ctx, listener_up=True)
    assert ref in status.data["escalated"] and status.attention


async def test_undelivered_notice_escalates_with_a_mail(harness_factory: HarnessFactory) -> None:
    """A notice stuck behind a failing school server escalates, and the alert is mailed."""
    h = await harness_factory(extra_config='[alerts]\naddress = "beheer@leerplicht.example.nl"\n')
    relay = await start_relay(h)
    h.clock.set(next_tuesday_at(3, 0))
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try later", times=5)
    ref = (await h.send(h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))).text
    ref = ref.rsplit(" ", 1)[1]
    await h.drain()
    h.clock.set(next_tuesday_at(7, 45))
    [item] = await escalate(h.ctx, h.clock())
    assert item.ref == ref and item.schools == (SCHOOL_A,)
    [mail] = relay.received
    assert ref.encode() in mail.data and SCHOOL_A.encode() in mail.data
    assert b"Sanne" not in mail.data


async def _delivered_notice(harness: Harness) -> tuple[str, str]:
    reply = await harness.send(harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))
    await harness.drain()
    [(_, _, item)] = harness.notices(SCHOOL_A)
    # The ack address is in the decrypted notice only (protected Reply-To).
    return reply.text.rsplit(" ", 1)[1], notice_header(item, harness.ids.school_a, "Reply-To")


async def _reply(harness: Harness, rcpt: str) -> str:
    """The school contact's mail server answering the notice: no AUTH, STARTTLS."""
    answer = await submit("127.0.0.1", harness.port, user=None, password=None,
                          mail_from="hwc@regenboog.example.nl", rcpt=rcpt,
                          message=b"Subject: Re: Vertrouwelijk bericht\r\n\r\nOntvangen, dank.\r\n",
                          ca_file=harness.ctx.config.smtp.tls_cert.parent / "ca.pem")
    return str(answer)


async def test_school_acknowledges_by_replying(harness: Harness) -> None:
    """A reply to the notice's ack address is recorded once; the address then stops working."""
    ref, ack = await _delivered_notice(harness)
    assert ack.startswith("ack+") and ack.endswith("@hwc.example.nl")
    assert (await _reply(harness, ack)).startswith("250 2.0.0")
    events = [(r.event, r.ref) for r in await harness.receipts()]
    assert ("acknowledged", ref) in events
    again = await _reply(harness, ack)
    assert again.startswith("550 5.1.1"), "an ack address is single-use"
    forged = await _reply(harness, "ack+" + "a" * 26 + "@hwc.example.nl")
    assert forged.startswith("550 5.1.1")
    assert (await _reply(harness, GATEWAY)).startswith("530 5.7.0"), \
        "without AUTH only acknowledgements are taken"


async def test_unacknowledged_notice_escalates_at_school_start(harness: Harness) -> None:
    """A delivered notice nobody acknowledged escalates at the start of the school day."""
    harness.clock.set(next_tuesday_at(3, 0))
    ref, _ = await _delivered_notice(harness)
    harness.clock.set(next_tuesday_at(8, 0))
    assert await escalate(harness.ctx, harness.clock()) == []
    harness.clock.set(next_tuesday_at(8, 31))
    [item] = await escalate(harness.ctx, harness.clock())
    assert (item.ref, item.what) == (ref, "unacknowledged")


async def test_acknowledged_notice_does_not_escalate(harness: Harness) -> None:
    """A notice its school acknowledged in time is not escalated."""
    harness.clock.set(next_tuesday_at(3, 0))
    _, ack = await _delivered_notice(harness)
    await _reply(harness, ack)
    harness.clock.set(next_tuesday_at(9, 0))
    assert await escalate(harness.ctx, harness.clock()) == []


async def test_sender_gets_the_status_of_its_signal(harness_factory: HarnessFactory) -> None:
    """Once every child is delivered or held, the sender gets one encrypted status, no names."""
    h = await harness_factory()
    relay = await start_relay(h)
    reply = await h.send(h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()},
         {"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}],
        reference="VT-STATUS-1")))
    ref = reply.text.rsplit(" ", 1)[1]
    await h.drain()
    await h.drain()
    [mail] = relay.received
    assert mail.rcpt_tos == [SENDER_ADDRESS]
    text, result = read_notice(mail, h.ids.sender)
    assert result.valid and "VT-STATUS-1" in text and ref in text
    assert "Kind 1: afgeleverd bij de school" in text
    assert "Kind 2: in behandeling bij leerplicht" in text and SCHOOL_A not in text
    for secret in ("Sanne", "Noor", SANNE_BIRTH.isoformat(), f"{SANNE_BIRTH:%d-%m-%Y}"):
        assert secret not in text and secret.encode() not in mail.data
    assert "status_sent" in [r.event for r in await h.receipts()]


async def test_status_is_sent_once_when_two_steps_run_at_once(
        harness_factory: HarnessFactory) -> None:
    """Two runner steps on one context at the same time (the daemon's loop and a drain) send a
    finished signal's status mail once, with one receipt."""
    h = await harness_factory()
    relay = await start_relay(h)
    await h.send(h.signal(json_payload(
        [{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}], reference="VT-ONCE-1")))
    await asyncio.gather(runner.drain(h.ctx), runner.drain(h.ctx))
    assert len(relay.received) == 1
    assert [r.event for r in await h.receipts()].count("status_sent") == 1


async def test_backlog_drains_over_few_reused_connections(harness: Harness) -> None:
    """A school server back after refusing gets its backlog over at most 4 reused sessions."""
    inbox = harness.inboxes[SCHOOL_A]
    inbox.fail_next("421 4.3.2 Service not available, try later", times=20)
    for i in range(20):
        reply = await harness.send(harness.signal(json_payload(
            [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}],
            reference=f"VT-BACKLOG-{i}")))
        assert reply.code == 250
    await harness.drain()
    assert inbox.received == [] and len(await queue_list(harness.ctx)) == 20
    inbox.failures.clear()
    before = inbox.connections
    harness.clock.advance(minutes=20)
    await harness.drain()
    assert len(inbox.received) == 20 and await queue_list(harness.ctx) == []
    assert inbox.connections - before <= 4, "one session per notice instead of reuse"


async def test_permanent_failure_alerts_the_administrator(harness_factory: HarnessFactory) -> None:
    """A 5xx from a school fails the notice and mails the administrator, without names."""
    h = await harness_factory(extra_config='[alerts]\naddress = "beheer@leerplicht.example.nl"\n')
    relay = await start_relay(h)
    h.inboxes[SCHOOL_A].fail_next("550 5.1.1 No such mailbox")
    ref = (await h.send(h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))).text
    await h.drain()
    alerts = [m for m in relay.received if m.rcpt_tos == ["beheer@leerplicht.example.nl"]]
    assert len(alerts) == 1 and b"550 5.1.1" in alerts[0].data
    assert ref.rsplit(" ", 1)[1].encode() in alerts[0].data and b"Sanne" not in alerts[0].data
