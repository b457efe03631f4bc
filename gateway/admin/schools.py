"""What the `schools` verbs do: the school directory, its contacts, their keys and routes.

Takes a `Context` and plain values (DUO's CSV as bytes); produces what changed, as lines for the
administrator (with a warning when a school can no longer be reached), or raises `Refused` with
a one-line reason. Each change is one store transaction with its receipt.

A contact reads notices either with its OpenPGP key (channel "openpgp") or on the pickup page
(channel "pickup": no key; `schools add --pickup`, `schools reenrol`). All contacts of a school
share one channel. Inviting a pickup contact makes the invitation (digests of a fresh link token
and phone code, `gateway.crypto.pickupbox`), its receipt and its enrolment mail
(`gateway.notify.enrolment`) in one transaction, and hands the phone code back for the
administrator to read out: it is printed once, never logged or stored in clear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from gateway.admin.common import Refused, import_key, school_code
from gateway.admin.imports import parse_duo_csv, refused_lines
from gateway.core.records import ContactRecord, SchoolRecord, from_iso, iso
from gateway.core.timetext import local_time_text
from gateway.core.validate import is_address, parse_hostport
from gateway.crypto import pickupbox
from gateway.notify.enrolment import queue_enrolment
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx

OPENPGP, PICKUP = "openpgp", "pickup"
WEB_OFF = "the pickup page is off: set [web] listen and public_url"
CHANNEL_NAMES = {OPENPGP: "OpenPGP keys", PICKUP: "the pickup page"}


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


async def _contact_target(ctx: Context, code: str, name: str | None, email: str,
                          route: str | None) -> tuple[str, SchoolRecord | None]:
    """The checks every `schools add` makes: the normalised code and the school, if known."""
    code = school_code(code)
    if not is_address(email):
        raise Refused(f"--email {email!r} is not an e-mail address")
    if route is not None and parse_hostport(route) is None:
        raise Refused("--route must be HOST:PORT")
    existing = await ctx.store.directory.school(code)
    if existing is None and not name:
        raise Refused(f"school {code} is not in the directory: give --name (or import DUO data)")
    return code, existing


def channel_refusal(code: str, contacts: Sequence[ContactRecord], email: str,
                    channel: str) -> str | None:
    """Pure: why `email` cannot be a contact of `channel` at school `code`, whose contacts are
    `contacts`: the same address on the other channel, or other contacts on the other one."""
    remove = f"`hwc-gateway schools remove-contact {code} --email"
    how = ("--pickup" if channel == OPENPGP else "--key FILE --fingerprint FPR")
    for contact in contacts:
        if contact.email == email and contact.channel != channel:
            return (f"contact {email} of school {code} reads notices through "
                    f"{CHANNEL_NAMES.get(contact.channel, contact.channel)}: remove it first "
                    f"({remove} {email}`), then add it again")
    others = sorted({c.channel for c in contacts if c.email != email} - {channel})
    if others:
        return (f"a school's contacts share one channel: school {code} reaches its contacts "
                f"through {CHANNEL_NAMES.get(others[0], others[0])}; add this contact with "
                f"{how}, or remove the others first ({remove} ADDR`)")
    return None


async def schools_add(ctx: Context, code: str, name: str | None, email: str, key_data: bytes,
                      fingerprint: str, route: str | None) -> str:
    code, existing = await _contact_target(ctx, code, name, email, route)
    refusal = channel_refusal(code, await ctx.store.directory.contacts(code), email.lower(),
                              OPENPGP)
    if refusal:
        raise Refused(refusal)
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
            " (and enrolment mails) wait and are never delivered; give it --route HOST:PORT or"
            " set [delivery] relay")


async def _contact_warning(ctx: Context, code: str) -> str:
    """A warning line when the school has no contact with a usable key left."""
    if (await ctx.refresh(force=True)).contacts.get(code):
        return ""
    return (f"\nwarning: school {code} has no contact with a usable key left: its children are"
            " held until `schools add` gives it one")


def _web_on(ctx: Context) -> None:
    if not ctx.config.web.enabled:
        raise Refused(WEB_OFF)


async def _invite(ctx: Context, tx: Tx, code: str, school_name: str, email: str,
                  now: dt.datetime) -> tuple[str, dt.datetime, int]:
    """A new invitation for the contact (replacing any earlier one, whose mail, if still
    queued, will not go) and its enrolment mail: the phone code, the invitation's end and the
    mail's outbox id. Only digests of the token and the code are stored."""
    token, phone_code = pickupbox.new_token(), pickupbox.new_enrolment_code()
    expires = now + dt.timedelta(hours=ctx.config.web.enrolment_hours)
    await tx.outbox.supersede_enrolments(code, email, "superseded by a new invitation")
    await tx.pickups.invite(code, email, pickupbox.token_digest(ctx.vault, token),
                            pickupbox.code_digest(ctx.vault, code, email, phone_code),
                            now, expires)
    mail_id = await queue_enrolment(ctx, tx, school=code, school_name=school_name, email=email,
                                    token=token, expires_at=expires, now=now)
    return phone_code, expires, mail_id


