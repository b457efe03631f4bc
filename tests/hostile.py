"""Builders for hostile input: OpenPGP made with the real gpg command line, MIME made by hand,
and a raw SMTP client that can send what no well-behaved client library would.

Nothing here imports the gateway's opener or receive code: an attacker has only gpg, a text
editor and a socket. Every gpg run uses its own home, `--batch`, `--trust-model always` and no
network; keys are always named by full fingerprint (`FPR!` forces that exact (sub)key).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# -- gpg on the command line ---------------------------------------------------------------


class GpgFailed(RuntimeError):
    """The gpg command line refused to build something (the stderr is in the message)."""


def _gpg_command(home: Path, faked_time: str | None = None, passphrase: str = "") -> list[str]:
    command = ["gpg", "--homedir", str(home), "--batch", "--trust-model", "always",
               "--pinentry-mode", "loopback", "--passphrase", passphrase,
               "--no-auto-key-retrieve", "--auto-key-locate", "clear,local",
               "--disable-dirmngr", "--no-emit-version", "--no-comments"]
    if faked_time is not None:
        command += ["--faked-system-time", faked_time]
    return command


def _checked(proc: subprocess.CompletedProcess[bytes], args: Sequence[str]) -> bytes:
    if proc.returncode != 0:
        raise GpgFailed(f"gpg {' '.join(args)} failed: "
                        + proc.stderr.decode("utf-8", "replace"))
    return proc.stdout


def gpg(home: Path, *args: str, data: bytes = b"", faked_time: str | None = None,
        passphrase: str = "") -> bytes:
    """Run `gpg --homedir HOME --batch --trust-model always ... ARGS`; its stdout."""
    command = _gpg_command(home, faked_time, passphrase)
    return _checked(subprocess.run([*command, *args], input=data, capture_output=True,
                                   check=False), args)


def compressed_bomb(home: Path, head: bytes, size: int, *args: str,
                    line: str | None = None) -> bytes:
    """`(cat HEAD; head -c SIZE /dev/zero) | gpg -z 9 --compress-algo bzip2 --armor ARGS`.

    A decompression bomb (RFC 4880 §5.6): 64 MiB of zeros compress to a few hundred bytes.
    With `line`, the filler is `yes LINE` instead of zeros: as small, and many lines for a
    parser. The filler is piped from `head`, so this process never holds it.
    """
    filler = 'yes "$2" | head -c "$1"' if line is not None else 'head -c "$1" /dev/zero'
    with tempfile.NamedTemporaryFile(dir=home, prefix="head-") as start:
        start.write(head)
        start.flush()
        source = subprocess.Popen(["sh", "-c", f'cat "$0" && {filler}',
                                   start.name, str(size), line or ""], stdout=subprocess.PIPE)
        assert source.stdout is not None
        with source.stdout:
            command = [*_gpg_command(home), "--armor", "-z", "9", "--compress-algo", "bzip2",
                       *args]
            proc = subprocess.run(command, stdin=source.stdout, capture_output=True,
                                  check=False)
        source.wait()
    return _checked(proc, args)


def list_packets(home: Path, data: bytes) -> str:
    """`gpg --list-packets` (stdout and stderr); it lists even what it cannot decrypt."""
    proc = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--list-packets"],
                          input=data, capture_output=True, check=False)
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


def fingerprints(home: Path, secret: bool = False) -> list[str]:
    """Every fingerprint (primary keys and subkeys, in listing order) in a home."""
    listing = gpg(home, "--with-colons", "--list-secret-keys" if secret else "--list-keys")
    return [line.split(":")[9] for line in listing.decode().splitlines()
            if line.startswith("fpr:")]


def signing_subkeys(home: Path, fpr: str) -> list[str]:
    """The fingerprints of the signing-capable subkeys of one key."""
    listing = gpg(home, "--with-colons", "--list-keys", fpr).decode().splitlines()
    return [listing[i + 1].split(":")[9] for i, line in enumerate(listing)
            if line.startswith("sub:") and "s" in line.split(":")[11]
            and listing[i + 1].startswith("fpr:")]


def new_key(home: Path, name: str, *, expire: str = "1y",
            faked_time: str | None = None) -> str:
    """A fresh ed25519 signing key (no passphrase) in a new home; its fingerprint."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg(home, "--quick-gen-key", name, "ed25519", "sign,cert", expire, faked_time=faked_time)
    return fingerprints(home, secret=True)[0]


