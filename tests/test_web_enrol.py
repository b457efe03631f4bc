"""Enrolment over HTTP: the phone code first, then a passkey or an authenticator app; the
invitation used once; wrong codes locking; expired, used and unknown links refused."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from conftest import Template, raw_sql
from web_rig import CONTACT, HELPDESK, SCHOOL, Authenticator, Client, Rig, csrf_of, rig_fixture

from gateway.crypto import pickupbox


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in rig_fixture(template, tmp_path):
        yield made


async def enter_code(client: Client, token: str, code: str) -> tuple[int, str]:
    _, text = await client.get(f"/inschrijven/{token}")
    response, text = await client.post(f"/inschrijven/{token}", {"code": code},
                                       csrf=csrf_of(text))
    return response.status, text


async def test_the_code_page_then_the_choice(rig: Rig) -> None:
    """The link shows the code form; the right code, typed as people type it (lower case,
    spaces), leads to the choice of a passkey or an app."""
    token, code = await rig.invite()
    client = rig.client()
    response, text = await client.get(f"/inschrijven/{token}")
    assert response.status == 200 and 'id="code"' in text and 'id="code-submit"' in text
    status, _ = await enter_code(client, token, f" {code[:4].lower()} {code[5:]} ")
    assert status == 303
    response, text = await client.get(f"/inschrijven/{token}/kiezen")
    assert response.status == 200
    assert 'id="passkey-button"' in text and 'id="app-link"' in text
    assert '<script src="/static/passkey.js" defer></script>' in text


async def test_the_choice_needs_the_code_first(rig: Rig) -> None:
    """Without the right code the choice, the app and the passkey options are not reachable:
    the pages send the browser back to the code, the JSON says no."""
    token, _ = await rig.invite()
    client = rig.client()
    _, text = await client.get(f"/inschrijven/{token}")
    for path in ("kiezen", "app"):
        response, _ = await client.get(f"/inschrijven/{token}/{path}")
        assert response.status == 303 and response.headers["Location"] == f"/inschrijven/{token}"
    response, _ = await client.post(f"/inschrijven/{token}/passkey/opties", json_body={},
                                    csrf=csrf_of(text))
    assert response.status == 403


async def test_wrong_codes_lock_the_invitation(rig: Rig) -> None:
    """A wrong code is counted (a malformed one is not); at `max_failures` (3) the invitation
    answers 429 naming the helpdesk, even to the right code."""
    token, code = await rig.invite()
    client = rig.client()
    status, text = await enter_code(client, token, "abc")
    csrf = csrf_of(text)
    assert status == 400 and "acht letters" in text
    wrong = "AAAA-AAAA" if code != "AAAA-AAAA" else "CCCC-CCCC"
    statuses = [(await enter_code(client, token, wrong))[0] for _ in range(3)]
    assert statuses == [400, 400, 429]
    response, text = await client.get(f"/inschrijven/{token}")
    assert response.status == 429 and HELPDESK in text and 'id="code"' not in text
    response, _ = await client.post(f"/inschrijven/{token}", {"code": code}, csrf=csrf)
    assert response.status == 429


async def test_a_passkey_enrols_the_contact_once(rig: Rig) -> None:
    """The passkey ceremony: options for this relying party with the challenge kept, the
    answer verified, the credential stored, the invitation used up (receipt
    `school.contact_enrolled`), and "Klaar"; the link then says the enrolment is done."""
    token, code = await rig.invite()
    client = rig.client()
    await enter_code(client, token, code)
    _, text = await client.get(f"/inschrijven/{token}/kiezen")
    csrf = csrf_of(text)
    response, options = await client.post(f"/inschrijven/{token}/passkey/opties",
                                          json_body={}, csrf=csrf)
    assert response.status == 200 and response.content_type == "application/json"
    parsed = json.loads(options)
    assert parsed["rp"]["id"] == "localhost" and parsed["user"]["name"] == CONTACT
    assert parsed["authenticatorSelection"]["residentKey"] == "preferred"
    authenticator = Authenticator(rig.origin)
    response, body = await client.post(f"/inschrijven/{token}/passkey", csrf=csrf,
                                       json_body=authenticator.create(parsed))
    assert response.status == 200 and json.loads(body) == {"next": f"/inschrijven/{token}/klaar"}
    [credential] = await rig.ctx.store.pickups.credentials(SCHOOL, CONTACT)
    assert credential.kind == "passkey" and credential.credential_id in authenticator.keys
    [enrolled] = await rig.events("school.contact_enrolled")
    assert (enrolled["school"], enrolled["contact"], enrolled["method"]) == \
        (SCHOOL, CONTACT, "passkey")
    response, text = await client.get(f"/inschrijven/{token}/klaar")
    assert response.status == 200 and 'id="done"' in text
    response, _ = await client.get(f"/inschrijven/{token}")
    assert response.status == 410


async def test_a_passkey_for_another_origin_or_challenge_is_refused(rig: Rig) -> None:
    """An answer made for another origin (a phishing site relaying the ceremony) does not
    verify; an answer to a challenge never given, or given once already, is refused."""
    token, code = await rig.invite()
    client = rig.client()
    await enter_code(client, token, code)
    _, text = await client.get(f"/inschrijven/{token}/kiezen")
    csrf = csrf_of(text)
    authenticator = Authenticator(rig.origin)
    _, options = await client.post(f"/inschrijven/{token}/passkey/opties", json_body={},
                                   csrf=csrf)
    phished = authenticator.create(json.loads(options), origin="https://ophalen.example.com")
    response, _ = await client.post(f"/inschrijven/{token}/passkey", csrf=csrf,
                                    json_body=phished)
    assert response.status == 400
    response, _ = await client.post(f"/inschrijven/{token}/passkey", csrf=csrf,
                                    json_body=authenticator.create(json.loads(options)))
    assert response.status == 400  # that challenge was used by the refused answer
    assert await rig.ctx.store.pickups.credentials(SCHOOL, CONTACT) == []


async def test_an_app_enrols_with_its_secret_sealed(rig: Rig) -> None:
    """The app page shows a QR code as inline SVG and the secret as text (the same on a
    reload); a wrong first code is refused, the right one stores the secret vault-sealed
    (not readable in the database) and that code cannot open a notice later."""
    token, code = await rig.invite()
    client = rig.client()
    await enter_code(client, token, code)
    response, text = await client.get(f"/inschrijven/{token}/app")
    assert response.status == 200 and "<svg" in text and 'id="totp-code"' in text
    found = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', text)
    assert found is not None
    secret = found[1].replace(" ", "")
    _, again = await client.get(f"/inschrijven/{token}/app")
    assert found[1] in again
    totp = pyotp.TOTP(secret)
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    response, _ = await client.post(f"/inschrijven/{token}/app", {"code": wrong},
                                    csrf=csrf_of(text))
    assert response.status == 400
    response, _ = await client.post(f"/inschrijven/{token}/app", {"code": totp.now()},
                                    csrf=csrf_of(text))
    assert response.status == 303
    assert response.headers["Location"] == f"/inschrijven/{token}/klaar"
    [credential] = await rig.ctx.store.pickups.credentials(SCHOOL, CONTACT)
    assert credential.kind == "totp" and credential.last_step == totp.timecode(rig.clock())
    rows = raw_sql(rig.ctx.config.storage.path, "SELECT secret FROM credentials")
    assert secret.encode() not in bytes(rows[0]["secret"])
    _, text = await client.get(f"/inschrijven/{token}/klaar")
    assert "de code uit uw app" in text


async def test_the_app_is_not_offered_where_it_is_not_allowed(
        template: Template, tmp_path: Path) -> None:
    """With `allow_totp = false` the choice offers only the passkey and the app page is 404."""
    async for rig in rig_fixture(template, tmp_path, "allow_totp = false"):
        token, code = await rig.invite()
        client = rig.client()
        await enter_code(client, token, code)
        _, text = await client.get(f"/inschrijven/{token}/kiezen")
        assert 'id="passkey-button"' in text and 'id="app-link"' not in text
        response, _ = await client.get(f"/inschrijven/{token}/app")
        assert response.status == 404


async def test_expired_and_unknown_invitations(rig: Rig) -> None:
    """Past its hours an invitation answers 410; an unknown token 404; both in Dutch."""
    token, _ = await rig.invite(hours=1)
    client = rig.client()
    rig.clock.advance(hours=1, seconds=1)
    response, text = await client.get(f"/inschrijven/{token}")
    assert response.status == 410 and "verlopen" in text
    response, text = await client.get(f"/inschrijven/{pickupbox.new_token()}")
    assert response.status == 404 and 'lang="nl"' in text
