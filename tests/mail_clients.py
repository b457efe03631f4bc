"""Signals written the way senders' mail clients write them, for tests/test_interop.py: the gpg
command line in the sender's own GnuPG home, and the MIME of Thunderbird (built-in OpenPGP, 78
and later) and mutt/neomutt (PGP/MIME), byte for byte.

The MIME is written by hand, as each client writes it, never serialised by `email`, because the
details are the point: Thunderbird's `------------` boundaries, folded Content-Type with
`protected-headers="v1"`, format=flowed quoted-printable, the legacy display part, the Autocrypt
header, HTML alternatives and base64 attachments; mutt's tab-folded headers, empty preambles,
`Content-Disposition: inline`, `msg.asc`, `=46rom`, Latin-1 bodies (its default `send_charset`
is us-ascii:iso-8859-1:utf-8) and LF line endings inside the ciphertext (mutt writes its
temporary files with LF and has gpg encrypt them as they are). A gpg failure fails the test."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import quopri
import re
import secrets
import string
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path
from typing import Literal

from conftest import (
    DAAN_BIRTH,
    GATEWAY,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SENDER_ADDRESS,
    TODAY,
    Harness,
)

from gateway.devkit.demokit import Identity

Eol = Literal["\r\n", "\n"]
SigMode = Literal["textmode-lf", "binary-crlf"]

SENDER_NAME = "Veilig Thuis Utrecht"
INNER_SUBJECT = "Signaal Handle with Care"
NEW_BIRTH = dt.date(TODAY.year - 8, 6, 1)  # nobody in the register has it: rule 3, the hint


@dataclass(frozen=True)
class Child:
    name: str
    birth: dt.date
    school: str  # where the child must end up
    hint: bool  # the signal names the school (a child the register does not know)


SANNE = Child("Sanne de Vries", SANNE_BIRTH, SCHOOL_A, hint=False)
DAAN = Child("Daan de Vries", DAAN_BIRTH, SCHOOL_B, hint=False)
ZOE = Child("Zoë de Vries", NEW_BIRTH, SCHOOL_B, hint=True)
DANIEL = Child("Daniël de Vries", NEW_BIRTH, SCHOOL_B, hint=True)
# Long enough that Thunderbird wraps its `Naam:` line (format=flowed, 72 columns).
LONG_NAME = Child("Anna-Sophie Wilhelmina Catharina Maria Josephine van der Heijden-Bakker",
                  NEW_BIRTH, SCHOOL_B, hint=True)
ZOE_AT_A = Child("Zoë de Vries", NEW_BIRTH, SCHOOL_A, hint=True)

# -- the gpg command line ------------------------------------------------------------------------


def run_gpg(home: Path, args: Sequence[str],
            data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    """The gpg command line on `home`, status lines on stderr, English messages."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANGUAGE": ""}
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--yes",
         "--trust-model", "always", "--no-auto-key-retrieve", "--status-fd", "2", *args],
        input=data, capture_output=True, env=env, timeout=60, check=False)


def gpg_ok(home: Path, args: Sequence[str], data: bytes = b"") -> bytes:
    proc = run_gpg(home, args, data)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def status_lines(stderr: bytes, keyword: str) -> list[list[str]]:
    """The fields of every `[GNUPG:] KEYWORD ...` status line."""
    found = []
    for line in stderr.decode(errors="replace").splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", keyword]:
            found.append(fields[2:])
    return found


def sign_encrypt(sender: Identity, recipient: str, plaintext: bytes, *,
                 textmode: bool = False) -> bytes:
    """One OpenPGP message, signed and encrypted: Thunderbird, and mutt without
    $pgp_retainable_sigs (classic mutt's $pgp_encrypt_sign_command passes --textmode)."""
    return gpg_ok(sender.home, ["--armor", "--digest-algo", "SHA256",
                                *(["--textmode"] if textmode else []),
                                "--local-user", sender.fingerprint, "--sign",
                                "--encrypt", "--recipient", recipient], plaintext)


def encrypt_only(home: Path, recipient: str, plaintext: bytes) -> bytes:
    return gpg_ok(home, ["--armor", "--encrypt", "--recipient", recipient], plaintext)


def detach_sign(sender: Identity, data: bytes, *, textmode: bool) -> bytes:
    """`gpg --detach-sign --armor`, as mutt's $pgp_sign_command (--textmode) or gpgme."""
    return gpg_ok(sender.home, ["--armor", "--digest-algo", "SHA256", "--detach-sign",
                                *(["--textmode"] if textmode else []),
                                "--local-user", sender.fingerprint], data)


# -- writing MIME as the clients do --------------------------------------------------------------


