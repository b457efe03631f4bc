"""The listener's limits on clients that keep trying (issue 11): sessions that go nowhere, clients
refused again and again, AUTH spraying, guessing ack addresses."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from conftest import PASSWORD, SENDER, Harness, HarnessFactory
from test_smtp_limits import RawClient

from gateway.ingress.throttle import (
    REFUSE_AFTER_PER_ADDRESS,
    REFUSE_AFTER_PER_LOGIN,
    WINDOW_SECONDS,
    AuthThrottle,
    ClientRefusals,
    Lockout,
    StallCounter,
)
from gateway.store.api import Tx
from gateway.store.sqlite.connection import SqliteStore
from gateway.store.sqlite.schema import SCHEMA

# -- issue 11: sessions that go nowhere, clients refused again and again, AUTH spraying --------


async def test_stalling_unauthenticated_session_is_cut_with_421(
        harness_factory: HarnessFactory, capsys: object) -> None:
    """Past max_stalling_commands commands that go nowhere, an unauthenticated session gets
    421 4.7.0 instead of its next command and is closed; its slot is free again."""
    h = await harness_factory(smtp_extra="max_stalling_commands = 3\nmax_sessions = 1")
    client, _ = await RawClient.connect(h.port)
    for command in ("EHLO a.example", "NOOP", "NOOP"):
        assert (await client.cmd(command))[:1] == "2"
    reply = await client.cmd("NOOP")
    assert reply.startswith("421 4.7.0"), reply
    assert await client.reader.read() == b""
    await client.close()
    assert h.daemon.handler is not None
    await asyncio.wait_for(h.daemon.handler.sessions.idle.wait(), 10)
    again, greeting = await RawClient.connect(h.port)
    assert greeting.startswith("220"), "the one session slot is free again"
    await again.close()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert '"session.cut"' in out and '"stalling"' in out


@pytest.mark.parametrize("command", ["MAIL FROM:<a@example.org>", "XYZZY", "AUTH PLAIN"])
async def test_refusals_aiosmtpd_gives_itself_count_as_stalling(
        harness_factory: HarnessFactory, command: str) -> None:
    """Commands aiosmtpd refuses without calling a command method (530 before STARTTLS, 500
    for an unknown command) stall too: the attack review's re-run sent 18 of them uncounted."""
    h = await harness_factory(smtp_extra="max_stalling_commands = 3")
    client, _ = await RawClient.connect(h.port)
    replies = [await client.cmd(command) for _ in range(3)]
    assert all(reply[:1] == "5" for reply in replies), replies
    reply = await client.cmd(command)
    assert reply.startswith("421 4.7.0"), reply
    assert await client.reader.read() == b""
    await client.close()


async def test_progress_and_authentication_are_not_stalling(
        harness_factory: HarnessFactory) -> None:
    """STARTTLS starts the count again, and an authenticated sender's NOOPs are not counted."""
    h = await harness_factory(smtp_extra="max_stalling_commands = 2")
    client, _ = await RawClient.connect(h.port)
    assert (await client.cmd("EHLO a.example")).startswith("250")
    await client.starttls(h.ctx.config.smtp.tls_cert.parent / "ca.pem")
    assert (await client.cmd("EHLO a.example")).startswith("250")
    token = base64.b64encode(f"\0{SENDER}\0{PASSWORD}".encode()).decode()
    assert (await client.cmd(f"AUTH PLAIN {token}")).startswith("235")
    for _ in range(5):
        assert (await client.cmd("NOOP")).startswith("250")
    # The commands behind the limits still carry aiosmtpd's help texts.
    assert (await client.cmd("HELP")).startswith("250 Supported commands: AUTH DATA EHLO")
    assert (await client.cmd("HELP RCPT")).startswith("250 Syntax: RCPT TO: <address>")
    await client.close()


async def test_session_lifetime_is_capped_with_421(harness_factory: HarnessFactory) -> None:
    """A session kept busy (NOOP every 0.2 s, authenticated) past max_session_seconds gets
    421 4.7.0 and is closed, although no single command ever waited for timeout_seconds."""
    h = await harness_factory(smtp_extra="timeout_seconds = 1\nmax_session_seconds = 1")
    client, _ = await RawClient.connect(h.port)
    assert (await client.login(h)).startswith("235")
    reply, deadline = "", asyncio.get_running_loop().time() + 10
    while not reply and asyncio.get_running_loop().time() < deadline:
        assert (await client.cmd("NOOP")).startswith("250")
        # The client's own pace: it waits 0.2 s between commands, reading what comes meanwhile.
        with contextlib.suppress(TimeoutError):
            reply = await asyncio.wait_for(client.reply(), 0.2)
    assert reply.startswith("421 4.7.0") and "too long" in reply, reply
    assert await client.reader.read() == b""
    await client.close()


