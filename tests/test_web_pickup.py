"""The pickup page over HTTP: a link opens its notice only after a second factor of one of its
recipients, scanners change nothing, wrong codes lock, "Gelezen" acknowledges."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from conftest import Template
from web_rig import (
    CHILD,
    CONTACT,
    HELPDESK,
    OTHER,
    SCHOOL,
    TEACHER_TEXT,
    Authenticator,
    Client,
    Rig,
    csrf_of,
    rig_fixture,
)

from gateway.crypto import pickupbox
from gateway.web.reading import paragraphs


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in rig_fixture(template, tmp_path):
        yield made


async def sign_in(rig: Rig, client: Client, token: str, totp: pyotp.TOTP,
                  email: str = CONTACT) -> None:
    _, text = await client.get(f"/bericht/{token}")
    response, _ = await client.post(f"/bericht/{token}/code", {
        "email": email, "code": totp.now()}, csrf=csrf_of(text))
    assert response.status == 303


async def test_the_landing_page_changes_and_counts_nothing(rig: Rig) -> None:
    """A GET of the link (what a mail scanner does, three times) shows the page with the code
    form and records nothing: no receipt, no opening, no wrong code; and the page tells
    nothing of what waits (no child, not even the codeword)."""
    await rig.add_totp()
    token, notice = await rig.pickup()
    before = await rig.ctx.store.receipts.all()
    scanner = rig.client()
    for _ in range(3):
        response, text = await scanner.get(f"/bericht/{token}")
        assert response.status == 200
        assert 'id="totp-code"' in text and 'id="email"' in text
        assert CHILD["name"] not in text and "Handle with Care" not in text
    assert await rig.ctx.store.receipts.all() == before
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and (record.opened, record.first_opened_at) == (0, None)
    digest = pickupbox.token_digest(rig.ctx.vault, token)
    assert await rig.ctx.store.pickups.throttle("link", digest) is None


async def test_an_app_code_opens_the_notice_in_dutch(rig: Rig) -> None:
    """The contact's address and a right code give a session; the notice page shows "Handle
    with Care", the child's name, birth date as DD-MM-YYYY, reference and the teacher text,
    with the "Gelezen" button, and each showing (a GET, not a HEAD) is a receipt with contact
    and client."""
    totp = await rig.add_totp()
    token, notice = await rig.pickup()
    client = rig.client()
    await sign_in(rig, client, token, totp)
    async with client.session.head(client.base + f"/bericht/{token}/lezen") as head:
        assert head.status == 405  # a HEAD shows nothing, so it records nothing either
    for _ in range(2):
        response, text = await client.get(f"/bericht/{token}/lezen")
        assert response.status == 200
        assert "<h1>Handle with Care</h1>" in text
        assert CHILD["name"] in text and "12-04-2016" in text and CHILD["ref"] in text
        assert TEACHER_TEXT in text and 'id="gelezen"' in text
    opened = await rig.events("pickup_opened")
    assert [(o["notice"], o["contact"], o["client"]) for o in opened] == \
        [(notice, CONTACT, "127.0.0.1")] * 2
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.opened == 2


async def test_the_notice_needs_a_session_of_this_link(rig: Rig) -> None:
    """Without a session, or with one opened for another link, the notice page sends the
    browser to the landing page and shows nothing."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    other, _ = await rig.pickup()
    stranger = rig.client()
    response, text = await stranger.get(f"/bericht/{token}/lezen")
    assert response.status == 303 and response.headers["Location"] == f"/bericht/{token}"
    assert CHILD["name"] not in text
    client = rig.client()
    await sign_in(rig, client, other, totp)
    response, _ = await client.get(f"/bericht/{token}/lezen")
    assert response.status == 303


