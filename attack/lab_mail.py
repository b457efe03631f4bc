"""The laboratory's people and their mail: gpg on the command line, parties, signals.

Takes nothing from the gateway; produces throwaway GnuPG homes with one key each (`Party`),
signals as a sender's mail client writes them (PGP/MIME, RFC 3156) and the means to read
what the schools get. A missing tool raises `RuntimeError`, a gpg run that fails `GpgFailed`
(one line saying which).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

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



def pupils() -> list[tuple[str, str, dt.date, str]]:
    """The register the laboratory imports: (BSN or "", name, birth date, school code)."""
    return [
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
