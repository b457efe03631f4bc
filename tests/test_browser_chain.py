"""The whole way of a pickup notice, in a real browser against a running gateway: the
administrator's `schools add --pickup`, the enrolment mail at the relay, the phone code and a
passkey; a signal from the sender, the neutral notification mail, a mail scanner's fetch, the
link, the passkey, the notice, "Gelezen" and the receipts that stop the escalation. The notice
page here is the README's screenshot (an invented child); the same way with canary data leaves
the child's name, birth date, BSN and case reference in no URL, log line, mail, database file
or browser profile."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import logging
import re
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    text_of,
    wait_id,
)
from conftest import (
    PUPILS_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    Harness,
    HarnessFactory,
    free_port,
    start_relay,
)
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from test_cli import run_async
from test_cli_pickup import CODE_LINE
from test_process import CANARY_BIRTH, CANARY_BSN, CANARY_NAME, CANARY_STRINGS

from gateway.admin.pupils import pupils_import
from gateway.core.model import CODEWORD
from gateway.delivery.pickupmail import SUBJECT
from gateway.devkit.demokit import Received, SchoolInbox, json_payload
from gateway.observe.logs import configure

SCHOOL = "56EF00"  # Sint-Jozefschool: in the DUO list, not yet participating
CONTACT = "ib@sintjozef.example.nl"
HELPDESK = "Bel Leerplicht Utrecht: 030 123 45 67."
LOTTE = ("Lotte Visser", dt.date(dt.date.today().year - 8, 5, 17))  # invented for the README
CANARY_CASE = "VT-CANARY-9"
CANARIES = [*CANARY_STRINGS, CANARY_CASE]


@dataclass
class Gateway:
    h: Harness
    relay: SchoolInbox
    log: Path


@pytest.fixture
async def gateway(harness_factory: HarnessFactory, tmp_path: Path) -> AsyncIterator[Gateway]:
    """A running gateway with its pages on http://localhost (a secure context for WebAuthn),
    mail to schools without a route through a relay, logging down to DEBUG into a file."""
    port = free_port()
    web = (f'[web]\nlisten = "127.0.0.1:{port}"\npublic_url = "http://localhost:{port}"\n'
           f'helpdesk = "{HELPDESK}"\n')
    h = await harness_factory(extra_config=web)
    relay = await start_relay(h)
    configure(json=True, level=logging.DEBUG)
    with (tmp_path / "gateway.jsonl").open("w", encoding="utf-8") as log:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(log))
        try:
            yield Gateway(h, relay, tmp_path / "gateway.jsonl")
        finally:
            configure(json=True)


def mail_text(mail: Received) -> str:
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


def link_in(mail: Received, path: str) -> str:
    found = re.search(rf"http://localhost:\d+/{path}/[A-Za-z0-9_-]{{43}}", mail_text(mail))
    assert found is not None, mail_text(mail)
    return found[0]


async def enrol(gw: Gateway, browser: WebDriver, capsys: pytest.CaptureFixture[str]) -> None:
    """What the administrator and the contact do: `schools add --pickup`, the code read out
    on the phone, the link from the mail, a passkey."""
    status, out, err = await run_async(capsys, "--config", str(gw.h.ctx.config.path),
                                       "schools", "add", SCHOOL, "--email", CONTACT, "--pickup")
    assert status == 0, err
    found = CODE_LINE.search(out)
    assert found is not None, out
    await gw.h.drain()
    [mail] = [m for m in gw.relay.received if m.rcpt_tos == [CONTACT]]
    await asyncio.to_thread(enrol_with_passkey, browser, link_in(mail, "inschrijven"),
                            found["code"])
    await gw.h.ctx.refresh(force=True)
    assert (SCHOOL, CONTACT) in gw.h.ctx.snapshot.enrolled


async def signal_for(gw: Gateway, name: str, born: dt.date, **extra: str) -> Received:
    """The child in the register at the pickup school, a signal for it; the notification
    mail the contact gets."""
    line = f"{extra.pop('bsn', '')};{name};{born:%d-%m-%Y};{SCHOOL}\n"
    await pupils_import(gw.h.ctx, (PUPILS_CSV + line).encode(), False)
    await gw.h.ctx.refresh(force=True)
    reply = await gw.h.send(gw.h.signal(json_payload(
        [{"name": name, "birthdate": born.isoformat()}], **extra)))
    assert reply.code == 250, reply
    await gw.h.drain()
    [mail] = [m for m in gw.relay.received
              if m.rcpt_tos == [CONTACT] and SUBJECT in m.data.decode("ascii", "replace")]
    return mail


def scan(url: str) -> int:
    """A mail scanner's fetch of the link (no cookies, no script)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return int(response.status)


def read(browser: WebDriver, url: str, canaries: list[str], readme: bool = False) -> str:
    """The person: the link, the passkey, the notice (its text), "Gelezen", the thanks."""
    browser.get(url)
    check_page(browser, "chain-landing", canaries)
    assert passkey(browser, url[-20:]) == ""
    wait_id(browser, "teacher-text")
    shown = text_of(browser, "inhoud")
    check_page(browser, "notice" if readme else "chain-notice", canaries, readme=readme)
    new_document(browser, browser.find_element(By.ID, "gelezen").click)
    wait_id(browser, "thanks")
    check_page(browser, "chain-thanks", canaries)
    return shown


