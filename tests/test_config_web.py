"""`[web]` of the configuration: off unless listened on; an origin that links can name; TLS
by the daemon or a proxy on this machine; a helpdesk to call."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_config import MINIMAL, problems_of, write

from gateway.core.config import load_config


def test_the_page_is_off_by_default(tmp_path: Path) -> None:
    """Without [web] (or with listen = "") there is no page: no pickup, no ack links."""
    web = load_config(write(tmp_path, MINIMAL)).web
    assert not web.enabled and web.public_url == "" and web.allow_totp


def test_a_loopback_page_behind_a_proxy(tmp_path: Path) -> None:
    """Listening on loopback without a certificate is the reverse-proxy set-up; the links
    name the public origin (a trailing slash dropped) and passkeys are bound to its host."""
    web = load_config(write(tmp_path, MINIMAL + '[web]\nlisten = "127.0.0.1:8080"\n'
                            'public_url = "https://ophalen.gemeente.nl/"\n')).web
    assert web.enabled and web.public_url == "https://ophalen.gemeente.nl"
    assert web.rp_id == "ophalen.gemeente.nl"


@pytest.mark.parametrize(("snippet", "problem"), [
    ('listen = "0.0.0.0:8443"\npublic_url = "https://x.nl"',
     "web.listen: must be a loopback address unless tls_cert and tls_key are set"),
    ('listen = "127.0.0.1:8080"\npublic_url = "http://x.nl"',
     "web.public_url: must be https (plain http only for localhost)"),
    ('listen = "127.0.0.1:8080"\npublic_url = "https://x.nl/ophalen"',
     'web.public_url: must be an origin like "https://ophalen.gemeente.nl" (no path)'),
    ('listen = "127.0.0.1:8080"\npublic_url = ""',
     'web.public_url: must be an origin like "https://ophalen.gemeente.nl" (no path)'),
    ('listen = "127.0.0.1:8080"\npublic_url = "https://x.nl:99999"',
     'web.public_url: must be an origin like "https://ophalen.gemeente.nl"'),
    ('listen = "127.0.0.1:8080"\npublic_url = "https://x.nl"\ntls_cert = "c.pem"',
     "web.tls_key: tls_cert and tls_key go together"),
    ('listen = "127.0.0.1:8080"\npublic_url = "https://x.nl"\nhelpdesk = " "',
     "web.helpdesk: must say whom a school calls when a link no longer works"),
])
def test_web_problems_are_named(tmp_path: Path, snippet: str, problem: str) -> None:
    """Each way [web] can be wrong is refused with its key and what is wrong."""
    assert problems_of(tmp_path, MINIMAL + "[web]\n" + snippet + "\n") == [problem]


def test_plain_http_on_this_machine_is_for_development(tmp_path: Path) -> None:
    """http://localhost is accepted (browsers treat it as a secure context, so passkeys
    work there)."""
    web = load_config(write(tmp_path, MINIMAL + '[web]\nlisten = "127.0.0.1:8080"\n'
                            'public_url = "http://localhost:8080"\n')).web
    assert web.rp_id == "localhost"


@pytest.mark.parametrize(("url", "canonical"), [
    ("https://Ophalen.Gemeente.nl", "https://ophalen.gemeente.nl"),
    ("HTTPS://ophalen.gemeente.nl", "https://ophalen.gemeente.nl"),
    ("https://ophalen.gemeente.nl:443", "https://ophalen.gemeente.nl"),
    ("https://ophalen.gemeente.nl:", "https://ophalen.gemeente.nl"),
    ("http://localhost:80", "http://localhost"),
])
def test_public_url_is_written_as_a_browser_writes_the_origin(
        tmp_path: Path, url: str, canonical: str) -> None:
    """The page compares each POST's Origin header with public_url: an origin a browser would
    write otherwise (capitals, the default or an empty port) would refuse every form, so it is
    refused at once, saying how to write it."""
    assert problems_of(tmp_path, MINIMAL + f'[web]\nlisten = "127.0.0.1:8080"\n'
                       f'public_url = "{url}"\n') == [
        f'web.public_url: must be written as a browser writes the origin: "{canonical}"']


def test_an_ipv6_origin_with_its_port(tmp_path: Path) -> None:
    """http://[::1]:8080 is an origin as a browser writes it (development on IPv6)."""
    web = load_config(write(tmp_path, MINIMAL + '[web]\nlisten = "[::1]:8080"\n'
                            'public_url = "http://[::1]:8080"\n')).web
    assert web.rp_id == "::1"
