"""Keeping Python's MIME parser cheap: structural limits on raw bytes, and a cheaper header policy.

Takes message bytes; produces a refusal reason or None, or the parsed tree. Python's email parser
needs seconds of CPU for a megabyte of tiny parts and recurses on deep nesting, so a message is
measured first: how many header lines it opens with, and how many lines are delimiters of a
boundary declared anywhere in it (a tree of n entities has at most 2n - 1 of them).

`parse_mime` then parses exactly as `BytesParser(policy=policy.default)` does, but about ten times
faster. Almost all of policy.default's cost is its header registry: every read of a Content-Type
(the parser alone reads each one four times) builds a new header class and a full parse tree,
only for `Message` to work on the tree's text. That text is a pure function of the header value,
and for the plain values signals carry (`text/plain; charset="utf-8"`) it is a plain rewrite, done
here directly; every other value, and every other header, still goes through policy.default, so
what it decodes, normalises or raises on (RFC 2047 words, RFC 2231 `name*` parameters, comments,
quoted pairs, non-ASCII) stays exactly what it was.
"""

from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesParser

_BOUNDARY_PARAM = re.compile(rb'boundary\s*=\s*(?:"([^"\r\n]*)"|([^;\s]+))', re.IGNORECASE)


def delimiter_lines(data: bytes) -> int:
    """How many lines look like a delimiter of a boundary declared anywhere in `data`."""
    boundaries = {
        (quoted or bare).rstrip(b" \t") for quoted, bare in _BOUNDARY_PARAM.findall(data)
    }
    if not boundaries:
        return 0
    count = 0
    for line in data.split(b"\n"):
        if line.startswith(b"--"):
            token = line[2:].rstrip(b" \t\r")
            if token in boundaries or token.removesuffix(b"--") in boundaries:
                count += 1
    return count


def header_lines(data: bytes) -> int:
    """Lines before the first empty line: the top-level header section, folded lines included."""
    end = re.search(rb"\r?\n\r?\n", data)
    head = data[: end.start()] if end else data
    return head.count(b"\n") + 1 if head else 0


def too_complex(data: bytes, *, max_parts: int, max_header_lines: int) -> str | None:
    """Why `data` is refused before parsing, or None when it is small enough to parse."""
    if header_lines(data) > max_header_lines:
        return "too many header lines"
    if delimiter_lines(data) > 2 * max_parts:
        return "too many MIME parts"
    return None


# --- parsing ------------------------------------------------------------------------------------

# The only characters allowed in a plain value: those that are token and attribute characters to
# the policy.default parser (email/_header_value_parser.py: not TSPECIALS, white space, or the
# RFC 2231 markers * ' %), and in quoted strings printable ASCII but for the quote and backslash.
# An encoded word (`=?`) in a quoted string is decoded by that parser, so it is not plain either.
_TTEXT = r"[A-Za-z0-9!#$&+.^_`{|}~-]+"
_QUOTED = r'"[\t !#-\[\]-~]+"'
_PLAIN_TTEXT = re.compile(_TTEXT)
_PLAIN_PARAM = re.compile(rf';[ \t]*({_TTEXT})=(?:({_TTEXT})|"([^"]*)")')  # in a matched value
_PLAIN_VALUE = {
    kind: re.compile(rf"({head})((?:;[ \t]*{_TTEXT}=(?:{_TTEXT}|{_QUOTED})[ \t]*)*)(;[ \t]*)?")
    for kind, head in (("content-type", f"{_TTEXT}/{_TTEXT}"), ("content-disposition", _TTEXT))
}
_LINE_BREAKS = re.compile(r"\r|\n")  # what policy.default removes to unfold a value


def plain_header_text(name: str, value: str) -> str | None:
    """What `str()` of policy.default's header object for `name: value` (unfolded) is, when the
    value is plain enough to say so without its parser; None when it is not.

    For a Content-Type or Content-Disposition that is the type followed by every parameter as
    `; name="value"` (email/_header_value_parser.py, MimeParameters.__str__); for a
    Content-Transfer-Encoding it is the token itself.
    """
    kind = name.lower()
    if kind == "content-transfer-encoding":
        return value if _PLAIN_TTEXT.fullmatch(value) else None
    pattern = _PLAIN_VALUE.get(kind)
    match = pattern.fullmatch(value) if pattern is not None else None
    if match is None:
        return None
    head, params, end = match.groups()
    if not params:
        return head + (";" if end else "")
    found = _PLAIN_PARAM.findall(params)
    # policy.default keeps only the first of two `a=` (but both of `A=` and `a=`); `=?` can
    # only be inside a quoted string, where it would decode an encoded word.
    if len({attribute.lower() for attribute, _, _ in found}) != len(found) or "=?" in params:
        return None
    return f"{head}; " + "; ".join(f'{attribute}="{bare or quoted}"'
                                   for attribute, bare, quoted in found)


class _PlainPolicy(policy.Compat32):
    """policy.default as `Message` methods see it, with plain header values read directly.

    compat32 underneath, so the parser builds plain `Message` objects and keeps header values as
    the strings it read; only how a value is fetched differs from policy.default, and for the
    values `plain_header_text` cannot vouch for it is policy.default's own fetch. One instance
    per parse: it remembers the texts of that message's headers, which the parser and `Message`
    methods fetch again and again (a Content-Type four times or more), and goes with the tree.
    """

    _texts: dict[tuple[str, str], str]

    def __init__(self) -> None:
        super().__init__()
        object.__setattr__(self, "_texts", {})  # a Policy refuses attribute assignment

    def header_fetch_parse(self, name: str, value: str) -> str:
        text = self._texts.get((name, value))
        if text is None:
            text = plain_header_text(name, "".join(_LINE_BREAKS.split(value)))
            if text is None:  # what policy.default raises here is raised again on every fetch
                text = str(policy.default.header_fetch_parse(name, value))
            self._texts[name, value] = text
        return text


def parse_mime(data: bytes) -> Message:
    """`data` parsed as `BytesParser(policy=policy.default)` would, as a plain `Message` tree.

    Raises what that parser raises on malformed input (its header parser does, on some `x*`
    parameters): callers turn that into their refusal.
    """
    return BytesParser(policy=_PlainPolicy()).parsebytes(data)
