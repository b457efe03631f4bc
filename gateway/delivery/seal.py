"""The seal stage: a brand-new notice for one school, signed and encrypted.

Takes the children routed to one school from one signal (name, birth date, child reference),
the school's contact addresses and pinned fingerprints, and the gateway's signing fingerprint;
produces the complete RFC 3156 message as bytes, ready to send. The notice is composed from
the fields alone, never from the sender's message: nothing else travels along (docs/protocol.md §8).
Fails with `GpgError` when gpg refuses a key (expired, revoked, unusable): the caller holds
the children; there is never a plaintext fallback. The plaintext exists only in memory.

Header protection per RFC 9788: the real header section is inside the encryption (`hp="cipher"`,
with `HP-Outer` copies of what the outside shows); outside, only neutral fields. The
`protected-headers="v1"` parameter is the older convention Thunderbird and mutt read.

The acknowledgement is only inside. With the pickup page configured (`[web]`), it is a link
in the body (`{public_url}/bevestig/TOKEN`, whose page asks for one click): a token nobody
outside ever sees (issue 15). Without it, it is the address `ack+TOKEN@`: the protected
`Reply-To`, which an RFC 9788 client answers to, and a line of the body for any other client.
Outside, either would let anyone who sees the message pass by (a relay, a scanner, an
out-of-office) acknowledge a notice nobody read (issue 11).
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import quopri
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.fields import format_date_nl
from gateway.core.model import CODEWORD
from gateway.crypto.gpg import Gpg

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


# A client without RFC 9788 header protection answers the outer From (the intake address, which
# refuses mail without AUTH): so the body says where to write, not only "reply".
ACK_TEXT = ("Wilt u laten weten dat u dit bericht gelezen hebt? Stuur dan een e-mail aan:\n\n"
            "    {address}\n\n"
            "Beantwoorden kan ook, als uw e-mailprogramma dit adres als antwoordadres\n"
            "invult. De inhoud van uw antwoord wordt niet gelezen. Een automatisch\n"
            "antwoord (zoals een afwezigheidsbericht) telt niet.")
# With the pickup page on: a link whose page asks for one click (a GET alone records nothing,
# since mail scanners fetch links).
ACK_LINK_TEXT = ("Hebt u dit bericht gelezen? Klik dan op deze link:\n\n"
                 "    {link}\n\n"
                 "Op de pagina die dan opent, bevestigt u het met één klik.")


def notice_body(children: Sequence[NoticeChild], teacher_text: str,
                ack_to: str | None = None, ack_link: str | None = None) -> str:
    """What a school contact reads (docs/protocol.md §8): codeword, then per child its three lines;
    with `ack_link`, the request to acknowledge by that link; else with `ack_to`, to that
    address."""
    lines = [CODEWORD, ""]
    for child in children:
        lines += [f"Naam: {child.name}",
                  f"Geboortedatum: {format_date_nl(child.birthdate)}",
                  "",
                  f"Referentie: {child.child_ref}",
                  ""]
    lines.append(teacher_text.strip())
    if ack_link is not None:
        lines += ["", ACK_LINK_TEXT.format(link=ack_link)]
    elif ack_to is not None:
        lines += ["", ACK_TEXT.format(address=ack_to)]
    return "\n".join(lines) + "\n"


def ack_link(token: str, public_url: str) -> str:
    """The acknowledgement link of a notice: its page on the gateway's pickup site."""
    return f"{public_url.rstrip('/')}/bevestig/{token}"


def ack_address(token: str, gateway_address: str) -> str:
    """Where the school's reply goes: one unguessable, single-use address per notice."""
    return f"ack+{token}@{gateway_address.rpartition('@')[2]}"


def new_ack_token() -> str:
    """128 random bits in lower-case base32: safe in an address, unguessable."""
    return base64.b32encode(secrets.token_bytes(16)).decode().rstrip("=").lower()


def make_message_id(domain: str) -> str:
    """Unguessable and free of any reference, so the outer headers say nothing about the case."""
    return f"<{secrets.token_hex(16)}@{domain}>"


def _header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode("ascii") for k, v in headers)


def compose_inner(body: str, *, sender: str, recipients: Sequence[str], message_id: str,
                  date: str, subject: str = INNER_SUBJECT, reply_to: str | None = None) -> bytes:
    """The cryptographic payload: protected headers, then the body, quoted-printable.

    RFC 3156 wants 7-bit content inside signatures; quoted-printable keeps names with accents
    intact and line lengths legal. `reply_to` is a protected field only: it has no `HP-Outer`
    copy, which tells an RFC 9788 client that the outside does not show it.
    """
    to = ", ".join(recipients)
    outer = [("From", sender), ("To", to), ("Subject", OUTER_SUBJECT), ("Date", date),
             ("Message-ID", message_id)]
    headers = [
        ("Content-Type", 'text/plain; charset="utf-8"; protected-headers="v1"; hp="cipher"'),
        ("Content-Transfer-Encoding", "quoted-printable"),
        ("From", sender), ("To", to), ("Subject", subject), ("Date", date),
        ("Message-ID", message_id), *([("Reply-To", reply_to)] if reply_to else []),
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
                    message_id: str, now: dt.datetime, reply_to: str | None = None) -> bytes:
    """Compose, sign and encrypt one message; the returned bytes hold no plaintext (nor
    `reply_to`, which only the protected header section carries)."""
    date = email.utils.format_datetime(now)
    inner = compose_inner(body, sender=sender, recipients=recipients, message_id=message_id,
                          date=date, subject=subject, reply_to=reply_to)
    armored = await gpg.sign_encrypt(inner, fingerprints, signer)
    return compose_outer(armored, sender=sender, recipients=recipients, message_id=message_id,
                         date=date)


async def seal_notice(gpg: Gpg, children: Sequence[NoticeChild], *, sender: str,
                      recipients: Sequence[str], fingerprints: Sequence[str], signer: str,
                      message_id: str, teacher_text: str, now: dt.datetime,
                      ack_to: str | None = None, ack_link: str | None = None) -> bytes:
    """One school's notice (docs/protocol.md §8); with `ack_link`, it asks for a click on that
    link in the body (and has no Reply-To); else with `ack_to`, for a reply there, in the
    protected Reply-To and in the body; never outside."""
    if ack_link is not None:
        ack_to = None
    return await seal_text(gpg, notice_body(children, teacher_text, ack_to, ack_link),
                           subject=INNER_SUBJECT, sender=sender, recipients=recipients,
                           fingerprints=fingerprints, signer=signer, message_id=message_id,
                           now=now, reply_to=ack_to)
