"""The web side's shared state and its one way to answer with a page.

Takes the gateway's `Context`; produces `Site` (held by the aiohttp application under `SITE`):
the Jinja environment (autoescaped templates in `gateway/web/templates/`), the process's CSRF
and session secrets, the in-memory sessions and WebAuthn challenges, and the names of the
cookies. `page` renders a template into a response; `client_address` says whom a receipt names.
Fails: a missing template is a programming error (`jinja2.TemplateNotFound`).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from gateway.core.timetext import moment_nl
from gateway.pipeline.context import Context
from gateway.web.memory import Expiring, new_id

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
# How long a WebAuthn ceremony may take from its options to its answer (the browser's own
# timeout is one minute), and how many of either kind we hold at most.
CHALLENGE_TTL = dt.timedelta(minutes=5)
MEMORY_CAP = 10_000


@dataclass(frozen=True)
class Session:
    """Who proved what for which link: kind "enrol" (the phone code was right) or "pickup" (the
    second factor was right), the link's token digest, the contact; an enrolment session also
    holds the authenticator-app secret being set up, until the first code confirms it."""

    kind: str
    digest: str
    school: str
    email: str
    totp_secret: str | None = None


@dataclass(frozen=True)
class Challenge:
    """A WebAuthn challenge handed out: for which ceremony ("register" or "login") and link."""

    purpose: str
    digest: str
    school: str = ""
    email: str = ""


def _environment(timezone: str) -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["tijd"] = functools.partial(moment_nl, zone=timezone)
    return env


@dataclass
class Site:
    ctx: Context
    env: jinja2.Environment = field(init=False)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sessions: Expiring[Session] = field(init=False)
    challenges: Expiring[Challenge] = field(init=False)

    def __post_init__(self) -> None:
        self.env = _environment(self.ctx.config.schedule.timezone)
        minutes = self.ctx.config.web.session_minutes
        self.sessions = Expiring(self.ctx.clock, dt.timedelta(minutes=minutes), MEMORY_CAP)
        self.challenges = Expiring(self.ctx.clock, CHALLENGE_TTL, MEMORY_CAP)

    @property
    def origin(self) -> str:
        """The origin every page and POST must come from: `[web] public_url` without a path."""
        parts = urlsplit(self.ctx.config.web.public_url)
        return f"{parts.scheme}://{parts.netloc}".lower()

    @property
    def secure(self) -> bool:
        return self.origin.startswith("https://")

    def cookie(self, name: str) -> str:
        # `__Host-`: the browser keeps it to this host, Secure, Path=/ (RFC 6265bis §4.1.3.2).
        # Over plain http (only ever loopback) browsers may refuse the prefix.
        return f"__Host-{name}" if self.secure else name


SITE = web.AppKey("site", Site)
CSRF_SEED = web.RequestKey("csrf_seed", str)  # the seed this response's forms are MACs of
CSRF_NEW = web.RequestKey("csrf_new", str)  # a seed made now: guard sets it as the cookie


def site_of(request: web.Request) -> Site:
    return request.app[SITE]


def csrf_token(request: web.Request) -> str:
    """The token every form of this response carries: a MAC of the browser's CSRF cookie (made
    now when it has none, and set by `guard` on the response). A forged cross-site POST has
    neither the cookie (SameSite=Strict) nor the MAC."""
    site = site_of(request)
    seed = request.get(CSRF_SEED) or request.cookies.get(site.cookie("csrf"), "")
    if not _seed_shape(seed):
        seed = new_id()
        request[CSRF_NEW] = seed
    request[CSRF_SEED] = seed
    return _mac(site.secret, seed)


def csrf_ok(request: web.Request, token: str) -> bool:
    """Whether `token` is the MAC of the CSRF cookie the request carries."""
    site = site_of(request)
    seed = request.cookies.get(site.cookie("csrf"), "")
    return _seed_shape(seed) and hmac.compare_digest(token.encode(), _mac(site.secret, seed)
                                                     .encode())


def _seed_shape(seed: str) -> bool:
    return 32 <= len(seed) <= 64 and all(c.isalnum() or c in "-_" for c in seed) \
        and seed.isascii()


def _mac(secret: bytes, seed: str) -> str:
    digest = hmac.new(secret, b"csrf\0" + seed.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def page(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    """The template rendered with `values`, the CSRF token for its forms, the helpdesk text."""
    site = site_of(request)
    text = site.env.get_template(template).render(
        csrf=csrf_token(request), helpdesk=site.ctx.config.web.helpdesk, **values)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def message(request: web.Request, status: int, title: str, text: str,
            helpdesk: bool = True) -> web.Response:
    """A plain page saying what happened (and, with `helpdesk`, whom to call)."""
    return page(request, "message.html", status, title=title, text=text, show_helpdesk=helpdesk)


def set_cookie(response: web.StreamResponse, site: Site, name: str, value: str,
               max_age: int | None) -> None:
    """A cookie as every cookie here is: Secure, HttpOnly, SameSite=Strict, Path=/."""
    response.set_cookie(site.cookie(name), value, max_age=max_age, path="/", secure=True,
                        httponly=True, samesite="Strict")


def start_session(response: web.StreamResponse, site: Site, session: Session) -> None:
    """A new session for what was just proved, its id in the session cookie (which replaces
    any earlier one: one browser, one session)."""
    key = new_id()
    site.sessions.put(key, session)
    set_cookie(response, site, "session", key, site.ctx.config.web.session_minutes * 60)


def session_of(request: web.Request, kind: str, digest: str) -> Session | None:
    """The request's session when it is of `kind` for the link with token digest `digest`."""
    site = site_of(request)
    key = request.cookies.get(site.cookie("session"), "")
    found = site.sessions.get(key) if _seed_shape(key) else None
    return found if found is not None and found.kind == kind and found.digest == digest \
        else None


def keep_session(request: web.Request, session: Session) -> None:
    """Replace the request's session (same cookie) with `session`."""
    site = site_of(request)
    key = request.cookies.get(site.cookie("session"), "")
    if _seed_shape(key):
        site.sessions.put(key, session)


def see_other(location: str) -> web.Response:
    """303 to a page of ours (after a POST, or to the start of a flow)."""
    return web.Response(status=303, headers={"Location": location})


def refusal(status: int, text: str) -> web.Response:
    """A JSON answer to the passkey script: `text` is shown to the person."""
    return web.json_response({"message": text}, status=status)


def client_address(request: web.Request) -> str:
    """The client's address for a receipt. Behind a reverse proxy on loopback (no TLS of our
    own) the proxy's `X-Forwarded-For` names it: the last entry is the one the proxy saw."""
    peer = request.remote or ""
    web_config = request.app[SITE].ctx.config.web
    behind_proxy = web_config.tls_cert is None and _loopback(peer)
    forwarded = request.headers.get("X-Forwarded-For", "")
    if behind_proxy and forwarded:
        last = forwarded.rsplit(",", 1)[-1].strip()
        if _is_ip(last):
            return last
    return peer


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _loopback(text: str) -> bool:
    return _is_ip(text) and ipaddress.ip_address(text).is_loopback