def eol(text: str | bytes, ending: Eol = "\r\n") -> bytes:
    """`text` with every line ending made `ending` (the MIME here is written with LF). All of
    it is ASCII except an 8bit Latin-1 body, hence the codec."""
    data = text.encode("latin-1") if isinstance(text, str) else text
    return data.replace(b"\r\n", b"\n").replace(b"\n", ending.encode())


def tb_boundary() -> str:
    alphabet = string.ascii_letters + string.digits
    return "------------" + "".join(secrets.choice(alphabet) for _ in range(24))


def mutt_boundary() -> str:
    # mutt draws boundaries from base64's alphabet; a "+" exercises quoting and the splitter.
    alphabet = string.ascii_letters + string.digits
    return ("".join(secrets.choice(alphabet) for _ in range(7)) + "+"
            + "".join(secrets.choice(alphabet) for _ in range(8)))


def qp(text: str, charset: str) -> str:
    """Quoted-printable over `charset` bytes, LF line ends (trailing spaces become =20)."""
    return quopri.encodestring(text.encode(charset)).decode("ascii")


def base64_lines(data: bytes, width: int) -> str:
    encoded = base64.b64encode(data).decode()
    return "\n".join(encoded[i:i + width] for i in range(0, len(encoded), width)) + "\n"


def flowed(text: str, width: int = 72) -> str:
    """RFC 3676 format=flowed as Thunderbird writes it: a soft break keeps its trailing space;
    lines starting with a space, ">" or "From " are space-stuffed."""
    out: list[str] = []
    for line in text.split("\n"):
        pieces = textwrap.wrap(line, width, break_long_words=False,
                               break_on_hyphens=False) or [""]
        wrapped = [piece + " " for piece in pieces[:-1]] + [pieces[-1]]
        out += [" " + w if w.startswith((" ", ">", "From ")) else w for w in wrapped]
    return "\n".join(out)


def multipart(head: str, boundary: str, parts: Sequence[str], *, preamble: str = "") -> str:
    """A multipart entity (LF): its header block, then each part (a complete entity)."""
    body = "".join(f"--{boundary}\n{part}" + ("" if part.endswith("\n") else "\n")
                   for part in parts)
    return f"{head.rstrip()}\n\n{preamble}{body}--{boundary}--\n"


def message_id() -> str:
    return f"<{secrets.token_hex(8)}-{secrets.token_hex(4)}@veiligthuis.example.nl>"


def text_signal(children: Sequence[Child]) -> str:
    """The labelled text a Veilig Thuis employee types, with the usual chatter around it."""
    labelled = "".join(f"Naam: {c.name}\nGeboortedatum: {c.birth:%d-%m-%Y}\n"
                       + (f"School: {c.school}\n" if c.hint else "") for c in children)
    return ("Beste collega,\n\n"
            "Hierbij een signaal Handle with Care van vannacht. De politie was ter plaatse in "
            "verband met huiselijk geweld; de kinderen waren thuis en hebben alles meegemaakt.\n"
            "From the police report: niet doorsturen.\n\n"
            "Codewoord: Handle with Care\n"
            f"Referentie: VT-HVB-2026-{secrets.token_hex(3)}\n"
            f"{labelled}\n"
            "Met vriendelijke groet,\n\nVeilig Thuis Utrecht\n")


# Thunderbird ------------------------------------------------------------------------------------


def tb_text_part(text: str) -> str:
    return ("Content-Type: text/plain; charset=UTF-8; format=flowed\n"
            "Content-Transfer-Encoding: quoted-printable\n\n" + qp(flowed(text), "utf-8"))


def tb_html_alternative(text: str) -> str:
    """Thunderbird's default (HTML) compose: multipart/alternative, flowed text and HTML."""
    paragraphs = "".join("    <p>" + p.replace("\n", "<br>\n      ") + "</p>\n"
                         for p in text.split("\n\n"))
    html = ('<!DOCTYPE html>\n<html>\n  <head>\n\n    <meta http-equiv="content-type" '
            'content="text/html; charset=UTF-8">\n  </head>\n  <body>\n'
            f"{paragraphs}  </body>\n</html>\n")
    boundary = tb_boundary()
    return multipart(f'Content-Type: multipart/alternative;\n boundary="{boundary}"', boundary,
                     [tb_text_part(text),
                      "Content-Type: text/html; charset=UTF-8\n"
                      "Content-Transfer-Encoding: quoted-printable\n\n" + qp(html, "utf-8")])


