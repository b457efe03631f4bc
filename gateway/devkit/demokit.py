"""The other side of the gateway, for the demo and the tests: senders and school inboxes.

Takes nothing from the gateway's internals. `Identity` is a sender's or a school's own GnuPG
home with one key; `build_signal` writes PGP/MIME the way a sender's mail client does (RFC 3156,
with the real gpg); `submit` sends it as a sender's MTA would (smtplib, STARTTLS, AUTH);
`SchoolInbox` is a loopback school mail server with STARTTLS and a certificate of its own CA,
which keeps what it receives and can be told to fail the next deliveries with a given reply
(at DATA, or at EHLO, HELO or MAIL);
`read_notice` and `notice_header` open a notice with a school's key, as its contact's client
would (the acknowledgement address is only inside).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import quopri
import secrets
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal

import gnupg
from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.crypto.gpg import NO_PROMPT, SAFE_OPTIONS
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.tlsdev import CertPair, make_ca, make_server_cert

Mode = Literal["combined", "signed-inside"]


class Identity:
    """One party's own GnuPG home with one ed25519/cv25519 key, no passphrase."""

    def __init__(self, home: Path, fingerprint: str) -> None:
        self.home = home
        self.fingerprint = fingerprint
        self.gpg = gnupg.GPG(gnupghome=str(home), options=SAFE_OPTIONS + NO_PROMPT)
        self.gpg.encoding = "utf-8"

    @classmethod
    def create(cls, home: Path, name: str, email: str, expire: str = "1y") -> Identity:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        gpg = gnupg.GPG(gnupghome=str(home), options=SAFE_OPTIONS + NO_PROMPT)
        params = gpg.gen_key_input(key_type="EDDSA", key_curve="ed25519", key_usage="sign",
                                   subkey_type="ECDH", subkey_curve="cv25519",
                                   subkey_usage="encrypt", name_real=name, name_email=email,
                                   expire_date=expire, no_protection=True)
        fpr = str(gpg.gen_key(params).fingerprint)
        return cls(home, fpr)

    def public_key(self) -> bytes:
        return str(self.gpg.export_keys([self.fingerprint], armor=True)).encode()

    def import_public(self, armored: bytes | str) -> None:
        self.gpg.import_keys(armored)

    def decrypt(self, ciphertext: bytes) -> Any:
        return self.gpg.decrypt(ciphertext, passphrase=None)

    def sign_encrypt(self, data: bytes, recipient: str, sign: bool = True) -> bytes:
        res = self.gpg.encrypt(data, [recipient], sign=self.fingerprint if sign else None,
                               armor=True, always_trust=True, passphrase=None)
        if not res.ok:
            raise RuntimeError(f"gpg encrypt failed: {res.status}")
        return bytes(res.data)

    def sign_detached(self, data: bytes) -> bytes:
        res = self.gpg.sign(data, keyid=self.fingerprint, detach=True, passphrase=None,
                            binary=False)
        return bytes(res.data)

    def close(self) -> None:
        stop_agent(self.home)


