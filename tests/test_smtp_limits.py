"""The listener's own limits: what aiosmtpd does not bound, the gateway does. Clients that keep
trying (stalling, refused again and again, AUTH spraying) are in tests/test_smtp_abuse.py."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ssl
from pathlib import Path

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

from gateway.admin.senders import senders_add
from gateway.crypto.tlsdev import make_ca, make_server_cert
from gateway.devkit.demokit import json_payload, submit
from gateway.ingress.throttle import (
    AuthThrottle,
)


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
    await senders_add(h.ctx, "vt-mta", h.ids.sender.public_key(),
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
