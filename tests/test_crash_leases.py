"""Leases under `kill -9`: an attempt killed in flight is taken back at restart and sent with
the same Message-ID; a second `serve` that cannot start leaves the live leases alone."""

from __future__ import annotations

import signal

from conftest import (
    SCHOOL_A,
    Template,
)
from crash_gateway import (
    SANNE,
    DaemonProcess,
    GatewayFactory,
    HangingInbox,
    gateway_home_fixture,  # noqa: F401  (the fixture gateway_home)
)
from test_process import _wait_for


async def test_lease_of_an_attempt_killed_in_flight_is_recovered(
        gateway_home: GatewayFactory, template: Template) -> None:
    """kill -9 during a hanging delivery: on restart the lease is recovered and it is delivered."""
    gw = await gateway_home()
    hanging = await gw.inbox(template, SCHOOL_A, HangingInbox())
    assert isinstance(hanging, HangingInbox)
    message = gw.signal("VT-LEASE-1", SANNE)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(message)).code == 250
    await _wait_for(lambda: hanging.entered == 1)
    # The attempt is in flight: claimed under a lease, nothing recorded about its outcome.
    [(state, lease, attempts)] = gw.rows("SELECT state, lease_until, attempts FROM notices")
    assert (state, attempts) == ("queued", 1) and lease is not None
    assert await gw.proc.stop(signal.SIGKILL) == -signal.SIGKILL
    await hanging.stop()

    inbox = await gw.inbox(template, SCHOOL_A)  # the school is back, on the same port
    await gw.proc.launch(gw.listen)
    await _wait_for(lambda: gw.delivered("VT-LEASE-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    assert len(inbox.received) == 1 and hanging.received == []
    [(notice_id, state, crashes)] = gw.rows("SELECT id, state, crashes FROM notices")
    assert (state, crashes) == ("delivered", 1)
    recovered = [e for e in gw.proc.events() if e.get("event") == "notice.lease_recovered"]
    assert [e.get("notice") for e in recovered] == [notice_id]
    ref = gw.ref_of("VT-LEASE-1")
    assert ref is not None
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "delivered"]
    await gw.verify_receipts()


async def test_second_serve_that_cannot_start_leaves_leases_alone(
        gateway_home: GatewayFactory, template: Template) -> None:
    """A second `serve` on the same state that fails to bind does not touch live leases."""
    gw = await gateway_home()
    hanging = await gw.inbox(template, SCHOOL_A, HangingInbox())
    assert isinstance(hanging, HangingInbox)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(gw.signal("VT-TWICE-1", SANNE))).code == 250
    await _wait_for(lambda: hanging.entered == 1)
    second = DaemonProcess(gw.config.path, gw.proc.log.with_name("second.log"), gw.proc.tmpdir)
    second.proc = second.spawn()
    assert await second.exited() != 0  # the port is taken: it refuses to run
    assert gw.proc.proc is not None and gw.proc.proc.poll() is None
    [(lease, crashes)] = gw.rows("SELECT lease_until, crashes FROM notices")
    assert (lease is not None, crashes) == (True, 0), "the live attempt's lease was taken"
