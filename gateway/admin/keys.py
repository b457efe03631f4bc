"""What the `keys` verbs do: the gateway's own keys and the pinned keys' updates.

Takes the config (`keys_init`, before any state exists) or a `Context` and plain values;
produces what changed, as lines for the administrator, or raises `Refused` with a one-line
reason. Each change is one store transaction with its receipt and moves the directory version,
so a running daemon picks it up without a restart. Which key belongs to whom, and retiring a
gateway key, are shared with the daemon's key jobs (`gateway.service.keys`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.admin.common import Refused, import_key, key_passphrase
from gateway.core.config import Config
from gateway.core.records import iso
from gateway.core.timetext import local_time_text
from gateway.core.validate import normalise_fingerprint
from gateway.crypto.custody import CustodyError
from gateway.crypto.gpg import Gpg
from gateway.crypto.keyadmin import (
    KeyRefused,
    export_public,
    generate_gateway_key,
    import_updates,
    list_key_infos,
    scan_key_file,
)
from gateway.crypto.tlsdev import make_dev_tls
from gateway.crypto.vault import create_secrets
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.service.keys import key_owners, retire_gateway_key
from gateway.store.api import Tx
from gateway.store.chainkey import RECEIPTS_KEY, open_store


async def keys_init(config: Config, now: dt.datetime) -> list[str]:
    """Create what is missing: gateway key, development TLS pair, secrets. Says what it did."""
    done = []
    # First what can refuse: nothing is written for a passphrase policy that is not met.
    passphrase = key_passphrase(config)
    config.keys.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.keys.dir.chmod(0o700)  # a fresh checkout's keys/ is 0755: close it before filling it
    if not config.smtp.tls_cert.exists() or not config.smtp.tls_key.exists():
        make_dev_tls(config.smtp.tls_cert, config.smtp.tls_key,
                     [config.smtp.hostname, "localhost", "127.0.0.1"])
        done.append(f"created a development TLS certificate {config.smtp.tls_cert} "
                    f"(its CA: {config.smtp.tls_cert.parent / 'ca.pem'})")
    for path in create_secrets(config.secrets_dir):
        done.append(f"created secret {path}")
    gpg = Gpg(config.gnupg_home, binary=config.keys.gpg_binary, passphrase=passphrase)
    receipts_key = config.secrets_dir / RECEIPTS_KEY
    had_receipts_key = receipts_key.exists()
    store = await open_store(config.storage.path, config.secrets_dir)
    if not had_receipts_key:
        done.append(f"created secret {receipts_key}")
    try:
        current = [r for r in await store.directory.gateway_keys() if r.state == "current"]
        if not current:
            fpr = generate_gateway_key(gpg, config.gateway.address, passphrase)

            async def create(tx: Tx) -> None:
                await tx.directory.add_gateway_key(fpr, now)
                await tx.receipts.append("key.created", at=now, fingerprint=fpr, role="gateway")

            await store.write(create)
            done.append(f"created gateway key {fpr}")
        else:
            done.append(f"gateway key {current[0].fingerprint} already present")
    finally:
        await store.close()
    return done


def keys_export(ctx: Context, include_previous: bool = False) -> str:
    """The gateway's public key for senders; the text before each block says which to use."""
    snapshot = ctx.snapshot
    if snapshot.signing_key is None:
        raise Refused("there is no gateway key yet: run `hwc-gateway keys init`")
    blocks = [f"# hwc-gateway current key {snapshot.signing_key}: encrypt signals to this key\n"
              + export_public(ctx.gpg, [snapshot.signing_key])]
    if include_previous:
        blocks += [f"# hwc-gateway previous key {fpr}: still opened during the overlap; "
                   "do not use for new signals\n" + export_public(ctx.gpg, [fpr])
                   for fpr in sorted(snapshot.decrypt_keys - {snapshot.signing_key})]
    return "\n".join(blocks)


async def keys_list(ctx: Context, now: dt.datetime,
                    within_days: int | None) -> list[dict[str, Any]]:
    owners = await key_owners(ctx)
    rows = []
    for info in list_key_infos(ctx.gpg):
        owner, purpose = owners.get(info.fingerprint, ("(not pinned)", "encrypt"))
        if within_days is not None and (info.expires is None or info.expires > now
                                        + dt.timedelta(days=within_days)):
            continue
        rows.append({"fingerprint": info.fingerprint, "owner": owner,
                     "user_ids": list(info.user_ids), "capabilities": info.capabilities,
                     "expires": info.expires.isoformat() if info.expires else None,
                     "state": info.unusable_reason(purpose, now) or "valid"})
    return rows


