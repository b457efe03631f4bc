"""The browser harness itself (tests/browser.py), on a small page of its own: a passkey is made
and used on http://localhost, axe-core runs under the gateway's Content-Security-Policy and
does report violations, the URL check catches a canary, screenshots are written. When a page
test fails, these say whether the harness or the page is at fault."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from browser import (
    assert_no_canary_in_urls,
    axe_violations,
    browser_fixture,  # noqa: F401  (the fixture browser)
    chrome_fixture,  # noqa: F401  (the fixture chrome)
    console_errors,
    describe,
    screenshot,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

# The policy PICKUP.md gives every page of the gateway.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

PAGE = """<!doctype html><html lang="nl"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Proef</title>
<script>document.documentElement.dataset.inline = "ran";</script>
<script src="/app.js" defer></script></head><body><main><h1>Proef</h1>
<button id="go" type="button">Passkey maken en gebruiken</button>
<p id="result" role="status"></p></main></body></html>"""

BAD_PAGE = """<!doctype html><html><head><title>Fout</title></head><body>
<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">
<p style="color:#ccc;background:#fff">onleesbaar</p></body></html>"""

# What the pickup pages do: make a discoverable passkey needing user verification, then sign
# in with it; the page shows which credential came back.
APP_JS = """
const bytes = n => crypto.getRandomValues(new Uint8Array(n));
document.getElementById("go").addEventListener("click", async () => {
  const out = document.getElementById("result");
  try {
    const made = await navigator.credentials.create({publicKey: {
      rp: {name: "Proef", id: location.hostname}, challenge: bytes(32),
      user: {id: bytes(16), name: "contact", displayName: "Contactpersoon"},
      pubKeyCredParams: [{type: "public-key", alg: -7}],
      authenticatorSelection: {residentKey: "required", userVerification: "required"}}});
    const used = await navigator.credentials.get({publicKey: {
      challenge: bytes(32), rpId: location.hostname, userVerification: "required"}});
    out.textContent = used.id === made.id ? "ok" : "other credential";
  } catch (e) { out.textContent = "error: " + e.name; }
});
"""


async def _page(request: web.Request) -> web.Response:
    if request.path == "/fout":  # no CSP: it would block the inline style that fails contrast
        return web.Response(text=BAD_PAGE, content_type="text/html")
    return web.Response(text=PAGE, content_type="text/html",
                        headers={"Content-Security-Policy": CSP})


async def _script(request: web.Request) -> web.Response:
    return web.Response(text=APP_JS, content_type="text/javascript",
                        headers={"Content-Security-Policy": CSP})


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page served by aiohttp in a thread of its own, on a free loopback port."""
    app = web.Application()
    app.router.add_get("/", _page)
    app.router.add_get("/fout", _page)
    app.router.add_get("/app.js", _script)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        sock.close()


def test_passkey_made_and_used_on_localhost(browser: WebDriver, site: str) -> None:
    """The virtual authenticator makes a passkey and signs in with it on http://localhost."""
    browser.get(site)
    browser.find_element(By.ID, "go").click()
    result = WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "result").text)
    assert result == "ok"


def test_axe_runs_under_the_gateway_csp(browser: WebDriver, site: str) -> None:
    """axe-core runs on a page whose CSP blocks inline scripts (it does block them here)."""
    browser.get(site)
    assert browser.execute_script("return document.documentElement.dataset.inline") is None
    assert any("Content Security Policy" in e for e in console_errors(browser))
    violations = axe_violations(browser, impact=("minor", "moderate", "serious", "critical"))
    assert violations == [], describe(violations)


def test_axe_reports_serious_violations(browser: WebDriver, site: str) -> None:
    """A page without a language, with an image without text and grey on white fails axe."""
    browser.get(site + "/fout")
    found = {v["id"] for v in axe_violations(browser)}
    assert {"html-has-lang", "image-alt", "color-contrast"} <= found


def test_a_canary_in_a_requested_url_is_caught(browser: WebDriver, site: str) -> None:
    """A name in a URL the browser opened fails the check, also percent-encoded."""
    browser.get(site + "/?naam=Pimpelmees%20Vink")
    browser.get(site)
    with pytest.raises(AssertionError, match="Pimpelmees Vink"):
        assert_no_canary_in_urls(browser, ["Pimpelmees Vink"])
    assert_no_canary_in_urls(browser, ["Merelzang"])


def test_screenshot_written_and_copied_for_the_readme(
        browser: WebDriver, site: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A screenshot is a PNG of the page; with HWC_SCREENSHOTS set, the README's copy too."""
    monkeypatch.setenv("HWC_SCREENSHOTS", str(tmp_path / "docs"))
    browser.get(site)
    path = screenshot(browser, "harness", readme=True)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert (tmp_path / "docs" / "harness.png").read_bytes() == path.read_bytes()