def copy_home(source: Path, dest: Path) -> Path:
    """A private copy of a GnuPG home (without the running agent's sockets and locks)."""
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    return dest


def export_public(home: Path, fpr: str) -> bytes:
    return gpg(home, "--armor", "--export", fpr)


def import_keys(home: Path, key: bytes) -> None:
    gpg(home, "--import", data=key)


def _signers(signers: Sequence[str]) -> list[str]:
    return [arg for fpr in signers for arg in ("--local-user", f"{fpr}!")]


def _recipients(recipients: Sequence[str], hidden: bool = False) -> list[str]:
    flag = "--hidden-recipient" if hidden else "--recipient"
    return [arg for fpr in recipients for arg in (flag, fpr)]


def sign_encrypt(home: Path, data: bytes, signers: Sequence[str], recipients: Sequence[str],
                 *extra: str, hidden: bool = False) -> bytes:
    """`gpg --sign --encrypt` (RFC 3156 §6.2 combined), armored; no signers: encrypt only."""
    sign = ["--sign", *_signers(signers)] if signers else []
    return gpg(home, "--armor", *extra, *sign, "--encrypt",
               *_recipients(recipients, hidden), data=data)


def sign_only(home: Path, data: bytes, signer: str) -> bytes:
    """`gpg --sign --armor`: an OpenPGP message that is signed but not encrypted."""
    return gpg(home, "--armor", "--sign", *_signers([signer]), data=data)


def clearsign(home: Path, data: bytes, signer: str) -> bytes:
    return gpg(home, "--clearsign", *_signers([signer]), data=data)


def detach_sign(home: Path, data: bytes, signers: Sequence[str], *extra: str,
                armor: bool = True, faked_time: str | None = None) -> bytes:
    """A detached signature over exactly `data` by every signer (one gpg run)."""
    return gpg(home, *(["--armor"] if armor else []), *extra, "--detach-sign",
               *_signers(signers), data=data, faked_time=faked_time)


def symmetric(home: Path, data: bytes, passphrase: str, *extra: str) -> bytes:
    """`gpg --symmetric` (plus whatever `extra` adds: --sign, --encrypt -r ...), armored."""
    return gpg(home, "--armor", "--symmetric", *extra, data=data, passphrase=passphrase)


# -- ASCII armor (RFC 4880 §6), for re-armoring modified binary ------------------------------


def crc24(data: bytes) -> int:
    """The OpenPGP armor checksum (RFC 4880 §6.1)."""
    crc = 0xB704CE
    for byte in data:
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def armor(binary: bytes, label: str = "MESSAGE") -> bytes:
    """Armor `binary` with a correct checksum."""
    body = base64.b64encode(binary).decode()
    checksum = base64.b64encode(crc24(binary).to_bytes(3, "big")).decode()
    lines = [f"-----BEGIN PGP {label}-----", "",
             *(body[i:i + 64] for i in range(0, len(body), 64)),
             "=" + checksum, f"-----END PGP {label}-----", ""]
    return "\r\n".join(lines).encode()


def _armor_body(armored: bytes) -> tuple[list[str], int, int]:
    """The armor's lines and the [start, end) range of its base64 body lines."""
    lines = armored.decode().replace("\r\n", "\n").split("\n")
    start = lines.index("") + 1
    end = next(i for i, line in enumerate(lines) if i >= start
               and (line.startswith("=") or line.startswith("-----END")))
    return lines, start, end


def dearmor(armored: bytes) -> bytes:
    lines, start, end = _armor_body(armored)
    return base64.b64decode("".join(lines[start:end]))


def flip_bit(armored: bytes, position: float) -> bytes:
    """Re-armor with one bit flipped at `position` (0..1 of the binary), checksum valid."""
    data = bytearray(dearmor(armored))
    data[min(len(data) - 1, int(len(data) * position))] ^= 0x01
    return armor(bytes(data))


def flip_base64_char(armored: bytes) -> bytes:
    """One base64 character in the middle of the body replaced; the old checksum kept."""
    lines, start, end = _armor_body(armored)
    row = (start + end) // 2
    line = lines[row]
    col = len(line) // 2
    lines[row] = line[:col] + ("B" if line[col] != "B" else "C") + line[col + 1:]
    return "\r\n".join(lines).encode()


