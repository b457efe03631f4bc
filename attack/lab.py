"""The attack harness's laboratory: a gateway set up as an administrator would, and its neighbours.

Takes a checkout (its `gateway/` and `config.toml`); produces a running daemon on temporary
state with senders, schools and pupils registered, the schools' mail servers and the relay,
and the means to attack it. Nothing here imports the gateway: the daemon and every
administrator verb run as separate processes (`PYTHONPATH=REPO python -m gateway ...`, with the
Python running the harness), keys are made with the gpg command line in throwaway homes, the
school servers and the relay are small aiosmtpd servers with STARTTLS and a CA of their own,
and the SMTP client writes raw bytes on a socket. Loopback (127.0.0.1) only. A missing tool
(gpg, gpgconf, openssl) or a set-up step the checkout refuses raises `RuntimeError` with one
line saying which.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as AioSMTP

# The daemon and the verbs run with the interpreter running the harness (the project's .venv
# under `make attack`), so that they find the same aiosmtpd, python-gnupg, ... as the tests.
PY = sys.executable
HOST = "127.0.0.1"
GATEWAY = "leerplicht@hwc.example.nl"
SENDER = "vt-utrecht"
SENDER_ADDRESS = "signalen@veiligthuis.example.nl"
PASSWORD = "correct horse battery staple"  # noqa: S105 - a throwaway sender on temporary state
OTHER_SENDERS = {"politie": "hwc@politie.example.nl", "opvang": "hwc@opvang.example.nl"}
SCHOOL_A, SCHOOL_D, SCHOOL_E, SCHOOL_P = "12AB00", "34CD01", "56EF00", "78GH00"
CONTACTS = {SCHOOL_A: "hwc@regenboog.example.nl", SCHOOL_D: "zorg@kompas.example.nl",
            SCHOOL_E: "hwc@jozef.example.nl", SCHOOL_P: "hwc@klaproos.example.nl"}
SCHOOL_NAMES = {SCHOOL_A: "Basisschool De Regenboog", SCHOOL_D: "Het Kompas",
                SCHOOL_E: "Sint-Jozefschool", SCHOOL_P: "De Klaproos"}
PLAINTEXT_SCHOOLS = {SCHOOL_P}  # their server offers no STARTTLS


def tool(name: str) -> str:
    """The full path of a command-line tool the laboratory needs (found once on PATH)."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found on PATH: the attack review needs it")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def bsn_with_prefix(prefix: str) -> str:
    """A 9-digit BSN passing the eleven-test, starting with the given 8 digits (or the next)."""
    n = int(prefix)
    while True:
        digits = [int(c) for c in f"{n:08d}"]
        total = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True))
        check = total % 11
        if check < 10:
            return f"{n:08d}{check}"
        n += 1


TODAY = dt.date.today()


def birth(years: int, month: int, day: int) -> dt.date:
    return dt.date(TODAY.year - years, month, day)


# -- gpg on the command line ---------------------------------------------------------------


class GpgFailed(RuntimeError):
    pass


def gpg(home: Path, *args: str, data: bytes = b"", check: bool = True) -> bytes:
    cmd = [tool("gpg"), "--homedir", str(home), "--batch", "--yes", "--trust-model", "always",
           "--pinentry-mode", "loopback", "--passphrase", "", "--no-auto-key-retrieve",
           "--auto-key-locate", "clear,local", "--disable-dirmngr", "--no-emit-version",
           "--no-comments", *args]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=120)
    if check and proc.returncode != 0:
        raise GpgFailed(f"gpg {' '.join(args)}: {proc.stderr.decode('utf-8', 'replace')[-400:]}")
    return proc.stdout


def gpg_decrypt(home: Path, data: bytes) -> tuple[bytes, str]:
    """(plaintext, status lines) of `gpg --decrypt`; plaintext b"" when it failed."""
    cmd = [tool("gpg"), "--homedir", str(home), "--batch", "--trust-model", "always",
           "--pinentry-mode", "loopback", "--passphrase", "", "--status-fd", "2",
           "--disable-dirmngr", "--decrypt"]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False, timeout=60)
    status = proc.stderr.decode("utf-8", "replace")
    # A signature gpg cannot check still leaves the plaintext usable: decryption is what counts.
    ok = proc.returncode == 0 or ("DECRYPTION_OKAY" in status and "END_DECRYPTION" in status)
    return (proc.stdout if ok else b""), status