def json_payload(children: list[dict[str, str]], reference: str | None = None,
                 **extra: Any) -> bytes:
    """A signal as a JSON part, the way a Veilig Thuis case system would write it."""
    body: dict[str, Any] = {"codeword": "Handle with Care", "children": children, **extra}
    if reference:
        body["reference"] = reference
    data = json.dumps(body, ensure_ascii=False, indent=1).encode()
    return (b'Content-Type: application/json; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + data + b"\r\n")


def text_payload(text: str) -> bytes:
    """A signal typed by a person: labelled lines, quoted-printable as mail clients send it."""
    body = quopri.encodestring(text.replace("\r\n", "\n").encode()).replace(b"\n", b"\r\n")
    return (b'Content-Type: text/plain; charset="utf-8"\r\n'
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + body)


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def signed_multipart(entity: bytes, signer: Identity) -> bytes:
    """RFC 3156 §5 multipart/signed around `entity` (detached signature over its CRLF bytes)."""
    entity = _crlf(entity)
    boundary = "sig-" + secrets.token_hex(8)
    signature = signer.sign_detached(entity)
    return (f'Content-Type: multipart/signed; micalg=pgp-sha512; '
            f'protocol="application/pgp-signature"; boundary="{boundary}"\r\n\r\n'
            f"--{boundary}\r\n").encode() + entity + (
            f"\r\n--{boundary}\r\n"
            'Content-Type: application/pgp-signature; name="signature.asc"\r\n\r\n').encode() + \
        _crlf(signature) + f"\r\n--{boundary}--\r\n".encode()


def encrypted_envelope(armored: bytes, *, mail_from: str, rcpt: str,
                       message_id: str | None = None) -> bytes:
    boundary = "enc-" + secrets.token_hex(8)
    headers = (f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: ...\r\n"
               f"Date: {format_datetime(dt.datetime.now().astimezone())}\r\n"
               f"Message-ID: {message_id or make_msgid(domain='sender.example')}\r\n"
               "MIME-Version: 1.0\r\n"
               f'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; '
               f'boundary="{boundary}"\r\n\r\n')
    return (headers + f"--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\n"
            f"Version: 1\r\n\r\n--{boundary}\r\n"
            'Content-Type: application/octet-stream; name="encrypted.asc"\r\n\r\n').encode() + \
        _crlf(armored) + f"\r\n--{boundary}--\r\n".encode()


def build_signal(payload: bytes, sender: Identity, gateway_fpr: str, *, mail_from: str,
                 rcpt: str, mode: Mode = "combined", message_id: str | None = None) -> bytes:
    """A complete PGP/MIME signal: signed by `sender`, encrypted to the gateway's key."""
    if mode == "combined":
        armored = sender.sign_encrypt(_crlf(payload), gateway_fpr)
    else:
        armored = sender.sign_encrypt(signed_multipart(payload, sender), gateway_fpr,
                                      sign=False)
    return encrypted_envelope(armored, mail_from=mail_from, rcpt=rcpt, message_id=message_id)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def submit_sync(host: str, port: int, *, user: str | None, password: str | None,
                mail_from: str, rcpt: str, message: bytes, ca_file: Path | None,
                starttls: bool = True, client_cert: CertPair | None = None) -> Reply:
    """Send one message as a sender's MTA would; the reply to DATA (or the first refusal)."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert.cert), str(client_cert.key))
    with smtplib.SMTP(host, port, timeout=60) as smtp:
        smtp.ehlo("sender.example")
        if starttls:
            smtp.starttls(context=ctx)
            smtp.ehlo("sender.example")
        if user is not None and password is not None:
            try:
                smtp.login(user, password)
            except smtplib.SMTPAuthenticationError as exc:
                return Reply(exc.smtp_code, _text(exc.smtp_error))
        for command, arg in (("mail", f"FROM:<{mail_from}>"), ("rcpt", f"TO:<{rcpt}>")):
            code, text = smtp.docmd(command, arg)
            if code >= 400:
                return Reply(code, _text(text))
        code, text = smtp.data(message)
        return Reply(code, _text(text))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# Senders' MTAs are other machines: their blocking clients get threads of their own, so that
# they never take the worker threads the gateway on the same event loop needs (gpg, scrypt).
_CLIENTS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sender-mta")


async def submit(host: str, port: int, **kwargs: Any) -> Reply:
    return await asyncio.get_running_loop().run_in_executor(
        _CLIENTS, functools.partial(submit_sync, host, port, **kwargs))


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    def header(self, name: str) -> str:
        msg = BytesParser(policy=policy.default).parsebytes(self.data, headersonly=True)
        return str(msg.get(name, ""))


@dataclass
class SchoolInbox:
    """A school's mail server on loopback: STARTTLS required, messages kept in memory."""

    received: list[Received] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # replies for the next DATA commands
    # Replies for the next EHLO, HELO or MAIL commands (`fail_command`).
    command_failures: dict[str, list[str]] = field(default_factory=dict)
    ehlo_names: list[str] = field(default_factory=list)  # what clients said in EHLO or HELO
    drops: int = 0  # the next DATA commands are kept, then the connection drops unanswered
    connections: int = 0  # sessions opened by clients so far
    server: asyncio.Server | None = None
    port: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.failures:
            return self.failures.pop(0)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                      bytes(envelope.original_content or b"")))
        if self.drops:
            # The worst moment for the sender: the message is here, the reply never comes.
            self.drops -= 1
            if isinstance(server.transport, asyncio.Transport):
                server.transport.abort()
            return "421 4.3.0 gone"
        return f"250 2.0.0 Ok: queued as {secrets.token_hex(5).upper()}"

    def fail_next(self, reply: str, times: int = 1) -> None:
        self.failures.extend([reply] * times)

    def fail_command(self, command: str, reply: str, times: int = 1) -> None:
        """Answer the next `times` EHLO, HELO or MAIL commands with `reply` (e.g. a school MX
        refusing a non-FQDN EHLO name with `504 5.5.2 Helo command rejected`)."""
        self.command_failures.setdefault(command.upper(), []).extend([reply] * times)

    def _failure(self, command: str) -> str | None:
        pending = self.command_failures.get(command)
        return pending.pop(0) if pending else None

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        self.ehlo_names.append(hostname)
        failure = self._failure("EHLO")
        if failure is not None:
            return [failure]
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str) -> str:
        self.ehlo_names.append(hostname)
        failure = self._failure("HELO")
        if failure is not None:
            return failure
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        failure = self._failure("MAIL")
        if failure is not None:
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def start(self, cert: CertPair, host: str = "127.0.0.1", port: int = 0) -> None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(str(cert.cert), str(cert.key))
        loop = asyncio.get_running_loop()
        def session() -> SMTP:
            self.connections += 1
            return SMTP(self, hostname="school.example", tls_context=tls, require_starttls=True)

        self.server = await loop.create_server(session, host, port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()


def school_ca(directory: Path) -> tuple[Path, CertPair]:
    """A CA of the schools' own and a loopback server certificate signed by it."""
    ca_pair, ca_cert, ca_key = make_ca(directory, "school servers CA")
    return ca_pair.cert, make_server_cert(directory, "school", ["127.0.0.1", "localhost"],
                                          ca_cert, ca_key)


def _open_notice(inbox_item: Received, school: Identity) -> tuple[EmailMessage, Any]:
    msg = BytesParser(policy=policy.default).parsebytes(inbox_item.data)
    parts = msg.get_payload()
    if not isinstance(parts, list) or len(parts) != 2 or isinstance(parts[1], str):
        raise ValueError("not an RFC 3156 encrypted message")
    armored = parts[1].get_payload(decode=True)
    result = school.decrypt(bytes(armored))
    return BytesParser(policy=policy.default).parsebytes(result.data), result


def read_notice(inbox_item: Received, school: Identity) -> tuple[str, Any]:
    """Decrypt a notice as the school contact's client would: (inner text, gpg result)."""
    inner, result = _open_notice(inbox_item, school)
    return str(inner.get_content()), result


def notice_header(inbox_item: Received, school: Identity, name: str) -> str:
    """A field of the notice's protected header section (RFC 9788), as the school contact's
    client reads it after decrypting: e.g. the `Reply-To` a reply goes to."""
    inner, _ = _open_notice(inbox_item, school)
    return str(inner.get(name, ""))
