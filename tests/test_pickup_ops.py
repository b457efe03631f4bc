"""Around the pickup channel: the PGP notice's acknowledgement link, escalation of unread
pickup notices, retention of expired boxes, and what status, queue list and metrics show."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from conftest import CONTACT_A, SANNE_BIRTH, SCHOOL_A, Harness, HarnessFactory, start_relay
from test_cli import run_async
from test_pickup_channel import link_of, mail_of, make_pickup_school, sanne, web_config
from test_schoolday import next_tuesday_at

from gateway.admin.queue import PICKUP_SECTION
from gateway.admin.status import status
from gateway.core.validate import HostPort
from gateway.core.webconfig import WebSection
from gateway.crypto.pickupbox import ack_digest
from gateway.devkit.demokit import notice_header, submit
from gateway.observe import metrics
from gateway.service import retention, watch
from gateway.service.escalate import escalate

ACK_LINK = re.compile(r"(http://127\.0\.0\.1:\d+)/bevestig/([a-z2-7]{26})\s")


async def delivered_pickup(h: Harness) -> tuple[str, str, int]:
    """A pickup notice for Sanne, delivered: its reference, its link's token, its notice id."""
    await make_pickup_school(h)
    ref = (await h.send(h.signal(sanne()))).text.rsplit(" ", 1)[1]
    await h.drain()
    [item] = h.inboxes[SCHOOL_A].received
    _, token = link_of(mail_of(item)[1])
    [notice] = [n for n in await h.ctx.store.notices.all(states=("delivered",)) if n.ref == ref]
    return ref, token, notice.id


# -- the PGP notice's acknowledgement link --------------------------------------------------


async def test_with_web_the_pgp_notice_carries_an_ack_link_and_no_reply_address(
        harness_factory: HarnessFactory) -> None:
    """With `[web]` on, the encrypted notice asks for a click on `/bevestig/TOKEN` instead of a
    reply: no protected Reply-To, no ack address; the link's token acknowledges the notice as
    the web page does (`notices.acknowledge` of its "ack" digest)."""
    h = await harness_factory(extra_config=web_config())
    await h.send(h.signal(sanne()))
    await h.drain()
    [(text, _, item)] = h.notices(SCHOOL_A)
    found = ACK_LINK.search(text)
    assert found is not None and found.group(1) == h.ctx.config.web.public_url, text
    assert "Hebt u dit bericht gelezen? Klik dan op deze link:" in text
    assert "ack+" not in text and notice_header(item, h.ids.school_a, "Reply-To") == ""
    assert b"bevestig" not in item.data, "the link is inside the encryption only"
    digest = ack_digest(h.ctx.vault, found.group(2))
    assert await h.ctx.store.notices.ack_pending(digest)
    assert await h.ctx.store.write(lambda tx: tx.notices.acknowledge(digest, h.clock()))
    assert await h.ctx.store.notices.unacknowledged() == []


async def test_without_web_the_pgp_notice_asks_for_a_reply(harness: Harness) -> None:
    """Without `[web]` the notice is as before: the ack address in the protected Reply-To and
    the body, no link."""
    await harness.send(harness.signal(sanne()))
    await harness.drain()
    [(text, _, item)] = harness.notices(SCHOOL_A)
    reply_to = notice_header(item, harness.ids.school_a, "Reply-To")
    assert reply_to.startswith("ack+") and reply_to in text and "/bevestig/" not in text


async def test_replies_to_notices_sent_before_web_was_on_still_count(harness: Harness) -> None:
    """A notice sent with a reply address before `[web]` was turned on is still acknowledged
    by a reply to that address."""
    reply = await harness.send(harness.signal(sanne()))
    ref = reply.text.rsplit(" ", 1)[1]
    await harness.drain()
    [(_, _, item)] = harness.notices(SCHOOL_A)
    ack = notice_header(item, harness.ids.school_a, "Reply-To")
    web = WebSection(listen=HostPort("127.0.0.1", 1), public_url="http://127.0.0.1:1")
    harness.ctx.config = dataclasses.replace(harness.ctx.config, web=web)
    await harness.ctx.refresh(force=True)
    answer = await submit("127.0.0.1", harness.port, user=None, password=None,
                          mail_from=CONTACT_A, rcpt=ack,
                          message=b"Subject: Re: Vertrouwelijk bericht\r\n\r\nGelezen.\r\n",
                          ca_file=harness.ctx.config.smtp.tls_cert.parent / "ca.pem")
    assert str(answer).startswith("250 2.0.0")
    assert ("acknowledged", ref) in [(r.event, r.ref) for r in await harness.receipts()]


# -- escalation -----------------------------------------------------------------------------


async def test_an_unread_pickup_notice_escalates_as_not_read_on_the_page(
        harness_factory: HarnessFactory) -> None:
    """A delivered pickup notice nobody read is an unacknowledged notice: it escalates at the
    start of the school day, and the alert says it was not read on the pickup page."""
    h = await harness_factory(
        extra_config=web_config() + '[alerts]\naddress = "beheer@leerplicht.example.nl"\n')
    relay = await start_relay(h)
    h.clock.set(next_tuesday_at(3, 0))
    ref, _, notice_id = await delivered_pickup(h)
    assert [n.id for n in await h.ctx.store.notices.unacknowledged()] == [notice_id]
    h.clock.set(next_tuesday_at(8, 31))
    [item] = await escalate(h.ctx, h.clock())
    assert (item.ref, item.what, item.schools) == (ref, "unacknowledged", (SCHOOL_A,))
    [mail] = [m for m in relay.received if b"not read on the pickup page" in m.data]
    assert ref.encode() in mail.data and SCHOOL_A.encode() in mail.data
    assert b"Sanne" not in mail.data


