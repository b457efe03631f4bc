"""Opening a pickup notice in a real browser: the link, the passkey (or an app code), the notice
in Dutch, "Gelezen" and the thank-you page with its receipts; what a mail scanner, a wrong
code, another device, an expired link and a second visit get; a phone-size window. Every page
passes axe and is photographed; the README's screenshot of the notice is made here."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from browser import (
    browser_fixture,  # noqa: F401  (the fixture browser)
    check_page,
    chrome_fixture,  # noqa: F401  (the fixture chrome)
    enrol_with_passkey,
    fill,
    horizontal_overflow,
    new_authenticator,
    new_document,
    open_with_passkey,
    passkey,
    phone,
    text_of,
    wait_id,
)
from conftest import Template
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from web_rig import CONTACT, HELPDESK, TEACHER_TEXT, Rig, rig_fixture

from gateway.crypto import pickupbox

# Demo-like data for the README's screenshot: an invented child.
EVA = {"name": "Eva Jansen", "birthdate": f"{dt.date.today().year - 7}-01-30",
       "ref": f"HWC-{dt.date.today():%Y%m%d}-4K7Q-1"}


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    """The pages of a gateway with `[web]` on (app codes allowed, 3 wrong codes lock)."""
    async for made in rig_fixture(template, tmp_path):
        yield made


async def enrolled(browser: WebDriver, rig: Rig) -> None:
    """The contact enrolled with a passkey in this browser's authenticator."""
    token, code = await rig.invite()
    await asyncio.to_thread(enrol_with_passkey, browser, f"{rig.origin}/inschrijven/{token}",
                            code)


def forget_cookies(browser: WebDriver) -> None:
    """A new visit: the session of the last one is gone (the passkey stays)."""
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})


async def test_notice_opened_with_a_passkey_and_read(browser: WebDriver, rig: Rig) -> None:
    """Link, passkey, the notice ("Handle with Care", name, birth date as DD-MM-YYYY,
    reference, teacher text), "Gelezen", the thank-you page; receipts `pickup_opened` (contact,
    client address) and `acknowledged` via pickup; the notice is marked read by the contact.
    The notice page is the README's screenshot."""
    await enrolled(browser, rig)
    token, notice = await rig.pickup(children=(EVA,))
    url = f"{rig.origin}/bericht/{token}"

    def flow() -> dict[str, str]:
        browser.get(url)
        check_page(browser, "pickup-1-landing")
        assert EVA["name"] not in browser.page_source
        assert passkey(browser, url[-20:]) == ""
        wait_id(browser, "teacher-text")
        check_page(browser, "notice", readme=True)
        shown = {"h1": browser.find_element(By.TAG_NAME, "h1").text,
                 **{c: browser.find_element(By.CLASS_NAME, c).text
                    for c in ("name", "birthdate", "reference")},
                 "teacher": browser.find_element(By.ID, "teacher-text").text}
        new_document(browser, browser.find_element(By.ID, "gelezen").click)
        shown["thanks"] = text_of(browser, "thanks")
        check_page(browser, "pickup-3-thanks")
        return shown

    shown = await asyncio.to_thread(flow)
    born = dt.date.fromisoformat(EVA["birthdate"])
    assert shown["h1"] == "Handle with Care"
    assert (shown["name"], shown["birthdate"], shown["reference"]) == (
        EVA["name"], f"{born:%d-%m-%Y}", EVA["ref"])
    assert shown["teacher"] == TEACHER_TEXT
    assert "gelezen" in shown["thanks"]
    opened = await rig.events("pickup_opened")
    assert [(e["contact"], e["client"] in ("127.0.0.1", "::1")) for e in opened] == [
        (CONTACT, True)]
    acked = await rig.events("acknowledged")
    assert [(e["via"], e["contact"]) for e in acked] == [("pickup", CONTACT)]
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.read_by == CONTACT and record.opened == 1


async def test_a_scanner_fetching_the_link_opens_nothing(browser: WebDriver, rig: Rig) -> None:
    """A mail scanner's GET of the link, and of the notice's address, before the person:
    no receipt, no opening, no wrong code; the person then opens it as the first."""
    await enrolled(browser, rig)
    token, notice = await rig.pickup()
    before = await rig.ctx.store.receipts.all()

    def scan() -> list[int]:
        statuses = []
        for path in (f"/bericht/{token}", f"/bericht/{token}/lezen"):
            with urllib.request.urlopen(rig.origin + path, timeout=10) as response:
                statuses.append(response.status)
        return statuses

    assert await asyncio.to_thread(scan) == [200, 200]  # /lezen: sent back to the landing
    assert await rig.ctx.store.receipts.all() == before
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and (record.opened, record.first_opened_at) == (0, None)
    digest = pickupbox.token_digest(rig.ctx.vault, token)
    assert await rig.ctx.store.pickups.throttle("link", digest) is None
    await asyncio.to_thread(open_with_passkey, browser, f"{rig.origin}/bericht/{token}")
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.opened == 1 and record.first_opened_at is not None