def list_packets(home: Path, data: bytes) -> str:
    proc = subprocess.run([tool("gpg"), "--homedir", str(home), "--batch", "--list-packets"],
                          input=data, capture_output=True, check=False, timeout=60)
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def stop_agent(home: Path) -> None:
    subprocess.run([tool("gpgconf"), "--homedir", str(home), "--kill", "gpg-agent"],
                   capture_output=True, check=False, timeout=30)


@dataclass
class Party:
    """Someone outside the gateway with a GnuPG home of their own and one key."""

    home: Path
    fpr: str
    uid: str

    @classmethod
    def create(cls, home: Path, uid: str, rsa: bool = False) -> Party:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        if rsa:
            # RSA, so that gpg will sign with SHA-1 and RIPEMD-160 when told to (it refuses a
            # hash shorter than an EdDSA key wants).
            gpg(home, "--quick-gen-key", uid, "rsa2048", "sign,cert", "1y")
        else:
            gpg(home, "--quick-gen-key", uid, "future-default", "default", "1y")
        listing = gpg(home, "--with-colons", "--list-secret-keys").decode()
        fpr = next(line.split(":")[9] for line in listing.splitlines()
                   if line.startswith("fpr:"))
        if rsa:
            gpg(home, "--quick-add-key", fpr, "rsa2048", "encr", "1y")
        return cls(home, fpr, uid)

    def public(self) -> bytes:
        return gpg(self.home, "--armor", "--export", self.fpr)

    def import_key(self, data: bytes) -> None:
        gpg(self.home, "--import", data=data)

    def subkey_ids(self) -> set[str]:
        """Every (sub)key's long key ID (what a PKESK packet names)."""
        listing = gpg(self.home, "--with-colons", "--list-keys", self.fpr).decode()
        return {line.split(":")[4].upper() for line in listing.splitlines()
                if line.split(":")[0] in ("pub", "sub")}

    def revoked_public(self) -> bytes:
        """The key with its revocation certificate (made by gpg at key creation) applied."""
        rev = (self.home / "openpgp-revocs.d" / f"{self.fpr}.rev").read_text()
        rev = rev.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                          "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        gpg(self.home, "--import", data=rev.encode())
        return self.public()

    def decrypt(self, data: bytes) -> tuple[bytes, str]:
        return gpg_decrypt(self.home, data)


