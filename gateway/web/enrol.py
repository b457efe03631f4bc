"""Enrolment: `/inschrijven/{token}`, where a pickup contact sets up a second factor.

Takes the invitation's link (mailed) and its code (given on the phone by the administrator);
produces, once the code is right, a passkey (WebAuthn registration) or, where `[web]
allow_totp`, an authenticator app whose secret is stored vault-sealed, confirmed by a first
code; then the invitation is used up, with a receipt `school.contact_enrolled` (school,
contact, method), as the administrator's `school.contact_invited` before it.
Wrong codes count against the invitation (`gateway.web.links`). The pages in order: the code
(GET, POST), the choice (`/kiezen`), the app (`/app`, GET, POST) or the passkey ceremony
(`/passkey/opties`, `/passkey`, JSON for `static/passkey.js`), and `/klaar`. WebAuthn
challenges are kept in memory, single-use, five minutes, found by the challenge the browser
signed (`gateway.web.site.Challenge`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hmac

from aiohttp import web

from gateway.core.records import from_iso
from gateway.crypto.pickupbox import code_digest, normalise_code, token_digest, well_formed_token
from gateway.observe.logs import get_logger
from gateway.store.api import Tx
from gateway.web import passkeys, totp
from gateway.web.links import (
    UNKNOWN,
    Invitation,
    clear_failures,
    count_failure,
    enrolment_link,
    locked_page,
)
from gateway.web.passkeys import NewPasskey, PasskeyError
from gateway.web.site import (
    Challenge,
    Session,
    keep_session,
    message,
    page,
    refusal,
    see_other,
    session_of,
    site_of,
    start_session,
)

log = get_logger("web")

TITLE = "Inschrijven voor vertrouwelijke berichten"
WRONG_CODE = "Deze code klopt niet. Controleer de code en probeer het opnieuw."
NO_SESSION = "Deze pagina is verlopen. Open de inschrijflink opnieuw en vul de code nog eens in."


def totp_aad(school: str, email: str) -> str:
    """What an app secret is bound to in the vault: its contact."""
    return f"totp:{school}\0{email.lower()}"


async def show_code(request: web.Request) -> web.Response:
    found = await enrolment_link(request)
    if not isinstance(found, Invitation):
        return found
    return page(request, "enrol_code.html", title=TITLE, token=found.token, error=None,
                expires_at=from_iso(found.record.expires_at))


async def check_code(request: web.Request) -> web.Response:
    found = await enrolment_link(request)
    if not isinstance(found, Invitation):
        return found
    ctx = site_of(request).ctx
    typed = str((await request.post()).get("code", ""))[:40]
    code = normalise_code(typed)
    record = found.record
    right = code is not None and hmac.compare_digest(
        code_digest(ctx.vault, record.school, record.email, code), record.code_digest)
    if not right:
        if code is not None:  # a malformed code cannot be right: it is not counted
            until = await count_failure(request, "enrol_code", [("enrolment", found.digest)])
            if until is not None:
                return locked_page(request, until)
        return page(request, "enrol_code.html", 400, title=TITLE, token=found.token,
                    error=WRONG_CODE if code is not None
                    else "Een inschrijfcode heeft acht letters en cijfers, zoals ABCD-EFGH.",
                    expires_at=from_iso(record.expires_at))
    await clear_failures(request, [("enrolment", found.digest)])
    response = see_other(f"/inschrijven/{found.token}/kiezen")
    start_session(response, site_of(request),
                  Session("enrol", found.digest, record.school, record.email))
    log.info("web.enrolment_code_accepted", school=record.school)
    return response


async def _enrolment_session(request: web.Request) -> tuple[Invitation, Session] | web.Response:
    found = await enrolment_link(request, check_lock=False)
    if not isinstance(found, Invitation):
        return found
    session = session_of(request, "enrol", found.digest)
    if session is None:
        return see_other(f"/inschrijven/{found.token}")
    return found, session


async def choose(request: web.Request) -> web.Response:
    found = await _enrolment_session(request)
    if not isinstance(found, tuple):
        return found
    return page(request, "enrol_choose.html", title="Kies hoe u berichten opent", passkey=True,
                token=found[0].token, allow_totp=site_of(request).ctx.config.web.allow_totp)


async def passkey_options(request: web.Request) -> web.Response:
    found = await _enrolment_session(request)
    if not isinstance(found, tuple):
        return refusal(403, NO_SESSION)
    invitation, session = found
    site = site_of(request)
    existing = [c.credential_id for c in await site.ctx.store.pickups.credentials(
        session.school, session.email) if c.kind == "passkey" and c.credential_id]
    user_id = bytes.fromhex(site.ctx.vault.digest(
        "webauthn-user", f"{session.school}\0{session.email.lower()}"))
    options, challenge = passkeys.registration_options(
        site.ctx.config.web.rp_id, user_id, session.email, existing)
    site.challenges.put(challenge, Challenge("register", invitation.digest, session.school,
                                             session.email))
    return web.Response(text=options, content_type="application/json")


async def passkey_register(request: web.Request) -> web.Response:
    found = await _enrolment_session(request)
    if not isinstance(found, tuple):
        return refusal(403, NO_SESSION)
    invitation, session = found
    site = site_of(request)
    try:
        answer = await request.json()
        if not isinstance(answer, dict):
            raise ValueError
    except ValueError:
        return refusal(400, "Dat lukte niet. Probeer het opnieuw.")
    challenge = passkeys.answered_challenge(answer)
    issued = site.challenges.pop(challenge) if challenge else None
    if issued is None or issued.purpose != "register" or issued.digest != invitation.digest:
        return refusal(400, "Dat duurde te lang. Probeer het opnieuw.")
    try:
        new = passkeys.verify_registration(answer, challenge or "", site.ctx.config.web.rp_id,
                                           site.origin)
    except PasskeyError:
        log.warning("web.passkey_refused", route="enrol_passkey", school=session.school)
        return refusal(400, "Deze passkey kon niet worden ingesteld. Probeer het opnieuw.")
    if await site.ctx.store.pickups.credential(new.credential_id) is not None:
        return refusal(409, "Deze passkey is al ingesteld.")
    done = await site.ctx.store.write(functools.partial(
        _enrol, invitation.digest, session, site.ctx.clock(), new, None, None))
    if not done:
        return refusal(410, "Deze inschrijving is al afgerond.")
    _finished(request, invitation, session, "passkey")
    return web.json_response({"next": f"/inschrijven/{invitation.token}/klaar"})


async def app_setup(request: web.Request) -> web.Response:
    found = await _enrolment_session(request)
    if not isinstance(found, tuple):
        return found
    if not site_of(request).ctx.config.web.allow_totp:
        return message(request, 404, "Niet beschikbaar", "Een app gebruiken kan hier niet.")
    invitation, session = found
    if session.totp_secret is None:  # one secret per session: a reload shows the same code
        session = dataclasses.replace(session, totp_secret=totp.new_secret())
        keep_session(request, session)
    return _app_page(request, invitation, session, None, 200)


def _app_page(request: web.Request, invitation: Invitation, session: Session,
              error: str | None, status: int) -> web.Response:
    secret = session.totp_secret or ""
    uri = totp.provisioning_uri(secret, session.email)
    grouped = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4))
    return page(request, "enrol_app.html", status, title="Uw app instellen",
                token=invitation.token, qr=totp.qr_svg(uri), secret=grouped, error=error)


async def app_confirm(request: web.Request) -> web.Response:
    found = await _enrolment_session(request)
    if not isinstance(found, tuple):
        return found
    invitation, session = found
    site = site_of(request)
    if not site.ctx.config.web.allow_totp or session.totp_secret is None:
        return see_other(f"/inschrijven/{invitation.token}/kiezen")
    now = site.ctx.clock()
    step = totp.accepted_step(session.totp_secret,
                              str((await request.post()).get("code", ""))[:40], now, None)
    if step is None:
        # Not counted: whoever is here proved the phone code; the app's first code only
        # shows the app was set up right (a phone's clock off by minutes is the usual cause).
        return _app_page(request, invitation, session, "Deze code klopt niet. Controleer of de "
                         "tijd op uw telefoon goed staat en probeer de nieuwste code.", 400)
    sealed = site.ctx.vault.seal({"secret": session.totp_secret},
                                 totp_aad(session.school, session.email))
    done = await site.ctx.store.write(functools.partial(
        _enrol, invitation.digest, session, now, None, sealed, step))
    if not done:
        return message(request, 410, "Al ingeschreven", "Deze inschrijving is al afgerond.")
    _finished(request, invitation, session, "totp")
    return see_other(f"/inschrijven/{invitation.token}/klaar")


async def _enrol(digest: str, session: Session, now: dt.datetime, passkey: NewPasskey | None,
                 secret: bytes | None, step: int | None, tx: Tx) -> bool:
    """Use the invitation up and keep the second factor, in one transaction (once: a second
    browser finishing the same invitation gets False)."""
    if not await tx.pickups.use_enrolment(digest, now):
        return False
    if passkey is not None:
        await tx.pickups.add_credential(
            session.school, session.email, "passkey", now, credential_id=passkey.credential_id,
            public_key=passkey.public_key, sign_count=passkey.sign_count)
        method = "passkey"
    else:
        added = await tx.pickups.add_credential(session.school, session.email, "totp", now,
                                                secret=secret)
        # The confirming code is used: it cannot open a notice afterwards.
        await tx.pickups.use_credential(added, now, step=step)
        method = "totp"
    await tx.receipts.append("school.contact_enrolled", at=now, school=session.school,
                             contact=session.email, method=method)
    return True


def _finished(request: web.Request, invitation: Invitation, session: Session,
              method: str) -> None:
    site = site_of(request)
    site.sessions.drop(lambda s: s.kind == "enrol" and s.digest == invitation.digest)
    site.ctx.wake.set()  # the directory changed: notices held for this contact may go now
    log.info("web.enrolled", school=session.school, method=method)


async def done(request: web.Request) -> web.Response:
    ctx = site_of(request).ctx
    token = request.match_info["token"]
    record = await ctx.store.pickups.enrolment(token_digest(ctx.vault, token)) \
        if well_formed_token(token) else None
    if record is None:
        return message(request, 404, "Link niet geldig", UNKNOWN)
    if record.used_at is None:  # not finished: back to the start
        return see_other(f"/inschrijven/{token}")
    kinds = [c.kind for c in await ctx.store.pickups.credentials(record.school, record.email)]
    method = "de code uit uw app" if kinds and kinds[-1] == "totp" else "uw passkey"
    return page(request, "enrol_done.html", title="Klaar", method=method)


def routes(token: str) -> list[web.RouteDef]:
    base = f"/inschrijven/{token}"
    return [web.get(base, show_code, name="enrol"),
            web.post(base, check_code, name="enrol_code"),
            web.get(f"{base}/kiezen", choose, name="enrol_choose"),
            web.post(f"{base}/passkey/opties", passkey_options, name="enrol_passkey_options"),
            web.post(f"{base}/passkey", passkey_register, name="enrol_passkey"),
            web.get(f"{base}/app", app_setup, name="enrol_app"),
            web.post(f"{base}/app", app_confirm, name="enrol_app_confirm"),
            web.get(f"{base}/klaar", done, name="enrol_done")]
