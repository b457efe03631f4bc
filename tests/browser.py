"""A real browser for the tests of the web pages: headless Chromium driven by selenium.

Takes: Debian's chromium and chromedriver (/usr/bin; `.ci/run` installs them) and axe-core
(the Makefile's `$(AXE)`: `.venv/axe` of the checkout running the tests).
Produces: `chrome`, one browser per test session (its own temporary profile), and `browser`, the
same browser reset for one test (no cookies, no cache, a new virtual passkey authenticator, a
desktop window); `axe_violations` (WCAG 2.0/2.1 A and AA through axe-core), `screenshot` (into
$HWC_SCREENSHOT_DIR, or a new /tmp/hwc-screenshots-*, kept for a person to look at; the
README's PNG too when HWC_SCREENSHOTS names its directory),
`requested_urls` and `assert_no_canary_in_urls` (what the address bar and every request showed).
Fails: without chromium the browser tests fail when env CI is set (CI must run them) and skip
with the reason otherwise; when the browser is gone, every Chromium process of the session's
profile is killed by its pid, so no browser outlives the suite.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import pytest
from aiohttp import web
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.virtual_authenticator import (
    Protocol,
    Transport,
    VirtualAuthenticatorOptions,
)
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
AXE = ROOT / ".venv" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
# The WCAG levels Dutch public bodies must meet (2.1 AA), with the 2.0 ones it builds on.
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
DESKTOP = (1280, 900)
PHONE = (390, 844)  # an ordinary phone's CSS viewport (iPhone 12 to 15)
# Headless without a sandbox or /dev/shm (containers, CI); the rest keep it from calling home.
ARGUMENTS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--disable-gpu", "--lang=nl-NL")

_state: dict[str, Any] = {"shots": Path(tempfile.gettempdir()), "urls": []}


def _missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER, AXE):
        if not path.exists():
            return (f"{path} is missing (apt-get install chromium chromium-driver; "
                    f"make {AXE.relative_to(ROOT)})")
    return None


def _profile_pids(profile: Path) -> list[int]:
    """Processes whose command line names the session's own profile directory: its browser."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(profile).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def _kill_leftovers(profile: Path) -> list[int]:
    """SIGKILL whatever Chromium process of this profile is still there five seconds after
    quitting (a renderer may take a moment to exit: nothing to wait on but its /proc entry);
    their pids."""
    deadline = time.monotonic() + 5
    while (left := _profile_pids(profile)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def _log(driver: WebDriver, kind: str) -> list[dict[str, Any]]:
    """Chromium's log of that kind since the last call (selenium leaves get_log untyped)."""
    entries: list[dict[str, Any]] = driver.get_log(kind)  # type: ignore[no-untyped-call]
    return entries


def _options(profile: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (*ARGUMENTS, f"--user-data-dir={profile}",
                     f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"intl.accept_languages": "nl-NL,nl"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return options


@pytest.fixture(name="chrome", scope="session")
def chrome_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """One headless Chromium for the whole session (starting one costs a second or two)."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests must run on CI: {missing}")
        pytest.skip(f"no browser tests: {missing}")
    base = tmp_path_factory.mktemp("browser")
    # Out of pytest's rotation of temp dirs (it keeps three runs, of every suite of this user).
    shots = os.environ.get("HWC_SCREENSHOT_DIR") or tempfile.mkdtemp(prefix="hwc-screenshots-")
    _state["shots"] = Path(shots)
    _state["shots"].mkdir(parents=True, exist_ok=True)
    profile = base / "profile"
    _state["profile"] = profile
    service = Service(str(CHROMEDRIVER), log_output=str(base / "chromedriver.log"))
    driver = webdriver.Chrome(options=_options(profile), service=service)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            left = _kill_leftovers(profile)
            assert not left, f"Chromium processes outlived driver.quit(): {left}"


@pytest.fixture(name="browser")
def browser_fixture(chrome: WebDriver) -> Iterator[WebDriver]:
    """The session's browser as a new visitor's: no cookies or cache, a fresh passkey store."""
    driver = chrome
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Network.clearBrowserCache", {})
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.set_window_size(*DESKTOP)
    new_authenticator(driver)
    _log(driver, "performance")  # what earlier tests requested is theirs
    _log(driver, "browser")
    _state["urls"] = []
    yield driver
    driver.get("about:blank")


def new_authenticator(driver: WebDriver) -> None:
    """A new passkey store in place of the browser's present one (a platform authenticator
    that verifies its user: a phone's fingerprint, a laptop's PIN)."""
    with contextlib.suppress(WebDriverException, ValueError):  # none yet: the first test
        driver.remove_virtual_authenticator()
    driver.add_virtual_authenticator(VirtualAuthenticatorOptions(
        protocol=Protocol.CTAP2, transport=Transport.INTERNAL, has_resident_key=True,
        has_user_verification=True, is_user_verified=True, is_user_consenting=True))


def axe_violations(driver: WebDriver, impact: Iterable[str] = ("serious", "critical"),
                   ) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.0/2.1 A and AA violations of the page shown, of the given impacts.

    axe is injected through WebDriver (CDP's Runtime, which the page's Content-Security-Policy
    does not govern: test_browser_harness pins that under the gateway's CSP)."""
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}, resultTypes:"
        " ['violations']}).then(r => done(JSON.stringify(r.violations)),"
        " e => done(JSON.stringify({error: String(e)})));", list(WCAG_TAGS))
    found = json.loads(result)
    assert isinstance(found, list), f"axe failed: {found}"
    wanted = set(impact)
    return [v for v in found if v.get("impact") in wanted]


