"""A municipality's first week (issue 12): an AUTH lockout is shared by the listener's sessions,
shown by `status` and lifted by `senders unlock`. Real gateways on loopback."""

from __future__ import annotations

import asyncio
import json

from conftest import SENDER, Harness
from test_first_week import cli, events, watch_logs
from test_smtp_limits import RawClient

from gateway.admin.status import status as gateway_status
from gateway.ingress.throttle import REFUSE_AFTER_PER_ADDRESS, REFUSE_AFTER_PER_LOGIN, AuthThrottle

# -- point 5: an AUTH lockout is shared, shown and lifted --------------------------------------

async def lock_out(h: Harness) -> None:
    """Ten wrong passwords for the sender from this address: the address is locked out."""
    assert h.daemon.handler is not None
    h.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    for i in range(REFUSE_AFTER_PER_ADDRESS):
        client, _ = await RawClient.connect(h.port)
        assert (await client.login(h, password=f"wrong-{i}-password")).startswith("535")
        await client.close()


async def login_reply(h: Harness) -> str:
    client, _ = await RawClient.connect(h.port)
    try:
        return await client.login(h)
    finally:
        await client.close()


async def test_lockout_is_in_status_and_unlock_lifts_it(harness: Harness) -> None:
    """A sender locked out by the AUTH throttle is listed by `status` (exit 1) until `senders
    unlock` lifts it; the running daemon then takes the right password at once."""
    h = harness
    logs = watch_logs()
    await lock_out(h)
    assert (await login_reply(h)).startswith("454 4.7.0")
    cfg = str(h.ctx.config.path)
    code, out, _ = await cli("--config", cfg, "status", "--json", logs=logs)
    data = json.loads(out)
    [line] = [a for a in data["attention"] if "locked out" in a]
    assert code == 1 and line.startswith(f"sender {SENDER} is locked out of AUTH until ")
    assert "address 127.0.0.1" in line and f"`senders unlock {SENDER}`" in line
    assert {(lk["scope"], lk["subject"], lk["login"]) for lk in data["auth_lockouts"]} == {
        ("address", "127.0.0.1", SENDER)}
    code, out, _ = await cli("--config", cfg, "senders", "unlock", SENDER, logs=logs)
    assert code == 0 and out.startswith(f"sender {SENDER} unlocked: address 127.0.0.1")
    code, out, _ = await cli("--config", cfg, "status", "--json", logs=logs)
    assert not [a for a in json.loads(out)["attention"] if "locked out" in a]
    assert (await login_reply(h)).startswith("235")
    [unlocked] = events(logs.getvalue(), "sender.unlocked")
    assert (unlocked["scope"], unlocked["subject"]) == ("address", "127.0.0.1")
    [receipt] = [r for r in await h.receipts() if r.event == "sender.unlocked"]
    assert receipt.detail["lockouts"] == ["address 127.0.0.1"]
    code, _, err = await cli("--config", cfg, "senders", "unlock", SENDER)
    assert code == 1 and err.count("\n") == 1 and "is not locked out" in err


async def test_guesses_at_unknown_logins_store_no_login_text(harness: Harness) -> None:
    """Many wrong logins that name no sender lock out the address, written as "(unknown)";
    no login text (perhaps a mistyped password) reaches the database, and `status` does not
    call a sender locked out."""
    h = harness
    assert h.daemon.handler is not None
    h.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    # From two addresses, so that the login too reaches its limit (20) and is locked out.
    for i in range(REFUSE_AFTER_PER_LOGIN + 2):
        source = "127.0.0.2" if i < REFUSE_AFTER_PER_ADDRESS else "127.0.0.3"
        reader, writer = await asyncio.open_connection("127.0.0.1", h.port,
                                                       local_addr=(source, 0))
        client = RawClient(reader, writer)
        await client.reply()
        await client.login(h, user="Tr0ub4dor-secret", password=f"guess-{i}-password")
        await client.close()
    rows = await h.ctx.store.lockouts.running(h.ctx.clock())
    assert [(r.scope, r.subject, r.login) for r in rows] == [
        ("address", "127.0.0.2", "(unknown)"), ("address", "127.0.0.3", "(unknown)")]
    db = h.ctx.config.storage.path
    for path in (db, db.with_name(db.name + "-wal")):
        raw = await asyncio.to_thread(path.read_bytes)
        assert b"Tr0ub4dor" not in raw
    status = await gateway_status(h.ctx, True)
    assert not [a for a in status.attention if "locked out" in a]


async def test_a_restarted_daemon_forgets_old_lockouts(harness: Harness) -> None:
    """Lockouts written by an earlier run are cleared when the listener starts: its throttle
    is empty, so `status` must not show them."""
    h = harness
    await lock_out(h)
    assert await h.ctx.store.lockouts.running(h.ctx.clock())
    await h.daemon.shutdown()
    await h.daemon.start()
    assert await h.ctx.store.lockouts.running(h.ctx.clock()) == []