async def test_wrong_codes_lock_the_link_and_the_contact(rig: Rig) -> None:
    """Each wrong code counts against the link and the contact; at `max_failures` (3 here) the
    link answers 429 with Retry-After and the helpdesk, even to the right code, until
    `lock_minutes` have passed."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    client = rig.client()
    _, text = await client.get(f"/bericht/{token}")
    csrf = csrf_of(text)
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    for attempt in range(3):
        response, text = await client.post(f"/bericht/{token}/code",
                                           {"email": CONTACT, "code": wrong}, csrf=csrf)
        assert response.status == (400 if attempt < 2 else 429)
    assert "Retry-After" in response.headers and HELPDESK in text
    digest = pickupbox.token_digest(rig.ctx.vault, token)
    for scope, subject in (("link", digest), ("contact", f"{SCHOOL}/{CONTACT}")):
        throttle = await rig.ctx.store.pickups.throttle(scope, subject)
        assert throttle is not None and throttle.locked_until is not None
    response, _ = await client.post(f"/bericht/{token}/code",
                                    {"email": CONTACT, "code": totp.now()}, csrf=csrf)
    assert response.status == 429
    response, _ = await client.get(f"/bericht/{token}")
    assert response.status == 429
    rig.clock.advance(minutes=16)
    response, _ = await client.post(f"/bericht/{token}/code",
                                    {"email": CONTACT, "code": totp.at(rig.clock())},
                                    csrf=csrf)
    assert response.status == 303


async def test_an_address_that_is_not_a_recipient_gets_nothing(rig: Rig) -> None:
    """A right code of a contact who is not among the notice's recipients is a wrong answer,
    counted against the link, and the page does not say which of the two was wrong."""
    await rig.add_totp(CONTACT)
    other_totp = await rig.add_totp(OTHER)
    token, _ = await rig.pickup(recipients=[CONTACT])
    client = rig.client()
    _, text = await client.get(f"/bericht/{token}")
    response, text = await client.post(f"/bericht/{token}/code",
                                       {"email": OTHER, "code": other_totp.now()},
                                       csrf=csrf_of(text))
    assert response.status == 400 and "Het e-mailadres of de code klopt niet" in text
    throttle = await rig.ctx.store.pickups.throttle(
        "link", pickupbox.token_digest(rig.ctx.vault, token))
    assert throttle is not None and throttle.failures == 1


async def test_an_app_code_works_once(rig: Rig) -> None:
    """The same code a second time (seen over a shoulder, or a second tab) is refused."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    await sign_in(rig, rig.client(), token, totp)
    second = rig.client()
    _, text = await second.get(f"/bericht/{token}")
    response, _ = await second.post(f"/bericht/{token}/code",
                                    {"email": CONTACT, "code": totp.now()}, csrf=csrf_of(text))
    assert response.status == 400


async def test_gelezen_acknowledges_once_and_the_page_then_says_when(rig: Rig) -> None:
    """"Gelezen" records the acknowledgement (the notice's acked_at, receipt `acknowledged` via
    "pickup" with the contact) and the read mark in one go, leads to the thank-you page; the
    notice stays showable and then says it was read instead of offering the button."""
    totp = await rig.add_totp()
    token, notice = await rig.pickup()
    client = rig.client()
    await sign_in(rig, client, token, totp)
    _, text = await client.get(f"/bericht/{token}/lezen")
    csrf = csrf_of(text)
    response, _ = await client.post(f"/bericht/{token}/gelezen", csrf=csrf)
    assert response.status == 303 and response.headers["Location"] == f"/bericht/{token}/bedankt"
    response, text = await client.get(f"/bericht/{token}/bedankt")
    assert response.status == 200 and 'id="thanks"' in text
    [ack] = await rig.events("acknowledged")
    assert (ack["notice"], ack["via"], ack["contact"]) == (notice, "pickup", CONTACT)
    stored = await rig.ctx.store.notices.get(notice)
    assert stored is not None and stored.acked_at is not None
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.read_by == CONTACT
    _, text = await client.get(f"/bericht/{token}/lezen")
    assert 'id="read-at"' in text and 'id="gelezen"' not in text and CHILD["name"] in text
    response, _ = await client.post(f"/bericht/{token}/gelezen", csrf=csrf)
    assert response.status == 303 and len(await rig.events("acknowledged")) == 1