def describe(violations: list[dict[str, Any]]) -> str:
    """A failing assertion's message: each rule, its impact and the elements it found."""
    return "\n".join(f"{v['id']} ({v['impact']}): {v['help']}: "
                     + ", ".join(str(n.get("target")) for n in v.get("nodes", []))
                     for v in violations)


def screenshot(driver: WebDriver, name: str, *, readme: bool = False) -> Path:
    """The whole page as PNG in the session's screenshot directory; with `readme`, and env
    HWC_SCREENSHOTS set (to docs/screenshots, relative to the repository), there too."""
    path = Path(_state["shots"]) / f"{name}.png"
    width = driver.execute_script("return document.documentElement.scrollWidth")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    data = driver.execute_cdp_cmd("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
    png = base64.b64decode(data["data"])
    path.write_bytes(png)
    target = os.environ.get("HWC_SCREENSHOTS")
    if readme and target:
        readme_path = ROOT / target / f"{name}.png"
        readme_path.parent.mkdir(parents=True, exist_ok=True)
        readme_path.write_bytes(png)
    return path


def profile_dir() -> Path:
    """The browser's profile directory (cache, history, session state) for the sweeps."""
    return Path(_state["profile"])


def screenshots_dir() -> Path:
    """Where this session's screenshots are."""
    return Path(_state["shots"])


def requested_urls(driver: WebDriver) -> list[str]:
    """Every URL the browser asked for in this test so far (documents, scripts, styles, fetches,
    redirects), and the one the address bar shows now."""
    urls: list[str] = _state["urls"]
    for entry in _log(driver, "performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
            urls.append(message["params"].get("documentURL", ""))
    return [*urls, driver.current_url]


def canary_forms(canary: str) -> set[str]:
    """How a value can appear in a URL: as is, percent-encoded, as a form would encode it."""
    return {canary, quote(canary), quote_plus(canary), quote(canary, safe="")}


def assert_no_canary_in_urls(driver: WebDriver, canaries: Iterable[str]) -> None:
    """No canary in the address bar, nor in any URL the browser requested in this test."""
    for url in requested_urls(driver):
        decoded = unquote(url).casefold()
        for canary in canaries:
            for form in canary_forms(canary):
                assert form.casefold() not in url.casefold(), f"{canary!r} in the URL {url}"
            assert canary.casefold() not in decoded, f"{canary!r} in the URL {url}"


def console_errors(driver: WebDriver) -> list[str]:
    """The browser console's errors since the last call (a CSP violation is one)."""
    return [entry["message"] for entry in _log(driver, "browser")
            if entry.get("level") == "SEVERE"]


# The steps a person takes on the pickup pages (ids from gateway/web/templates). Synchronous:
# a test whose gateway runs on its own event loop calls them through asyncio.to_thread.

# What a page in the middle of a navigation answers (Chromium: "Node with given id does not
# belong to the document"): the waits below try again instead of failing.
NAVIGATING = (NoSuchElementException, StaleElementReferenceException, WebDriverException)


def wait_id(driver: WebDriver, element_id: str, timeout: float = 15) -> WebElement:
    """The element once it is on the page (after a navigation or a passkey ceremony)."""
    found: WebElement = WebDriverWait(driver, timeout, ignored_exceptions=NAVIGATING).until(
        lambda d: d.find_element(By.ID, element_id))
    return found


def text_of(driver: WebDriver, element_id: str, timeout: float = 15) -> str:
    """The element's text once it is on the page (read in the same try as the finding)."""
    text: str = WebDriverWait(driver, timeout, ignored_exceptions=NAVIGATING).until(
        lambda d: d.find_element(By.ID, element_id).text or " ")
    return text.strip()


def new_document(driver: WebDriver, action: Callable[[], object]) -> None:
    """Do `action` (a click that submits, a link) and wait until another document is loaded:
    the old one carries a mark the new one lacks."""
    driver.execute_script("window.hwcOld = true")
    action()

    def loaded(d: WebDriver) -> bool:
        return bool(d.execute_script(
            "return window.hwcOld === undefined && document.readyState === 'complete'"))

    WebDriverWait(driver, 15, ignored_exceptions=NAVIGATING).until(loaded)


def fill(driver: WebDriver, element_id: str, text: str, submit: str) -> None:
    """Type `text` into a field and press the form's button; waits for the next page."""
    field = wait_id(driver, element_id)
    field.clear()
    field.send_keys(text)
    new_document(driver, driver.find_element(By.ID, submit).click)


def passkey(driver: WebDriver, leaves: str) -> str:
    """Press the passkey button; waits until the browser left the page `leaves` (a path end),
    or the status line says why not. The status line's text, "" when the page changed."""
    button = wait_id(driver, "passkey-button")
    button.click()

    def settled(d: WebDriver) -> tuple[str] | bool:
        # A tuple: the wait ends on any answer, also on "" (the page changed).
        if not d.current_url.endswith(leaves):
            return ("",) if d.execute_script("return document.readyState") == "complete" \
                else False
        status = d.find_element(By.ID, "passkey-status").text
        return (status,) if status and not status.startswith("Even geduld") and \
            button.is_enabled() else False

    result = WebDriverWait(driver, 15, ignored_exceptions=NAVIGATING).until(settled)
    assert isinstance(result, tuple)
    return str(result[0])


def enrol_with_passkey(driver: WebDriver, url: str, code: str) -> None:
    """The enrolment link, the phone code, a new passkey: the page that says it is done."""
    driver.get(url)
    fill(driver, "code", code, "code-submit")
    wait_id(driver, "code-ok")
    assert passkey(driver, "/kiezen") == ""
    wait_id(driver, "done")


def open_with_passkey(driver: WebDriver, url: str) -> None:
    """The pickup link and the passkey: the notice page."""
    driver.get(url)
    assert passkey(driver, url[-20:]) == ""
    wait_id(driver, "teacher-text")


def phone(driver: WebDriver) -> None:
    """The viewport of a phone held upright (undone by the `browser` fixture)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": PHONE[0], "height": PHONE[1], "deviceScaleFactor": 1, "mobile": True})


def horizontal_overflow(driver: WebDriver) -> int:
    """How many CSS pixels the page is wider than its viewport (0: no sideways scrolling)."""
    overflow: int = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return overflow


def check_page(driver: WebDriver, name: str, canaries: Iterable[str] = (),
               readme: bool = False) -> None:
    """What every page must be: a screenshot taken, no serious or critical axe violation, no
    CSP violation in the console, no canary in any URL."""
    screenshot(driver, name, readme=readme)
    violations = axe_violations(driver)
    assert violations == [], f"{name}: {describe(violations)}"
    csp = [e for e in console_errors(driver) if "Content Security Policy" in e]
    assert csp == [], f"{name}: {csp}"
    assert_no_canary_in_urls(driver, canaries)


@contextlib.asynccontextmanager
async def other_site(pages: dict[str, str]) -> AsyncIterator[str]:
    """HTML pages of another site on the test's own event loop: http://127.0.0.1:PORT, which
    is not the same site as the gateway's http://localhost (what an attacker's page is)."""
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=pages[request.path], content_type="text/html")

    app = web.Application()
    for path in pages:
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        await web.SockSite(runner, sock).start()
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        await runner.cleanup()
        sock.close()
