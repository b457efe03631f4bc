"""Making text from outside inert before a person reads it: pure functions, no I/O.

Takes any text the other side controls (a school server's reply, school names and places
from DUO's CSV, file names, sender names and references); produces the same text with every
control or format character (Unicode categories Cc and Cf: C0 and C1 controls, DEL, bidi
overrides and isolates, zero-width characters; and the line and paragraph separators Zl, Zp,
and lone surrogates Cs) shown as a visible escape such as `\\x1b` or `\\u202e`. Printable text,
non-ASCII letters included, is left as it is. Never fails.

Issue 11: a school server answered `451 4.0.0 ESC]0;...BEL ESC[2K`; `queue list` printed it raw
and the administrator's terminal took it as commands (a new window title, an erased line), and
the alert mail carried it too. Escaping at the output edge keeps the record exact (the store
and the receipts hold the reply as it came) while nothing a person reads can steer the screen
or fake a line.
"""

from __future__ import annotations

import unicodedata

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _unsafe(ch: str) -> bool:
    return unicodedata.category(ch) in _UNSAFE_CATEGORIES


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(text: str) -> str:
    """`text` with every control, format or separator character written as a visible escape."""
    if text.isprintable():  # the common case, and C speed: isprintable is False for all of them
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # JSON has no escape beyond the BMP: a UTF-16 surrogate pair (RFC 8259 §7)
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def inert_json(text: str) -> str:
    """JSON text (as `json.dumps(..., ensure_ascii=False)` writes it) with the characters it
    leaves raw escaped too: it escapes only C0 controls, not DEL, C1 controls or bidi and
    zero-width characters. Such characters can only stand inside JSON strings, where `\\uXXXX`
    means the same character, so the value a program reads is unchanged; the newlines of the
    indentation stay."""
    if text.isprintable():
        return text
    return "".join(_json_escape(ch) if ch != "\n" and _unsafe(ch) else ch for ch in text)