async def test_an_expired_link_names_the_helpdesk(rig: Rig) -> None:
    """Past its expiry a link answers 410 with the helpdesk, on the landing page and on the
    notice page of a session opened before."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup(hours=1)
    client = rig.client()
    await sign_in(rig, client, token, totp)
    rig.clock.advance(hours=1, seconds=1)
    for path in (f"/bericht/{token}", f"/bericht/{token}/lezen"):
        response, text = await client.get(path)
        assert response.status == 410 and HELPDESK in text and CHILD["name"] not in text


async def test_an_unknown_link_is_a_dutch_404(rig: Rig) -> None:
    """A token the store does not know, or one of the wrong shape, is a 404 page in Dutch that
    names the helpdesk."""
    client = rig.client()
    for token in (pickupbox.new_token(), "A" * 30):
        response, text = await client.get(f"/bericht/{token}")
        assert response.status == 404 and 'lang="nl"' in text and HELPDESK in text


async def test_a_passkey_opens_the_notice_and_its_counter_must_grow(rig: Rig) -> None:
    """A passkey of a recipient (registered on the enrolment page) signs in; its signature
    counter is kept, and an answer whose counter went back (a cloned key) is refused and
    counted."""
    authenticator = Authenticator(rig.origin)
    enrol_token, code = await rig.invite()
    client = rig.client()
    _, text = await client.get(f"/inschrijven/{enrol_token}")
    await client.post(f"/inschrijven/{enrol_token}", {"code": code}, csrf=csrf_of(text))
    _, text = await client.get(f"/inschrijven/{enrol_token}/kiezen")
    csrf = csrf_of(text)
    _, options = await client.post(f"/inschrijven/{enrol_token}/passkey/opties", json_body={},
                                   csrf=csrf)
    response, _ = await client.post(f"/inschrijven/{enrol_token}/passkey", csrf=csrf,
                                    json_body=authenticator.create(json.loads(options)))
    assert response.status == 200
    token, _ = await rig.pickup()
    reader = rig.client()
    _, text = await reader.get(f"/bericht/{token}")
    assert 'id="passkey-button"' in text and 'id="totp-code"' not in text
    csrf = csrf_of(text)
    _, options = await reader.post(f"/bericht/{token}/passkey/opties", json_body={}, csrf=csrf)
    response, body = await reader.post(f"/bericht/{token}/passkey", csrf=csrf,
                                       json_body=authenticator.get(json.loads(options)))
    assert response.status == 200 and json.loads(body) == {"next": f"/bericht/{token}/lezen"}
    [credential] = await rig.ctx.store.pickups.credentials(SCHOOL, CONTACT)
    assert credential.sign_count == authenticator.counter
    response, text = await reader.get(f"/bericht/{token}/lezen")
    assert response.status == 200 and CHILD["name"] in text
    authenticator.counter -= 1  # a clone answers with a counter already seen
    _, options = await reader.post(f"/bericht/{token}/passkey/opties", json_body={}, csrf=csrf)
    response, _ = await reader.post(f"/bericht/{token}/passkey", csrf=csrf,
                                    json_body=authenticator.get(json.loads(options)))
    assert response.status == 400


async def test_a_locked_contact_is_locked_on_every_link(rig: Rig) -> None:
    """Wrong codes for one contact spread over two links (none of which reaches the limit
    alone) lock the contact: its right code is then refused on a third link too."""
    totp = await rig.add_totp()
    links = [(await rig.pickup())[0] for _ in range(3)]
    client = rig.client()
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    statuses = []
    for token in (links[0], links[0], links[1]):
        _, text = await client.get(f"/bericht/{token}")
        response, _ = await client.post(f"/bericht/{token}/code",
                                        {"email": CONTACT, "code": wrong}, csrf=csrf_of(text))
        statuses.append(response.status)
    assert statuses == [400, 400, 429]
    _, text = await client.get(f"/bericht/{links[2]}")
    response, text = await client.post(f"/bericht/{links[2]}/code",
                                       {"email": CONTACT, "code": totp.now()},
                                       csrf=csrf_of(text))
    assert response.status == 429 and HELPDESK in text


async def test_behind_a_proxy_the_receipt_names_the_client(rig: Rig) -> None:
    """On loopback without TLS of its own (behind a reverse proxy) the opening receipt names
    the address the proxy appended to X-Forwarded-For; a value that is no address is ignored."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    client = rig.client()
    await sign_in(rig, client, token, totp)
    for forwarded in ("198.51.100.1, 203.0.113.7", "<script>"):
        await client.get(f"/bericht/{token}/lezen", headers={"X-Forwarded-For": forwarded})
    assert [o["client"] for o in await rig.events("pickup_opened")] == \
        ["203.0.113.7", "127.0.0.1"]


async def test_a_hostile_name_is_shown_as_text(rig: Rig) -> None:
    """A name that looks like markup (a register typed or imported carelessly, or worse) is
    shown as the text it is: escaped, never a tag or a script the browser would run."""
    totp = await rig.add_totp()
    hostile = {**CHILD, "name": '<script>alert("x")</script><img src=x onerror=alert(1)>'}
    token, _ = await rig.pickup(children=[hostile])
    client = rig.client()
    await sign_in(rig, client, token, totp)
    response, text = await client.get(f"/bericht/{token}/lezen")
    assert response.status == 200
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" \
        in text
    assert "<script>alert" not in text and "<img" not in text


def test_the_teacher_text_reads_as_paragraphs_on_any_screen() -> None:
    """The teacher text is written for a mail, its lines broken at ~90 characters: on the page
    a line break inside a paragraph would cut a sentence, so only a blank line starts one."""
    text = "Dit kind heeft iets meegemaakt. U hoeft niets\nte vragen.\n\n  Deel het niet.\n"
    assert paragraphs(text) == ["Dit kind heeft iets meegemaakt. U hoeft niets te vragen.",
                                "Deel het niet."]
    assert paragraphs("") == []
