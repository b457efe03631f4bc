"""What the `senders` verbs do: the organisations that may submit signals, their logins and keys.

Takes a `Context` and plain values; produces what changed, as a line for the administrator
(with a warning when a sender is left without a usable key), or raises `Refused` with a
one-line reason. Each change is one store transaction with its receipt.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.common import Refused, import_key
from gateway.core.records import LockoutRecord
from gateway.core.validate import is_address, normalise_cert_fingerprint, normalise_fingerprint
from gateway.crypto.passwords import hash_password
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx


async def senders_add(ctx: Context, name: str, key_data: bytes, fingerprint: str,
                      password: str | None, allow_from: list[str],
                      client_certs: list[str] | None = None, status_mail: bool = True) -> str:
    if not name or any(c in name for c in " \t\r\n\0:"):
        raise Refused("NAME must be one word without spaces or colons (it is the SMTP login)")
    certs = [normalise_cert_fingerprint(c) for c in client_certs or []]
    if None in certs:
        raise Refused("--client-cert must be a SHA-256 fingerprint (64 hex digits)")
    if password is None and not certs:
        raise Refused("a sender needs a password or a client certificate")
    if password is not None and len(password) < 12:
        raise Refused("the password must be at least 12 characters")
    bad = [a for a in allow_from if not is_address(a)]
    if bad:
        raise Refused(f"--allow-from {bad[0]!r} is not an e-mail address")
    if name in (await ctx.refresh()).senders:
        raise Refused(f"sender {name} exists already (use `senders add-key` for a second key)")
    now = ctx.clock()
    info = import_key(ctx.gpg, key_data, fingerprint, "sign", now)
    # Without a password the stored hash is "!", which no password ever matches.
    password_hash = hash_password(password) if password is not None else "!"

    async def add(tx: Tx) -> None:
        await tx.directory.add_sender(name, password_hash,
                                      info.fingerprint, [a.lower() for a in allow_from],
                                      [c for c in certs if c], now, status_mail)
        await tx.receipts.append("sender.added", at=now, sender=name, fingerprint=info.fingerprint,
                                 client_certs=len(certs), operator=current_operator())

    await ctx.store.write(add)
    return f"sender {name} added with key {info.fingerprint}" + (
        f" and {len(certs)} client certificate(s)" if certs else "")


async def senders_add_key(ctx: Context, name: str, key_data: bytes, fingerprint: str) -> str:
    await _require_sender(ctx, name)
    now = ctx.clock()
    info = import_key(ctx.gpg, key_data, fingerprint, "sign", now)

    async def add(tx: Tx) -> None:
        await tx.directory.add_sender_key(name, info.fingerprint, now)
        await tx.receipts.append("sender.key_added", at=now, sender=name,
                                 fingerprint=info.fingerprint, operator=current_operator())

    await ctx.store.write(add)
    return f"sender {name}: key {info.fingerprint} pinned"


async def senders_remove_key(ctx: Context, name: str, fingerprint: str) -> str:
    await _require_sender(ctx, name)
    fpr = normalise_fingerprint(fingerprint) or fingerprint
    now = ctx.clock()

    async def remove(tx: Tx) -> None:
        if not await tx.directory.remove_sender_key(name, fpr):
            raise Refused(f"sender {name} has no key {fpr}")
        await tx.receipts.append("sender.key_removed", at=now, sender=name, fingerprint=fpr,
                                 operator=current_operator())

    await ctx.store.write(remove)
    return f"sender {name}: key {fpr} no longer accepted" + await _sender_key_warning(ctx, name)


async def _sender_key_warning(ctx: Context, name: str) -> str:
    """A warning line when the sender is left without a usable key (issue 12)."""
    sender = (await ctx.refresh(force=True)).senders.get(name)
    if sender is None or sender.fingerprints:
        return ""
    return (f"\nwarning: sender {name} has no usable key left: every signal it sends is refused"
            " (554 5.7.7) until `senders add-key` pins one")


async def senders_unlock(ctx: Context, name: str) -> str:
    """Lift the AUTH lockout of a sender's login, and of the client addresses it was refused
    at: the running daemon lets them go at its next AUTH attempt (`ingress.auth`)."""
    if name not in {r.name for r in await ctx.store.directory.senders()}:
        raise Refused(f"there is no sender {name}")
    now = ctx.clock()

    async def lift(tx: Tx) -> list[LockoutRecord]:
        lifted = await tx.lockouts.lift(name, now, current_operator())
        if not lifted:
            raise Refused(f"sender {name} is not locked out")
        await tx.receipts.append("sender.unlocked", at=now, sender=name,
                                 lockouts=[f"{r.scope} {r.subject}" for r in lifted],
                                 operator=current_operator())
        return lifted

    lifted = await ctx.store.write(lift)
    parts = [f"{r.scope} {r.subject} (locked until {r.until})" for r in lifted]
    return (f"sender {name} unlocked: {', '.join(parts)}; the running daemon takes its next"
            " login again")


async def senders_remove(ctx: Context, name: str) -> str:
    now = ctx.clock()

    async def remove(tx: Tx) -> None:
        if not await tx.directory.remove_sender(name):
            raise Refused(f"there is no sender {name}")
        await tx.receipts.append("sender.removed", at=now, sender=name, operator=current_operator())

    await ctx.store.write(remove)
    return f"sender {name} removed"


async def senders_list(ctx: Context) -> list[dict[str, Any]]:
    keys = await ctx.store.directory.sender_keys()
    addresses = await ctx.store.directory.sender_addresses()
    certs = await ctx.store.directory.sender_certs()
    usable = {n: s.fingerprints for n, s in (await ctx.refresh()).senders.items()}
    return [{"name": r.name, "created": r.created_at,
             "keys": [{"fingerprint": k.fingerprint,
                       "usable": k.fingerprint in usable.get(r.name, frozenset())}
                      for k in keys if k.sender == r.name],
             "allow_from": [a.address for a in addresses if a.sender == r.name],
             "client_certs": [c.sha256 for c in certs if c.sender == r.name],
             "password": r.password_hash != "!"}  # noqa: S105 - the "no password" mark
            for r in await ctx.store.directory.senders()]


async def _require_sender(ctx: Context, name: str) -> None:
    if name not in (await ctx.refresh()).senders:
        raise Refused(f"there is no sender {name}")