async def test_wrong_app_codes_lock_the_link(browser: WebDriver, rig: Rig) -> None:
    """Three wrong app codes (the rig's max_failures) lock the link: the right code then gets
    the "Even geduld" page; after lock_minutes the right code opens the notice."""
    totp = await rig.add_totp()
    token, _ = await rig.pickup()
    url = f"{rig.origin}/bericht/{token}"
    right = totp.at(rig.clock())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"

    def attempt(code: str) -> str:
        wait_id(browser, "email").clear()
        browser.find_element(By.ID, "email").send_keys(CONTACT)
        fill(browser, "totp-code", code, "totp-submit")
        return str(browser.find_element(By.TAG_NAME, "h1").text)

    def wrong_codes() -> list[str]:
        browser.get(url)
        seen = [attempt(wrong), attempt(wrong)]
        check_page(browser, "pickup-wrong-code")
        seen.append(attempt(wrong))
        check_page(browser, "pickup-locked")
        browser.get(url)
        seen.append(str(browser.find_element(By.TAG_NAME, "h1").text))
        return seen

    titles = await asyncio.to_thread(wrong_codes)
    assert titles[:2] == [titles[0]] * 2 and titles[0] != "Even geduld"
    assert titles[2:] == ["Even geduld", "Even geduld"]
    rig.clock.advance(minutes=16)

    def right_code() -> None:
        browser.get(url)
        attempt(totp.at(rig.clock()))
        wait_id(browser, "teacher-text")

    await asyncio.to_thread(right_code)


async def test_another_devices_passkey_does_not_open(browser: WebDriver, rig: Rig) -> None:
    """A browser without the enrolled passkey (another authenticator) stays on the landing
    page with a Dutch explanation; the notice is not opened."""
    await enrolled(browser, rig)
    token, notice = await rig.pickup()
    new_authenticator(browser)
    url = f"{rig.origin}/bericht/{token}"

    def flow() -> str:
        forget_cookies(browser)
        browser.get(url)
        status = passkey(browser, url[-20:])
        check_page(browser, "pickup-other-device")
        return status

    status = await asyncio.to_thread(flow)
    assert status.startswith("Dat ")
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.opened == 0


async def test_an_expired_link_says_whom_to_call(browser: WebDriver, rig: Rig) -> None:
    """Past its expiry the link shows "Link verlopen" and the helpdesk text, no way in."""
    await enrolled(browser, rig)
    token, _ = await rig.pickup(hours=30)
    rig.clock.advance(hours=31)

    def flow() -> tuple[str, str, str, int]:
        browser.get(f"{rig.origin}/bericht/{token}")
        check_page(browser, "pickup-expired")
        return (browser.find_element(By.TAG_NAME, "h1").text,
                browser.find_element(By.ID, "message").text,
                browser.find_element(By.ID, "helpdesk").text,
                len(browser.find_elements(By.ID, "passkey-button")))

    title, text, helpdesk, buttons = await asyncio.to_thread(flow)
    assert (title, helpdesk, buttons) == ("Link verlopen", HELPDESK, 0)
    assert "verlopen" in text


async def test_a_link_reused_after_reading(browser: WebDriver, rig: Rig) -> None:
    """After "Gelezen", a later visit with the link needs the passkey again and shows the
    notice as read (when), without a second "Gelezen"; no second acknowledgement."""
    await enrolled(browser, rig)
    token, _ = await rig.pickup()
    url = f"{rig.origin}/bericht/{token}"

    def first() -> None:
        open_with_passkey(browser, url)
        new_document(browser, browser.find_element(By.ID, "gelezen").click)
        wait_id(browser, "thanks")

    def again() -> tuple[int, int, str]:
        forget_cookies(browser)
        browser.get(url + "/lezen")  # without the session: back to the landing
        landing = len(browser.find_elements(By.ID, "passkey-button"))
        assert passkey(browser, url[-20:]) == ""
        read_at = text_of(browser, "read-at")
        check_page(browser, "pickup-reused")
        return landing, len(browser.find_elements(By.ID, "gelezen")), read_at

    await asyncio.to_thread(first)
    landing, buttons, read_at = await asyncio.to_thread(again)
    assert (landing, buttons) == (1, 0) and "gelezen" in read_at
    assert len(await rig.events("acknowledged")) == 1
    assert len(await rig.events("pickup_opened")) == 2