# -- MIME, as a sender's mail client writes it --------------------------------------------


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def json_entity(body: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(body, dict):
        data = json.dumps(body, ensure_ascii=False, indent=1).encode()
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = body
    return (b'Content-Type: application/json; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + crlf(data) + b"\r\n")


def signal_json(children: list[dict[str, str]], reference: str | None = None,
                **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"codeword": "Handle with Care", "children": children, **extra}
    if reference is not None:
        body["reference"] = reference
    return body


def encrypted_envelope(armored: bytes, *, mail_from: str = SENDER_ADDRESS, rcpt: str = GATEWAY,
                       message_id: str | None = None, extra_headers: str = "") -> bytes:
    boundary = "enc-" + secrets.token_hex(8)
    mid = message_id or f"<{secrets.token_hex(10)}@veiligthuis.example.nl>"
    head = (f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: ...\r\n"
            f"Date: {dt.datetime.now(dt.UTC):%a, %d %b %Y %H:%M:%S +0000}\r\n"
            f"Message-ID: {mid}\r\nMIME-Version: 1.0\r\n{extra_headers}"
            f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
            f'boundary="{boundary}"\r\n\r\n')
    return (head + f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\n"
            f"Version: 1\r\n\r\n--{boundary}\r\n"
            'Content-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n').encode() \
        + crlf(armored) + f"\r\n--{boundary}--\r\n".encode()


def signed_multipart(entity: bytes, signature: bytes, micalg: str = "pgp-sha512") -> bytes:
    boundary = "sig-" + secrets.token_hex(8)
    return (f'Content-Type: multipart/signed; micalg={micalg}; '
            f'protocol="application/pgp-signature"; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n").encode() + entity + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pgp-signature; name="signature.asc"\r\n\r\n').encode() \
        + crlf(signature) + f"\r\n--{boundary}--\r\n".encode()


def build_signal(entity: bytes, sender: Party, gateway_fpr: str, *, mode: str = "combined",
                 digest: str | None = None, message_id: str | None = None,
                 extra_headers: str = "") -> bytes:
    """A complete RFC 3156 signal made with the gpg command line."""
    entity = crlf(entity)
    dig = ["--digest-algo", digest] if digest else []
    if mode == "combined":
        armored = gpg(sender.home, "--armor", *dig, "--sign", "--local-user", f"{sender.fpr}!",
                      "--encrypt", "--recipient", gateway_fpr, data=entity)
    else:
        sig = gpg(sender.home, "--armor", *dig, "--detach-sign", "--local-user",
                  f"{sender.fpr}!", data=entity)
        micalg = f"pgp-{(digest or 'sha512').lower()}"
        armored = gpg(sender.home, "--armor", "--encrypt", "--recipient", gateway_fpr,
                      data=signed_multipart(entity, sig, micalg))
    return encrypted_envelope(armored, message_id=message_id, extra_headers=extra_headers)


def armored_blocks(data: bytes) -> list[bytes]:
    return re.findall(rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", data,
                      re.DOTALL)


def header_section(data: bytes) -> bytes:
    end = re.search(rb"\r?\n\r?\n", data)
    return data[: end.start()] if end else data


def inner_text(plaintext: bytes) -> tuple[str, str]:
    """(header section, decoded body) of a decrypted notice or status mail."""
    msg = BytesParser(policy=policy.default).parsebytes(plaintext)
    head = header_section(plaintext).decode("utf-8", "replace")
    try:
        body = msg.get_content() if not msg.is_multipart() else plaintext.decode("utf-8",
                                                                                "replace")
    except Exception:
        body = plaintext.decode("utf-8", "replace")
    return head, str(body)


ACK_RE = re.compile(r"ack\+[a-z2-7]{26}@[A-Za-z0-9.-]+")


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


# -- the gateway under test -----------------------------------------------------------------


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Set `key = value` in `[section]` of a TOML text, keeping everything else as it is."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"\s*{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def toml_str(value: str | Path) -> str:
    return json.dumps(str(value))


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


class Lab:
    """A gateway in a temp directory, set up from its README, and its neighbours."""

    def __init__(self, repo: Path, keep: bool = False) -> None:
        self.repo = repo
        self.keep = keep
        self.base = Path(tempfile.mkdtemp(prefix="hwc-attack-"))
        self.base.chmod(0o700)
        self.port = free_port()
        self.config = self.base / "config.toml"
        self.keys = self.base / "keys"
        self.db = self.base / "var" / "hwc-gateway.sqlite3"
        self.log = self.base / "gateway.log"
        self.daemon: Daemon | None = None
        self.servers: ServerThread | None = None
        self.homes: list[Path] = []
        self.cli_log: list[str] = []
        self.gateway_fpr = ""
        self.canaries: set[str] = set()

    # -- processes

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HWC_GATEWAY_CONFIG",)}
        env.update({"PYTHONPATH": str(self.repo), "PYTHONUNBUFFERED": "1",
                    "TMPDIR": str(self.base / "tmp")})
        env.update(extra or {})
        return env

    def cli(self, *args: str, stdin: bytes = b"", config: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, str, str]:
        cmd = [PY, "-m", "gateway", "--config", str(config or self.config), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, env=self.env(env),
                              timeout=timeout, check=False)
        out = proc.stdout.decode("utf-8", "surrogateescape")
        err = proc.stderr.decode("utf-8", "surrogateescape")
        self.cli_log.append(f"$ hwc-gateway {' '.join(args)} -> {proc.returncode}")
        return proc.returncode, out, err

    def must(self, *args: str, stdin: bytes = b"") -> str:
        rc, out, err = self.cli(*args, stdin=stdin)
        if rc != 0:
            raise RuntimeError(f"hwc-gateway {' '.join(args)} exited {rc}: {err.strip()[-500:]}")
        return out

    def start_daemon(self, wait: float = 60) -> Daemon:
        out = self.log.open("ab")
        proc = subprocess.Popen([PY, "-m", "gateway", "--config", str(self.config), "serve"],
                                stdout=out, stderr=subprocess.STDOUT, env=self.env())
        out.close()
        self.daemon = Daemon(proc, self.log)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited {proc.returncode}: "
                                   + self.log.read_text(errors="replace")[-1500:])
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as s:
                    s.settimeout(5)
                    if s.recv(100).startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        return self.daemon
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the daemon did not start listening")

    def stop_daemon(self) -> int | None:
        if self.daemon is None:
            return None
        proc = self.daemon.proc
        self.daemon = None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait(timeout=10)
        return proc.returncode

    def restart_daemon(self) -> None:
        self.stop_daemon()
        self.start_daemon()

    def proc_status(self, field_name: str) -> int:
        """A field of /proc/PID/status of the daemon, in kB (0 if gone)."""
        if self.daemon is None:
            return 0
        try:
            text = Path(f"/proc/{self.daemon.pid}/status").read_text()
        except OSError:
            return 0
        m = re.search(rf"^{field_name}:\s+(\d+) kB", text, re.MULTILINE)
        return int(m.group(1)) if m else 0

    # -- set-up, as README "For the administrator" says

    def setup(self) -> None:
        (self.base / "tmp").mkdir(mode=0o700)
        ca, cert, key = make_school_ca(self.base / "school-tls")
        self.school_ca = ca
        self.servers = ServerThread(cert, key)
        self.inbox = {code: self.servers.add(FakeServer(code), tls=code not in PLAINTEXT_SCHOOLS)
                      for code in CONTACTS}
        self.relay = self.servers.add(FakeServer("relay"))

        text = (self.repo / "config.toml").read_text()
        for section, k, v in [
            ("smtp", "listen", toml_str(f"{HOST}:{self.port}")),
            ("smtp", "tls_cert", toml_str(self.keys / "tls" / "server.pem")),
            ("smtp", "tls_key", toml_str(self.keys / "tls" / "server.key")),
            ("delivery", "relay", toml_str(f"{HOST}:{self.relay.port}")),
            ("delivery", "ca_file", toml_str(ca)),
            ("delivery", "retry_min_seconds", "2"),
            ("delivery", "retry_max_seconds", "4"),
            ("delivery", "timeout_seconds", "10"),
            ("storage", "path", toml_str(self.db)),
            ("keys", "dir", toml_str(self.keys)),
            ("metrics", "listen", '""'),
        ]:
            text = set_key(text, section, k, v)
        self.config.write_text(text)
        self.must("check-config")
        self.must("keys", "init")
        gateway_public = self.must("keys", "export").encode()
        (self.base / "gateway.asc").write_bytes(gateway_public)

        people = self.base / "people"
        self.sender = Party.create(people / "sender", f"Veilig Thuis Utrecht <{SENDER_ADDRESS}>",
                                   rsa=True)
        self.others = {name: Party.create(people / name, f"{name} <{addr}>")
                       for name, addr in OTHER_SENDERS.items()}
        self.schools = {code: Party.create(people / code, f"{SCHOOL_NAMES[code]} <{addr}>")
                        for code, addr in CONTACTS.items()}
        self.homes = [self.sender.home, *(p.home for p in self.others.values()),
                      *(p.home for p in self.schools.values())]
        for party in [self.sender, *self.others.values(), *self.schools.values()]:
            party.import_key(gateway_public)  # senders encrypt to it, schools verify with it
        shown = gpg(self.sender.home, "--with-colons", "--list-keys").decode()
        fprs = [line.split(":")[9] for line in shown.splitlines() if line.startswith("fpr:")]
        pubs = [line for line in shown.splitlines() if line.startswith("pub:")]
        # The gateway's key is the one whose user ID is not ours.
        listing = gpg(self.sender.home, "--with-colons", "--list-keys", GATEWAY).decode()
        self.gateway_fpr = next(line.split(":")[9] for line in listing.splitlines()
                                if line.startswith("fpr:"))
        assert self.gateway_fpr in fprs and len(pubs) == 2, "gateway key not found"

        def keyfile(party: Party, name: str) -> Path:
            path = self.base / f"{name}.asc"
            path.write_bytes(party.public())
            return path

        self.must("senders", "add", SENDER, "--key", str(keyfile(self.sender, SENDER)),
                  "--fingerprint", self.sender.fpr, "--allow-from", SENDER_ADDRESS,
                  "--password-stdin", stdin=(PASSWORD + "\n").encode())
        for name, addr in OTHER_SENDERS.items():
            self.must("senders", "add", name, "--key", str(keyfile(self.others[name], name)),
                      "--fingerprint", self.others[name].fpr, "--allow-from", addr,
                      "--password-stdin", stdin=(PASSWORD + name + "\n").encode())
        for code, addr in CONTACTS.items():
            self.must("schools", "add", code, "--name", SCHOOL_NAMES[code], "--email", addr,
                      "--key", str(keyfile(self.schools[code], code)), "--fingerprint",
                      self.schools[code].fpr, "--route", f"{HOST}:{self.inbox[code].port}")

        self.pupils = [
            # bsn, name, birth date, school
            ("123456782", "Sanne de Vries", birth(9, 4, 12), SCHOOL_A),
            ("", "Daan de Vries", birth(12, 9, 3), SCHOOL_A),
            ("", "Eva Maria Jansen", birth(7, 1, 30), SCHOOL_A),
            (bsn_with_prefix("23456789"), "Noor Smit", birth(8, 6, 1), SCHOOL_A),
            (bsn_with_prefix("34567890"), "Finn de Jong", birth(10, 2, 14), SCHOOL_A),
            (bsn_with_prefix("45678901"), "Lotte Bakker", birth(8, 11, 5), SCHOOL_D),
            (bsn_with_prefix("56789012"), "Milan Visser", birth(6, 3, 22), SCHOOL_E),
            (bsn_with_prefix("67890123"), "Julia Mulder", birth(11, 7, 7), SCHOOL_A),
            (bsn_with_prefix("78901234"), "Sem Bos", birth(9, 10, 10), SCHOOL_A),
            (bsn_with_prefix("89012345"), "Bram Kok", birth(7, 5, 19), SCHOOL_P),
        ]
        csv = "bsn;naam;geboortedatum;vestigingscode\n" + "".join(
            f"{b};{n};{d:%d-%m-%Y};{s}\n" for b, n, d, s in self.pupils)
        (self.base / "leerlingen.csv").write_text(csv)
        self.must("pupils", "import", str(self.base / "leerlingen.csv"))
        for b, n, d, _ in self.pupils:
            self.add_canary(n, d, b)

    def pupil(self, name: str) -> dict[str, str]:
        b, n, d, _ = next(p for p in self.pupils if p[1] == name)
        child = {"name": n, "birthdate": d.isoformat()}
        if b:
            child["bsn"] = b
        return child

    def add_canary(self, name: str, birthdate: dt.date | None = None, bsn: str = "") -> None:
        for part in name.split():
            if len(part) > 3:
                self.canaries.add(part)
        if birthdate:
            self.canaries.update({birthdate.isoformat(), f"{birthdate:%d-%m-%Y}"})
        if bsn:
            self.canaries.add(bsn)

    # -- sending

    @property
    def gw_ca(self) -> Path:
        return self.keys / "tls" / "ca.pem"

    def session(self, user: str | None = SENDER, password: str | None = PASSWORD,
                timeout: float = 30) -> tuple[Raw, Reply]:
        """Connected, EHLO, STARTTLS, EHLO, and AUTH PLAIN when a user is given."""
        c = Raw(self.port, timeout=timeout)
        if c.greeting is None or c.greeting.code != 220:
            return c, c.greeting or Reply(-1, "no greeting")
        c.cmd("EHLO sender.example")
        r = c.starttls(self.gw_ca)
        if r.code != 220:
            return c, r
        r = c.cmd("EHLO sender.example")
        if user is not None and password is not None:
            r = c.cmd(auth_plain_line(user, password))
        return c, r

    def submit(self, message: bytes, *, user: str = SENDER, password: str = PASSWORD,
               mail_from: str = SENDER_ADDRESS, rcpt: str = GATEWAY,
               timeout: float = 90) -> Reply:
        c, r = self.session(user, password, timeout=timeout)
        try:
            if r.code != 235:
                return r
            for line in (f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt}>"):
                r = c.cmd(line)
                if r.code >= 400 or r.code < 0:
                    return r
            r = c.cmd("DATA")
            if r.code != 354:
                return r
            c.send(dot_stuff(message) + (b"" if message.endswith(b"\r\n") else b"\r\n")
                   + b".\r\n")
            r = c.reply()
            c.cmd("QUIT", timeout=5)
            return r
        finally:
            c.close()

    def signal(self, body: dict[str, Any] | str | bytes, **kwargs: Any) -> bytes:
        return build_signal(json_entity(body), self.sender, self.gateway_fpr, **kwargs)

    # -- looking at the state through the administrator's verbs

    def cli_json(self, *args: str) -> Any:
        rc, out, err = self.cli(*args, "--json")
        try:
            return json.loads(out)
        except ValueError:
            raise RuntimeError(f"{' '.join(args)} --json exited {rc}: {err[-300:]}") from None

    def receipts(self) -> list[dict[str, Any]]:
        return list(self.cli_json("receipts", "list"))

    def wait_for(self, what: Any, timeout: float, step: float = 0.5) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = what()
            if value or time.monotonic() > deadline:
                return value
            time.sleep(step)

    # -- the end

    def close(self) -> None:
        try:
            self.stop_daemon()
        finally:
            if self.servers is not None:
                self.servers.stop()
            for home in [*self.homes, self.keys / "gnupg", *self.extra_homes()]:
                if home.exists():
                    stop_agent(home)
            if not self.keep:
                shutil.rmtree(self.base, ignore_errors=True)

    def extra_homes(self) -> list[Path]:
        return [p / "gnupg" for p in self.base.glob("keys-*") if (p / "gnupg").exists()]


def log_events(path: Path) -> list[dict[str, Any]]:
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            value = {"event": "(not JSON)", "raw": line}
        if isinstance(value, dict):
            events.append(value)
    return events


def now_s() -> float:
    return time.monotonic()

