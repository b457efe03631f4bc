"""Crashes at the worst moments: `kill -9` of the real daemon, and a stage that keeps failing.

The daemon runs as `hwc-gateway serve` in its own process (as systemd runs it), on a copied
gateway state, with real SMTP on both sides and a real SQLite file. The fault-injection switch
(`gateway.core.faults`, env HWC_GATEWAY_CRASH_AT) makes it SIGKILL itself at a named point; the test
itself kills it with SIGKILL while submissions or a delivery are in flight. After each restart
docs/architecture.md's invariants must hold: what got a 250 is delivered (1), at most once a school
except for a resend after an unrecorded remote 250, which carries the same Message-ID (2), and
the receipt chain still verifies. Parking is tested in-process with the `harness`.
"""
from __future__ import annotations

import asyncio
import signal

import pytest
from conftest import (
    SCHOOL_A,
    SCHOOL_B,
    Template,
)
from crash_gateway import (
    DAAN,
    SANNE,
    GatewayFactory,
    by_message_id,
    child_refs,
    gateway_home_fixture,  # noqa: F401  (the fixture gateway_home)
)
from test_process import _wait_for

from gateway.core import faults
from gateway.devkit.demokit import (
    Reply,
    read_notice,
)


@pytest.mark.parametrize("point", faults.POINTS)
async def test_crash_point_then_restart_delivers(point: str, gateway_home: GatewayFactory,
                                                 template: Template) -> None:
    """A SIGKILL at each crash point loses nothing: once, or twice with one Message-ID."""
    gw = await gateway_home()
    inbox = await gw.inbox(template, SCHOOL_A)
    message = gw.signal("VT-CRASH-1", SANNE)
    await gw.proc.launch(gw.listen, env={faults.ENV: point})
    reply = await gw.send(message)
    assert reply.code == 250, reply
    assert await gw.proc.exited() == -signal.SIGKILL  # it died by its own hand, at `point`
    received_before_restart = len(inbox.received)
    assert received_before_restart == (1 if point == "after-remote-250" else 0)

    await gw.proc.launch(gw.listen)  # without the switch
    await _wait_for(lambda: gw.delivered("VT-CRASH-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    ref = gw.ref_of("VT-CRASH-1")
    assert ref is not None
    # Everything is finished: no notice is waiting that could still be sent again.
    assert gw.rows("SELECT state FROM notices") == [("delivered",)]
    if point == "after-remote-250":
        # The resend after the unrecorded 250: the same bytes, so the same Message-ID (inv. 2).
        assert len(inbox.received) == 2
        first, second = inbox.received
        assert first.header("Message-ID") == second.header("Message-ID") != ""
        assert first.data == second.data
        recovered = [e for e in gw.proc.events() if e.get("event") == "notice.lease_recovered"]
        assert len(recovered) == 1
    else:
        assert len(inbox.received) == 1
    [(message_id,)] = gw.rows("SELECT message_id FROM notices")
    assert inbox.received[0].header("Message-ID") == message_id
    text, result = read_notice(inbox.received[0], gw.ids.school_a)
    assert result.valid and child_refs(text) == [f"{ref}-1"]
    # A crash leaves no receipt of its own: one seal, one delivery, no resend recorded.
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "delivered"]
    await gw.verify_receipts()


async def test_burst_killed_mid_flight_loses_and_duplicates_nothing(
        gateway_home: GatewayFactory, template: Template) -> None:
    """40 concurrent signals, kill -9 mid-flight, unanswered ones resent: each delivered once."""
    gw = await gateway_home(smtp_extra="max_sessions_per_client = 64")
    inbox_a = await gw.inbox(template, SCHOOL_A)
    inbox_b = await gw.inbox(template, SCHOOL_B)
    refs = [f"VT-BURST-{i:02d}" for i in range(40)]
    school_of = {r: SCHOOL_A if i % 2 == 0 else SCHOOL_B for i, r in enumerate(refs)}
    messages = {r: gw.signal(r, SANNE if school_of[r] == SCHOOL_A else DAAN) for r in refs}

    async def attempt(ref: str) -> tuple[str, Reply | OSError]:
        try:
            return ref, await gw.send(messages[ref])
        except OSError as exc:  # refused, reset, dropped: smtplib's errors are OSErrors too
            return ref, exc

    def unanswered(results: list[tuple[str, Reply | OSError]]) -> list[str]:
        """What a sender's MTA sends again: everything without a 250; never a 5xx refusal."""
        for ref, result in results:
            assert not (isinstance(result, Reply) and result.code >= 500), (ref, result)
        return [ref for ref, result in results
                if not (isinstance(result, Reply) and result.code == 250)]

    await gw.proc.launch(gw.listen)
    tasks = [asyncio.ensure_future(attempt(r)) for r in refs]
    in_flight_at_kill = 0
    for answered, next_done in enumerate(asyncio.as_completed(tasks), 1):
        await next_done
        if answered == 15:
            in_flight_at_kill = sum(not t.done() for t in tasks)
            assert await gw.proc.stop(signal.SIGKILL) == -signal.SIGKILL
    assert in_flight_at_kill > 0
    pending = unanswered([t.result() for t in tasks])
    assert pending, "the kill came too late to hit a submission in flight"

    await gw.proc.launch(gw.listen)
    for _ in range(5):
        if not pending:
            break
        pending = unanswered(list(await asyncio.gather(*(attempt(r) for r in pending))))
    assert pending == []

    # A resend of a signal stored before the kill was recognised, not stored again.
    case_of = {gw.case_digest(r): r for r in refs}
    stored = gw.rows("SELECT sender_ref_digest, ref FROM signals")
    assert sorted(case_of[d] for d, _ in stored) == refs
    ref_of = {case_of[d]: ref for d, ref in stored}
    await _wait_for(lambda: gw.rows("SELECT count(*) FROM notices WHERE state = 'delivered'")
                    == [(40,)])
    assert await gw.proc.stop(signal.SIGTERM) == 0
    assert gw.rows("SELECT count(*) FROM notices") == [(40,)]

    # Each signal reached its school under exactly one Message-ID; any extra copy is a resend
    # after a remote 250 the kill kept from being recorded: the same bytes.
    seen: dict[str, str] = {}
    for code, inbox, school in ((SCHOOL_A, inbox_a, gw.ids.school_a),
                                (SCHOOL_B, inbox_b, gw.ids.school_b)):
        for message_id, copies in by_message_id(inbox.received).items():
            assert all(c.data == copies[0].data for c in copies), message_id
            text, result = read_notice(copies[0], school)
            assert result.valid
            for child_ref in child_refs(text):
                assert child_ref not in seen, f"{child_ref} delivered twice"
                seen[child_ref] = code
    assert seen == {f"{ref_of[r]}-1": school_of[r] for r in refs}
    for r in refs:
        assert gw.events(ref_of[r]).count("delivered") == 1, r
    await gw.verify_receipts()


async def test_dropped_after_data_is_retried_with_the_same_message_id(
        gateway_home: GatewayFactory, template: Template) -> None:
    """A school that takes DATA and drops the line unanswered gets a resend, same Message-ID."""
    gw = await gateway_home()
    inbox = await gw.inbox(template, SCHOOL_A)
    inbox.drops = 1
    message = gw.signal("VT-DROP-1", SANNE)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(message)).code == 250
    await _wait_for(lambda: gw.delivered("VT-DROP-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    assert len(inbox.received) == 2
    first, second = inbox.received
    assert first.header("Message-ID") == second.header("Message-ID") != ""
    assert first.data == second.data
    ref = gw.ref_of("VT-DROP-1")
    assert ref is not None
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "deferred", "delivered"]
    assert gw.rows("SELECT state, attempts FROM notices") == [("delivered", 2)]
    await gw.verify_receipts()
