"""The laboratory's SMTP neighbours: the schools' servers, the relay, and a raw client.

Takes a directory for the schools' own CA; produces aiosmtpd servers on loopback in a thread
of their own (STARTTLS required, unless a school offers none) that record every DATA, and
`Raw`, an SMTP client that writes exactly the bytes it is given. Every reply read is kept in
`SEEN` for the sweep at the end of the run. A missing tool raises `RuntimeError`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as AioSMTP
from lab_mail import crlf, tool

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


# -- TLS for the school servers -------------------------------------------------------------


def make_school_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of the schools' own and a 127.0.0.1 server certificate: (ca.pem, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    openssl = tool("openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], capture_output=True, check=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(ca_key), "-out", str(ca_pem), "-days", "3",
        "-subj", "/CN=Attack review school CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "3", "-extfile", str(ext))
    return ca_pem, cert, key


# -- fake school servers (and the relay), in a thread of their own ----------------------------


@dataclass
class Got:
    at: float  # time.monotonic()
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    reply: str


@dataclass
class FakeServer:
    """A school's mail server on loopback: STARTTLS required; records every DATA it gets (also
    those it refuses) and answers the queued replies first, then `default` (or 250)."""

    name: str
    received: list[Got] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    default: str | None = None
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or b"")
        with self.lock:
            if self.replies:
                reply = self.replies.pop(0)
            else:
                reply = self.default or f"250 2.0.0 Ok: queued as {secrets.token_hex(5).upper()}"
            self.received.append(Got(time.monotonic(), str(envelope.mail_from),
                                     list(envelope.rcpt_tos), data, reply))
        return reply

    def accepted(self) -> list[Got]:
        with self.lock:
            return [g for g in self.received if g.reply.startswith("250")]

    def all(self) -> list[Got]:
        with self.lock:
            return list(self.received)


class ServerThread:
    """An event loop in a thread carrying the fake servers (the harness itself blocks)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls.load_cert_chain(str(cert), str(key))
        self.servers: list[asyncio.Server] = []

    def add(self, fake: FakeServer, tls: bool = True) -> FakeServer:
        async def start() -> asyncio.Server:
            def factory() -> AioSMTP:
                if not tls:  # a server that offers no STARTTLS at all
                    return AioSMTP(fake, hostname="school.example")
                return AioSMTP(fake, hostname="school.example", tls_context=self.tls,
                               require_starttls=True)
            return await self.loop.create_server(factory, HOST, 0)

        server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        fake.port = int(server.sockets[0].getsockname()[1])
        self.servers.append(server)
        return fake

    def stop(self) -> None:
        async def close() -> None:
            for server in self.servers:
                server.close()
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


# -- a raw SMTP client ----------------------------------------------------------------------


# (what was sent last, reply) for every reply read: scanned at the end of the run.
SEEN: list[tuple[str, str]] = []


@dataclass
class Reply:
    code: int  # -1: the connection closed (or timed out) without a reply
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}" if self.code >= 0 else f"(closed: {self.text})"


class Raw:
    """Writes exactly the bytes it is given; reads replies line by line."""

    def __init__(self, port: int, timeout: float = 20.0, greet: bool = True) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection((HOST, port),
                                                                             timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.last = "(greeting)"
        self.greeting: Reply | None = self.reply() if greet else None

    def _line(self) -> bytes | None:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except (TimeoutError, OSError):  # also ConnectionError and ssl.SSLError
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def reply(self, timeout: float | None = None) -> Reply:
        if timeout is not None:
            self.sock.settimeout(timeout)
        lines: list[str] = []
        try:
            while True:
                raw = self._line()
                if raw is None:
                    return Reply(-1, " | ".join(lines) or "no reply")
                line = raw.decode("utf-8", "replace").rstrip("\r")
                lines.append(line[4:])
                if line[3:4] != "-":
                    try:
                        got = Reply(int(line[:3]), "\n".join(lines))
                    except ValueError:
                        got = Reply(0, line)
                    SEEN.append((self.last, str(got)))
                    return got
        finally:
            if timeout is not None:
                self.sock.settimeout(self.timeout)

    def send(self, data: bytes) -> None:
        self.last = data[:60].decode("utf-8", "replace")
        # A peer that has closed the connection is seen at the next reply (code -1).
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def cmd(self, line: str | bytes, timeout: float | None = None) -> Reply:
        self.send((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return self.reply(timeout)

    def starttls(self, ca: Path, send_command: bool = True) -> Reply:
        if send_command:
            r = self.cmd("STARTTLS")
            if r.code != 220:
                return r
        ctx = ssl.create_default_context(cafile=str(ca))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOST)
        return Reply(220, "TLS established")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def auth_plain_line(user: str | bytes, password: str | bytes) -> bytes:
    u = user.encode() if isinstance(user, str) else user
    p = password.encode() if isinstance(password, str) else password
    return b"AUTH PLAIN " + base64.b64encode(b"\0" + u + b"\0" + p)


def dot_stuff(message: bytes) -> bytes:
    stuffed = crlf(message).replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed

