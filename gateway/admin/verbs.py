"""What the administrator's verbs do, apart from parsing arguments and printing.

Takes a `Context` and plain values; produces what changed (for the verb to say) or raises
`Refused` with a one-line reason (exit 1). Every change is made in one store transaction
together with its receipt, and moves the store's directory version so that a running daemon
picks it up without a restart.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.admin.imports import (
    change_lines,
    parse_duo_csv,
    parse_pupils_csv,
    refused_lines,
    school_changes,
)
from gateway.core.config import Config
from gateway.core.fields import normalise_school
from gateway.core.inert import inert, inert_json
from gateway.core.keyinfo import Purpose
from gateway.core.model import Child
from gateway.core.names import names_match, pseudonym_text
from gateway.core.records import LockoutRecord, NoticeRecord, PupilRow, from_iso, iso
from gateway.core.schedule import deadline, time_left
from gateway.core.timetext import local_time_text
from gateway.core.validate import (
    is_address,
    normalise_cert_fingerprint,
    normalise_fingerprint,
    parse_hostport,
)
from gateway.crypto.custody import CustodyError, read_passphrase
from gateway.crypto.gpg import Gpg
from gateway.crypto.keyadmin import (
    KeyRefused,
    delete_secret_key,
    export_public,
    generate_gateway_key,
    import_pinned,
    import_updates,
    list_key_infos,
    scan_key_file,
)
from gateway.crypto.passwords import hash_password
from gateway.crypto.tlsdev import make_dev_tls
from gateway.crypto.vault import create_secrets
from gateway.delivery.deliver import FIXES
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.pipeline.intake import register_candidates
from gateway.store.api import Store, Tx
from gateway.store.chain import chain_problems
from gateway.store.chainkey import RECEIPTS_KEY, open_store
from gateway.store.views import queue_counts

log = get_logger("admin")


class Refused(Exception):
    """The operation was refused; the message is one line for the administrator."""


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def operator_text(uid: int, environ: Mapping[str, str],
                  name_of: Callable[[int], str | None]) -> str:
    """Who an audit record names: the real uid, by its name in the password database when it
    has one ("alice (uid 1000)"). LOGNAME and USER are never read: anyone can set them to any
    name (issue 11). Only for root is sudo's SUDO_UID taken as the person who asked ("root via
    sudo from alice (uid 1000)"): any other user could write SUDO_UID itself. Its name also
    comes from the password database; SUDO_USER only when the uid has no entry there."""
    name = name_of(uid)
    who = f"{name} (uid {uid})" if name else f"uid {uid}"
    sudo_uid = environ.get("SUDO_UID", "")
    if uid != 0 or not sudo_uid.isdigit():
        return who
    number = int(sudo_uid)
    asked = name_of(number) or inert(environ.get("SUDO_USER", "").strip()[:64])
    return (f"{name or who} via sudo from "
            + (f"{asked} (uid {number})" if asked else f"uid {number}"))


def _operator() -> str:
    return operator_text(os.getuid(), os.environ, _user_name)


# -- keys init --------------------------------------------------------------------------------

async def keys_init(config: Config, now: dt.datetime) -> list[str]:
    """Create what is missing: gateway key, development TLS pair, secrets. Says what it did."""
    done = []
    # First what can refuse: nothing is written for a passphrase policy that is not met.
    passphrase = _passphrase(config)
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


def _passphrase(config: Config) -> str | None:
    try:
        return read_passphrase(config)
    except CustodyError as exc:
        raise Refused(str(exc)) from None


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


async def key_owners(ctx: Context) -> dict[str, tuple[str, Purpose]]:
    """Every pinned key: fingerprint -> (owner, what it must do)."""
    owners: dict[str, tuple[str, Purpose]] = {}
    for key in await ctx.store.directory.gateway_keys():
        until = f" until {key.decrypt_until}" if key.state == "previous" else ""
        owners[key.fingerprint] = (f"gateway ({key.state}{until})", "sign")
    for sender_key in await ctx.store.directory.sender_keys():
        owners[sender_key.fingerprint] = (f"sender {sender_key.sender}", "sign")
    for contact in await ctx.store.directory.contacts():
        owners[contact.fingerprint] = (f"school {contact.school} {contact.email}", "encrypt")
    if ctx.config.alerts.key:
        owners[ctx.config.alerts.key] = ("alerts", "encrypt")
    return owners


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
    passphrase = _passphrase(ctx.config)
    new = generate_gateway_key(ctx.gpg, ctx.config.gateway.address, passphrase)
    until = now + dt.timedelta(days=overlap_days)

    async def rotate(tx: Tx) -> str | None:
        old = await tx.directory.add_gateway_key(new, now, until)
        await tx.receipts.append("key.rotated", at=now, fingerprint=new, previous=old,
                                 overlap_until=iso(until), operator=_operator())
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
    await retire_gateway_key(ctx, fpr, "by the administrator")
    return f"gateway key {fpr} retired: signals encrypted to it are refused (554 5.7.5)"


async def retire_gateway_key(ctx: Context, fpr: str, why: str) -> None:
    now = ctx.clock()

    async def retire(tx: Tx) -> None:
        if await tx.directory.retire_gateway_key(fpr, now):
            await tx.receipts.append("key.retired", at=now, fingerprint=fpr, why=why,
                                     operator=_operator())

    await ctx.store.write(retire)
    try:
        delete_secret_key(ctx.gpg, fpr, _passphrase(ctx.config))
    except KeyRefused as exc:
        raise Refused(str(exc)) from None
    await ctx.refresh(force=True)


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
                                     operator=_operator())
        await tx.directory.bump_version()

    await ctx.store.write(record)
    await ctx.refresh(force=True)
    return "\n".join(lines)


async def keys_pin_alerts(ctx: Context, data: bytes) -> str:
    """Pin the key that alerts are encrypted to: the one `[alerts] key` names."""
    if not ctx.config.alerts.key:
        raise Refused("set [alerts] key to the alert key's fingerprint first")
    info = _import(ctx.gpg, data, ctx.config.alerts.key, "encrypt", ctx.clock())
    now = ctx.clock()

    async def pin(tx: Tx) -> None:
        await tx.receipts.append("key.pinned", at=now, fingerprint=info.fingerprint, owner="alerts",
                                 operator=_operator())
        await tx.directory.bump_version()

    await ctx.store.write(pin)
    await ctx.refresh(force=True)
    return f"alerts are encrypted to {info.fingerprint}"


# -- senders ----------------------------------------------------------------------------------

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
    info = _import(ctx.gpg, key_data, fingerprint, "sign", now)
    # Without a password the stored hash is "!", which no password ever matches.
    password_hash = hash_password(password) if password is not None else "!"

    async def add(tx: Tx) -> None:
        await tx.directory.add_sender(name, password_hash,
                                      info.fingerprint, [a.lower() for a in allow_from],
                                      [c for c in certs if c], now, status_mail)
        await tx.receipts.append("sender.added", at=now, sender=name, fingerprint=info.fingerprint,
                                 client_certs=len(certs), operator=_operator())

    await ctx.store.write(add)
    return f"sender {name} added with key {info.fingerprint}" + (
        f" and {len(certs)} client certificate(s)" if certs else "")


async def senders_add_key(ctx: Context, name: str, key_data: bytes, fingerprint: str) -> str:
    await _require_sender(ctx, name)
    now = ctx.clock()
    info = _import(ctx.gpg, key_data, fingerprint, "sign", now)

    async def add(tx: Tx) -> None:
        await tx.directory.add_sender_key(name, info.fingerprint, now)
        await tx.receipts.append("sender.key_added", at=now, sender=name,
                                 fingerprint=info.fingerprint, operator=_operator())

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
                                 operator=_operator())

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
        lifted = await tx.lockouts.lift(name, now, _operator())
        if not lifted:
            raise Refused(f"sender {name} is not locked out")
        await tx.receipts.append("sender.unlocked", at=now, sender=name,
                                 lockouts=[f"{r.scope} {r.subject}" for r in lifted],
                                 operator=_operator())
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
        await tx.receipts.append("sender.removed", at=now, sender=name, operator=_operator())

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


def _import(gpg: Gpg, data: bytes, fingerprint: str, purpose: Any, now: dt.datetime) -> Any:
    try:
        return import_pinned(gpg, data, fingerprint, purpose, now)
    except KeyRefused as exc:
        raise Refused(str(exc)) from None


# -- schools ----------------------------------------------------------------------------------

def _school_code(code: str) -> str:
    norm = normalise_school(code)
    if norm is None or len(norm) != 6:
        raise Refused("CODE must be a 6-character DUO vestigingscode such as 12AB00")
    return norm


async def schools_import_duo(ctx: Context, data: bytes, accept_refused: bool = False) -> str:
    """Add or rename the schools of DUO's file; contacts, keys and routes stay. A refused row
    refuses the whole import unless `accept_refused` (issue 12: a nightly job must notice a
    school left out)."""
    try:
        parsed = parse_duo_csv(data)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    refused = len(parsed.refused)
    if refused and not accept_refused:
        raise Refused("\n".join([
            f"schools import refused, the directory is unchanged: {refused} of "
            f"{refused + len(parsed.schools)} rows refused (correct the file, or leave these "
            "rows out with --accept-refused)", *refused_lines(parsed.refused)]))
    now = ctx.clock()

    async def upsert(tx: Tx) -> int:
        changed = 0
        for school in parsed.schools:
            changed += await tx.directory.upsert_school(school.code, school.name,
                                                        school.place or "")
        await tx.receipts.append("schools.imported", at=now, schools=len(parsed.schools),
                                 changed=changed, refused=refused, operator=_operator())
        return changed

    changed = await ctx.store.write(upsert)
    lines = [f"{len(parsed.schools)} schools read, {changed} added or renamed, "
             f"{refused} rows refused and left out; contacts and keys unchanged"]
    return "\n".join(lines + refused_lines(parsed.refused))


async def schools_add(ctx: Context, code: str, name: str | None, email: str, key_data: bytes,
                      fingerprint: str, route: str | None) -> str:
    code = _school_code(code)
    if not is_address(email):
        raise Refused(f"--email {email!r} is not an e-mail address")
    if route is not None and parse_hostport(route) is None:
        raise Refused("--route must be HOST:PORT")
    existing = await ctx.store.directory.school(code)
    if existing is None and not name:
        raise Refused(f"school {code} is not in the directory: give --name (or import DUO data)")
    now = ctx.clock()
    info = _import(ctx.gpg, key_data, fingerprint, "encrypt", now)

    async def add(tx: Tx) -> str | None:
        if name or existing is None:
            await tx.directory.upsert_school(code, name or "", existing.place if existing else "")
        if route is not None:
            await tx.directory.set_school_route(code, route)
        previous = await tx.directory.set_contact(code, email.lower(), info.fingerprint)
        await tx.receipts.append("school.contact_set", at=now, school=code,
                                 contact=email.lower(), fingerprint=info.fingerprint,
                                 previous=previous, operator=_operator())
        return previous

    previous = await ctx.store.write(add)
    return f"school {code}: contact {email.lower()} with key {info.fingerprint}" + (
        f" (replacing {previous})" if previous and previous != info.fingerprint else "") + (
        f", route {route}" if route else "") + await _route_warning(ctx, code)


async def _route_warning(ctx: Context, code: str) -> str:
    """A warning line when nothing can reach the school: no route, no relay (issue 12)."""
    school = await ctx.store.directory.school(code)
    if ctx.config.delivery.relay is not None or school is None or school.route:
        return ""
    return (f"\nwarning: school {code} has no route and [delivery] relay is empty: its notices"
            " wait and are never delivered; give it --route HOST:PORT or set [delivery] relay")


async def _contact_warning(ctx: Context, code: str) -> str:
    """A warning line when the school has no contact with a usable key left."""
    if (await ctx.refresh(force=True)).contacts.get(code):
        return ""
    return (f"\nwarning: school {code} has no contact with a usable key left: its children are"
            " held until `schools add` gives it one")


async def schools_set_contact(ctx: Context, code: str, email: str, new_email: str) -> str:
    """A contact's address changes; its pinned key stays. A notice waiting for the old
    address is superseded before its next attempt and sealed again for the new one."""
    code = _school_code(code)
    old, new = email.lower(), new_email.lower()
    if not is_address(new):
        raise Refused(f"--new-email {new_email!r} is not an e-mail address")
    contacts = {c.email for c in await ctx.store.directory.contacts(code)}
    if old not in contacts:
        raise Refused(f"school {code} has no contact {old}")
    if new in contacts:
        raise Refused(f"school {code} has a contact {new} already")
    now = ctx.clock()

    async def rename(tx: Tx) -> None:
        await tx.directory.rename_contact(code, old, new)
        await tx.receipts.append("school.contact_changed", at=now, school=code, contact=new,
                                 previous=old, operator=_operator())

    await ctx.store.write(rename)
    return (f"school {code}: contact {old} is now {new} (same key)"
            + await _contact_warning(ctx, code))


async def schools_remove_contact(ctx: Context, code: str, email: str) -> str:
    """Remove one contact and its pinned key from a school; the school stays."""
    code = _school_code(code)
    now = ctx.clock()

    async def remove(tx: Tx) -> str:
        fingerprint = await tx.directory.remove_contact(code, email.lower())
        if fingerprint is None:
            raise Refused(f"school {code} has no contact {email.lower()}")
        await tx.receipts.append("school.contact_removed", at=now, school=code,
                                 contact=email.lower(), fingerprint=fingerprint,
                                 operator=_operator())
        return fingerprint

    fingerprint = await ctx.store.write(remove)
    return (f"school {code}: contact {email.lower()} (key {fingerprint}) removed"
            + await _contact_warning(ctx, code))


async def schools_set_key(ctx: Context, code: str, email: str, key_data: bytes,
                          fingerprint: str) -> str:
    code = _school_code(code)
    contacts = {c.email for c in await ctx.store.directory.contacts(code)}
    if email.lower() not in contacts:
        raise Refused(f"school {code} has no contact {email.lower()}")
    return await schools_add(ctx, code, None, email, key_data, fingerprint, None)


async def schools_remove(ctx: Context, code: str) -> str:
    code = _school_code(code)
    now = ctx.clock()

    async def remove(tx: Tx) -> None:
        if not await tx.directory.remove_school(code):
            raise Refused(f"there is no school {code}")
        await tx.receipts.append("school.removed", at=now, school=code, operator=_operator())

    await ctx.store.write(remove)
    return f"school {code} removed with its contacts"


async def schools_list(ctx: Context) -> list[dict[str, Any]]:
    contacts = await ctx.store.directory.contacts()
    usable = {c.email for cs in (await ctx.refresh()).contacts.values() for c in cs}
    return [{"code": r.code, "name": r.name, "place": r.place, "route": r.route,
             "contacts": [{"email": c.email, "fingerprint": c.fingerprint,
                           "usable": c.email in usable}
                          for c in contacts if c.school == r.code]}
            for r in await ctx.store.directory.schools()]


# -- pupils -----------------------------------------------------------------------------------

async def pupils_import(ctx: Context, data: bytes, force: bool,
                        accept_refused: bool = False) -> str:
    """Replace the register. Refused rows refuse the whole import unless `accept_refused`, and
    so does one that removes more than half of the register unless `force`: a nightly job must
    never drop a child quietly (issue 12). Either way the answer names each refused row by its
    line and the pupils each school gained or lost."""
    try:
        parsed = parse_pupils_csv(data)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    rows = []
    for pupil in parsed.pupils:
        record = {"name": pupil.name, "birthdate": pupil.birthdate.isoformat(), "bsn": pupil.bsn}
        rows.append(PupilRow(ctx.vault.digest("register-bsn", pupil.bsn) if pupil.bsn else None,
                             ctx.vault.digest("register-birthdate", pupil.birthdate.isoformat()),
                             pupil.school, ctx.vault.seal(record, f"pupil:{pupil.school}")))
    after = dict(Counter(p.school for p in parsed.pupils))
    refused = len(parsed.refused)
    now = ctx.clock()

    async def replace(tx: Tx) -> tuple[dict[str, int], int, int]:
        before_counts = await tx.register.counts()
        before = sum(before_counts.values())
        why = []
        if refused and not accept_refused:
            why.append(f"{refused} of {refused + len(parsed.pupils)} rows refused (correct "
                       "the file, or leave these rows out with --accept-refused)")
        if before and len(parsed.pupils) < before / 2 and not force:
            why.append(f"the file has {len(parsed.pupils)} usable rows, the register {before}: "
                       "this would remove more than half of it (use --force if intended)")
        if why:
            raise Refused("\n".join([
                "pupils import refused, the register is unchanged: " + "; ".join(why),
                *refused_lines(parsed.refused),
                "per school (vestigingscode), had the import gone ahead"
                + (" without the refused rows:" if refused else ":"),
                *change_lines(before_counts, after)]))
        changes = school_changes(before_counts, after)
        total = await tx.register.replace(rows)
        await tx.receipts.append("register.imported", at=now, rows=total, schools=len(after),
                                 refused=refused, previous=before,
                                 gained=sum(max(c.after - c.before, 0) for c in changes),
                                 lost=sum(max(c.before - c.after, 0) for c in changes),
                                 operator=_operator())
        return before_counts, before, total

    before_counts, before, total = await ctx.store.write(replace)
    unknown = sorted(set(after) - set((await ctx.refresh()).schools))
    lines = [f"register replaced: {total} pupils at {len(after)} schools (was {before} pupils "
             f"at {len(before_counts)} schools), {refused} rows refused"
             + (" and left out (--accept-refused)" if refused else "")]
    lines += refused_lines(parsed.refused)
    if unknown:
        lines.append(f"  note: {len(unknown)} school codes are not in the directory yet "
                     f"(e.g. {', '.join(unknown[:5])})")
    lines += ["per school (vestigingscode), compared with the register it replaced:",
              *change_lines(before_counts, after)]
    return "\n".join(lines)


# -- held children ----------------------------------------------------------------------------

def split_child_id(child_id: str) -> tuple[str, int]:
    ref, _, n = child_id.rpartition("-")
    if not ref or not n.isdigit():
        raise Refused("ID must be a child reference such as HWC-20261128-ABCD1234-1")
    return ref, int(n)


async def held_list(ctx: Context) -> list[dict[str, Any]]:
    now = ctx.clock()
    rows = await ctx.store.children.all(state="held")
    out = []
    for r in rows:
        signal = await ctx.store.signals.get(r.ref)
        accepted = signal.accepted_at if signal else r.updated_at
        age = now - from_iso(accepted)
        due = _deadline(ctx, accepted)
        out.append({"id": f"{r.ref}-{r.n}", "signal": r.ref, "reason": r.reason,
                    "school": r.school, "accepted": accepted,
                    "age_minutes": int(age.total_seconds() // 60),
                    "deadline": iso(due), "time_left": time_left(due, now)})
    return out


def _deadline(ctx: Context, accepted: str) -> dt.datetime:
    return deadline(from_iso(accepted), ctx.config.schedule)


async def held_show(ctx: Context, child_id: str) -> dict[str, Any]:
    """Decrypt one held child for the administrator; the look itself is a receipt."""
    ref, n = split_child_id(child_id)
    row = await ctx.store.children.get(ref, n)
    if row is None or row.state != "held" or row.blob is None:
        raise Refused(f"{child_id} is not a held child")
    record = ctx.vault.open(row.blob, child_id)
    name, birthdate = str(record["name"]), str(record["birthdate"])
    candidates = []
    child = Child(name, dt.date.fromisoformat(birthdate), record.get("bsn"), record.get("school"))
    by_bsn, same_birthdate = await register_candidates(ctx.store, ctx.vault, child)
    for pupil in ([by_bsn] if by_bsn else []) + same_birthdate:
        if pupil is by_bsn or names_match(name, pupil.name):
            school = ctx.snapshot.schools.get(pupil.school)
            candidates.append({"name": pupil.name, "birthdate": pupil.birthdate.isoformat(),
                               "school": pupil.school, "school_name": school.name if school
                               else "(not in the directory)",
                               "why": "same BSN" if pupil is by_bsn else "name and birth date"})
    now = ctx.clock()

    async def shown(tx: Tx) -> None:
        await tx.receipts.append("held.shown", at=now, ref=child_id, operator=_operator())

    await ctx.store.write(shown)
    return {"id": child_id, "reason": row.reason, "name": name, "birthdate": birthdate,
            "bsn": record.get("bsn"), "school_hint": record.get("school"),
            "candidates": candidates}


async def held_route(ctx: Context, child_id: str, school: str) -> str:
    ref, n = split_child_id(child_id)
    code = _school_code(school)
    snapshot = await ctx.refresh()
    if code not in snapshot.schools:
        raise Refused(f"school {code} is not in the directory")
    if not snapshot.contacts.get(code):
        raise Refused(f"school {code} has no contact with a usable key: add one with "
                      "`schools add` first")
    now = ctx.clock()

    async def route(tx: Tx) -> None:
        if not await tx.children.set_state(ref, n, "routed", now, school=code, expect=("held",)):
            raise Refused(f"{child_id} is not a held child")
        await tx.receipts.append("routed_by_hand", at=now, ref=child_id, school=code,
                                 operator=_operator())

    await ctx.store.write(route)
    return f"{child_id} routed to {code}; the running daemon seals and delivers it"


async def held_drop(ctx: Context, child_id: str, reason: str) -> str:
    ref, n = split_child_id(child_id)
    if not reason.strip():
        raise Refused("--reason must say why (it goes into the receipt)")
    now = ctx.clock()

    async def drop(tx: Tx) -> None:
        if not await tx.children.set_state(ref, n, "dropped", now, reason=reason[:200], erase=True,
                                           expect=("held",)):
            raise Refused(f"{child_id} is not a held child")
        await tx.receipts.append("dropped", at=now, ref=child_id, reason=reason[:200],
                                 operator=_operator())

    await ctx.store.write(drop)
    return f"{child_id} dropped; its data is erased"


# -- queue, receipts, status ------------------------------------------------------------------

async def queue_list(ctx: Context, states: tuple[str, ...] = ("queued",)
                     ) -> list[dict[str, Any]]:
    now = ctx.clock()
    out = []
    for r in await ctx.store.notices.all(states=states):
        signal = await ctx.store.signals.get(r.ref)
        due = _deadline(ctx, signal.accepted_at if signal else r.created_at)
        out.append({"notice": r.id, "ref": r.ref, "school": r.school,
                    "state": r.state, "attempts": r.attempts,
                    "next_attempt": r.next_attempt_at, "last_reply": r.last_reply,
                    "deadline": iso(due), "time_left": time_left(due, now)})
    return out


async def queue_retry(ctx: Context, notice: str) -> str:
    """Queue a failed or parked notice again once its cause is fixed, as `postsuper -r` does:
    due now, attempts from zero, its children sealed again; a queued one is made due now
    (`postqueue -i`). Before the attempt the notice is checked against the directory as it
    is then, and superseded when its contacts or keys changed meanwhile (`runner`)."""
    if not notice.isdigit():
        raise Refused("ID must be a notice number as `queue list` shows it")
    notice_id = int(notice)
    now = ctx.clock()

    async def requeue(tx: Tx) -> tuple[NoticeRecord, str]:
        row = await tx.notices.requeue(notice_id, now)
        if row is None:
            raise Refused(f"there is no notice {notice_id}")
        state = str(row.state)
        if state == "delivered":
            raise Refused(f"notice {notice_id} was delivered: there is nothing to retry")
        if state == "superseded":
            raise Refused(f"notice {notice_id} was superseded ({row.last_reply}): its "
                          "children went into a newer notice")
        if not row.parcel:
            raise Refused(f"notice {notice_id} has no sealed message left to send")
        await tx.receipts.append("requeued", at=now, ref=row.ref, school=row.school,
                                 notice=notice_id, previous=state, operator=_operator())
        return row, state

    row, state = await ctx.store.write(requeue)
    log.info("notice.requeued", ref=row.ref, school=row.school, notice=notice_id,
             previous=state)
    was = f"was {state}" + (f": {row.last_reply}" if row.last_reply else "")
    return (f"notice {notice_id} ({row.ref} for {row.school}) queued again ({was}); "
            "the running daemon tries it now")


async def receipts_verify(store: Store) -> tuple[int, list[str]]:
    rows = await store.receipts.all()
    anchor = await store.receipts.anchor()
    problems = chain_problems(rows, store.chain_key, anchor)
    # The anchor itself is vouched for by the newest purge receipt, which is inside the chain.
    purges = [r for r in rows if r.event == "purged" and r.detail.get("anchor")]
    if anchor is not None and (not purges or purges[-1].detail["anchor"] != [anchor.seq,
                                                                               anchor.hash]):
        problems.insert(0, "the chain's starting point does not match the last purge receipt")
    return len(rows), problems


async def receipts_find(ctx: Context, name: str, birthdate: dt.date) -> list[dict[str, Any]]:
    pseudonym = ctx.vault.pseudonym(pseudonym_text(name), birthdate.isoformat())
    return [_receipt_row(r) for r in await ctx.store.receipts.by_pseudonym(pseudonym)]


def _receipt_row(r: Any) -> dict[str, Any]:
    return {"seq": r.seq, "at": r.at, "event": r.event, "ref": r.ref, "school": r.school,
            **r.detail}


async def receipts_list(ctx: Context, since: dt.datetime | None) -> list[dict[str, Any]]:
    return [_receipt_row(r) for r in await ctx.store.receipts.all(since=since)]


@dataclass(frozen=True)
class Status:
    data: dict[str, Any]
    attention: list[str]


async def status(ctx: Context, listener_up: bool) -> Status:
    now = ctx.clock()
    counts = await queue_counts(ctx.store)
    oldest = await ctx.store.notices.oldest_queued()
    attention = []
    if not listener_up:
        attention.append("the listener is not answering")
    if counts.get("child.held"):
        attention.append(f"{counts['child.held']} held children wait for an administrator")
    if counts.get("notice.failed"):
        attention.append(f"{counts['notice.failed']} notices failed: see `queue list --failed`,"
                         " then `queue retry ID` once the cause is fixed")
    if counts.get("notice.parked"):
        attention.append(f"{counts['notice.parked']} notices parked after crashing the gateway:"
                         " see `queue list --failed` and the logs, then `queue retry ID`")
    setup, setup_data = await setup_problems(ctx, now)
    attention += setup
    if ctx.snapshot.signing_key is None:
        attention.append("there is no gateway key")
    expiring = await keys_list(ctx, now, 30)
    gateway_keys = await ctx.store.directory.gateway_keys()
    if expiring:
        attention.append(f"{len(expiring)} keys expire within 30 days")
    count, problems = await receipts_verify(ctx.store)
    if problems:
        attention.append("the receipt chain is broken: run `receipts verify`")
    open_rows = await ctx.store.signals.open()
    deadlines = sorted((_deadline(ctx, r.accepted_at), r.ref) for r in open_rows)
    done = await ctx.store.receipts.escalations()
    escalated = [r.ref for r in open_rows if r.ref in done]
    if escalated:
        attention.append(f"{len(escalated)} signals escalated: {', '.join(escalated[:5])}")
    unacked = await ctx.store.notices.unacknowledged()
    last = await ctx.store.receipts.last("delivered")
    data = {"listener": {"address": str(ctx.config.smtp.listen), "up": listener_up},
            "counts": counts, "queued": counts.get("notice.queued", 0), "oldest_queued": oldest,
            "held": counts.get("child.held", 0), "signing_key": ctx.snapshot.signing_key,
            "gateway_keys": [{"fingerprint": r.fingerprint, "state": r.state,
                              "overlap_until": r.decrypt_until if r.state == "previous"
                              else None} for r in gateway_keys if r.state != "retired"],
            "keys_expiring_30_days": [k["fingerprint"] for k in expiring],
            "next_deadline": ({"ref": deadlines[0][1], "deadline": iso(deadlines[0][0]),
                               "time_left": time_left(deadlines[0][0], now)}
                              if deadlines else None),
            "escalated": escalated, "unacknowledged": len(unacked),
            "last_delivery": ({"at": last.at, "ref": last.ref, "school": last.school}
                              if last else None),
            "receipts": count, **setup_data, "attention": attention}
    return Status(data, attention)


async def setup_problems(ctx: Context, now: dt.datetime) -> tuple[list[str], dict[str, Any]]:
    """What in the set-up keeps signals, notices, status mails or alerts from going anywhere
    (issue 12: `status` said "attention none" while each of these held): each as a line for
    `attention`, and the details for `status --json`."""
    config, snapshot = ctx.config, await ctx.refresh()
    lines: list[str] = []
    relay = config.delivery.relay
    with_contacts = sorted({str(c.school) for c in await ctx.store.directory.contacts()})
    unreachable = [code for code in with_contacts if relay is None
                   and code not in snapshot.routes]
    if unreachable:
        lines.append(f"{len(unreachable)} schools have a contact but no route, and [delivery] "
                     f"relay is empty: their notices are never delivered "
                     f"({', '.join(unreachable[:5])}); `schools add CODE ... --route` or set"
                     " the relay")
    keyless = sorted(name for name, sender in snapshot.senders.items()
                     if not sender.fingerprints)
    if keyless:
        lines.append(f"senders without a usable key, every signal refused (554 5.7.7): "
                     f"{', '.join(keyless)}; `senders add-key`")
    wanting = await ctx.store.directory.status_mail_senders()
    if relay is None and wanting:
        lines.append(f"[delivery] relay is empty: status mails to {len(wanting)} senders"
                     " cannot be sent")
    if not config.alerts.address:
        lines.append("[alerts] address is empty: alerts (failed notices, escalations, keys"
                     " expiring) reach only the log")
    elif relay is None:
        lines.append("[delivery] relay is empty: alerts to [alerts] address cannot be sent")
    elif config.alerts.key and config.alerts.key not in snapshot.alert_keys:
        lines.append("[alerts] key is not usable: alerts are not sent (`keys pin-alerts`)")
    waiting_on_us = await ctx.store.notices.queued_for_reasons(sorted(FIXES))
    if waiting_on_us:
        lines.append(f"{len(waiting_on_us)} notices wait because a school server says the"
                     " gateway is set up wrong (see `queue list` and the alert): fix it, then"
                     " `queue retry ID`")
    lockouts = [{"scope": r.scope, "subject": r.subject, "login": r.login,
                 "since": r.since, "until": r.until} for r in await ctx.store.lockouts.running(now)]
    locked: dict[str, list[dict[str, Any]]] = {}
    for lockout in lockouts:
        if lockout["login"] in snapshot.senders:
            locked.setdefault(lockout["login"], []).append(lockout)
    for name, items in sorted(locked.items()):
        what = ", ".join(f"{i['scope']} {i['subject']}" for i in items)
        until = max(i["until"] for i in items)
        lines.append(f"sender {name} is locked out of AUTH until {until} ({what}):"
                     f" `senders unlock {name}` once its password is right")
    data = {"unreachable_schools": unreachable, "senders_without_key": keyless,
            "relay": str(relay) if relay else None, "alerts_address": config.alerts.address,
            "auth_lockouts": lockouts, "waiting_on_setup": waiting_on_us}
    return lines, data


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise Refused(f"cannot read {path}: {exc.strerror}") from None


def dumps(value: Any) -> str:
    """JSON for `--json`: strings escaped as JSON does, plus the DEL, C1, bidi and zero-width
    characters it would leave raw (gateway.core.inert), so that no value steers a terminal."""
    return inert_json(json.dumps(value, ensure_ascii=False, indent=2, default=str))
