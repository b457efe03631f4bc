"""The key work the daemon and the administrator share: whose each pinned key is, and retiring a
gateway key.

Takes a `Context`. `key_owners` reads the directory and the config; `retire_gateway_key` writes
the `key.retired` receipt in one transaction, deletes the key's secret half from gpg and reloads
the snapshot. The daemon's daily key job (`gateway.service.watch`) and the `keys` verbs
(`gateway.admin.keys`) both call them. Fails: `CustodyError` when the key passphrase cannot be
read, `KeyRefused` when gpg does not delete the key (the receipt is written by then).
"""

from __future__ import annotations

from gateway.core.keyinfo import Purpose
from gateway.crypto.custody import read_passphrase
from gateway.crypto.keyadmin import delete_secret_key
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx


async def key_owners(ctx: Context) -> dict[str, tuple[str, Purpose]]:
    """Every pinned key: fingerprint -> (owner, what it must do)."""
    owners: dict[str, tuple[str, Purpose]] = {}
    for key in await ctx.store.directory.gateway_keys():
        until = f" until {key.decrypt_until}" if key.state == "previous" else ""
        owners[key.fingerprint] = (f"gateway ({key.state}{until})", "sign")
    for sender_key in await ctx.store.directory.sender_keys():
        owners[sender_key.fingerprint] = (f"sender {sender_key.sender}", "sign")
    for contact in await ctx.store.directory.contacts():
        if contact.fingerprint:  # a pickup contact has no key
            owners[contact.fingerprint] = (f"school {contact.school} {contact.email}",
                                           "encrypt")
    if ctx.config.alerts.key:
        owners[ctx.config.alerts.key] = ("alerts", "encrypt")
    return owners


async def retire_gateway_key(ctx: Context, fpr: str, why: str) -> None:
    """Stop opening signals encrypted to gateway key `fpr`: its receipt (with `why`), then its
    secret key deleted."""
    now = ctx.clock()

    async def retire(tx: Tx) -> None:
        if await tx.directory.retire_gateway_key(fpr, now):
            await tx.receipts.append("key.retired", at=now, fingerprint=fpr, why=why,
                                     operator=current_operator())

    await ctx.store.write(retire)
    delete_secret_key(ctx.gpg, fpr, read_passphrase(ctx.config))
    await ctx.refresh(force=True)