async def test_client_cut_off_again_and_again_is_refused_at_connect(
        harness_factory: HarnessFactory, capsys: object) -> None:
    """max_refusals_per_client cut-offs from one address: its next connection is answered
    421 4.7.0 at once, and the block is logged once as client.blocked."""
    h = await harness_factory(smtp_extra="max_stalling_commands = 1\n"
                                         "max_refusals_per_client = 2")
    for _ in range(2):
        client, greeting = await RawClient.connect(h.port)
        assert greeting.startswith("220")
        assert (await client.cmd("NOOP")).startswith("250")
        assert (await client.cmd("NOOP")).startswith("421 4.7.0")
        await client.close()
    refused, greeting = await RawClient.connect(h.port)
    assert greeting.startswith("421 4.7.0"), greeting
    assert await refused.reader.read() == b""
    await refused.close()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count('"client.blocked"') == 1


def test_client_refusals_block_for_a_while_then_forget() -> None:
    """ClientRefusals: the limit-th refusal within the window blocks the address for
    block_seconds; refusals while blocked do not extend it; other addresses are untouched."""
    refusals = ClientRefusals(limit=3, block_seconds=100)
    assert not refusals.record("192.0.2.1", 0) and not refusals.record("192.0.2.1", 10)
    assert not refusals.blocked("192.0.2.1", 10)
    assert not refusals.record("192.0.2.1", 150), "the first two are forgotten by now"
    assert not refusals.record("192.0.2.1", 160)
    assert refusals.record("192.0.2.1", 170)
    assert refusals.blocked("192.0.2.1", 171) and not refusals.blocked("192.0.2.2", 171)
    assert not refusals.record("192.0.2.1", 260)
    assert refusals.blocked("192.0.2.1", 269) and not refusals.blocked("192.0.2.1", 270)
    assert not refusals.record("192.0.2.1", 271), "the count starts afresh"


def test_stall_counter_counts_only_commands_that_go_nowhere() -> None:
    """StallCounter: NOOP, RSET, MAIL and refused RCPTs count; STARTTLS 220, AUTH 235, an
    accepted RCPT and a DATA answered 250 start the count again."""
    counter = StallCounter(limit=3)
    for command, reply in (("EHLO", "250 ok"), ("MAIL", "250 2.1.0 OK"),
                           ("RCPT", "550 5.1.1 Unknown")):
        counter.record(command, reply)
    assert counter.exhausted()
    for command, reply in (("STARTTLS", "220 Ready"), ("AUTH", "235 2.7.0 ok"),
                           ("RCPT", "250 2.1.5 OK"), ("DATA", "250 2.0.0 ok")):
        counter.record(command, reply)
        assert counter.count == 0
    counter.record("AUTH", "535 5.7.8 failed")
    counter.record("DATA", "550 5.7.1 automatic")
    assert counter.count == 2 and not counter.exhausted()


def test_a_good_login_does_not_reset_its_address() -> None:
    """AuthThrottle: a success clears that login's failures only; the address keeps counting
    the guesses at other logins and is refused at the limit."""
    throttle = AuthThrottle(max_delay=0)
    for i in range(REFUSE_AFTER_PER_ADDRESS):
        throttle.record_failure("192.0.2.1", f"victim-{i}", float(i))
        throttle.record_success("192.0.2.1", "mine")
        throttle.record_success("192.0.2.1", f"victim-{i}")
    assert throttle.refused("192.0.2.1", "mine", 20.0)
    assert not throttle.refused("192.0.2.2", "mine", 20.0)


def test_lockouts_say_what_refuses_and_until_when_and_can_be_lifted() -> None:
    """AuthThrottle.lockouts names the address and login lockouts with the seconds left (until
    the failure that reached the limit leaves the window); `lift` ends one of them."""
    throttle = AuthThrottle(max_delay=0)
    for i in range(REFUSE_AFTER_PER_LOGIN):
        throttle.record_failure("192.0.2.1" if i < REFUSE_AFTER_PER_ADDRESS else "192.0.2.2",
                                "vt", float(i))
    now = 30.0
    assert throttle.lockouts("192.0.2.1", "vt", now) == [
        Lockout("address", "192.0.2.1", WINDOW_SECONDS - now),
        Lockout("login", "vt", WINDOW_SECONDS - now)]
    assert throttle.lockouts("192.0.2.3", "other", now) == []
    throttle.lift("login", "vt")
    assert throttle.lockouts("192.0.2.3", "vt", now) == []
    assert throttle.refused("192.0.2.1", "vt", now)
    throttle.lift("address", "192.0.2.1")
    assert not throttle.refused("192.0.2.1", "vt", now)


