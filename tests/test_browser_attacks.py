"""What another site can do to the pickup page in the contact's own browser: nothing. It cannot
show the page in a frame (to trick a click on "Gelezen"), and a form on it that posts to the
page gets no session along (SameSite=Strict) and is refused, while the contact is signed in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from browser import (
    browser_fixture,  # noqa: F401  (the fixture browser)
    check_page,
    chrome_fixture,  # noqa: F401  (the fixture chrome)
    console_errors,
    enrol_with_passkey,
    new_document,
    open_with_passkey,
    other_site,
)
from conftest import Template
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from web_rig import Rig, rig_fixture


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    """The pages of a gateway with `[web]` on."""
    async for made in rig_fixture(template, tmp_path):
        yield made


async def signed_in(browser: WebDriver, rig: Rig) -> tuple[str, int]:
    """The contact enrolled, a notice, and the notice open in this browser (a live session):
    the link and the notice id."""
    token, code = await rig.invite()
    await asyncio.to_thread(enrol_with_passkey, browser, f"{rig.origin}/inschrijven/{token}",
                            code)
    link, notice = await rig.pickup()
    url = f"{rig.origin}/bericht/{link}"
    await asyncio.to_thread(open_with_passkey, browser, url)
    return url, notice


async def test_no_other_site_can_frame_the_notice(browser: WebDriver, rig: Rig) -> None:
    """Another site's page with the notice in an iframe gets nothing in it: the browser
    refuses the frame (frame-ancestors 'none') and says so in its console."""
    url, _ = await signed_in(browser, rig)
    page = (f'<!doctype html><html lang="en"><title>Win</title><iframe src="{url}/lezen" '
            'title="prize" width="800" height="600"></iframe></html>')
    async with other_site({"/": page}) as attacker:
        def visit() -> tuple[list[str], list[str]]:
            browser.get(attacker)
            frames = browser.execute_cdp_cmd("Page.getFrameTree", {})["frameTree"]
            loaded = [f["frame"]["url"] for f in frames.get("childFrames", [])]
            return loaded, console_errors(browser)

        loaded, errors = await asyncio.to_thread(visit)
    assert not any("/lezen" in u for u in loaded), loaded
    assert any("frame-ancestors" in e for e in errors), errors


async def test_another_sites_form_cannot_mark_the_notice_read(browser: WebDriver,
                                                              rig: Rig) -> None:
    """While the contact is signed in, a form on another site posting to "Gelezen" (the
    click an attacker's page asks for) is refused: no acknowledgement, the notice unread."""
    url, notice = await signed_in(browser, rig)
    page = (f'<!doctype html><html lang="en"><title>Win</title><form method="post" '
            f'action="{url}/gelezen"><input type="hidden" name="csrf" value="guessed">'
            '<button id="go">Claim your prize</button></form></html>')
    async with other_site({"/": page}) as attacker:
        def click() -> str:
            browser.get(attacker)
            new_document(browser, browser.find_element(By.ID, "go").click)
            check_page(browser, "attack-cross-site-post")
            return str(browser.find_element(By.TAG_NAME, "h1").text)

        title = await asyncio.to_thread(click)
    assert title != "Dank u wel"
    assert await rig.events("acknowledged") == []
    record = await rig.ctx.store.pickups.of_notice(notice)
    assert record is not None and record.read_at is None
