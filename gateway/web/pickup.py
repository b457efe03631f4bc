"""Opening a pickup notice: `/bericht/{token}`, the link in the notification mail.

Takes the link's token and a second factor of one of the notice's recipients: a passkey
(WebAuthn assertion against the recipients' passkeys, the signature counter checked and kept)
or, where `[web] allow_totp`, the contact's address and a code of its authenticator app (each
time step once). Produces a session bound to this link and contact (`gateway.web.site`) and a
303 to the notice (`gateway.web.reading`). The landing GET changes and counts nothing (mail
scanners fetch links); every wrong answer counts against the link and, once known, the contact
(`gateway.web.links`); a locked one is a 429 page. WebAuthn challenges are kept in memory,
single-use, five minutes.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from gateway.core.records import CredentialRecord, from_iso
from gateway.crypto.vault import Vault, VaultError
from gateway.observe.logs import get_logger
from gateway.store.api import Tx
from gateway.web import passkeys, totp
from gateway.web.enrol import totp_aad
from gateway.web.links import (
    Link,
    Subject,
    clear_failures,
    contact_subject,
    count_failure,
    lock_of,
    locked_page,
    locked_text,
    open_pickup_link,
)
from gateway.web.passkeys import PasskeyError
from gateway.web.site import (
    Challenge,
    Session,
    page,
    refusal,
    see_other,
    session_of,
    site_of,
    start_session,
)

log = get_logger("web")

TITLE = "Er staat een vertrouwelijk bericht voor u klaar"
WRONG = "Het e-mailadres of de code klopt niet. Probeer het opnieuw met de nieuwste code."


async def recipients_credentials(request: web.Request, link: Link) -> list[CredentialRecord]:
    """The second factors of the notice's recipients (app codes only where allowed)."""
    ctx = site_of(request).ctx
    recipients = {r.lower() for r in link.record.recipients}
    return [c for c in await ctx.store.pickups.credentials(link.record.school)
            if c.email.lower() in recipients
            and (c.kind == "passkey" or (c.kind == "totp" and ctx.config.web.allow_totp))]


def _landing(request: web.Request, link: Link, credentials: Sequence[CredentialRecord],
             status: int = 200, error: str | None = None, email: str = "") -> web.Response:
    return page(request, "landing.html", status, title=TITLE, token=link.token,
                passkey=any(c.kind == "passkey" for c in credentials),
                totp=any(c.kind == "totp" for c in credentials), error=error, email=email,
                expires_at=from_iso(link.record.expires_at))


async def landing(request: web.Request) -> web.Response:
    """What a scanner and a person both see first; it records nothing."""
    found = await open_pickup_link(request)
    if not isinstance(found, Link):
        return found
    if session_of(request, "pickup", found.digest) is not None:
        return see_other(f"/bericht/{found.token}/lezen")
    return _landing(request, found, await recipients_credentials(request, found))


async def passkey_options(request: web.Request) -> web.Response:
    found = await open_pickup_link(request, json=True)
    if not isinstance(found, Link):
        return found
    site = site_of(request)
    allowed = [c.credential_id for c in await recipients_credentials(request, found)
               if c.kind == "passkey" and c.credential_id]
    if not allowed:
        return refusal(404, "Voor dit bericht is geen passkey ingesteld.")
    options, challenge = passkeys.authentication_options(site.ctx.config.web.rp_id, allowed)
    site.challenges.put(challenge, Challenge("login", found.digest))
    return web.Response(text=options, content_type="application/json")


