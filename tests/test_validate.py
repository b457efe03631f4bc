"""Tests for core.validate: the one parser per identifier (address, host:port, fingerprint)."""

from __future__ import annotations

import pytest

from gateway.core.validate import (
    HostPort,
    is_address,
    is_fingerprint,
    normalise_cert_fingerprint,
    normalise_fingerprint,
    parse_hostport,
)

V4 = "0123456789ABCDEF0123456789ABCDEF01234567"
V5 = "AB" * 32


@pytest.mark.parametrize("text", [
    "leerplicht@hwc.example.nl", "hwc@regenboog.example.nl", "Zorg.Team+hwc@kompas.example.nl",
    "a@b.nl", "o'brien@school.example.nl",
])
def test_address_accepts_ordinary_addresses(text: str) -> None:
    """A local part, `@` and a dotted domain is an address."""
    assert is_address(text)


@pytest.mark.parametrize("text", [
    "", "leerplicht", "@hwc.example.nl", "leerplicht@", "leerplicht@localhost",
    "a b@example.nl", "<a@example.nl>", "a@example.nl>", "a@example.nl\r\nRCPT TO:<x@y.nl>",
    "a@example.nl\n", " a@example.nl",
])
def test_address_refuses_what_is_not_one(text: str) -> None:
    """No `@`, no local part, an undotted domain, a space, a bracket or a line break: refused."""
    assert not is_address(text)


def test_address_refuses_a_comma_which_the_config_check_let_through() -> None:
    """`a,b@x.nl` was a valid gateway.address for the config check (admin refused it): a comma
    in a From or To field makes two addresses, so both refuse it now."""
    assert not is_address("a,b@example.nl")
    assert not is_address("leerplicht@hwc.example.nl,other@example.nl")


def test_address_refuses_a_tab_which_the_admin_check_let_through() -> None:
    """A tab inside `--email`/`--allow-from` passed the admin verbs' check (config refused it):
    it is whitespace in an SMTP path, so both refuse it now."""
    assert not is_address("a\tb@example.nl")
    assert not is_address("a@example.nl\t")


@pytest.mark.parametrize(("text", "expected"), [
    ("mx.example.nl:25", HostPort("mx.example.nl", 25)),
    ("127.0.0.1:2525", HostPort("127.0.0.1", 2525)),
    ("[::1]:25", HostPort("::1", 25)),
    ("[2001:db8::1]:587", HostPort("2001:db8::1", 587)),
    ("localhost:1", HostPort("localhost", 1)),
    ("localhost:65535", HostPort("localhost", 65535)),
    ("[mx.example.nl]:25", HostPort("mx.example.nl", 25)),
    ("relay:0025", HostPort("relay", 25)),
])
def test_hostport_parses_host_and_port(text: str, expected: HostPort) -> None:
    """`host:port`, an IPv6 host in brackets which are taken off, port 1-65535."""
    assert parse_hostport(text) == expected


@pytest.mark.parametrize("text", [
    "", "mx.example.nl", ":25", "mx.example.nl:", "mx.example.nl:0", "mx.example.nl:65536",
    "mx.example.nl:smtp", "mx.example.nl:-1", "mx.example.nl:+25", "mx.example.nl: 25",
    "[::1]", "::1", "[::1]:", "2001:db8::1",
])
def test_hostport_refuses_what_is_not_one(text: str) -> None:
    """No port, an empty host, a port out of range or not digits, an IPv6 address alone."""
    assert parse_hostport(text) is None


def test_hostport_refuses_unbracketed_ipv6_which_route_and_directory_accepted() -> None:
    """`::1:25` passed `schools add --route` and read back as host `::1` port 25, while the
    config refused it: which colon ends the address is a guess, so both refuse it now."""
    assert parse_hostport("::1:25") is None
    assert parse_hostport("2001:db8::1:25") is None


def test_hostport_refuses_digits_that_are_not_ascii() -> None:
    """A superscript or Arabic-Indic digit is a digit to `str.isdigit`: `h:²5` crashed the
    config reader (int() refused it) and `h:٢٥` read as port 25; both are refused."""
    assert parse_hostport("mx.example.nl:²5") is None
    assert parse_hostport("mx.example.nl:٢٥") is None


def test_hostport_prints_back_as_it_is_written() -> None:
    """str(HostPort) is `host:port` (what logs and `status` show)."""
    assert str(parse_hostport("mx.example.nl:25")) == "mx.example.nl:25"


@pytest.mark.parametrize(("text", "expected"), [
    (V4, V4), (V4.lower(), V4), ("0x" + V4, V4), ("0X" + V4.lower(), V4),
    (" ".join(V4[i:i + 4] for i in range(0, 40, 4)), V4),
    (":".join(V4[i:i + 2] for i in range(0, 40, 2)), V4),
    (V5, V5), (V5.lower(), V5),
])
def test_fingerprint_accepts_the_common_spellings(text: str, expected: str) -> None:
    """Lower case, spaces, colons and a 0x prefix are accepted; the result is canonical."""
    assert normalise_fingerprint(text) == expected
    assert is_fingerprint(expected)


@pytest.mark.parametrize("text", [
    "", V4[:16], V4[:-1], V4 + "8", V4[:-1] + "G", V5[:-2], "leerplicht@hwc.example.nl",
    "0x" + V4[:16], V4 + "\n" + V4,
])
def test_fingerprint_refuses_short_ids_and_other_text(text: str) -> None:
    """A key ID, a wrong length, a non-hex digit or an address is not a fingerprint."""
    assert normalise_fingerprint(text) is None


def test_is_fingerprint_takes_only_the_canonical_form() -> None:
    """is_fingerprint is for what is already normalised: lower case or spaces are refused."""
    assert not is_fingerprint(V4.lower())
    assert not is_fingerprint("0x" + V4)
    assert not is_fingerprint(V4[:20] + " " + V4[20:])


def test_cert_fingerprint_takes_what_openssl_prints() -> None:
    """`openssl x509 -fingerprint -sha256` output (colons, any case) becomes 64 hex digits; an
    OpenPGP fingerprint or a short value is refused."""
    digest = "AB" * 32
    assert normalise_cert_fingerprint(":".join(["ab"] * 32)) == digest
    assert normalise_cert_fingerprint(digest) == digest
    assert normalise_cert_fingerprint(V4) is None
    assert normalise_cert_fingerprint("ZZ" * 32) is None