async def test_the_notice_fits_a_phone(browser: WebDriver, rig: Rig) -> None:
    """On a 390x844 phone screen the landing, the notice and the thank-you page need no
    sideways scrolling and pass axe; nor does the notice at 320 pixels wide."""
    await enrolled(browser, rig)
    long_name = {**EVA, "name": "Eva Zwaluwstaart-Vandenberghe-Oosterhuis van Rijckevorsel"}
    token, _ = await rig.pickup(children=(long_name, EVA))
    url = f"{rig.origin}/bericht/{token}"

    def flow() -> list[int]:
        phone(browser)
        browser.get(url)
        check_page(browser, "phone-1-landing")
        overflow = [horizontal_overflow(browser)]
        assert passkey(browser, url[-20:]) == ""
        wait_id(browser, "teacher-text")
        check_page(browser, "phone-2-notice")
        overflow.append(horizontal_overflow(browser))
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
            "width": 320, "height": 640, "deviceScaleFactor": 1, "mobile": True})
        overflow.append(horizontal_overflow(browser))  # WCAG 1.4.10 reflow: 320 CSS pixels
        phone(browser)
        new_document(browser, browser.find_element(By.ID, "gelezen").click)
        wait_id(browser, "thanks")
        check_page(browser, "phone-3-thanks")
        overflow.append(horizontal_overflow(browser))
        return overflow

    assert await asyncio.to_thread(flow) == [0, 0, 0, 0]


async def test_the_browser_keeps_the_session_out_of_reach(browser: WebDriver, rig: Rig) -> None:
    """As the browser holds them after opening a notice: every cookie HttpOnly (no script
    reads it), SameSite=Strict, Secure, for this host only; the session's lapses within
    `session_minutes`, the others end with the browser."""
    await enrolled(browser, rig)
    token, _ = await rig.pickup()

    def flow() -> tuple[str, list[dict[str, Any]]]:
        open_with_passkey(browser, f"{rig.origin}/bericht/{token}")
        readable = str(browser.execute_script("return document.cookie"))
        return readable, browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]

    readable, cookies = await asyncio.to_thread(flow)
    assert readable == ""
    assert {c["name"] for c in cookies} == {"csrf", "session"}
    for cookie in cookies:
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"],
                cookie["domain"]) == (True, True, "Strict", "/", "localhost"), cookie
    lapses = {c["name"]: c["expires"] - time.time() for c in cookies}
    assert 0 < lapses["session"] <= rig.ctx.config.web.session_minutes * 60
    assert lapses["csrf"] < 0  # -1: a session cookie, gone when the browser closes


async def test_back_after_the_session_lapsed_shows_no_notice(browser: WebDriver,
                                                             rig: Rig) -> None:
    """On a shared computer: the contact read the notice and went on to another page; once
    the session lapsed, the browser's Back button brings the landing page, not the notice
    (Chromium keeps even a no-store page in its back-forward cache for a few minutes: the
    notice page's script fetches a restored page anew, so the server decides)."""
    await enrolled(browser, rig)
    token, _ = await rig.pickup()
    url = f"{rig.origin}/bericht/{token}"
    await asyncio.to_thread(open_with_passkey, browser, url)
    await asyncio.to_thread(browser.get, f"{rig.origin}/inschrijven/{'B' * 43}")
    rig.clock.advance(minutes=rig.ctx.config.web.session_minutes + 1)

    def back() -> tuple[str, int, int]:
        new_document(browser, browser.back)
        check_page(browser, "pickup-back-after-session")
        return (browser.current_url, len(browser.find_elements(By.ID, "teacher-text")),
                len(browser.find_elements(By.ID, "passkey-button")))

    current, notices, buttons = await asyncio.to_thread(back)
    assert (notices, buttons) == (0, 1), current


def tab_to(browser: WebDriver, element_id: str) -> None:
    """Press Tab on a freshly loaded page (the focus at its top) until `element_id` has the
    focus (at most 20 times)."""
    for _ in range(20):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        if browser.switch_to.active_element.get_attribute("id") == element_id:
            return
    raise AssertionError(f"Tab never reaches #{element_id}")


async def test_with_the_keyboard_only(browser: WebDriver, rig: Rig) -> None:
    """Without a mouse (WCAG 2.1.1): Tab reaches the passkey button and Enter opens the
    notice; Tab reaches "Gelezen" and Enter records it."""
    await enrolled(browser, rig)
    token, _ = await rig.pickup()
    url = f"{rig.origin}/bericht/{token}"

    def flow() -> str:
        browser.get(url)
        tab_to(browser, "passkey-button")
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        wait_id(browser, "teacher-text")
        tab_to(browser, "gelezen")
        new_document(browser, ActionChains(browser).send_keys(Keys.ENTER).perform)
        return text_of(browser, "thanks")

    assert "gelezen" in await asyncio.to_thread(flow)
    assert len(await rig.events("acknowledged")) == 1
