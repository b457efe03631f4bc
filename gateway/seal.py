"""The seal stage: a brand-new notice for one school, signed and encrypted.

Takes the children routed to one school from one signal (name, birth date, child reference),
the school's contact addresses and pinned fingerprints, and the gateway's signing fingerprint;
produces the complete RFC 3156 message as bytes, ready to send. The notice is composed from
the fields alone, never from the sender's message, so nothing else can travel along (SPEC §4).
Fails with `GpgError` when gpg refuses a key (expired, revoked, unusable): the caller holds
the children; there is never a plaintext fallback. The plaintext exists only in memory.

Header protection per RFC 9788: the real header section is inside the encryption (`hp="cipher"`,
with `HP-Outer` copies of what the outside shows); outside, only neutral fields. The
`protected-headers="v1"` parameter is the older convention Thunderbird and mutt read.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import quopri
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.fields import format_date_nl
from gateway.gpg import Gpg
from gateway.model import CODEWORD

OUTER_SUBJECT = "Vertrouwelijk bericht"
INNER_SUBJECT = CODEWORD


@dataclass(frozen=True)
class NoticeChild:
    """One child in a notice: the three things a school may know, and the child reference."""

    name: str
    birthdate: dt.date
    child_ref: str

    def __repr__(self) -> str:
        return f"NoticeChild(<redacted>, {self.child_ref})"


def notice_body(children: Sequence[NoticeChild], teacher_text: str) -> str:
    """The text a school contact reads (SPEC §4): codeword, then per child its three lines."""
    lines = [CODEWORD, ""]
    for child in children:
        lines += [f"Naam: {child.name}",
                  f"Geboortedatum: {format_date_nl(child.birthdate)}",
                  "",
                  f"Referentie: {child.child_ref}",
                  ""]
    lines.append(teacher_text.strip())
    return "\n".join(lines) + "\n"


def make_message_id(domain: str) -> str:
    """Unguessable and free of any reference, so the outer headers say nothing about the case."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def _header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in headers)


def compose_inner(body: str, *, sender: str, recipients: Sequence[str], message_id: str,
                  date: str, subject: str = INNER_SUBJECT) -> bytes:
    """The cryptographic payload: protected headers, then the body, quoted-printable.

    RFC 3156 wants 7-bit content inside signatures; quoted-printable keeps names with accents
    intact and line lengths legal.
    """
    to = ", ".join(recipients)
    outer = [("From", sender), ("To", to), ("Subject", OUTER_SUBJECT), ("Date", date),
             ("Message-ID", message_id)]
    headers = [
        ("Content-Type", 'text/plain; charset="utf-8"; protected-headers="v1"; hp="cipher"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
        ("From", sender), ("To", to), ("Subject", subject), ("Date", date),
        ("Message-ID", message_id),
        *[("HP-Outer", f"{k}: {v}") for k, v in outer],
    ]
    encoded = quopri.encodestring(body.encode("utf-8")).replace(b"\n", b"\r\n")
    return _header_block(headers) + b"\r\n" + encoded


def compose_outer(armored: bytes, *, sender: str, recipients: Sequence[str], message_id: str,
                  date: str) -> bytes:
    """RFC 3156 §4: multipart/encrypted around the armored OpenPGP message, CRLF throughout."""
    boundary = "hwc-" + secrets.token_hex(12)
    headers = [("From", sender), ("To", ", ".join(recipients)), ("Subject", OUTER_SUBJECT),
               ("Date", date), ("Message-ID", message_id), ("MIME-Version", "1.0"),
               ("Content-Type", 'multipart/encrypted; protocol="application/pgp-encrypted"; '
                                f'boundary="{boundary}"')]
    armor = armored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    parts = [
        b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n",
        f"--{boundary}\r\n".encode(),
        b"Content-Type: application/pgp-encrypted\r\n"
        b"Content-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n",
        f"--{boundary}\r\n".encode(),
        b'Content-Type: application/octet-stream; name="encrypted.asc"\r\n'
        b"Content-Description: OpenPGP encrypted message\r\n"
        b'Content-Disposition: inline; filename="encrypted.asc"\r\n\r\n',
        armor if armor.endswith(b"\r\n") else armor + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    return _header_block(headers) + b"\r\n" + b"".join(parts)


async def seal_text(gpg: Gpg, body: str, *, subject: str, sender: str,
                    recipients: Sequence[str], fingerprints: Sequence[str], signer: str,
                    message_id: str, now: dt.datetime) -> bytes:
    """Compose, sign and encrypt one message; the returned bytes hold no plaintext."""
    date = email.utils.format_datetime(now)
    inner = compose_inner(body, sender=sender, recipients=recipients, message_id=message_id,
                          date=date, subject=subject)
    armored = await gpg.sign_encrypt(inner, fingerprints, signer)
    return compose_outer(armored, sender=sender, recipients=recipients, message_id=message_id,
                         date=date)


async def seal_notice(gpg: Gpg, children: Sequence[NoticeChild], *, sender: str,
                      recipients: Sequence[str], fingerprints: Sequence[str], signer: str,
                      message_id: str, teacher_text: str, now: dt.datetime) -> bytes:
    """One school's notice (SPEC §4)."""
    return await seal_text(gpg, notice_body(children, teacher_text), subject=INNER_SUBJECT,
                           sender=sender, recipients=recipients, fingerprints=fingerprints,
                           signer=signer, message_id=message_id, now=now)
