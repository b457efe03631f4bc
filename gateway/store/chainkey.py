"""The receipt key: the secret the receipt chain is linked under, and the store opened with it.

Takes the secrets directory (`keys/secrets/`) and the database path; produces an open `Store`
whose receipts are linked with HMAC-SHA256 under `receipts.key` (32 random bytes, 0600).
Whoever can write the database but cannot read `keys/` cannot rebuild the chain after changing
an entry (`gateway.store.chain.receipt_hash`).

A deployment whose database predates the key gets both at its first start: the key is created
as `receipts.key.new`, the existing chain is checked and re-linked under it in one transaction
(`Store.key_chain`), and only then is the file renamed to `receipts.key`. Whether that upgrade
is due is decided by the key file alone, never by anything in the database: someone who can
write the database could otherwise make a rewritten chain look like one still to be upgraded,
and have the gateway re-link it. A start interrupted between the two steps finishes the upgrade
the next time, with the same key. Fails with `ChainKeyError` (one line, naming the path) when
the key cannot be read or created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from pathlib import Path

from gateway.crypto.vault import VaultError
from gateway.store.sqlite.connection import SqliteStore

RECEIPTS_KEY = "receipts.key"
_PENDING = RECEIPTS_KEY + ".new"


class ChainKeyError(VaultError):
    """The receipt key is unreadable, or could not be created (a missing secret, as for
    the vault's: every caller that answers those answers this one)."""


def _read(path: Path) -> bytes:
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise ChainKeyError(f"cannot read the receipt key {path}: {exc.strerror}") from None
    if len(key) != 32:
        raise ChainKeyError(f"the receipt key {path} is not 32 bytes: restore it from the backup"
                            " of keys/")
    return key


def _pending_key(directory: Path) -> bytes:
    """The key of an upgrade in progress, made now if none is."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / _PENDING
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)  # an earlier start, or another process, made it: the same key
    except OSError as exc:
        raise ChainKeyError(f"cannot create the receipt key {path}: {exc.strerror} (run"
                            " `hwc-gateway keys init` as the service user)") from None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
        fh.flush()
        os.fsync(fh.fileno())
    return key


def _finish(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # another process renamed it first
        os.replace(directory / _PENDING, directory / RECEIPTS_KEY)


async def open_store(path: Path, secrets_dir: Path) -> SqliteStore:
    """The store, its receipts linked under the deployment's receipt key."""
    final = secrets_dir / RECEIPTS_KEY
    if await asyncio.to_thread(final.exists):
        return await SqliteStore.open(path, await asyncio.to_thread(_read, final))
    key = await asyncio.to_thread(_pending_key, secrets_dir)
    store = await SqliteStore.open(path, key)
    try:
        if not await store.chain_keyed():
            await store.key_chain()
        await asyncio.to_thread(_finish, secrets_dir)
    except BaseException:
        await store.close()
        raise
    return store
