"""The pickup channel's secrets: link tokens, the box only a link opens, enrolment codes.

Takes random bytes from the OS and the gateway's `Vault` (for keyed look-up digests); produces
link tokens, their digests, sealed boxes and enrolment codes. A pickup notice at rest is sealed
under a key derived from its link's token (HKDF-SHA256, then AES-256-GCM): the server keeps
only the box and a keyed digest of the token, so the database (or a backup of it, even with the
vault key) opens nothing until the school's contact brings the link back (docs/architecture.md
§9). Fails: `open_box` raises `BoxError` when the token or the associated data do not match.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.crypto.vault import Vault

TOKEN_BYTES = 32  # 256 bits: the issue asks for at least 128; a link may live for days
# An enrolment code is read out on the phone: no 0/O, 1/I/L, 8/B confusions; 8 characters of
# 29 = 38 bits, enough against guessing because wrong codes lock the invitation after a few.
CODE_ALPHABET = "ACDEFGHJKMNPQRSTUVWXYZ2345679"
CODE_LENGTH = 8
_BOX_INFO = b"hwc-gateway pickup box v1"


class BoxError(Exception):
    """A box does not open with this token (wrong link, or not the box of this notice)."""


def new_token() -> str:
    """A fresh link token: 256 random bits, base64url without padding (43 characters, safe
    in a URL path)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")


def well_formed_token(text: str) -> bool:
    """Whether `text` has a token's shape (checked before any look-up or derivation)."""
    return len(text) == 43 and text.isascii() and all(
        c.isalnum() or c in "-_" for c in text)


def token_digest(vault: Vault, token: str) -> str:
    """How the store finds a link: a keyed digest, so the stored value neither is nor leads to
    the token."""
    return vault.digest("pickup", token)


def ack_digest(vault: Vault, token: str) -> str:
    """The acknowledgement digest a notice is stored with (the same label as the reply
    address's token of an OpenPGP notice, `gateway.delivery.openpgp`)."""
    return vault.digest("ack", token)


def _aead(token: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_BOX_INFO).derive(
        token.encode("ascii"))
    return AESGCM(key)


def seal(token: str, value: dict[str, Any], aad: str) -> bytes:
    """`value` as JSON, sealed under the token's key and bound to `aad` (the notice)."""
    nonce = secrets.token_bytes(12)
    data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
    return nonce + _aead(token).encrypt(nonce, data, aad.encode())


def open_box(token: str, blob: bytes, aad: str) -> dict[str, Any]:
    """What `seal` sealed; BoxError when this token or `aad` is not the one it was sealed
    with, or the box was altered."""
    try:
        data = _aead(token).decrypt(blob[:12], blob[12:], aad.encode())
    except Exception:
        raise BoxError("the box does not open with this link") from None
    value: dict[str, Any] = json.loads(data)
    return value


def new_enrolment_code() -> str:
    """A code the administrator reads out on the phone: "ACDE-FGHJ"."""
    code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
    return f"{code[:4]}-{code[4:]}"


def normalise_code(text: str) -> str | None:
    """A typed code as stored: upper case, without spaces and dashes; None when it cannot be
    a code (wrong length or a character not in the alphabet)."""
    code = "".join(c for c in text.upper() if c not in " -")
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def code_digest(vault: Vault, school: str, email: str, code: str) -> str:
    """The keyed digest an enrolment code is stored as, bound to its contact; as printed or
    as typed (`normalise_code`), the same code gives the same digest."""
    typed = normalise_code(code) or code
    return vault.digest("enrolment-code", f"{school}\0{email.lower()}\0{typed}")
