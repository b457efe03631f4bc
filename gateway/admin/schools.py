"""What the `schools` verbs do: the school directory, its contacts, their keys and routes.

Takes a `Context` and plain values (DUO's CSV as bytes); produces what changed, as lines for the
administrator (with a warning when a school can no longer be reached), or raises `Refused` with
a one-line reason. Each change is one store transaction with its receipt.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.common import Refused, import_key, school_code
from gateway.admin.imports import parse_duo_csv, refused_lines
from gateway.core.validate import is_address, parse_hostport
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx


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
                                 changed=changed, refused=refused, operator=current_operator())
        return changed

    changed = await ctx.store.write(upsert)
    lines = [f"{len(parsed.schools)} schools read, {changed} added or renamed, "
             f"{refused} rows refused and left out; contacts and keys unchanged"]
    return "\n".join(lines + refused_lines(parsed.refused))


async def schools_add(ctx: Context, code: str, name: str | None, email: str, key_data: bytes,
                      fingerprint: str, route: str | None) -> str:
    code = school_code(code)
    if not is_address(email):
        raise Refused(f"--email {email!r} is not an e-mail address")
    if route is not None and parse_hostport(route) is None:
        raise Refused("--route must be HOST:PORT")
    existing = await ctx.store.directory.school(code)
    if existing is None and not name:
        raise Refused(f"school {code} is not in the directory: give --name (or import DUO data)")
    now = ctx.clock()
    info = import_key(ctx.gpg, key_data, fingerprint, "encrypt", now)

    async def add(tx: Tx) -> str | None:
        if name or existing is None:
            await tx.directory.upsert_school(code, name or "", existing.place if existing else "")
        if route is not None:
            await tx.directory.set_school_route(code, route)
        previous = await tx.directory.set_contact(code, email.lower(), info.fingerprint)
        await tx.receipts.append("school.contact_set", at=now, school=code,
                                 contact=email.lower(), fingerprint=info.fingerprint,
                                 previous=previous, operator=current_operator())
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
    code = school_code(code)
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
                                 previous=old, operator=current_operator())

    await ctx.store.write(rename)
    return (f"school {code}: contact {old} is now {new} (same key)"
            + await _contact_warning(ctx, code))


async def schools_remove_contact(ctx: Context, code: str, email: str) -> str:
    """Remove one contact and its pinned key from a school; the school stays."""
    code = school_code(code)
    now = ctx.clock()

    async def remove(tx: Tx) -> str:
        fingerprint = await tx.directory.remove_contact(code, email.lower())
        if fingerprint is None:
            raise Refused(f"school {code} has no contact {email.lower()}")
        await tx.receipts.append("school.contact_removed", at=now, school=code,
                                 contact=email.lower(), fingerprint=fingerprint,
                                 operator=current_operator())
        return fingerprint

    fingerprint = await ctx.store.write(remove)
    return (f"school {code}: contact {email.lower()} (key {fingerprint}) removed"
            + await _contact_warning(ctx, code))


async def schools_set_key(ctx: Context, code: str, email: str, key_data: bytes,
                          fingerprint: str) -> str:
    code = school_code(code)
    contacts = {c.email for c in await ctx.store.directory.contacts(code)}
    if email.lower() not in contacts:
        raise Refused(f"school {code} has no contact {email.lower()}")
    return await schools_add(ctx, code, None, email, key_data, fingerprint, None)


async def schools_remove(ctx: Context, code: str) -> str:
    code = school_code(code)
    now = ctx.clock()

    async def remove(tx: Tx) -> None:
        if not await tx.directory.remove_school(code):
            raise Refused(f"there is no school {code}")
        await tx.receipts.append("school.removed", at=now, school=code, operator=current_operator())

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