# -- MIME by hand -----------------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def headers(mail_from: str, rcpt: str, content_type: str, *extra: str) -> bytes:
    lines = [f"From: {mail_from}", f"To: {rcpt}", "Subject: ...",
             f"Message-ID: <{secrets.token_hex(8)}@sender.example>", "MIME-Version: 1.0",
             *extra, f"Content-Type: {content_type}", "", ""]
    return "\r\n".join(lines).encode()


def signed_entity(entity: bytes, signature: bytes, *,
                  protocol: str = "application/pgp-signature",
                  signature_type: str = "application/pgp-signature",
                  signature_cte: str | None = None) -> bytes:
    """RFC 3156 §5 multipart/signed around `entity`, with whatever signature part is given.

    `entity` must be the exact CRLF bytes the signature was made over.
    """
    boundary = "sig-" + secrets.token_hex(8)
    cte = f"Content-Transfer-Encoding: {signature_cte}\r\n" if signature_cte else ""
    if signature_cte == "base64":
        signature = base64.encodebytes(signature)
    return (f'Content-Type: multipart/signed; micalg=pgp-sha512; protocol="{protocol}"; '
            f'boundary="{boundary}"\r\n\r\n--{boundary}\r\n').encode() + entity + (
            f"\r\n--{boundary}\r\nContent-Type: {signature_type}\r\n{cte}\r\n").encode() + \
        crlf(signature) + f"\r\n--{boundary}--\r\n".encode()


def multipart(subtype: str, *parts: bytes) -> bytes:
    """A multipart/SUBTYPE entity (headers and body) around ready-made parts."""
    boundary = "mix-" + secrets.token_hex(8)
    out = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    for part in parts:
        out += f"--{boundary}\r\n".encode() + crlf(part).rstrip(b"\r\n") + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def text_part(text: str, content_type: str = "text/plain; charset=utf-8") -> bytes:
    return f"Content-Type: {content_type}\r\n\r\n".encode() + crlf(text.encode())


# -- SMTP on a raw socket -------------------------------------------------------------------


@dataclass(frozen=True)
class RawReply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


class RawSMTP:
    """An SMTP client that writes exactly the bytes it is given, for protocol attacks.

    Every read has a generous limit only so that a broken server fails the test instead of
    hanging it; nothing is measured.
    """

    LIMIT = 30.0

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawSMTP:
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        greeting = await client.reply()
        if greeting.code != 220:
            raise AssertionError(f"unexpected greeting {greeting}")
        return client

    async def reply(self) -> RawReply:
        """One (possibly multi-line) reply."""
        lines: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), self.LIMIT)
            if not raw:
                raise ConnectionError(f"connection closed after {lines!r}")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line[4:])
            if line[3:4] != "-":
                return RawReply(int(line[:3]), tuple(lines))

    async def replies_until_closed(self) -> list[RawReply]:
        """Every reply the server still sends until it closes the connection."""
        replies: list[RawReply] = []
        while True:
            try:
                replies.append(await self.reply())
            except (ConnectionError, asyncio.IncompleteReadError):
                return replies

    async def write(self, data: bytes) -> None:
        """Send `data` in one write (one TCP segment for anything small)."""
        self.writer.write(data)
        await self.writer.drain()

    async def command(self, line: str) -> RawReply:
        await self.write(line.encode() + b"\r\n")
        return await self.reply()

    async def starttls(self, ca_file: Path, *, send_command: bool = True) -> None:
        if send_command:
            reply = await self.command("STARTTLS")
            if reply.code != 220:
                raise AssertionError(f"STARTTLS refused: {reply}")
        context = ssl.create_default_context(cafile=str(ca_file))
        await asyncio.wait_for(self.writer.start_tls(context, server_hostname="127.0.0.1"),
                               self.LIMIT)

    async def login(self, user: str, password: str) -> RawReply:
        await self.write(auth_plain(user, password))
        return await self.reply()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


def auth_plain(user: str, password: str) -> bytes:
    """The AUTH PLAIN command line (RFC 4616), CRLF included."""
    return b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()) + b"\r\n"


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency for a CRLF message (no end-of-data marker added)."""
    stuffed = crlf(message).replace(b"\r\n.", b"\r\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed
