"""What a link's token names, and whether it may still be used.

Takes the token of a request's path; produces the enrolment invitation or the pickup notice it
names with its token digest, or the Dutch page that says why not: unknown (404), used or
expired (410), locked after too many wrong codes (429, with Retry-After). Wrong codes are
counted here, per subject: "link" (a notice's token digest), "contact" ("SCHOOL/email") and
"enrolment" (an invitation's token digest); `[web] max_failures` of them lock the subject for
`[web] lock_minutes`. Looking at a link counts nothing and changes nothing: mail scanners fetch
links before people do.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.core.records import EnrolmentRecord, PickupRecord, Throttle, from_iso
from gateway.core.timetext import moment_nl
from gateway.crypto.pickupbox import token_digest, well_formed_token
from gateway.observe.logs import get_logger
from gateway.store.api import Tx
from gateway.web.site import message, refusal, site_of

log = get_logger("web")

Subject = tuple[str, str]  # (scope, subject)

UNKNOWN = ("Deze link werkt niet. Controleer of u de hele link uit de e-mail hebt gebruikt.")
EXPIRED = "Deze link is verlopen. Het bericht is hier niet meer te openen."
ENROLLED = ("Deze inschrijving is al afgerond. Bent u uw telefoon of beveiligingssleutel "
            "kwijt, of werkt inloggen niet meer? Vraag dan om een nieuwe inschrijving.")
ENROLMENT_EXPIRED = "Deze inschrijflink is verlopen. Vraag om een nieuwe inschrijflink."


def locked_until(throttle: Throttle | None, now: dt.datetime) -> dt.datetime | None:
    """Pure: until when a subject is locked, or None when it is not (any more)."""
    if throttle is None or throttle.locked_until is None:
        return None
    until = from_iso(throttle.locked_until)
    return until if until > now else None


def contact_subject(school: str, email: str) -> Subject:
    return ("contact", f"{school}/{email.lower()}")


def locked_text(request: web.Request, until: dt.datetime) -> str:
    """What a locked link, contact or invitation tells the person, with until when."""
    zone = site_of(request).ctx.config.schedule.timezone
    return ("Er is te vaak een verkeerde code ingevuld. Daarom kan dit nu even niet. Probeer "
            f"het opnieuw na {moment_nl(until, zone)}.")


def locked_page(request: web.Request, until: dt.datetime) -> web.Response:
    site = site_of(request)
    response = message(request, 429, "Even geduld", locked_text(request, until))
    response.headers["Retry-After"] = str(max(1, int((until - site.ctx.clock())
                                                     .total_seconds())))
    return response


async def lock_of(request: web.Request, subjects: Sequence[Subject]) -> dt.datetime | None:
    """The latest lock among `subjects`, or None when none is locked."""
    ctx = site_of(request).ctx
    now = ctx.clock()
    found = [locked_until(await ctx.store.pickups.throttle(scope, subject), now)
             for scope, subject in subjects]
    return max((until for until in found if until is not None), default=None)


async def _fail(subjects: Sequence[Subject], at: dt.datetime, max_failures: int,
                lock_until: dt.datetime, tx: Tx) -> list[Throttle]:
    return [await tx.pickups.fail(scope, subject, at, max_failures, lock_until)
            for scope, subject in subjects]


async def count_failure(request: web.Request, route: str,
                        subjects: Sequence[Subject]) -> dt.datetime | None:
    """Count one wrong code against each subject; until when that locked one, or None."""
    ctx = site_of(request).ctx
    now, web_config = ctx.clock(), ctx.config.web
    until = now + dt.timedelta(minutes=web_config.lock_minutes)
    throttles = await ctx.store.write(functools.partial(
        _fail, subjects, now, web_config.max_failures, until))
    locked = [scope for (scope, _), t in zip(subjects, throttles, strict=True)
              if locked_until(t, now) is not None]
    log.warning("web.code_refused", route=route, locked=locked)
    return until if locked else None


async def _clear(subjects: Sequence[Subject], tx: Tx) -> None:
    for scope, subject in subjects:
        await tx.pickups.clear(scope, subject)


async def clear_failures(request: web.Request, subjects: Sequence[Subject]) -> None:
    await site_of(request).ctx.store.write(functools.partial(_clear, subjects))


@dataclass(frozen=True)
class Invitation:
    token: str
    digest: str
    record: EnrolmentRecord


def _path_token(request: web.Request) -> tuple[str, str] | web.Response:
    """The path's token and its look-up digest, or the 404 page for text that is no token
    (checked before anything is derived or looked up)."""
    token = request.match_info["token"]
    if not well_formed_token(token):
        return message(request, 404, "Link niet geldig", UNKNOWN)
    return token, token_digest(site_of(request).ctx.vault, token)


async def enrolment_link(request: web.Request,
                         check_lock: bool = True) -> Invitation | web.Response:
    """The open invitation the path's token names, or the page saying why there is none."""
    ctx = site_of(request).ctx
    named = _path_token(request)
    if isinstance(named, web.Response):
        return named
    token, digest = named
    record = await ctx.store.pickups.enrolment(digest)
    if record is None:
        return message(request, 404, "Link niet geldig", UNKNOWN)
    if record.used_at is not None:
        return message(request, 410, "Al ingeschreven", ENROLLED)
    if from_iso(record.expires_at) <= ctx.clock():
        return message(request, 410, "Link verlopen", ENROLMENT_EXPIRED)
    until = await lock_of(request, [("enrolment", digest)]) if check_lock else None
    if until is not None:
        return locked_page(request, until)
    return Invitation(token, digest, record)


@dataclass(frozen=True)
class Link:
    token: str
    digest: str
    record: PickupRecord
    sealed: bytes


async def pickup_link(request: web.Request) -> Link | web.Response:
    """The pickup notice the path's token names while its link works, or the page saying why
    not. A lock is not checked here: a locked link can still be read in a session opened
    before, and the forms say it is locked."""
    ctx = site_of(request).ctx
    named = _path_token(request)
    if isinstance(named, web.Response):
        return named
    token, digest = named
    record = await ctx.store.pickups.get(digest)
    if record is None:
        return message(request, 404, "Link niet geldig", UNKNOWN)
    if record.sealed is None or record.state == "superseded" \
            or from_iso(record.expires_at) <= ctx.clock():
        return message(request, 410, "Link verlopen", EXPIRED)
    return Link(token, digest, record, record.sealed)


async def open_pickup_link(request: web.Request,
                           json: bool = False) -> Link | web.Response:
    """The pickup notice the path's token names while its link is not locked, or why not:
    the page (`pickup_link`'s, or the lock's 429), or with `json` the passkey script's answer
    with the same status."""
    found = await pickup_link(request)
    if not isinstance(found, Link):
        return refusal(found.status, "Deze link werkt niet (meer).") if json else found
    until = await lock_of(request, [("link", found.digest)])
    if until is None:
        return found
    return refusal(429, locked_text(request, until)) if json else locked_page(request, until)
