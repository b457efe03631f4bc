"""`[web]` of the configuration: decisions pinned where a mutation run (`make mutate`,
mutate/run.py) found that the tests would not notice a wrong answer: each test here fails on at
least one mutant that survived before it. Pure and fast: the table is read from a dict, no file,
no daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.core.configread import Table
from gateway.core.validate import HostPort
from gateway.core.webconfig import WebSection, web_section

BASE = Path("/etc/hwc-gateway")
ORIGIN = 'web.public_url: must be an origin like "https://ophalen.gemeente.nl" (no path)'
INTS = ("enrolment_hours", "link_hours_after_deadline", "session_minutes", "max_failures",
        "lock_minutes")


def read(**keys: Any) -> tuple[WebSection, list[str]]:
    """`[web]` with `keys` (a loopback page behind a proxy unless they say otherwise), and the
    problems found in it."""
    table = {"listen": "127.0.0.1:8080", "public_url": "https://ophalen.gemeente.nl", **keys}
    problems: list[str] = []
    return web_section(Table({"web": table}, "web", WebSection, BASE, problems)), problems


def test_every_web_key_is_read_from_the_file() -> None:
    """Each [web] key set to something other than its default comes back as written."""
    web, problems = read(listen="127.0.0.1:8443", public_url="https://ophalen.gemeente.nl",
                         tls_cert="/etc/hwc/cert.pem", tls_key="/etc/hwc/key.pem",
                         allow_totp=False, enrolment_hours=48, link_hours_after_deadline=12,
                         session_minutes=20, max_failures=3, lock_minutes=30,
                         helpdesk="Bel de leerplichtambtenaar: 0800-1234.")
    assert problems == []
    assert web == WebSection(
        listen=HostPort("127.0.0.1", 8443), public_url="https://ophalen.gemeente.nl",
        tls_cert=Path("/etc/hwc/cert.pem"), tls_key=Path("/etc/hwc/key.pem"), allow_totp=False,
        enrolment_hours=48, link_hours_after_deadline=12, session_minutes=20, max_failures=3,
        lock_minutes=30, helpdesk="Bel de leerplichtambtenaar: 0800-1234.")


@pytest.mark.parametrize("key", INTS)
@pytest.mark.parametrize("value", [0, -1])
def test_a_count_or_duration_below_one_is_refused_by_name(key: str, value: int) -> None:
    """Each number of hours, minutes or failures must be greater than 0, refused by its key."""
    assert read(**{key: value})[1] == [f"web.{key}: must be greater than 0"]


def test_allow_totp_must_be_true_or_false() -> None:
    """allow_totp written as text is refused by name, and the default (true) stays."""
    web, problems = read(allow_totp="no")
    assert problems == ["web.allow_totp: must be bool, got str"] and web.allow_totp


@pytest.mark.parametrize("url", ["http://localhost:8080", "http://127.0.0.1:8080",
                                 "http://[::1]:8080"])
def test_plain_http_is_accepted_for_each_name_of_this_machine(url: str) -> None:
    """localhost, 127.0.0.1 and [::1] may each be served over http (browsers treat them as
    secure contexts); the origin is kept as written."""
    web, problems = read(public_url=url)
    assert problems == [] and web.public_url == url


def test_plain_http_elsewhere_is_refused() -> None:
    """Another host, even a private address, needs https."""
    for url in ("http://10.0.0.1", "http://ophalen.gemeente.nl", "http://127.0.0.1.nip.io"):
        assert read(public_url=url)[1] == \
            ["web.public_url: must be https (plain http only for localhost)"], url


@pytest.mark.parametrize("url", [
    "https://anna@ophalen.gemeente.nl",        # user info
    "https://anna:geheim@ophalen.gemeente.nl",
    "https://@ophalen.gemeente.nl",            # empty user info
    "https://ophalen.gemeente.nl?a=1",         # query
    "https://ophalen.gemeente.nl?",            # empty query: links would be "…?/bericht/…"
    "https://ophalen.gemeente.nl/?",
    "https://ophalen.gemeente.nl#top",         # fragment
    "https://ophalen.gemeente.nl#",            # empty fragment: links would be "…#/bericht/…"
    "https://ophalen.gemeenté.nl",             # not ASCII (write the punycode form)
    " https://ophalen.gemeente.nl",            # whitespace, which urlsplit would drop
    "https://ophalen.gemeente.nl\t",
    "https://ophalen gemeente.nl",
    "ftp://ophalen.gemeente.nl",               # another scheme
    "https://",                                # no host
])
def test_a_public_url_that_is_not_an_origin_is_refused(url: str) -> None:
    """public_url must be scheme and host (and port) only: user info, a query or a fragment
    (even empty), a character outside ASCII, whitespace, another scheme or no host is refused
    as not an origin."""
    assert read(public_url=url)[1] == [ORIGIN]


def test_only_trailing_slashes_are_dropped_from_public_url() -> None:
    """A trailing "/" is dropped (links add "/bericht/…"); nothing else is: a path that ends in
    a capital X is still a path, and refused."""
    assert read(public_url="https://ophalen.gemeente.nl/")[0].public_url == \
        "https://ophalen.gemeente.nl"
    web, problems = read(public_url="https://ophalen.gemeente.nl/X")
    assert web.public_url == "https://ophalen.gemeente.nl/X" and problems != []


@pytest.mark.parametrize(("given", "missing"), [("tls_cert", "tls_key"),
                                                 ("tls_key", "tls_cert")])
def test_a_lone_tls_file_names_the_missing_one(given: str, missing: str) -> None:
    """tls_cert without tls_key, or tls_key without tls_cert, is refused naming the key that
    is missing."""
    assert read(**{given: "/etc/hwc/x.pem"})[1] == \
        [f"web.{missing}: tls_cert and tls_key go together"]
