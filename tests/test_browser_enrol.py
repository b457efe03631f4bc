"""Enrolling a pickup contact in a real browser: the phone code, then a passkey (Chromium's
virtual authenticator) or, where the deployment allows it, an authenticator app (pyotp plays
the app); wrong phone codes lock the invitation. Every page passes axe and is photographed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pyotp
import pytest
from browser import (
    browser_fixture,  # noqa: F401  (the fixture browser)
    check_page,
    chrome_fixture,  # noqa: F401  (the fixture chrome)
    enrol_with_passkey,
    fill,
    new_document,
    passkey,
    text_of,
    wait_id,
)
from conftest import Template
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from web_rig import CONTACT, SCHOOL, Rig, rig_fixture


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    """The pages of a gateway with `[web]` on (app codes allowed, 3 wrong codes lock)."""
    async for made in rig_fixture(template, tmp_path):
        yield made


@pytest.fixture
async def rig_no_app(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    """The same with `allow_totp = false`: passkeys only."""
    async for made in rig_fixture(template, tmp_path, "allow_totp = false"):
        yield made


async def kinds(rig: Rig) -> list[str]:
    return [c.kind for c in await rig.ctx.store.pickups.credentials(SCHOOL, CONTACT)]


async def test_enrolment_with_a_passkey(browser: WebDriver, rig: Rig) -> None:
    """The link, the phone code and a passkey: the done page, one passkey stored for the
    contact, the invitation used up (the link then says so)."""
    token, code = await rig.invite()
    url = f"{rig.origin}/inschrijven/{token}"

    def flow() -> None:
        browser.get(url)
        check_page(browser, "enrol-1-code")
        fill(browser, "code", code.lower().replace("-", ""), "code-submit")
        wait_id(browser, "code-ok")
        check_page(browser, "enrol-2-choose")
        assert passkey(browser, "/kiezen") == ""
        wait_id(browser, "done")
        check_page(browser, "enrol-3-done")

    await asyncio.to_thread(flow)
    assert await kinds(rig) == ["passkey"]
    record = await rig.ctx.store.pickups.enrolment_of(SCHOOL, CONTACT)
    assert record is not None and record.used_at is not None

    def again() -> str:
        browser.get(url)
        check_page(browser, "enrol-4-used")
        return str(browser.find_element(By.ID, "message").text)

    assert "al afgerond" in await asyncio.to_thread(again)


async def test_enrolment_with_an_app_where_allowed(browser: WebDriver, rig: Rig) -> None:
    """With `allow_totp` the contact can choose an app: a QR code and the secret as text; the
    app's first code confirms it and the contact has an app credential."""
    token, code = await rig.invite()

    def flow() -> None:
        browser.get(f"{rig.origin}/inschrijven/{token}")
        fill(browser, "code", code, "code-submit")
        new_document(browser, wait_id(browser, "app-link").click)
        secret = text_of(browser, "totp-secret").replace(" ", "")
        assert browser.find_element(By.CSS_SELECTOR, ".qr svg").is_displayed()
        check_page(browser, "enrol-app-1-qr")
        fill(browser, "totp-code", "000000" if pyotp.TOTP(secret).at(rig.clock()) != "000000"
             else "111111", "totp-submit")
        assert text_of(browser, "error")  # a wrong first code: said, not enrolled
        check_page(browser, "enrol-app-2-wrong")
        fill(browser, "totp-code", pyotp.TOTP(secret).at(rig.clock()), "totp-submit")
        wait_id(browser, "done")
        check_page(browser, "enrol-app-3-done")

    await asyncio.to_thread(flow)
    assert await kinds(rig) == ["totp"]


async def test_no_app_where_forbidden(browser: WebDriver, rig_no_app: Rig) -> None:
    """With `allow_totp = false` the choice offers a passkey only, and the app page's address
    typed by hand is a 404 page."""
    token, code = await rig_no_app.invite()

    def flow() -> str:
        browser.get(f"{rig_no_app.origin}/inschrijven/{token}")
        fill(browser, "code", code, "code-submit")
        wait_id(browser, "passkey-button")
        assert browser.find_elements(By.ID, "app-link") == []
        assert "app" not in browser.find_element(By.TAG_NAME, "main").text.lower()
        check_page(browser, "enrol-passkey-only")
        browser.get(f"{rig_no_app.origin}/inschrijven/{token}/app")
        check_page(browser, "enrol-app-forbidden")
        return str(browser.find_element(By.ID, "message").text)

    assert "kan hier niet" in await asyncio.to_thread(flow)
    assert await kinds(rig_no_app) == []


async def test_wrong_phone_codes_lock_the_invitation(browser: WebDriver, rig: Rig) -> None:
    """Three wrong phone codes (the rig's max_failures) lock the link: then even the right
    code gets the "Even geduld" page, and no session is given."""
    token, code = await rig.invite()
    wrong = ("C" if code[0] != "C" else "D") + code[1:]  # well-formed: it counts

    def flow() -> str:
        browser.get(f"{rig.origin}/inschrijven/{token}")
        for _ in range(2):
            fill(browser, "code", wrong, "code-submit")
            assert text_of(browser, "error")
        check_page(browser, "enrol-wrong-code")
        fill(browser, "code", wrong, "code-submit")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Even geduld"
        browser.get(f"{rig.origin}/inschrijven/{token}")
        check_page(browser, "enrol-locked")
        return str(browser.find_element(By.TAG_NAME, "h1").text)

    assert await asyncio.to_thread(flow) == "Even geduld"
    await asyncio.to_thread(enrol_with_passkey_refused, browser, rig.origin, token, code)
    assert await kinds(rig) == []


def enrol_with_passkey_refused(browser: WebDriver, origin: str, token: str, code: str) -> None:
    """While locked, the right code does not reach the choice."""
    browser.get(f"{origin}/inschrijven/{token}")
    assert browser.find_elements(By.ID, "code") == []
    assert browser.find_element(By.TAG_NAME, "h1").text == "Even geduld"


async def test_a_second_passkey_enrolment_is_refused(browser: WebDriver, rig: Rig) -> None:
    """An enrolment link used once cannot enrol another device (a forwarded mail)."""
    token, code = await rig.invite()
    url = f"{rig.origin}/inschrijven/{token}"
    await asyncio.to_thread(enrol_with_passkey, browser, url, code)

    def second() -> str:
        browser.get(url)
        return str(browser.find_element(By.ID, "message").text)

    assert "al afgerond" in await asyncio.to_thread(second)
    assert await kinds(rig) == ["passkey"]
