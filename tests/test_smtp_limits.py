"""The listener's own limits: what aiosmtpd does not bound, the gateway does."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import sqlite3
import ssl
from pathlib import Path

import pytest
from conftest import (
    GATEWAY,
    PASSWORD,
    SANNE_BIRTH,
    SCHOOL_A,
    SENDER,
    SENDER_ADDRESS,
    Harness,
    HarnessFactory,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.admin import verbs as admin
from gateway.crypto.tlsdev import make_ca, make_server_cert
from gateway.devkit.demokit import json_payload, submit
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


class RawClient:
    """An SMTP client that says exactly what the test tells it to, byte for byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> tuple[RawClient, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer)
        return client, await client.reply()

    async def reply(self) -> str:
        lines = []
        while True:
            line = (await self.reader.readline()).decode()
            if not line:
                break
            lines.append(line.rstrip("\r\n"))
            if line[3:4] != "-":
                break
        return "\n".join(lines)

    async def cmd(self, line: str) -> str:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def starttls(self, ca: Path) -> None:
        assert (await self.cmd("STARTTLS")).startswith("220")
        await self.writer.start_tls(ssl.create_default_context(cafile=str(ca)),
                                    server_hostname="localhost")

    async def login(self, harness: Harness, user: str = SENDER,
                    password: str = PASSWORD) -> str:
        await self.cmd("EHLO sender.example")
        await self.starttls(harness.ctx.config.smtp.tls_cert.parent / "ca.pem")
        await self.cmd("EHLO sender.example")
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return await self.cmd(f"AUTH PLAIN {token}")

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def _rss_kib(pid: str = "self") -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def test_endless_data_line_is_refused_and_memory_stays_bounded(harness: Harness) -> None:
    """50 MB in one DATA line without CRLF: 552 5.3.4, connection closed, memory bounded."""
    client, _ = await RawClient.connect(harness.port)
    assert (await client.login(harness)).startswith("235")
    assert (await client.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")).startswith("250")
    assert (await client.cmd(f"RCPT TO:<{GATEWAY}>")).startswith("250")
    assert (await client.cmd("DATA")).startswith("354")
    before = _rss_kib()
    chunk = b"a" * (1 << 16)
    for _ in range(50 * 16):  # 50 MiB
        client.writer.write(chunk)
        await client.writer.drain()
    after = _rss_kib()
    reply = await client.cmd("\r\n.")
    assert (await client.cmd("NOOP")).startswith("250"), "the session is still usable"
    await client.close()
    growth_mib = (after["VmRSS"] - before["VmRSS"]) / 1024
    print(f"resident memory before {before['VmRSS']} KiB, after {after['VmRSS']} KiB "
          f"(peak {after['VmHWM']} KiB) for a 50 MiB line")
    assert reply.startswith("552 5.3.4")
    assert growth_mib < 20, f"memory grew by {growth_mib:.0f} MiB for one line"


async def test_sessions_per_client_are_capped_with_421(harness_factory: HarnessFactory) -> None:
    """Past max_sessions_per_client, a new connection is answered 421 4.7.0 and closed."""
    h = await harness_factory(smtp_extra="max_sessions_per_client = 2")
    first, greeting = await RawClient.connect(h.port)
    second, _ = await RawClient.connect(h.port)
    third, refused = await RawClient.connect(h.port)
    assert greeting.startswith("220") and refused.startswith("421 4.7.0")
    assert await third.reader.read() == b""
    await first.close()
    await asyncio.sleep(0.05)  # let the server see the close before counting again
    fourth, again = await RawClient.connect(h.port)
    assert again.startswith("220")
    for c in (second, third, fourth):
        await c.close()


async def test_total_sessions_are_capped_with_421(harness_factory: HarnessFactory) -> None:
    """Past max_sessions in total, a new connection is answered 421 4.7.0."""
    h = await harness_factory(smtp_extra="max_sessions = 1")
    first, _ = await RawClient.connect(h.port)
    second, refused = await RawClient.connect(h.port)
    assert refused.startswith("421 4.7.0")
    await first.close()
    await second.close()


async def test_idle_client_is_told_421_before_the_close(harness_factory: HarnessFactory) -> None:
    """A client silent past timeout_seconds gets 421 4.7.0 and the connection ends."""
    h = await harness_factory(smtp_extra="timeout_seconds = 1")
    client, _ = await RawClient.connect(h.port)
    reply = await asyncio.wait_for(client.reply(), 10)
    assert reply.startswith("421 4.7.0")
    await client.close()


async def test_auth_failures_slow_then_refuse_and_log_no_secret(
        harness: Harness, capsys: object) -> None:
    """Repeated AUTH failures from one address lead to 454 4.7.0, even for the right password."""
    assert harness.daemon.handler is not None
    harness.daemon.handler.throttle = AuthThrottle(max_delay=0.01)
    # smtplib tries PLAIN and then LOGIN: each submission is two failed attempts.
    for i in range(5):
        reply = await harness.send(b"x", password=f"guess-{i}-hunter2")
        assert reply.code == 535, reply
    reply = await harness.send(b"x", password=PASSWORD)
    assert reply.code == 454 and reply.text.startswith("4.7.0")
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "sender.auth_refused" in out and "sender.auth_failed" in out
    assert "hunter2" not in out and PASSWORD not in out


async def test_unknown_login_is_not_logged(harness: Harness, capsys: object) -> None:
    """A login that names no sender (perhaps a password in the wrong field) is not logged."""
    await harness.send(b"x", user="Tr0ub4dor&3-secret", password="whatever-long-enough")
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "Tr0ub4dor" not in out and "(unknown)" in out


async def test_client_certificate_authenticates_a_sender(harness_factory: HarnessFactory,
                                                         tmp_path: Path) -> None:
    """A sender pinned by client certificate submits without AUTH; others still get 530."""
    ca_pair, ca_cert, ca_key = make_ca(tmp_path / "client-ca", "senders' client CA")
    pinned = make_server_cert(tmp_path / "client-ca", "vt-mta", ["mta.vt.example.nl"],
                              ca_cert, ca_key, client=True)
    other = make_server_cert(tmp_path / "client-ca", "other-mta", ["mta.other.example"],
                             ca_cert, ca_key, client=True)
    h = await harness_factory(smtp_extra=f'client_ca_file = "{ca_pair.cert}"')
    der = x509.load_pem_x509_certificate(pinned.cert.read_bytes()).public_bytes(
        serialization.Encoding.DER)
    fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    await admin.senders_add(h.ctx, "vt-mta", h.ids.sender.public_key(),
                            h.ids.sender.fingerprint, None, [], [fingerprint])
    message = h.signal(json_payload([{"name": "Sanne de Vries",
                                      "birthdate": SANNE_BIRTH.isoformat()}]))
    ca = h.ctx.config.smtp.tls_cert.parent / "ca.pem"
    common = {"user": None, "password": None, "mail_from": SENDER_ADDRESS, "rcpt": GATEWAY,
              "message": message, "ca_file": ca}
    reply = await submit("127.0.0.1", h.port, client_cert=pinned, **common)
    assert reply.code == 250, reply
    reply = await submit("127.0.0.1", h.port, client_cert=other, **common)
    assert reply.code == 530
    reply = await submit("127.0.0.1", h.port, **common)
    assert reply.code == 530
    await h.drain()
    assert len(h.inboxes[SCHOOL_A].received) == 1


async def test_outer_header_flood_is_552(harness: Harness) -> None:
    """A message opening with thousands of header lines is refused with 552 5.3.4."""
    flood = b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\nbody\r\n"
    reply = await harness.send(flood)
    assert reply.code == 552 and reply.text.startswith("5.3.4")


async def test_ten_thousand_part_message_is_554_575(harness: Harness) -> None:
    """A multipart of 10,000 tiny parts is refused with 554 5.7.5 before any parsing."""
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(10_000))
    bomb = (b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
            b'boundary="b"\r\n\r\n' + parts + b"--b--\r\n")
    reply = await harness.send(bomb)
    assert reply.code == 554 and reply.text.startswith("5.7.5")


async def test_deep_nesting_inside_the_encryption_is_554_560(harness: Harness) -> None:
    """A signed payload nested 200 multiparts deep is refused with 554 5.6.0."""
    inner = b"Content-Type: application/json\r\n\r\n{}\r\n"
    for depth in range(200):
        inner = (b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n' % (depth, depth)
                 + inner + b"\r\n--n%d--\r\n" % depth)
    reply = await harness.send(harness.signal(inner))
    assert reply.code == 554 and reply.text.startswith("5.6.0")


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
