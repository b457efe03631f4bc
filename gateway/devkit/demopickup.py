"""The demo's school without a key: its enrolment, its notification mail, its pickup page.

Takes the running gateway's `[web]` origin, the mails a loopback inbox received, the phone code
the administrator was given, and the contact's address; plays the contact over real HTTP
against the running pages (aiohttp's client, keeping cookies as a browser does and sending
`Origin` with each form): enrols with an authenticator app (a passkey needs a real browser's
WebAuthn, which the browser tests drive), opens a notice with the app's code, presses
"Gelezen", and follows an OpenPGP notice's acknowledgement link. Produces lines on screen: each
request with its answer, and each page as its visible text (`visible_lines`). Fails: a page
that does not answer as a person would expect raises `DemoError` with what was expected.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import aiohttp
import pyotp

from gateway.devkit.demokit import Received

# Elements whose text starts and ends a line of the page as a reader sees it.
_BLOCKS = frozenset({"p", "h1", "h2", "h3", "dt", "dd", "li", "button", "label", "section",
                     "form", "div", "dl", "ol", "ul", "main", "header", "footer"})
_UNSEEN = frozenset({"script", "style", "svg", "title", "head"})
_VOID = frozenset({"input", "meta", "link", "br", "img", "hr"})
_TOKEN = re.compile(r"/([A-Za-z0-9_-]{20,64})")


class DemoError(Exception):
    """A page did not answer as the demo's contact expected (the demo then fails)."""


def say(text: str = "") -> None:
    print(text, flush=True)


class _VisibleText(HTMLParser):
    """The text of a page's `<main>` as (element, text) blocks, without what is not shown
    (scripts, the QR code's SVG, `hidden` elements)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, str]] = []
        self._parts: list[str] = []
        self._kind = ""
        self._in_main = False
        self._skip: list[str] = []

    def _flush(self) -> None:
        text = " ".join("".join(self._parts).split())
        if text:
            self.blocks.append((self._kind, text))
        self._parts, self._kind = [], ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            return
        if self._skip or tag in _UNSEEN or any(name == "hidden" for name, _ in attrs):
            self._skip.append(tag)
            return
        if tag == "main":
            self._in_main = True
        if tag in _BLOCKS:
            self._flush()
            self._kind = tag

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag in _BLOCKS:
            self._flush()
        if tag == "main":
            self._in_main = False

    def handle_data(self, data: str) -> None:
        if self._in_main and not self._skip:
            self._parts.append(data)


def visible_lines(html: str) -> list[str]:
    """Pure: what a reader sees in a page's main part, one line per paragraph, heading or
    button ("[Gelezen]"), with a term and its value on one line ("Naam: Sanne de Vries")."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    lines: list[str] = []
    blocks = parser.blocks
    for i, (kind, text) in enumerate(blocks):
        if kind == "dd" and i and blocks[i - 1][0] == "dt":
            continue
        if kind == "dt" and i + 1 < len(blocks) and blocks[i + 1][0] == "dd":
            lines.append(f"{text}: {blocks[i + 1][1]}")
        else:
            lines.append(f"[{text}]" if kind == "button" else text)
    return lines


def shown_path(url: str) -> str:
    """Pure: a URL's path with each link token cut short, for a line on screen."""
    return _TOKEN.sub(lambda m: f"/{m[1][:6]}…", urlsplit(url).path)


@dataclass(frozen=True)
class Page:
    """One answer of the pages: its status, where a 303 sends the browser, and its HTML."""

    url: str
    status: int
    location: str
    html: str

    def lines(self) -> list[str]:
        return visible_lines(self.html)

    def title(self) -> str:
        found = re.search(r"<h1>(.*?)</h1>", self.html, re.S)
        return " ".join(found[1].split()) if found else ""

    def element(self, element_id: str) -> str:
        """The visible text of the element with id `element_id`."""
        found = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', self.html, re.S)
        if found is None:
            raise DemoError(f"{shown_path(self.url)} has no element #{element_id}")
        return " ".join(found[1].split())

    def csrf(self) -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.html)
        if found is None:
            raise DemoError(f"{shown_path(self.url)} has no form")
        return found[1]

    def summary(self) -> str:
        if self.status in (301, 302, 303):
            return f"{self.status}, on to {shown_path(self.location)}"
        return f"{self.status}: {self.title()!r}"


