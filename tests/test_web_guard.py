"""What every response of the web side carries and every POST must bring: the security
headers, CSRF and origin checks, cookie attributes, bounded bodies, Dutch error pages and never
a 5xx for anything a client sends."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import Template
from web_rig import CONTACT, Rig, csrf_of, rig_fixture

from gateway.crypto import pickupbox
from gateway.web.guard import CSP, MAX_BODY, same_origin, security_headers


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    async for made in rig_fixture(template, tmp_path):
        yield made


def test_a_post_must_come_from_our_origin() -> None:
    """Our Origin passes; another origin fails even with Sec-Fetch-Site; `Origin: null` (what
    browsers send under no-referrer) or none passes only with `Sec-Fetch-Site: same-origin`."""
    ours = "https://ophalen.example.nl"
    assert same_origin(ours, None, ours)
    assert same_origin("HTTPS://OPHALEN.example.nl", None, ours)
    assert not same_origin("https://evil.example", "same-origin", ours)
    assert not same_origin("https://ophalen.example.nl:8443", None, ours)
    assert same_origin("null", "same-origin", ours)
    assert same_origin(None, "same-origin", ours)
    for site in ("cross-site", "same-site", "none", None):
        assert not same_origin("null", site, ours)
        assert not same_origin(None, site, ours)


def test_hsts_only_over_https() -> None:
    """HSTS is sent when the public origin is HTTPS, never over plain http (loopback only)."""
    assert "Strict-Transport-Security" in security_headers(True)
    assert "Strict-Transport-Security" not in security_headers(False)


async def test_every_response_carries_the_security_headers(rig: Rig) -> None:
    """Pages, error pages, redirects and the static files all carry the CSP (no third-party
    source, no inline script), no-referrer, no-store, nosniff and no framing; the server does
    not name its software."""
    token, _ = await rig.pickup()
    client = rig.client()
    for path in ("/", f"/bericht/{token}", f"/bericht/{token}/lezen", "/static/style.css",
                 "/static/passkey.js", f"/bevestig/{pickupbox.new_token()}", "/nergens"):
        response, _ = await client.get(path)
        headers = response.headers
        assert headers["Content-Security-Policy"] == CSP, path
        assert "frame-ancestors 'none'" in CSP and "'unsafe-inline'" not in CSP
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["X-Frame-Options"] == "DENY"
        assert headers["Server"] == "hwc-gateway"
        assert "Strict-Transport-Security" not in headers  # http: loopback only


async def test_pages_are_dutch_accessible_and_script_free_but_one(rig: Rig) -> None:
    """Each page says lang="nl", has a viewport, one h1, labels for its inputs, and loads no
    script but /static/passkey.js (and that only where a passkey is used) and, on the notice
    page alone, /static/fresh.js; no inline style or script."""
    await rig.add_totp()
    token, _ = await rig.pickup()
    enrol, _ = await rig.invite("nieuw@regenboog.example.nl")
    client = rig.client()
    for path in (f"/bericht/{token}", f"/inschrijven/{enrol}", "/nergens"):
        _, text = await client.get(path)
        assert '<html lang="nl">' in text and 'name="viewport"' in text
        assert text.count("<h1>") == 1 and "style=" not in text
        assert text.count("<script") == text.count('<script src="/static/passkey.js"')
        for field in ("code", "totp-code", "email"):
            if f'id="{field}"' in text:
                assert f'<label for="{field}"' in text


async def test_posts_without_csrf_or_from_elsewhere_are_refused(rig: Rig) -> None:
    """A POST without the CSRF token, with a token of another browser, or from another origin
    is a 403 page and changes nothing (no wrong code counted)."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    client, other = rig.client(), rig.client()
    _, text = await client.get(f"/bericht/{token}")
    _, other_text = await other.get(f"/bericht/{token}")
    form = {"email": CONTACT, "code": totp.now()}
    attempts = [client.post(f"/bericht/{token}/code", form),
                client.post(f"/bericht/{token}/code", form, csrf=csrf_of(other_text)),
                client.post(f"/bericht/{token}/code", form, csrf=csrf_of(text),
                            headers={"Origin": "https://evil.example"}),
                client.post(f"/bericht/{token}/code", form, csrf=csrf_of(text),
                            headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"})]
    for attempt in attempts:
        response, page = await attempt
        assert response.status == 403 and 'lang="nl"' in page
    digest = pickupbox.token_digest(rig.ctx.vault, token)
    assert await rig.ctx.store.pickups.throttle("link", digest) is None
    response, _ = await client.post(f"/bericht/{token}/code", form, csrf=csrf_of(text),
                                    headers={"Origin": "null", "Sec-Fetch-Site": "same-origin"})
    assert response.status == 303


async def test_cookies_are_secure_httponly_strict_and_short(rig: Rig) -> None:
    """The CSRF cookie and the session cookie are Secure, HttpOnly, SameSite=Strict, Path=/;
    the session lives `[web] session_minutes` and then no longer opens the notice."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    client = rig.client()
    response, text = await client.get(f"/bericht/{token}")
    cookies = [response.headers.getall("Set-Cookie")[0]]
    response, _ = await client.post(f"/bericht/{token}/code", {
        "email": CONTACT, "code": totp.now()}, csrf=csrf_of(text))
    cookies.append(response.headers.getall("Set-Cookie")[0])
    for cookie in cookies:
        parts = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
        assert {"secure", "httponly", "samesite", "path"} <= parts
        assert "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Max-Age=600" in cookies[1]
    response, _ = await client.get(f"/bericht/{token}/lezen")
    assert response.status == 200
    rig.clock.advance(minutes=10, seconds=1)
    response, _ = await client.get(f"/bericht/{token}/lezen")
    assert response.status == 303


async def test_bodies_are_bounded(rig: Rig) -> None:
    """A body over the cap is a 413 page, read no further; a long field is cut, not an error."""
    await rig.add_totp()
    token, _ = await rig.pickup()
    client = rig.client()
    _, text = await client.get(f"/bericht/{token}")
    response, page = await client.post(f"/bericht/{token}/code",
                                       {"email": "a" * (MAX_BODY + 10), "code": "1"},
                                       csrf=csrf_of(text))
    assert response.status == 413 and 'lang="nl"' in page
    response, _ = await client.post(f"/bericht/{token}/code",
                                    {"email": "a" * 5000, "code": "1" * 5000},
                                    csrf=csrf_of(text))
    assert response.status == 400


async def test_no_request_makes_a_5xx(rig: Rig) -> None:
    """Malformed JSON, wrong types, unknown methods, odd paths and stray form fields all get a
    4xx (or a page), never a 5xx or a trace."""
    await rig.add_totp()
    token, _ = await rig.pickup()
    enrol, _ = await rig.invite("nieuw@regenboog.example.nl")
    client = rig.client()
    _, text = await client.get(f"/bericht/{token}")
    csrf = csrf_of(text)
    bodies = [b"{", b"[]", b'"x"', b"null", json.dumps({"response": 5}).encode(),
              json.dumps({"id": "x" * 2000, "rawId": 7, "response": {
                  "clientDataJSON": "!!!"}}).encode(), b"\xff\xfe"]
    paths = [f"/bericht/{token}/passkey", f"/bericht/{token}/passkey/opties",
             f"/inschrijven/{enrol}/passkey", f"/bericht/{token}/code",
             f"/bevestig/{token}", f"/inschrijven/{enrol}", f"/inschrijven/{enrol}/app"]
    for path in paths:
        for body in bodies:
            response, page = await client.post_raw(path, body, {
                "Content-Type": "application/json", "X-CSRF-Token": csrf})
            assert response.status < 500, (path, body)
            assert "Traceback" not in page
    for path in ("/bericht/", "/bericht/%00", "/bericht/" + "A" * 5000, "/static/../app.py",
                 f"/bericht/{token}/lezen/x", "/inschrijven/" + "é" * 43):
        response, page = await client.get(path)
        assert 400 <= response.status < 500 and "Traceback" not in page
    async with client.session.request("PUT", client.base + f"/bericht/{token}") as response:
        assert response.status == 405



async def test_bodies_that_do_not_parse_are_a_400(rig: Rig) -> None:
    """A body that does not parse as the type it declares (invalid UTF-8, an unknown charset,
    a broken multipart, JSON nested past Python's recursion limit, also inside a passkey's
    clientDataJSON) is the sender's fault: a 400 page, never a 500."""
    await rig.add_totp()
    token, _ = await rig.pickup()
    client = rig.client()
    _, text = await client.get(f"/bericht/{token}")
    csrf = csrf_of(text)
    deep = b"[" * 60_000
    client_data = base64.urlsafe_b64encode(b"[" * 15_000).decode().rstrip("=")
    sent = [
        (f"/bericht/{token}/code", "application/x-www-form-urlencoded",
         f"csrf={csrf}&code=%ff%fe".encode(), False),
        (f"/bericht/{token}/code", "application/x-www-form-urlencoded; charset=x-unknown",
         f"csrf={csrf}&code=1".encode(), False),
        (f"/bericht/{token}/code", "multipart/form-data; boundary=zzz", b"--zzz\r\ngarbage",
         False),
        (f"/bericht/{token}/code", "multipart/form-data; boundary=zzz", b"--zzz\r\ngarbage",
         True),
        (f"/bericht/{token}/passkey", "application/json; charset=x-unknown", b"{}", True),
        (f"/bericht/{token}/passkey", "application/json", deep, True),
        (f"/bericht/{token}/passkey", "application/json", json.dumps(
            {"id": "x", "rawId": "x", "response": {"clientDataJSON": client_data}}).encode(),
         True),
    ]
    for path, kind, body, in_header in sent:
        headers = {"Content-Type": kind, **({"X-CSRF-Token": csrf} if in_header else {})}
        response, page = await client.post_raw(path, body, headers)
        assert 400 <= response.status < 500, (kind, body[:40])
        assert "Traceback" not in page


async def test_a_request_aiohttp_cannot_parse_leaves_one_plain_event(
        rig: Rig, capsys: pytest.CaptureFixture[str]) -> None:
    """A request line or header with a stray byte (a link mangled by a mail client) is
    refused by aiohttp's parser, whose own log would quote the line, token and cookie
    included, with a traceback: the log gets one JSON event `web.bad_request` with the
    error's type, and nothing of the request."""
    token, _ = await rig.pickup()
    host, port = rig.base.removeprefix("http://").rsplit(":", 1)
    for request in (f"GET /bericht/{token}\xa0 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                    f"GET / HTTP/1.1\r\nHost: x\r\nCookie: session={token}\x01\r\n\r\n"
                    .encode()):
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        await writer.drain()
        status = await reader.readline()
        assert status.split()[1:2] == [b"400"], status
        writer.close()
        await writer.wait_closed()
    out = capsys.readouterr().out
    assert token not in out and "Traceback" not in out
    events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [e["event"] for e in events if e["event"] == "web.bad_request"] == \
        ["web.bad_request"] * 2