async def test_enrol_signal_notify_open_and_read(browser: WebDriver, gateway: Gateway,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """From `schools add --pickup` to "Gelezen": the notification is neutral, a scanner's
    fetch opens nothing, the notice shows "Handle with Care", name, birth date and the
    child's reference (as a PGP notice does); its
    showing and its acknowledgement (via pickup) are receipts and the notice is acknowledged.
    The notice page is docs/screenshots/notice.png when HWC_SCREENSHOTS is set."""
    gw = gateway
    await enrol(gw, browser, capsys)
    name, born = LOTTE
    mail = await signal_for(gw, name, born, reference="VT-2026-0117")
    assert name not in mail.data.decode("utf-8", "replace")
    url = link_in(mail, "bericht")
    assert await asyncio.to_thread(scan, url) == 200
    assert [r for r in await gw.h.receipts() if r.event == "pickup_opened"] == []
    shown = await asyncio.to_thread(read, browser, url, [], True)
    for said in (CODEWORD, name, f"{born:%d-%m-%Y}", "Gelezen"):
        assert said in shown, said
    receipts = await gw.h.receipts()
    [resolved] = [r for r in receipts if r.event == "resolved" and r.school == SCHOOL]
    assert f"Referentie\n{resolved.ref}\n" in shown, shown
    [opened] = [r for r in receipts if r.event == "pickup_opened"]
    [acked] = [r for r in receipts if r.event == "acknowledged"]
    assert (opened.school, opened.detail["contact"]) == (SCHOOL, CONTACT)
    assert (acked.school, acked.detail["via"], acked.detail["contact"]) == (
        SCHOOL, "pickup", CONTACT)
    notice = await gw.h.ctx.store.notices.get(acked.detail["notice"])
    assert notice is not None and notice.acked_at is not None


async def test_canaries_go_nowhere_on_the_whole_way(browser: WebDriver, gateway: Gateway,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A canary child (name, birth date, BSN, case reference) from signal to "Gelezen": on
    the notice page and nowhere else: not in a URL the browser asked for, a mail, a log line,
    a file of the gateway's state or the browser's profile."""
    gw = gateway
    await enrol(gw, browser, capsys)
    mail = await signal_for(gw, CANARY_NAME, CANARY_BIRTH, bsn=CANARY_BSN,
                            reference=CANARY_CASE)
    url = link_in(mail, "bericht")
    shown = await asyncio.to_thread(read, browser, url, CANARIES)
    assert CANARY_NAME in shown  # the sweep looks for what is really there
    await asyncio.to_thread(browser.get, "about:blank")
    assert_no_canary_in_urls(browser, CANARIES)
    mails = [m.data for m in gw.relay.received]
    state = [p for p in gw.h.base.rglob("*") if p.is_file() and not p.name.startswith("S.")]
    profile = [p for p in profile_dir().rglob("*") if p.is_file() and not p.is_symlink()]
    for where, data in [*(("a mail", m) for m in mails),
                        *((str(p), p.read_bytes()) for p in [gw.log, *state, *profile])]:
        for canary in CANARIES:
            assert canary.encode() not in data, f"{canary!r} in {where}"


async def test_a_pgp_notices_acknowledgement_link(browser: WebDriver, gateway: Gateway) -> None:
    """With `[web]` on, a school with a key finds a link in its decrypted notice; its page
    asks for one click, the click is the acknowledgement (via "link"), and the link then says
    it no longer works, naming the helpdesk."""
    gw = gateway
    reply = await gw.h.send(gw.h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))
    assert reply.code == 250, reply
    await gw.h.drain()
    [(text, _, _)] = gw.h.notices(SCHOOL_A)
    found = re.search(r"http://localhost:\d+/bevestig/[A-Za-z0-9_-]+", text)
    assert found is not None, text

    def click() -> tuple[str, str]:
        browser.get(found[0])
        check_page(browser, "ack-1-confirm")
        new_document(browser, browser.find_element(By.ID, "bevestig").click)
        thanks = text_of(browser, "message")
        check_page(browser, "ack-2-thanks")
        browser.get(found[0])
        check_page(browser, "ack-3-used")
        return thanks, text_of(browser, "helpdesk")

    thanks, helpdesk = await asyncio.to_thread(click)
    assert "vastgelegd" in thanks and helpdesk == HELPDESK
    [acked] = [r for r in await gw.h.receipts() if r.event == "acknowledged"]
    assert (acked.school, acked.detail["via"]) == (SCHOOL_A, "link")


async def test_an_unknown_link(browser: WebDriver, gateway: Gateway) -> None:
    """A link with a token nobody was given (mistyped, cut off) is a plain Dutch page that
    names the helpdesk, for a pickup and for an enrolment link alike."""
    origin = gateway.h.ctx.config.web.public_url
    token = "A" * 43

    def visit(path: str) -> tuple[str, str]:
        browser.get(f"{origin}/{path}/{token}")
        check_page(browser, f"unknown-{path}")
        return browser.find_element(By.TAG_NAME, "h1").text, text_of(browser, "helpdesk")

    for path in ("bericht", "inschrijven"):
        assert await asyncio.to_thread(visit, path) == ("Link niet geldig", HELPDESK)
