"""The laboratory's pickup page: `[web]` turned on, a school without a key, its contact enrolled.

Takes a set-up `Lab`; `ensure_web` (once, at the first web attack: with `[web]` on, OpenPGP
notices carry an acknowledgement link instead of the `ack+TOKEN@` address attack 5 needs)
stops the daemon, sets `[web] listen` (a free loopback port) and `public_url`
(`http://localhost:PORT`) with line edits in the config copy, adds one pickup school
(`schools add CODE --email ADDR --pickup --route ...`, whose enrolment code the CLI prints) and
a pupil of it, starts the daemon again and enrols the contact over HTTP with an authenticator
app (pyotp), as the README's contact would. Produces `Web`: a small HTTP client (`Http`, raw
`http.client`, cookies kept by hand, every answer kept for the header check), the contact's app,
and the secrets of the run (tokens, code, app secret) for the sweep. Also: a fresh pickup
notice and its link (`pickup_notice`), signing in with the app (`sign_in`). A step the gateway
refuses raises `RuntimeError` with one line.
"""

from __future__ import annotations

import datetime as dt
import http.client
import re
import time
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import urlencode

import pyotp
from common import ref_of, rid
from lab import Lab, set_key, toml_str
from lab_mail import birth, bsn_with_prefix, signal_json
from lab_smtp import HOST, FakeServer, free_port

PICKUP_CODE, PICKUP_NAME = "90IJ00", "OBS De Linde"
PICKUP_CONTACT = "ib@linde.example.nl"
# The pickup school's pupil: (BSN, name, birth date, school), as lab_mail.pupils() has them.
PICKUP_PUPIL = (bsn_with_prefix("91234567"), "Tijmen Hoekstra", birth(9, 8, 17), PICKUP_CODE)
TOKEN_RE = re.compile(r"/(bericht|inschrijven|bevestig)/([A-Za-z0-9_-]{20,64})")


@dataclass
class Resp:
    method: str
    path: str  # tokens cut short: for the report
    status: int
    headers: list[tuple[str, str]]
    body: str
    elapsed: float

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def csrf(self) -> str:
        m = re.search(r'name="csrf" value="([^"]+)"', self.body)
        if m is None:
            raise RuntimeError(f"{self.method} {self.path} ({self.status}) has no form")
        return m.group(1)

    def element(self, element_id: str) -> str:
        m = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', self.body, re.S)
        return " ".join(m.group(1).split()) if m else ""

    def __str__(self) -> str:
        title = re.search(r"<h1>(.*?)</h1>", self.body, re.S)
        shown = f" {' '.join(title.group(1).split())!r}" if title else ""
        loc = self.header("Location")
        return f"{self.status}{shown}" + (f" -> {cut(loc)}" if loc else "")


def cut(text: str) -> str:
    """A path or URL with each link token cut to six characters (for the report)."""
    return TOKEN_RE.sub(lambda m: f"/{m.group(1)}/{m.group(2)[:6]}…", text)