def tb_attachment(name: str, ctype: str, data: bytes) -> str:
    return (f'Content-Type: {ctype}; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            "Content-Transfer-Encoding: base64\n\n" + base64_lines(data, 72))


def tb_key_attachment(sender: Identity) -> str:
    """"Attach my public key": application/pgp-keys, read by nobody at the gateway."""
    armored = gpg_ok(sender.home, ["--armor", "--export", sender.fingerprint]).decode()
    name = f"OpenPGP_0x{sender.fingerprint[-16:]}.asc"
    return (f'Content-Type: application/pgp-keys; name="{name}"\n'
            f'Content-Disposition: attachment; filename="{name}"\n'
            "Content-Description: OpenPGP public key\n"
            "Content-Transfer-Encoding: quoted-printable\n\n" + qp(armored, "ascii"))


def tb_inner(parts: Sequence[str], *, msgid: str, legacy_display: bool) -> str:
    """Thunderbird's encrypted payload: multipart/mixed with protected headers (From, To,
    Message-ID, Subject in the entity's own header block) and, as versions 78 to 91 wrote it,
    a legacy display part `text/rfc822-headers; protected-headers="v1"` before the body."""
    protected = (f"From: {SENDER_NAME} <{SENDER_ADDRESS}>\nTo: {GATEWAY}\n"
                 f"Message-ID: {msgid}\nSubject: {INNER_SUBJECT}\n")
    legacy = ['Content-Type: text/rfc822-headers; protected-headers="v1"\n'
              "Content-Disposition: inline\n\n"
              f"From: {SENDER_NAME} <{SENDER_ADDRESS}>\nTo: {GATEWAY}\n"
              f"Subject: {INNER_SUBJECT}\n"]
    boundary = tb_boundary()
    return multipart(f'Content-Type: multipart/mixed; boundary="{boundary}";\n'
                     f' protected-headers="v1"\n{protected}', boundary,
                     [*(legacy if legacy_display else []), *parts])


def tb_outer(armored: bytes, sender: Identity, msgid: str) -> str:
    """Thunderbird's multipart/encrypted: "..." as Subject, an Autocrypt header, the version
    part and `encrypted.asc`."""
    keydata = base64.b64encode(gpg_ok(sender.home, ["--export", sender.fingerprint])).decode()
    folded = "\n ".join(keydata[i:i + 76] for i in range(0, len(keydata), 76))
    boundary = tb_boundary()
    head = (f"Message-ID: {msgid}\n"
            f"Date: {format_datetime(dt.datetime.now().astimezone())}\n"
            "MIME-Version: 1.0\n"
            "User-Agent: Mozilla Thunderbird\n"
            "Content-Language: nl\n"
            f"To: {GATEWAY}\n"
            f"From: {SENDER_NAME} <{SENDER_ADDRESS}>\n"
            "Subject: ...\n"
            f"Autocrypt: addr={SENDER_ADDRESS}; keydata=\n {folded}\n"
            'Content-Type: multipart/encrypted;\n protocol="application/pgp-encrypted";\n'
            f' boundary="{boundary}"\n')
    return multipart(
        head, boundary,
        ["Content-Type: application/pgp-encrypted\n"
         "Content-Description: PGP/MIME version identification\n\nVersion: 1\n\n",
         'Content-Type: application/octet-stream; name="encrypted.asc"\n'
         "Content-Description: OpenPGP encrypted message\n"
         'Content-Disposition: inline; filename="encrypted.asc"\n\n'
         + armored.decode().replace("\r\n", "\n") + "\n"],
        preamble="This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\n")


def thunderbird(h: Harness, parts: Sequence[str], *, legacy_display: bool = False,
                inner_eol: Eol = "\r\n") -> bytes:
    """A complete Thunderbird signal: one sign+encrypt over the protected-headers payload."""
    sender = h.ids.sender
    msgid = message_id()
    inner = tb_inner(parts, msgid=msgid, legacy_display=legacy_display)
    armored = sign_encrypt(sender, h.gateway_fpr, eol(inner, inner_eol))
    return eol(tb_outer(armored, sender, msgid))


# mutt / neomutt ---------------------------------------------------------------------------------


def mutt_text_part(text: str, *, charset: str, cte: str, protected: bool) -> str:
    """mutt's text/plain body, `Content-Disposition: inline`; with $crypt_protected_headers_write
    the Subject moves into this header block and the part says protected-headers="v1"."""
    head = (f"Content-Type: text/plain; charset={charset}"
            + ('; protected-headers="v1"' if protected else "") + "\n"
            "Content-Disposition: inline\n"
            f"Content-Transfer-Encoding: {cte}\n"
            + (f"Subject: {INNER_SUBJECT}\n" if protected else ""))
    if cte == "quoted-printable":
        # mutt guards a line starting "From " against mbox mangling (sendlib.c, encode_quoted).
        body = re.sub(r"(?m)^From ", "=46rom ", qp(text, charset))
    elif cte == "base64":
        # Text is base64-encoded in its canonical form, with CRLF (RFC 2045 §6.8).
        body = base64_lines(text.replace("\n", "\r\n").encode(charset), 76)
    else:
        body = text
    return head + "\n" + body


def mutt_mixed(parts: Sequence[str], *, protected: bool) -> str:
    """mutt's multipart/mixed of a body and attachments, mutt's empty preamble included; with
    protected headers the Subject sits in its header block."""
    boundary = mutt_boundary()
    head = (f'Content-Type: multipart/mixed; boundary="{boundary}"'
            + ('; protected-headers="v1"' if protected else "") + "\n"
            "Content-Disposition: inline\n"
            + (f"Subject: {INNER_SUBJECT}\n" if protected else ""))
    # mutt writes "\n--boundary\n" before each part and "\n--boundary--\n" after the last.
    return multipart(head, boundary, [part + "\n" for part in parts], preamble="\n")


def mutt_json_attachment(children: Sequence[Child]) -> str:
    """`signal.json` attached in mutt: quoted-printable because it is text with an accent."""
    document = {"codeword": "Handle with Care",
                "children": [{"name": c.name, "birthdate": c.birth.isoformat(),
                              **({"school": c.school} if c.hint else {})} for c in children]}
    return ("Content-Type: application/json; charset=utf-8\n"
            'Content-Disposition: attachment; filename="signal.json"\n'
            "Content-Transfer-Encoding: quoted-printable\n\n"
            + qp(json.dumps(document, ensure_ascii=False, indent=2) + "\n", "utf-8"))


def mutt_signed(part: str, sender: Identity, *, sig: SigMode, written_eol: Eol) -> bytes:
    """mutt's multipart/signed (RFC 3156 §5) around `part`, as mutt writes it: the signed part
    is the part's header block, a blank line and its body with its final newline; the newline
    before the next delimiter belongs to the delimiter. Classic mutt's $pgp_sign_command signs
    its LF temporary file with --textmode; neomutt with GPGME signs the CRLF form in binary
    mode. Either way the multipart is then written with `written_eol` for encryption."""
    if sig == "textmode-lf":
        signature = detach_sign(sender, eol(part, "\n"), textmode=True)
    else:
        signature = detach_sign(sender, eol(part, "\r\n"), textmode=False)
    boundary = mutt_boundary()
    text = ("Content-Type: multipart/signed; micalg=pgp-sha256;\n"
            f'\tprotocol="application/pgp-signature"; boundary="{boundary}"\n'
            "Content-Disposition: inline\n\n"
            f"\n--{boundary}\n{part}"
            f"\n--{boundary}\n"
            'Content-Type: application/pgp-signature; name="signature.asc"\n'
            "Content-Description: Digital signature\n\n"
            + signature.decode().replace("\r\n", "\n") + f"\n--{boundary}--\n")
    return eol(text, written_eol)


def mutt_outer(armored: bytes) -> bytes:
    """mutt's multipart/encrypted: `Content-Disposition: inline`, the version part as an
    attachment, `msg.asc`, and the neutral "..." Subject of $crypt_protected_headers_subject."""
    boundary = mutt_boundary()
    text = (f"Date: {format_datetime(dt.datetime.now().astimezone())}\n"
            f"From: {SENDER_NAME} <{SENDER_ADDRESS}>\n"
            f"To: {GATEWAY}\n"
            "Subject: ...\n"
            f"Message-ID: {message_id()}\n"
            "MIME-Version: 1.0\n"
            'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted";\n'
            f'\tboundary="{boundary}"\n'
            "Content-Disposition: inline\n\n"
            f"\n--{boundary}\n"
            "Content-Type: application/pgp-encrypted\n"
            "Content-Disposition: attachment\n\n"
            "Version: 1\n"
            f"\n--{boundary}\n"
            "Content-Type: application/octet-stream\n"
            'Content-Disposition: inline; filename="msg.asc"\n\n'
            + armored.decode().replace("\r\n", "\n") + f"\n--{boundary}--\n")
    return eol(text)


def mutt_combined(h: Harness, part: str, *, textmode: bool) -> bytes:
    """mutt's default sign+encrypt ($pgp_retainable_sigs unset): one OpenPGP message over the
    LF temporary file; classic mutt passes --textmode, neomutt's GPGME does not."""
    return mutt_outer(sign_encrypt(h.ids.sender, h.gateway_fpr, eol(part, "\n"),
                                   textmode=textmode))


def mutt_retained(h: Harness, part: str, *, sig: SigMode, written_eol: Eol) -> bytes:
    """With $pgp_retainable_sigs: an encrypted multipart/signed."""
    signed = mutt_signed(part, h.ids.sender, sig=sig, written_eol=written_eol)
    return mutt_outer(encrypt_only(h.ids.sender.home, h.gateway_fpr, signed))