async def passkey_login(request: web.Request) -> web.Response:
    found = await open_pickup_link(request, json=True)
    if not isinstance(found, Link):
        return found
    site = site_of(request)
    try:
        answer: Any = await request.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        return refusal(400, "Dat lukte niet. Probeer het opnieuw.")
    challenge = passkeys.answered_challenge(answer)
    issued = site.challenges.pop(challenge) if challenge else None
    if challenge is None or issued is None or issued.purpose != "login" \
            or issued.digest != found.digest:
        return refusal(400, "Dat duurde te lang. Probeer het opnieuw.")
    credential_id = passkeys.credential_id(answer)
    credential = next((c for c in await recipients_credentials(request, found)
                       if c.kind == "passkey" and c.credential_id == credential_id), None)
    subjects: list[Subject] = [("link", found.digest)]
    new_count = None
    if credential is not None and credential.public_key is not None:
        subjects.append(contact_subject(credential.school, credential.email))
        until = await lock_of(request, subjects[1:])
        if until is not None:
            return refusal(429, locked_text(request, until))
        try:
            new_count = passkeys.verify_login(answer, challenge, site.ctx.config.web.rp_id,
                                              site.origin, credential.public_key,
                                              credential.sign_count)
        except PasskeyError:
            new_count = None
    if credential is None or new_count is None:
        log.warning("web.passkey_refused", route="pickup_passkey", school=found.record.school)
        until = await count_failure(request, "pickup_passkey", subjects)
        if until is not None:
            return refusal(429, locked_text(request, until))
        return refusal(400, "Deze passkey hoort niet bij dit bericht, of controleren lukte "
                            "niet. Probeer het opnieuw.")
    await site.ctx.store.write(functools.partial(
        _use, credential.id, site.ctx.clock(), new_count, None))
    return await _signed_in(request, found, credential, subjects,
                            web.json_response({"next": f"/bericht/{found.token}/lezen"}))


async def code_login(request: web.Request) -> web.Response:
    found = await open_pickup_link(request)
    if not isinstance(found, Link):
        return found
    site = site_of(request)
    form = await request.post()
    email = str(form.get("email", "")).strip()[:254]
    typed = str(form.get("code", ""))[:40]
    credentials = await recipients_credentials(request, found)
    if totp.clean_code(typed) is None:  # cannot be right: not counted
        return _landing(request, found, credentials, 400,
                        "Een code uit de app heeft zes cijfers.", email)
    credential = next((c for c in credentials
                       if c.kind == "totp" and c.email.lower() == email.lower()), None)
    subjects: list[Subject] = [("link", found.digest)]
    now = site.ctx.clock()
    step = None
    if credential is not None and credential.secret is not None:
        subjects.append(contact_subject(credential.school, credential.email))
        until = await lock_of(request, subjects[1:])
        if until is not None:
            return locked_page(request, until)
        step = _step(site.ctx.vault, credential, typed, now)
    # The step is taken in the store's conditional update: of two requests racing with one
    # code, only one signs in.
    if credential is None or step is None or not await site.ctx.store.write(
            functools.partial(_use, credential.id, now, None, step)):
        until = await count_failure(request, "pickup_code", subjects)
        if until is not None:
            return locked_page(request, until)
        return _landing(request, found, credentials, 400, WRONG, email)
    return await _signed_in(request, found, credential, subjects,
                            see_other(f"/bericht/{found.token}/lezen"))


async def _use(credential: int, now: dt.datetime, sign_count: int | None, step: int | None,
               tx: Tx) -> bool:
    return await tx.pickups.use_credential(credential, now, sign_count=sign_count, step=step)


def _step(vault: Vault, credential: CredentialRecord, typed: str, now: dt.datetime) -> int | None:
    try:
        secret = vault.open(credential.secret or b"", totp_aad(credential.school, credential.email))
    except VaultError:
        return None
    return totp.accepted_step(str(secret.get("secret", "")), typed, now, credential.last_step)


async def _signed_in(request: web.Request, link: Link, credential: CredentialRecord,
                     subjects: Sequence[Subject], response: web.Response) -> web.Response:
    site = site_of(request)
    await clear_failures(request, subjects)
    start_session(response, site, Session("pickup", link.digest, credential.school,
                                          credential.email))
    log.info("web.signed_in", school=link.record.school, notice=link.record.notice_id,
             method=credential.kind)
    return response


def routes(token: str) -> list[web.RouteDef]:
    base = f"/bericht/{token}"
    return [web.get(base, landing, name="pickup"),
            web.post(f"{base}/passkey/opties", passkey_options, name="pickup_passkey_options"),
            web.post(f"{base}/passkey", passkey_login, name="pickup_passkey"),
            web.post(f"{base}/code", code_login, name="pickup_code")]