def _code_lines(ctx: Context, email: str, phone_code: str, expires: dt.datetime) -> str:
    """What the administrator reads out (the enrolment mail goes where the school's notices
    go: `_route_warning` says when that is nowhere)."""
    until = local_time_text(expires, ctx.config.schedule.timezone)
    return (f"\nenrolment code for {email}: {phone_code} (read it to the contact by phone; the"
            f" link in the mail expires {until})")


async def schools_add_pickup(ctx: Context, code: str, name: str | None, email: str,
                             route: str | None) -> str:
    """A contact without a key, who reads notices on the pickup page: invited by mail, with a
    code to be given by phone."""
    _web_on(ctx)
    code, existing = await _contact_target(ctx, code, name, email, route)
    email = email.lower()
    contacts = await ctx.store.directory.contacts(code)
    refusal = channel_refusal(code, contacts, email, PICKUP)
    if refusal:
        raise Refused(refusal)
    if any(c.email == email for c in contacts):
        raise Refused(f"school {code} has the pickup contact {email} already: `hwc-gateway "
                      f"schools reenrol {code} --email {email}` invites it anew")
    now = ctx.clock()
    school_name = name or (existing.name if existing else "")

    async def add(tx: Tx) -> tuple[str, dt.datetime]:
        if name or existing is None:
            await tx.directory.upsert_school(code, name or "", existing.place if existing else "")
        if route is not None:
            await tx.directory.set_school_route(code, route)
        await tx.directory.set_contact(code, email, None, PICKUP)
        phone_code, expires, mail_id = await _invite(ctx, tx, code, school_name, email, now)
        await tx.receipts.append("school.contact_invited", at=now, school=code, contact=email,
                                 channel=PICKUP, expires=iso(expires), enrolment_mail=mail_id,
                                 operator=current_operator())
        return phone_code, expires

    phone_code, expires = await ctx.store.write(add)
    return (f"school {code}: pickup contact {email} invited, enrolment mail queued"
            + (f", route {route}" if route else "")
            + _code_lines(ctx, email, phone_code, expires) + await _route_warning(ctx, code))


async def schools_reenrol(ctx: Context, code: str, email: str) -> str:
    """A pickup contact lost its phone (or its invitation expired): every passkey and app of
    it stops working at once, and it is invited anew."""
    _web_on(ctx)
    code, email = school_code(code), email.lower()
    contact = next((c for c in await ctx.store.directory.contacts(code) if c.email == email),
                   None)
    if contact is None:
        raise Refused(f"school {code} has no contact {email}")
    if contact.channel != PICKUP:
        raise Refused(f"contact {email} of school {code} reads notices with an OpenPGP key, "
                      f"not on the pickup page: a new key comes with `hwc-gateway schools "
                      f"set-key`")
    school = await ctx.store.directory.school(code)
    now = ctx.clock()

    async def reenrol(tx: Tx) -> tuple[int, str, dt.datetime]:
        dropped = await tx.pickups.drop_credentials(code, email)
        await tx.pickups.clear("contact", f"{code}/{email}")
        phone_code, expires, mail_id = await _invite(ctx, tx, code,
                                                     school.name if school else "", email, now)
        await tx.receipts.append("school.contact_reenrolled", at=now, school=code,
                                 contact=email, credentials_removed=dropped, expires=iso(expires),
                                 enrolment_mail=mail_id, operator=current_operator())
        return dropped, phone_code, expires

    dropped, phone_code, expires = await ctx.store.write(reenrol)
    return (f"school {code}: pickup contact {email} re-enrolled: {dropped} passkey(s) and app(s)"
            " removed (they open nothing from now on), new enrolment mail queued"
            + _code_lines(ctx, email, phone_code, expires) + await _route_warning(ctx, code))


