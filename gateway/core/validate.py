"""The one parser for each kind of identifier an operator types: e-mail address, host:port,
OpenPGP fingerprint, TLS client-certificate fingerprint.

Takes: text from `config.toml`, a CLI option or a stored directory row. Produces: the parsed
value (`HostPort`, a canonical fingerprint) or a yes/no for an address. Fails: never raises on
any `str`; None (or False) is the only refusal, and the caller names the key or option that was
wrong. Pure: no I/O, so config, the admin verbs, the directory loader and gpg's wrapper all apply
the same rule and cannot drift apart again (issue 14 found two e-mail checks and three host:port
parsers that disagreed).
"""

from __future__ import annotations

from dataclasses import dataclass

_HEX_UPPER = frozenset("0123456789ABCDEF")

# An address is used as an SMTP path (RFC 5321 §4.1.2) and in From/To header fields (RFC 5322
# §3.4): whitespace, angle brackets and commas there split or end the address, and a line break
# would inject a command or a header field. The config check used to miss the comma and the
# admin verbs the tab; both are refused now.
_NOT_IN_ADDRESS = frozenset(" \t\r\n<>,")


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def is_address(text: str) -> bool:
    """Whether `text` will do as an e-mail address: a local part, `@`, a domain with a dot, and
    none of space, tab, CR, LF, `<`, `>` or `,`.

    Deliberately no more than that: the mail server that receives the address checks its
    syntax, and a stricter rule here (RFC 5321's full grammar) would refuse real addresses
    that schools use. Where the two old checks disagreed this takes the stricter: `config`
    let `a,b@x.nl` through (a comma makes two recipients in a header field) and `admin` let a
    tab through (folding whitespace inside an SMTP path); each is refused by both now.
    """
    local, at, domain = text.partition("@")
    return bool(at and local and "." in domain) and not any(c in _NOT_IN_ADDRESS for c in text)


def parse_hostport(text: str) -> HostPort | None:
    """`host:port` with a port 1-65535; an IPv6 address bracketed (`[::1]:25`, as in URLs,
    RFC 3986 §3.2.2), since in `::1:25` the last group reads as a port. None otherwise.

    The brackets are taken off the host. This is the strictest of the three old parsers (the
    config file's); `schools add --route` used to accept an unbracketed IPv6 address and port
    0 was accepted when a stored route was read back.
    """
    host, sep, port = text.rpartition(":")
    bad_v6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
    if not sep or not host or bad_v6 or not (port.isascii() and port.isdigit()):
        return None
    number = int(port)
    return HostPort(host.strip("[]"), number) if 0 < number < 65536 else None


def is_fingerprint(text: str) -> bool:
    """A full OpenPGP fingerprint in canonical form: v4 (40 hex) or v5 (64 hex), upper case,
    nothing else. Keys are always chosen by full fingerprint, never a short key ID or a user
    ID, which anyone can make collide."""
    return len(text) in (40, 64) and all(c in _HEX_UPPER for c in text)


def normalise_fingerprint(text: str) -> str | None:
    """Accept the common spellings (spaces, colons, lower case, 0x prefix) of a full OpenPGP
    fingerprint; its canonical form, or None if it is not one."""
    cleaned = text.replace(" ", "").replace(":", "").upper()
    cleaned = cleaned.removeprefix("0X")
    return cleaned if is_fingerprint(cleaned) else None


def normalise_cert_fingerprint(text: str) -> str | None:
    """A SHA-256 certificate fingerprint as `openssl x509 -fingerprint -sha256` prints it
    (colons, any case, spaces): its 64 upper-case hex digits, or None."""
    cleaned = text.replace(":", "").replace(" ", "").upper()
    return cleaned if len(cleaned) == 64 and all(c in _HEX_UPPER for c in cleaned) else None