class Browser:
    """The contact's browser, as far as the demo needs one: cookies kept as a browser keeps
    them (the pages' cookies are `Secure`; browsers treat http://localhost as secure), the
    `Origin` header on every form sent, redirects shown rather than followed."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        jar = aiohttp.CookieJar(treat_as_secure_origin=[origin])
        self.session = aiohttp.ClientSession(cookie_jar=jar)

    async def get(self, url: str) -> Page:
        url = urljoin(self.origin, url)
        async with self.session.get(url, allow_redirects=False) as r:
            return Page(url, r.status, r.headers.get("Location", ""), await r.text())

    async def post(self, url: str, form: dict[str, str]) -> Page:
        url = urljoin(self.origin, url)
        async with self.session.post(url, data=form, allow_redirects=False,
                                     headers={"Origin": self.origin}) as r:
            return Page(url, r.status, r.headers.get("Location", ""), await r.text())

    async def close(self) -> None:
        await self.session.close()


def _expect(page: Page, status: int, what: str) -> Page:
    if page.status != status:
        raise DemoError(f"{what}: {shown_path(page.url)} answered {page.status}, "
                        f"expected {status}: {' / '.join(page.lines())[:300]}")
    return page


def _step(label: str, page: Page) -> None:
    say(f"   {label}\n      -> {page.summary()}")


def _quote(lines: Sequence[str], indent: str = "   ") -> None:
    for line in lines:
        say(f"{indent}| {line}")


def _shows(lines: Sequence[str]) -> None:
    """What a page says, quoted under its request, wrapped as a narrow screen would."""
    for line in lines:
        _quote(textwrap.wrap(line, 84) or [""], "      ")


def mail_of(item: Received) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(item.data)
    assert isinstance(parsed, EmailMessage)
    return parsed


def show_mail(item: Received, title: str) -> str:
    """A plain mail as its reader sees it: who it went to, its subject, its text."""
    mail = mail_of(item)
    text = str(mail.get_content())
    say(f"-- {title}, to {', '.join(item.rcpt_tos)}; Subject: {mail['Subject']!r}")
    _quote(text.rstrip().splitlines())
    return text


def link_in(text: str, path: str) -> str:
    """The first link in `text` to a page under `path` (e.g. "/inschrijven/")."""
    found = re.search(rf"https?://\S+{re.escape(path)}[A-Za-z0-9_-]+", text)
    if found is None:
        raise DemoError(f"no {path} link in the mail")
    return found[0]


@dataclass(frozen=True)
class App:
    """The contact's authenticator app, and the time step of the code it last gave."""

    totp: pyotp.TOTP
    used_step: int

    def next_code(self, now: dt.datetime) -> str:
        """The code the app shows now; within the 30 seconds of a code already used, the next
        one (a code is accepted once, and one step early for a clock a little ahead)."""
        step = max(self.totp.timecode(now), self.used_step + 1)
        return self.totp.generate_otp(step)


async def enrol_with_app(browser: Browser, link: str, phone_code: str) -> App:
    """The contact follows the enrolment mail's link, types the phone code, chooses the app,
    scans (here: reads) its secret and confirms with the app's first code."""
    page = _expect(await browser.get(link), 200, "the enrolment page")
    _step("GET the link from the enrolment mail", page)
    answer = _expect(await browser.post(link, {"csrf": page.csrf(), "code": phone_code}),
                     303, "the phone code")
    _step(f"POST the code given by phone, {phone_code}", answer)
    choice = _expect(await browser.get(answer.location), 200, "the choice")
    _step(f"GET {shown_path(answer.location)}", choice)
    _shows([choice.element("code-ok")])
    ways = " and ".join(repr(w) for w in re.findall(r"<h2>(.*?)</h2>", choice.html))
    say(f"      The page offers two ways, {ways}:\n      the demo takes the app.")
    setup = _expect(await browser.get(f"{link}/app"), 200, "the app's page")
    secret = setup.element("totp-secret")
    _step(f"GET {shown_path(setup.url)}: a QR code to scan, and the key to type in instead",
          setup)
    shown = setup.lines()
    _shows(shown[shown.index(secret) - 1:shown.index(secret) + 1])
    now = dt.datetime.now(dt.UTC)
    totp = pyotp.TOTP(secret.replace(" ", ""))  # the app, given that key
    code = totp.at(now)
    confirmed = _expect(await browser.post(f"{link}/app",
                                           {"csrf": setup.csrf(), "code": code}),
                        303, "the app's first code")
    _step(f"POST the first code the app shows, {code}", confirmed)
    done = _expect(await browser.get(confirmed.location), 200, "the last page")
    _step(f"GET {shown_path(confirmed.location)}", done)
    _shows([done.element("done")])
    return App(totp, totp.timecode(now))


async def open_pickup(browser: Browser, link: str, email: str, app: App) -> None:
    """The contact opens the notification's link, signs in with the app's code, reads the
    notice and presses "Gelezen"."""
    landing = _expect(await browser.get(link), 200, "the landing page")
    _step("GET the link from the mail", landing)
    _shows(landing.lines()[1:2])
    say("      (a mail scanner that fetches the link sees only this page: a GET uses nothing up\n"
        "      and is not an opening)")
    code = app.next_code(dt.datetime.now(dt.UTC))
    signed_in = _expect(await browser.post(f"{link}/code", {
        "csrf": landing.csrf(), "email": email, "code": code}), 303, "the app's code")
    _step(f"POST the contact's address and the code the app shows now, {code}", signed_in)
    notice = _expect(await browser.get(signed_in.location), 200, "the notice page")
    _step(f"GET {shown_path(signed_in.location)}: the notice (each showing is a receipt, "
          "`pickup_opened`)", notice)
    _shows(notice.lines()[1:])
    read = _expect(await browser.post(f"{link}/gelezen", {"csrf": notice.csrf()}),
                   303, "Gelezen")
    _step('POST "Gelezen": the acknowledgement, which stops the escalation', read)
    thanks = _expect(await browser.get(read.location), 200, "the thank-you page")
    _step(f"GET {shown_path(read.location)}", thanks)
    _shows([thanks.element("thanks")])


async def confirm_by_link(browser: Browser, link: str) -> None:
    """An OpenPGP contact follows the acknowledgement link inside the decrypted notice."""
    page = _expect(await browser.get(link), 200, "the acknowledgement page")
    _step(f"GET {shown_path(link)}, the link in the decrypted notice (a GET records nothing)",
          page)
    _shows(page.lines()[1:])
    answer = _expect(await browser.post(link, {"csrf": page.csrf()}), 200, "the confirmation")
    _step(f"POST the page's one button, {page.element('bevestig')!r}", answer)
    _shows([answer.element("message")])
