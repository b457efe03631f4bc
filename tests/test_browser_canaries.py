"""The canary sweep of the pickup page: a child with a name, birth date, BSN and case reference
that occur nowhere else is enrolled for, opened and read in a real browser; none of them is in
any URL the browser asked for (the address bar included), in the gateway's log lines, in its
database files or in the browser's profile (its cache: pages are `no-store`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import structlog
from browser import (
    assert_no_canary_in_urls,
    browser_fixture,  # noqa: F401  (the fixture browser)
    check_page,
    chrome_fixture,  # noqa: F401  (the fixture chrome)
    enrol_with_passkey,
    new_document,
    passkey,
    profile_dir,
    wait_id,
)
from conftest import Template
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from test_process import CANARY_BIRTH, CANARY_BSN, CANARY_NAME, CANARY_STRINGS
from web_rig import Rig, rig_fixture

from gateway.observe.logs import configure

CASE_REFERENCE = "VT-CANARY-7"
CANARIES = [*CANARY_STRINGS, CASE_REFERENCE, f"{CANARY_BIRTH:%d-%m-%Y}"]


@pytest.fixture
async def rig(template: Template, tmp_path: Path) -> AsyncIterator[Rig]:
    """The pages of a gateway with `[web]` on, logging everything down to DEBUG as JSON lines
    into the file `log.jsonl` beside its state."""
    configure(json=True, level=logging.DEBUG)
    with (tmp_path / "log.jsonl").open("w", encoding="utf-8") as log:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(log))
        try:
            async for made in rig_fixture(template, tmp_path):
                yield made
        finally:
            configure(json=True)  # back to stdout for the tests that follow


def _files(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and not p.name.startswith("S.")]


async def test_no_canary_outside_the_notice_page(browser: WebDriver, rig: Rig,
                                                 tmp_path: Path) -> None:
    """Enrolment, landing, passkey, notice (which does show the name: the sweep is not
    vacuous), "Gelezen", thanks: no canary in a URL, a log line, the database or the
    browser's profile."""
    token, code = await rig.invite()
    child = {"name": CANARY_NAME, "birthdate": CANARY_BIRTH.isoformat(), "bsn": CANARY_BSN,
             "child_ref": "HWC-20260101-CNRY-1", "reference": CASE_REFERENCE}
    pickup, _ = await rig.pickup(children=(child,))
    url = f"{rig.origin}/bericht/{pickup}"

    def flow() -> str:
        enrol_with_passkey(browser, f"{rig.origin}/inschrijven/{token}", code)
        browser.get(url)
        check_page(browser, "canary-landing", CANARIES)
        assert passkey(browser, url[-20:]) == ""
        wait_id(browser, "teacher-text")
        shown = str(browser.find_element(By.CLASS_NAME, "name").text)
        check_page(browser, "canary-notice", CANARIES)
        new_document(browser, browser.find_element(By.ID, "gelezen").click)
        wait_id(browser, "thanks")
        check_page(browser, "canary-thanks", CANARIES)
        browser.back()  # the notice again from history: no-store, so asked for anew
        browser.get("about:blank")
        assert_no_canary_in_urls(browser, CANARIES)
        return shown

    assert await asyncio.to_thread(flow) == CANARY_NAME
    logged = (tmp_path / "log.jsonl").read_text(encoding="utf-8")
    assert '"event": "pickup.opened"' in logged  # the log is where we look
    base = rig.ctx.config.storage.path.parent
    for path in [tmp_path / "log.jsonl", *_files(base, profile_dir())]:
        data = path.read_bytes()
        for canary in CANARIES:
            assert canary.encode() not in data, f"{canary!r} in {path}"
            assert canary.encode("utf-16-le") not in data, f"{canary!r} in {path} (UTF-16)"