async def schools_set_contact(ctx: Context, code: str, email: str, new_email: str) -> str:
    """A contact's address changes; its pinned key stays. A notice waiting for the old
    address is superseded before its next attempt and sealed again for the new one."""
    code = school_code(code)
    old, new = email.lower(), new_email.lower()
    if not is_address(new):
        raise Refused(f"--new-email {new_email!r} is not an e-mail address")
    channels = {c.email: c.channel for c in await ctx.store.directory.contacts(code)}
    if old not in channels:
        raise Refused(f"school {code} has no contact {old}")
    if new in channels:
        raise Refused(f"school {code} has a contact {new} already")
    now = ctx.clock()

    async def rename(tx: Tx) -> None:
        await tx.directory.rename_contact(code, old, new)
        # A queued enrolment mail goes to no one now; its code was given for the old address.
        await tx.outbox.supersede_enrolments(code, old, "the contact's address changed")
        await tx.receipts.append("school.contact_changed", at=now, school=code, contact=new,
                                 previous=old, operator=current_operator())

    await ctx.store.write(rename)
    same = ("same key" if channels[old] != PICKUP else "same passkeys and app; an invitation "
            f"not yet used is not: `hwc-gateway schools reenrol {code} --email {new}`")
    return (f"school {code}: contact {old} is now {new} ({same})"
            + await _contact_warning(ctx, code))


async def schools_remove_contact(ctx: Context, code: str, email: str) -> str:
    """Remove one contact and its pinned key from a school; the school stays."""
    code = school_code(code)
    now = ctx.clock()

    email = email.lower()

    async def remove(tx: Tx) -> str:
        contact = next((c for c in await tx.directory.contacts(code) if c.email == email), None)
        if contact is None:
            raise Refused(f"school {code} has no contact {email}")
        credentials = len(await tx.pickups.credentials(code, email))
        # Its invitation and second factors go with it (the tables' foreign keys cascade).
        await tx.directory.remove_contact(code, email)
        await tx.outbox.supersede_enrolments(code, email, "the contact was removed")
        await tx.receipts.append("school.contact_removed", at=now, school=code,
                                 contact=email, fingerprint=contact.fingerprint,
                                 channel=contact.channel, operator=current_operator())
        if contact.fingerprint is not None:
            return f"key {contact.fingerprint}"
        return f"pickup, with its invitation and {credentials} passkey(s) and app(s)"

    what = await ctx.store.write(remove)
    return f"school {code}: contact {email} ({what}) removed" + await _contact_warning(ctx, code)


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
        await tx.outbox.supersede_enrolments(code, None, "the school was removed")
        await tx.receipts.append("school.removed", at=now, school=code, operator=current_operator())

    await ctx.store.write(remove)
    return f"school {code} removed with its contacts"


def enrolment_state(invitation_expires: str | None, invitation_used: bool,
                    kinds: Sequence[str], now: dt.datetime) -> dict[str, Any]:
    """Pure: where a pickup contact stands: "enrolled" (with its second factors' kinds),
    "invited" (until when), "expired" (the invitation, unused) or "none"."""
    if kinds:
        return {"enrolment": "enrolled", "second_factors": sorted(set(kinds))}
    if invitation_expires is not None and not invitation_used:
        if from_iso(invitation_expires) > now:
            return {"enrolment": "invited", "invited_until": invitation_expires}
        return {"enrolment": "expired", "invited_until": invitation_expires}
    return {"enrolment": "none"}


async def schools_list(ctx: Context) -> list[dict[str, Any]]:
    contacts = await ctx.store.directory.contacts()
    snapshot = await ctx.refresh()
    usable = {c.email for cs in snapshot.contacts.values() for c in cs}
    invitations = {(e.school, e.email): e for e in await ctx.store.pickups.enrolments()}
    kinds: dict[tuple[str, str], list[str]] = {}
    for credential in await ctx.store.pickups.credentials():
        kinds.setdefault((credential.school, credential.email), []).append(credential.kind)
    now = ctx.clock()

    def contact(c: ContactRecord) -> dict[str, Any]:
        if c.channel != PICKUP:
            return {"email": c.email, "fingerprint": c.fingerprint, "usable": c.email in usable,
                    "channel": c.channel}
        invitation = invitations.get((c.school, c.email))
        return {"email": c.email, "fingerprint": None, "channel": c.channel,
                "usable": ctx.config.web.enabled and (c.school, c.email) in snapshot.enrolled,
                **enrolment_state(invitation.expires_at if invitation else None,
                                  bool(invitation and invitation.used_at),
                                  kinds.get((c.school, c.email), []), now)}

    return [{"code": r.code, "name": r.name, "place": r.place, "route": r.route,
             "contacts": [contact(c) for c in contacts if c.school == r.code]}
            for r in await ctx.store.directory.schools()]
