"""`[web]` of the configuration: the pickup page and the acknowledgement links.

Takes the `[web]` table (`gateway.core.configread.Table`); produces a `WebSection`, with every
problem added to the table's list (`gateway.core.config.parse_config` reports them all). Apart
from `gateway.core.config` only to keep that module small; the rules are the same.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from gateway.core.configread import Table, is_loopback, positive
from gateway.core.validate import HostPort

DEFAULT_HELPDESK = ("Neem contact op met de afdeling Leerplicht van uw gemeente. Zij kunnen u"
                    " vertellen wat er in het bericht stond.")


@dataclass(frozen=True)
class WebSection:
    """`[web]`: the pickup page for school contacts without an OpenPGP key, and the
    acknowledgement links of notices (docs/protocol.md §17)."""

    listen: HostPort | None = None
    public_url: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_totp: bool = True
    enrolment_hours: int = 72
    link_hours_after_deadline: int = 24
    session_minutes: int = 10
    max_failures: int = 5
    lock_minutes: int = 15
    helpdesk: str = DEFAULT_HELPDESK

    @property
    def enabled(self) -> bool:
        return self.listen is not None

    @property
    def rp_id(self) -> str:
        """The WebAuthn relying party: the host of `public_url` (a passkey is bound to it)."""
        return urllib.parse.urlsplit(self.public_url).hostname or ""


def public_url_problem(url: str) -> str | None:
    """Why `url` cannot be the origin every link names: https with a host and nothing after
    it; plain http only for this machine, which browsers treat as secure (development)."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return 'must be an origin like "https://ophalen.gemeente.nl"'
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    # "@", "?" and "#" have no place in an origin, even with nothing after them (parts.username,
    # .query and .fragment are then ""): a link is this text plus "/bericht/TOKEN", and the
    # page compares the browser's Origin with it.
    if parts.scheme not in ("https", "http") or not parts.hostname or "@" in parts.netloc \
            or parts.path not in ("", "/") or "?" in url or "#" in url \
            or not url.isascii() or any(c.isspace() for c in url):
        return 'must be an origin like "https://ophalen.gemeente.nl" (no path)'
    if parts.scheme == "http" and not local:
        return "must be https (plain http only for localhost)"
    # The page compares the browser's Origin header with this text: it must be written as a
    # browser serialises an origin (lower case, no default or empty port), else every form
    # would be refused as coming from elsewhere.
    default = {"https": 443, "http": 80}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port not in (None, default) else ""
    canonical = f"{parts.scheme}://{host}{port}"
    if url != canonical:  # (the caller strips trailing slashes first)
        return f'must be written as a browser writes the origin: "{canonical}"'
    return None


def web_section(t: Table) -> WebSection:
    web = WebSection(
        listen=t.hostport("listen"), public_url=t.value("public_url", str).rstrip("/"),
        tls_cert=t.path("tls_cert"), tls_key=t.path("tls_key"),
        allow_totp=t.value("allow_totp", bool),
        enrolment_hours=t.value("enrolment_hours", int, positive),
        link_hours_after_deadline=t.value("link_hours_after_deadline", int, positive),
        session_minutes=t.value("session_minutes", int, positive),
        max_failures=t.value("max_failures", int, positive),
        lock_minutes=t.value("lock_minutes", int, positive),
        helpdesk=t.value("helpdesk", str))
    if web.listen is None:
        return web
    problem = public_url_problem(web.public_url)
    if problem:
        t.problem("public_url", problem)
    if (web.tls_cert is None) != (web.tls_key is None):
        t.problem("tls_key" if web.tls_key is None else "tls_cert",
                  "tls_cert and tls_key go together")
    elif web.tls_cert is None and not is_loopback(web.listen.host):
        # Without a certificate the page is plain HTTP: only a reverse proxy on this machine
        # that speaks TLS to the world may stand in front of it.
        t.problem("listen", "must be a loopback address unless tls_cert and tls_key are set")
    if not web.helpdesk.strip():
        t.problem("helpdesk", "must say whom a school calls when a link no longer works")
    return web