async def test_a_pickup_notice_read_in_time_does_not_escalate(
        harness_factory: HarnessFactory) -> None:
    """"Gelezen" on the page (the acknowledgement of its "ack" digest) stops the escalation."""
    h = await harness_factory(extra_config=web_config())
    h.clock.set(next_tuesday_at(3, 0))
    _, token, _ = await delivered_pickup(h)
    assert await h.ctx.store.write(
        lambda tx: tx.notices.acknowledge(ack_digest(h.ctx.vault, token), h.clock()))
    h.clock.set(next_tuesday_at(9, 0))
    assert await escalate(h.ctx, h.clock()) == []


# -- retention ------------------------------------------------------------------------------


async def test_retention_erases_a_box_whose_link_expired(harness_factory: HarnessFactory) -> None:
    """Past its link's expiry a pickup notice's box is erased, read or not, with a receipt
    `pickup_erased` (a dry run only reports it); the signal is later forgotten as any other."""
    h = await harness_factory(extra_config=web_config())
    ref, _, notice_id = await delivered_pickup(h)
    assert (await retention.purge(h.ctx, h.clock())).pickups == []
    h.clock.advance(days=12)
    dry = await retention.purge(h.ctx, h.clock(), dry_run=True)
    assert dry.pickups == [(notice_id, ref, SCHOOL_A, False)]
    assert "would remove 1 pickup notices whose link expired" in "\n".join(dry.lines())
    box = await h.ctx.store.pickups.of_notice(notice_id)
    assert box is not None and box.sealed is not None
    report = await retention.purge(h.ctx, h.clock())
    assert report.pickups == [(notice_id, ref, SCHOOL_A, False)]
    box = await h.ctx.store.pickups.of_notice(notice_id)
    assert box is not None and box.sealed is None
    [erased] = [r for r in await h.receipts() if r.event == "pickup_erased"]
    assert (erased.ref, erased.detail["notice"], erased.detail["read"]) == (ref, notice_id, False)
    assert (await retention.purge(h.ctx, h.clock())).pickups == [], "erased once"
    h.clock.advance(days=800)
    assert (await retention.purge(h.ctx, h.clock())).signals == 1
    assert await h.ctx.store.pickups.of_notice(notice_id) is None


# -- status, queue list, metrics ------------------------------------------------------------


async def test_status_queue_list_and_metrics_show_the_notice_waiting_to_be_read(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """A delivered pickup notice nobody read: `status` counts it with its deadline and expiry
    (a line of its own after the others), `queue list` lists it in its own section (and in
    `--json` as waiting_to_be_read), the gauges count it; once read, none of them does."""
    h = await harness_factory(extra_config=web_config())
    ref, token, notice_id = await delivered_pickup(h)
    waiting = (await status(h.ctx, True)).data["pickup_waiting"]
    assert waiting["count"] == 1 and waiting["deadline"] and waiting["expires"]
    cfg = str(h.ctx.config.path)
    _, text, _ = await run_async(capsys, "--config", cfg, "status")
    lines = text.splitlines()
    assert lines[0].startswith("listener") and lines[1].startswith("queue     0 waiting")
    [line] = [line for line in lines if line.startswith("pickup")]
    assert "1 waiting to be read on the pickup page (first due " in line
    _, text, _ = await run_async(capsys, "--config", cfg, "queue", "list")
    assert text.startswith("(none)") and PICKUP_SECTION in text
    header, row = text.split(PICKUP_SECTION)[1].strip().splitlines()
    assert header.split() == ["NOTICE", "REF", "SCHOOL", "DELIVERED", "DEADLINE", "TIME_LEFT",
                              "EXPIRES", "OPENED"]
    assert row.split()[:3] == [str(notice_id), ref, SCHOOL_A] and row.split()[-1] == "0"
    _, out, _ = await run_async(capsys, "--config", cfg, "queue", "list", "--json")
    [listed] = json.loads(out)
    assert (listed["notice"], listed["state"], listed["opened"]) == (
        notice_id, "waiting_to_be_read", 0)
    assert listed["delivered"].endswith("Z")
    await watch.update_metrics(h.ctx, h.clock(), with_keys=False)
    assert metrics.REGISTRY.get_sample_value("hwc_pickup_waiting") == 1
    expiry = metrics.REGISTRY.get_sample_value("hwc_pickup_next_expiry_seconds")
    assert expiry is not None and expiry > 0
    await h.ctx.store.write(
        lambda tx: tx.notices.acknowledge(ack_digest(h.ctx.vault, token), h.clock()))
    await watch.update_metrics(h.ctx, h.clock(), with_keys=False)
    assert metrics.REGISTRY.get_sample_value("hwc_pickup_waiting") == 0
    assert metrics.REGISTRY.get_sample_value("hwc_pickup_next_expiry_seconds") is None
    assert (await status(h.ctx, True)).data["pickup_waiting"]["count"] == 0
    assert SANNE_BIRTH.isoformat() not in text