async def test_auth_spray_with_one_valid_login_is_refused(harness: Harness) -> None:
    """Wrong passwords for other logins from one address, each followed by a good login of
    one's own: still 454 4.7.0 once the address reaches its limit."""
    assert harness.daemon.handler is not None
    harness.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    for i in range(REFUSE_AFTER_PER_ADDRESS):
        client, _ = await RawClient.connect(harness.port)
        assert (await client.login(harness)).startswith("235")
        await client.close()
        client, _ = await RawClient.connect(harness.port)
        assert (await client.login(harness, user=f"victim-{i}",
                                   password="guess-1234")).startswith("535")
        await client.close()
    for user, password in (("victim-x", "guess-1234"), (SENDER, PASSWORD)):
        client, _ = await RawClient.connect(harness.port)
        reply = await client.login(harness, user=user, password=password)
        assert reply.startswith("454 4.7.0"), reply
        await client.close()


async def test_ack_lookup_uses_an_index_on_an_upgraded_database(tmp_path: Path) -> None:
    """The ack digest look-ups run on an index (EXPLAIN QUERY PLAN of the exact statements),
    also on a database of 30,000 notices made before the column existed."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the first release's tables: no ack columns yet
        db.executescript(SCHEMA)
        db.executemany(
            "INSERT INTO notices (ref, school, message_id, recipients, fingerprints, message,"
            " state, next_attempt_at, created_at) VALUES (?, '12AB00', ?, '[]', '[]', X'',"
            " 'delivered', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
            ((f"HWC-{i}", f"<{i}@x>") for i in range(30_000)))
    store = await SqliteStore.open(path, b"k" * 32)
    try:
        await store.in_thread(
            lambda db: db.execute("UPDATE notices SET ack_digest = printf('%064d', id)"))
        statements: list[str] = []
        await store.in_thread(lambda db: db.set_trace_callback(statements.append))
        known = f"{1:064d}"
        assert not await store.notices.ack_pending("f" * 64)
        assert await store.notices.ack_pending(known)

        async def body(tx: Tx) -> None:
            assert await tx.notices.acknowledge(known, dt.datetime.now(dt.UTC)) is not None

        await store.write(body)
        await store.in_thread(lambda db: db.set_trace_callback(None))
        lookups = [s for s in statements if "WHERE ack_digest" in s and "notices" in s]
        assert len(lookups) == 3, statements
        for statement in lookups:
            def explain(db: sqlite3.Connection, s: str = statement) -> list[sqlite3.Row]:
                return list(db.execute("EXPLAIN QUERY PLAN " + s).fetchall())

            found = await store.in_thread(explain)
            plan = " | ".join(str(row[3]) for row in found)
            assert "USING INDEX notices_ack" in plan, (statement, plan)
    finally:
        await store.close()


async def test_guessing_ack_addresses_blocks_the_client(harness_factory: HarnessFactory,
                                                       capsys: object) -> None:
    """Each unknown ack address (550 5.1.1) counts against the client address: at
    max_refusals_per_client its session ends with 421 4.7.0 and new ones are refused."""
    h = await harness_factory(smtp_extra="max_refusals_per_client = 3")
    client, _ = await RawClient.connect(h.port)
    await client.cmd("EHLO guesser.example")
    await client.starttls(h.ctx.config.smtp.tls_cert.parent / "ca.pem")
    await client.cmd("EHLO guesser.example")
    assert (await client.cmd("MAIL FROM:<x@guesser.example>")).startswith("250")
    for c in "ab":
        assert (await client.cmd(f"RCPT TO:<ack+{c * 26}@hwc.example.nl>")).startswith("550 5.1.1")
    assert (await client.cmd(f"RCPT TO:<ack+{'c' * 26}@hwc.example.nl>")).startswith("550 5.1.1")
    assert (await client.reply()).startswith("421 4.7.0")
    await client.close()
    refused, greeting = await RawClient.connect(h.port)
    assert greeting.startswith("421 4.7.0"), greeting
    await refused.close()
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert '"client.blocked"' in out and "ack+" not in out
