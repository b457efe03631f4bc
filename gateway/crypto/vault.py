"""Secrets at rest: AES-GCM for personal data that must wait, keyed hashes for look-ups.

Takes the two 32-byte secrets under `keys/secrets/` (`vault.key`, `pseudonym.key`); produces
sealed blobs and hex digests. Personal data reaches the database only through `seal` (a held
child, the pupil register) or as a keyed digest (register look-ups, the receipt pseudonym,
replay detection), so a copy of the database alone reveals no name, birth date or BSN.
A blob is bound to its row by the associated data, so blobs cannot be swapped between rows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VAULT_KEY = "vault.key"
PSEUDONYM_KEY = "pseudonym.key"


class VaultError(Exception):
    """A secret is missing or unreadable, or a blob does not open with our key."""


def create_secrets(directory: Path) -> list[Path]:
    """Create missing secrets (0600 in a 0700 directory); return the files created."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    created = []
    for name in (VAULT_KEY, PSEUDONYM_KEY):
        path = directory / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        created.append(path)
    return created


class Vault:
    def __init__(self, enc_key: bytes, mac_key: bytes) -> None:
        if len(enc_key) != 32 or len(mac_key) != 32:
            raise VaultError("secrets must be 32 bytes")
        self._aead = AESGCM(enc_key)
        self._mac_key = mac_key

    @classmethod
    def load(cls, directory: Path) -> Vault:
        try:
            return cls((directory / VAULT_KEY).read_bytes(),
                       (directory / PSEUDONYM_KEY).read_bytes())
        except OSError as exc:
            raise VaultError(f"cannot read the secrets in {directory}: {exc.strerror} "
                             "(run `hwc-gateway keys init`)") from None

    def seal(self, value: dict[str, Any], aad: str) -> bytes:
        nonce = secrets.token_bytes(12)
        data = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return nonce + self._aead.encrypt(nonce, data, aad.encode())

    def open(self, blob: bytes, aad: str) -> dict[str, Any]:
        try:
            data = self._aead.decrypt(blob[:12], blob[12:], aad.encode())
        except Exception:
            raise VaultError("sealed data does not open with this gateway's vault key") from None
        value: dict[str, Any] = json.loads(data)
        return value

    def digest(self, label: str, value: str | bytes) -> str:
        """A keyed, domain-separated digest: equal inputs match, the digest reveals nothing."""
        data = value.encode() if isinstance(value, str) else value
        return hmac.new(self._mac_key, label.encode() + b"\0" + data, hashlib.sha256).hexdigest()

    def pseudonym(self, name_text: str, birthdate_iso: str) -> str:
        """The receipt pseudonym of a child: `receipts find` recomputes it from name and date."""
        return self.digest("pseudonym", f"{name_text}\0{birthdate_iso}")[:32]
