"""A municipality's first week (issue 12), delivery: a failed notice is queued again once its
cause is fixed, the gateway's own set-up is not taken for the school refusing, and delivery
names itself in EHLO. Real gateways on loopback."""

from __future__ import annotations

import json

import pytest
from conftest import CONTACT_A, SCHOOL_A, Harness, HarnessFactory, start_relay
from test_first_week import ALERTS, HELO_REJECTED, cli, events, sanne, watch_logs

from gateway.admin.common import Refused
from gateway.admin.queue import queue_list, queue_retry
from gateway.admin.schools import schools_set_contact
from gateway.admin.status import status as gateway_status

# -- point 5: queue retry ---------------------------------------------------------------------

async def test_failed_notice_is_retried_and_delivered(harness: Harness) -> None:
    """A notice failed by a 5xx: `queue list --failed` shows it, `queue retry` queues it again
    (attempts from zero, children sealed, a receipt naming who, `notice.requeued`), and the
    next round delivers it; retrying it again is refused with one line."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("554 5.7.1 Policy rejection")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    cfg = str(h.ctx.config.path)
    code, out, _ = await cli("--config", cfg, "queue", "list", "--failed", "--json")
    [failed] = json.loads(out)
    assert code == 0 and failed["state"] == "failed" and failed["last_reply"].startswith("554")
    notice = str(failed["notice"])
    code, out, _ = await cli("--config", cfg, "queue", "retry", notice)
    assert code == 0 and f"notice {notice} (" in out and "queued again (was failed: 554" in out
    [requeued] = events(out, "notice.requeued")
    assert requeued["previous"] == "failed" and requeued["school"] == SCHOOL_A
    row = await h.ctx.store.notices.get(int(notice))
    assert row is not None and (row.state, row.attempts) == ("queued", 0)
    assert {c.state for c in await h.ctx.store.children.all(ref=row.ref)} == {"sealed"}
    [receipt] = [r for r in await h.receipts() if r.event == "requeued"]
    assert receipt.detail["previous"] == "failed" and "uid" in receipt.detail["operator"]
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert {c.state for c in await h.ctx.store.children.all(ref=row.ref)} == {"delivered"}
    code, _, err = await cli("--config", cfg, "queue", "retry", notice)
    assert code == 1 and err.count("\n") == 1 and "was delivered" in err
    for bad, why in (("999999", "there is no notice 999999"), ("HWC-1", "notice number")):
        code, _, err = await cli("--config", cfg, "queue", "retry", bad)
        assert code == 1 and why in err


async def test_retry_after_the_give_up_time_is_attempted(harness: Harness) -> None:
    """A notice failed because give_up_after_hours passed is queued again by `queue retry` and
    then deferred by a 4xx, not failed at once: its give-up time counts from the retry."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 Try again later", times=3)
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    h.clock.advance(hours=49)
    await h.drain()
    [failed] = await queue_list(h.ctx, ("failed",))
    await queue_retry(h.ctx, str(failed["notice"]))
    await h.drain()
    [queued] = await queue_list(h.ctx)
    assert queued["attempts"] == 1 and queued["last_reply"].startswith("451")
    h.clock.advance(seconds=61)
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert [r.event for r in await h.receipts()].count("failed") == 1


async def test_retry_of_a_notice_whose_contact_changed_is_superseded(harness: Harness) -> None:
    """A failed notice queued again after its contact's address changed is not sent to the
    old address: it is superseded before the attempt and sealed again for the new one."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("550 5.1.1 <hwc@regenboog.example.nl>: no such user")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    [failed] = await queue_list(h.ctx, ("failed",))
    await schools_set_contact(h.ctx, SCHOOL_A, CONTACT_A, "zorg@regenboog.example.nl")
    await queue_retry(h.ctx, str(failed["notice"]))
    await h.drain()
    [item] = h.inboxes[SCHOOL_A].received
    assert item.rcpt_tos == ["zorg@regenboog.example.nl"]
    superseded = [r for r in await h.receipts() if r.event == "superseded"]
    assert [r.detail["notice"] for r in superseded] == [failed["notice"]]


async def test_a_superseded_notice_is_not_retried(harness: Harness) -> None:
    """`queue retry` of a superseded notice is refused with one line naming why."""
    h = harness
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 Try again later")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    [queued] = await queue_list(h.ctx)
    await schools_set_contact(h.ctx, SCHOOL_A, CONTACT_A, "zorg@regenboog.example.nl")
    h.clock.advance(seconds=61)
    await h.drain()
    with pytest.raises(Refused, match="was superseded"):
        await queue_retry(h.ctx, str(queued["notice"]))


# -- point 5: the gateway's own set-up is not the school refusing -----------------------------

async def test_ehlo_refused_defers_alerts_and_is_delivered_once_fixed(
        harness_factory: HarnessFactory) -> None:
    """A school MX answering EHLO with 504 5.5.2: the notice is deferred, not failed; the log
    line says why (reason, reply); one alert says what to fix (not one per retry); once the
    server takes the name, `queue retry` delivers it at once."""
    h = await harness_factory(extra_config=ALERTS)
    logs = watch_logs()
    relay = await start_relay(h)
    h.inboxes[SCHOOL_A].fail_command("EHLO", HELO_REJECTED, times=2)
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    h.clock.advance(seconds=61)
    await h.drain()
    [queued] = await queue_list(h.ctx)
    assert queued["attempts"] == 2 and h.inboxes[SCHOOL_A].received == []
    assert [r.event for r in await h.receipts()].count("failed") == 0
    deferred = events(logs.getvalue(), "notice.deferred")
    assert len(deferred) == 2 and {d["reason"] for d in deferred} == {"ehlo_rejected"}
    assert all(str(d["reply"]).startswith("5") for d in deferred)
    alerts = [m for m in relay.received if m.rcpt_tos == ["beheer@leerplicht.example.nl"]]
    assert len(alerts) == 1 and b"[smtp] hostname" in alerts[0].data
    status = await gateway_status(h.ctx, True)
    assert status.data["waiting_on_setup"] == [queued["notice"]]
    assert any("gateway is set up wrong" in line for line in status.attention)
    await queue_retry(h.ctx, str(queued["notice"]))
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1
    assert events(logs.getvalue(), "notice.delivered")[0]["reason"] == "delivered"


async def test_permanent_failure_log_line_carries_the_reply(harness: Harness) -> None:
    """`notice.failed` names the reason and the server's reply, made inert."""
    logs = watch_logs()
    harness.inboxes[SCHOOL_A].fail_next("554 5.7.1 Policy \x1b[2J rejection")
    assert (await harness.send(harness.signal(sanne()))).code == 250
    await harness.drain()
    [failed] = events(logs.getvalue(), "notice.failed")
    assert failed["reason"] == "refused" and failed["smtp_code"] == "554"
    assert failed["reply"] == "554 5.7.1 Policy \\x1b[2J rejection"


# -- point 6: the EHLO name -------------------------------------------------------------------

async def test_deliveries_give_the_configured_hostname_in_ehlo(
        harness_factory: HarnessFactory) -> None:
    """The EHLO name school servers see is `[smtp] hostname`."""
    h = await harness_factory(smtp_extra='hostname = "gateway.leerplicht.example.nl"')
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    # EHLO before and after STARTTLS (RFC 3207 §4.2).
    assert h.inboxes[SCHOOL_A].ehlo_names == ["gateway.leerplicht.example.nl"] * 2