@dataclass
class Http:
    """A browser as far as the attacks need one: one connection per request, cookies kept
    by hand (also `Secure` ones over http://localhost), every answer kept in `seen`."""

    port: int
    origin: str
    seen: list[Resp]
    jar: dict[str, str] = field(default_factory=dict)
    timeout: float = 20.0

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, cookies: bool = True) -> Resp:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        send = {"Host": self.origin.split("//", 1)[1], "User-Agent": "hwc-attack"}
        if cookies and self.jar:
            send["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        send.update(headers or {})
        started = time.monotonic()
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in send.items():
                conn.putheader(k, v)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            r = conn.getresponse()
            data = r.read()
            resp = Resp(method, cut(path), r.status, list(r.getheaders()),
                        data.decode("utf-8", "replace"), time.monotonic() - started)
        finally:
            conn.close()
        for raw in resp.cookies():
            name, _, value = raw.split(";", 1)[0].partition("=")
            if cookies:
                self.jar[name.strip()] = value.strip()
        self.seen.append(resp)
        return resp

    def get(self, path: str, **kw: Any) -> Resp:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str], origin: str | None = "",
             extra: dict[str, str] | None = None) -> Resp:
        """A form as a browser sends it; `origin` "" is ours, None leaves the header out."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if origin is not None:
            headers["Origin"] = origin or self.origin
        headers.update(extra or {})
        return self.request("POST", path, urlencode(form).encode(), headers)


@dataclass
class Web:
    port: int
    origin: str
    phone_code: str
    enrol_token: str
    app: pyotp.TOTP
    used_step: int
    seen: list[Resp] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)
    first_link: str = ""  # W1's notice, which later attacks reuse
    reader: Http | None = None  # W1's signed-in browser

    def browser(self) -> Http:
        return Http(self.port, self.origin, self.seen)

    def next_code(self) -> str:
        """The app's code for a step after the last one used (waiting for the clock when the
        next step is more than one ahead: the page takes one step early, no more)."""
        want = self.used_step + 1
        while self.app.timecode(dt.datetime.now(dt.UTC)) < want - 1:
            time.sleep(0.5)
        step = max(want, self.app.timecode(dt.datetime.now(dt.UTC)))
        self.used_step = step
        return self.app.generate_otp(step)


def mail_text(data: bytes) -> str:
    msg = BytesParser(policy=policy.default).parsebytes(data)
    try:
        return str(msg.get_content())
    except (AttributeError, KeyError, LookupError):
        return data.decode("utf-8", "replace")


def link_token(text: str, kind: str) -> str | None:
    m = re.search(rf"https?://\S+/{kind}/([A-Za-z0-9_-]{{20,64}})", text)
    return m.group(1) if m else None


def ensure_web(lab: Lab) -> Web:
    """`[web]` on, the pickup school added and its contact enrolled (once per run)."""
    if isinstance(lab.web, Web):
        return lab.web
    port = free_port()
    origin = f"http://localhost:{port}"
    lab.stop_daemon()
    text = lab.config.read_text()
    text = set_key(text, "web", "listen", toml_str(f"{HOST}:{port}"))
    text = set_key(text, "web", "public_url", toml_str(origin))
    # One minute, so that attack W3 sees the lock end (a deployment keeps its 15).
    text = set_key(text, "web", "lock_minutes", "1")
    lab.config.write_text(text)
    lab.must("check-config")
    assert lab.servers is not None
    lab.inbox[PICKUP_CODE] = lab.servers.add(FakeServer(PICKUP_CODE))
    out = lab.must("schools", "add", PICKUP_CODE, "--name", PICKUP_NAME, "--email",
                   PICKUP_CONTACT, "--pickup", "--route",
                   f"{HOST}:{lab.inbox[PICKUP_CODE].port}")
    m = re.search(r"enrolment code for \S+: ([A-Z0-9]{4}-[A-Z0-9]{4})", out)
    if m is None:
        raise RuntimeError(f"schools add --pickup printed no enrolment code: {out[-200:]}")
    lab.pupils.append(PICKUP_PUPIL)
    csv = "bsn;naam;geboortedatum;vestigingscode\n" + "".join(
        f"{b};{n};{d:%d-%m-%Y};{s}\n" for b, n, d, s in lab.pupils)
    (lab.base / "leerlingen.csv").write_text(csv)
    lab.must("pupils", "import", str(lab.base / "leerlingen.csv"))
    lab.add_canary(PICKUP_PUPIL[1], PICKUP_PUPIL[2], PICKUP_PUPIL[0])
    lab.start_daemon()
    # The enrolment mail goes where the school's notices go: its route.
    school = lab.inbox[PICKUP_CODE]
    mail = lab.wait_for(lambda: [g for g in school.all() if PICKUP_CONTACT in g.rcpt_tos
                                 and b"/inschrijven/" in g.data.replace(b"=\r\n", b"")], 30)
    token = link_token(mail_text(mail[-1].data), "inschrijven") if mail else None
    if token is None:
        raise RuntimeError("no enrolment mail with a link reached the school's server in 30 s")
    web = Web(port, origin, m.group(1), token, pyotp.TOTP(pyotp.random_base32()), 0)
    web.secrets.update({token, m.group(1), m.group(1).replace("-", "")})
    enrol(web)
    lab.web = web
    return web


def enrol(web: Web) -> None:
    """The contact's enrolment: the phone code, then the authenticator app."""
    b = web.browser()
    base = f"/inschrijven/{web.enrol_token}"
    page = b.get(base)
    answer = b.post(base, {"csrf": page.csrf(), "code": web.phone_code})
    if answer.status != 303:
        raise RuntimeError(f"the enrolment code was refused: {answer}")
    b.get(f"{base}/kiezen")
    setup = b.get(f"{base}/app")
    secret = setup.element("totp-secret").replace(" ", "")
    if not secret:
        raise RuntimeError(f"the app page shows no secret: {setup}")
    web.secrets.add(secret)
    web.app = pyotp.TOTP(secret)
    web.used_step = web.app.timecode(dt.datetime.now(dt.UTC)) - 1
    done = b.post(f"{base}/app", {"csrf": setup.csrf(), "code": web.next_code()})
    if done.status != 303:
        raise RuntimeError(f"the app's first code was refused: {done}")
    b.get(f"{base}/klaar")


def pickup_notice(lab: Lab, web: Web, tag: str) -> tuple[str, str, bytes]:
    """A signal for the pickup pupil; (gateway reference, link token, the notification mail)
    once that mail reached the school's server."""
    before = len(lab.inbox[PICKUP_CODE].all())
    child = {"name": PICKUP_PUPIL[1], "birthdate": PICKUP_PUPIL[2].isoformat(),
             "bsn": PICKUP_PUPIL[0]}
    reply = lab.submit(lab.signal(signal_json([child], f"VT-{tag}-{rid()}")))
    ref = ref_of(reply)
    if ref is None:
        raise RuntimeError(f"the pickup signal was not accepted: {reply}")
    got = lab.wait_for(lambda: lab.inbox[PICKUP_CODE].all()[before:], 40)
    token = link_token(mail_text(got[-1].data), "bericht") if got else None
    if token is None:
        raise RuntimeError(f"no notification mail with a link for {ref} in 40 s")
    web.secrets.add(token)
    return ref, token, got[-1].data


def sign_in(web: Web, b: Http, token: str, code: str | None = None) -> Resp:
    """The landing, then the contact's address and an app code (the next one by default)."""
    landing = b.get(f"/bericht/{token}")
    return b.post(f"/bericht/{token}/code", {"csrf": landing.csrf(), "email": PICKUP_CONTACT,
                                               "code": code or web.next_code()})