async def keys_rotate(ctx: Context, overlap_days: int) -> str:
    """A new gateway key signs from now on; the old one still opens signals for the overlap."""
    if overlap_days < 0:
        raise Refused("--overlap-days must not be negative")
    now = ctx.clock()
    passphrase = key_passphrase(ctx.config)
    new = generate_gateway_key(ctx.gpg, ctx.config.gateway.address, passphrase)
    until = now + dt.timedelta(days=overlap_days)

    async def rotate(tx: Tx) -> str | None:
        old = await tx.directory.add_gateway_key(new, now, until)
        await tx.receipts.append("key.rotated", at=now, fingerprint=new, previous=old,
                                 overlap_until=iso(until), operator=current_operator())
        return old

    old = await ctx.store.write(rotate)
    await ctx.refresh(force=True)
    shown = local_time_text(until, ctx.config.schedule.timezone)
    return (f"gateway key {new} signs from now on; {old} still opens signals until {shown}"
            f" (then it is retired). Send every sender the output of `keys export`.")


async def keys_retire(ctx: Context, fingerprint: str) -> str:
    """Stop opening signals encrypted to an old gateway key: its secret key is deleted."""
    fpr = normalise_fingerprint(fingerprint) or fingerprint
    rows = {r.fingerprint: r.state for r in await ctx.store.directory.gateway_keys()}
    if rows.get(fpr) == "current":
        raise Refused(f"{fpr} is the current gateway key: `keys rotate` first")
    if rows.get(fpr) != "previous":
        raise Refused(f"{fpr} is not a gateway key in its overlap")
    try:
        await retire_gateway_key(ctx, fpr, "by the administrator")
    except (KeyRefused, CustodyError) as exc:
        raise Refused(str(exc)) from None
    return f"gateway key {fpr} retired: signals encrypted to it are refused (554 5.7.5)"


async def keys_update(ctx: Context, data: bytes) -> str:
    """Take in revocations, new expiry dates and subkeys of keys that are already pinned."""
    try:
        infos = scan_key_file(data)
    except KeyRefused as exc:  # a private key in the file (issue 12)
        raise Refused(str(exc)) from None
    if not infos:
        raise Refused("the file holds no OpenPGP key")
    owners = await key_owners(ctx)
    strangers = sorted(set(infos) - set(owners))
    if strangers:
        raise Refused(f"not pinned, refused: {', '.join(strangers)} (pin a key with "
                      "`senders add-key` or `schools add`; nothing was imported)")
    before = {i.fingerprint: i for i in list_key_infos(ctx.gpg) if i.fingerprint in infos}
    try:
        import_updates(ctx.gpg, data, sorted(infos))
    except KeyRefused as exc:
        raise Refused(str(exc)) from None
    after = {i.fingerprint: i for i in list_key_infos(ctx.gpg) if i.fingerprint in infos}
    now = ctx.clock()
    lines = []

    async def record(tx: Tx) -> None:
        for fpr in sorted(infos):
            owner, purpose = owners[fpr]
            old, new = before.get(fpr), after.get(fpr)
            state = (new.unusable_reason(purpose, now) if new else "missing") or "valid"
            expires = new.expires.isoformat() if new and new.expires else "never"
            changed = old != new
            shown = (local_time_text(new.expires, ctx.config.schedule.timezone)
                     if new and new.expires else "never")
            lines.append(f"{fpr} ({owner}): {'updated' if changed else 'unchanged'}, "
                         f"now {state}, expires {shown}")
            await tx.receipts.append("key.updated", at=now, fingerprint=fpr, owner=owner,
                                     state=state, expires=expires, changed=changed,
                                     operator=current_operator())
        await tx.directory.bump_version()

    await ctx.store.write(record)
    await ctx.refresh(force=True)
    return "\n".join(lines)


async def keys_pin_alerts(ctx: Context, data: bytes) -> str:
    """Pin the key that alerts are encrypted to: the one `[alerts] key` names."""
    if not ctx.config.alerts.key:
        raise Refused("set [alerts] key to the alert key's fingerprint first")
    info = import_key(ctx.gpg, data, ctx.config.alerts.key, "encrypt", ctx.clock())
    now = ctx.clock()

    async def pin(tx: Tx) -> None:
        await tx.receipts.append("key.pinned", at=now, fingerprint=info.fingerprint, owner="alerts",
                                 operator=current_operator())
        await tx.directory.bump_version()

    await ctx.store.write(pin)
    await ctx.refresh(force=True)
    return f"alerts are encrypted to {info.fingerprint}"
