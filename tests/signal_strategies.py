"""Hypothesis strategies for whole signals: the payload in the MIME entity around it, fuzzed and
well-formed signals with the children they should yield, and mutations of any entity."""

from __future__ import annotations

import base64
import datetime as dt
import json
import quopri
from dataclasses import dataclass

from hypothesis import strategies as st
from strategies import (
    _CHILD_COUNTS,
    _CODEWORD,
    _DATE_FORMATS,
    _FORMS,
    _FUZZ_BSN,
    _FUZZ_DOCUMENT_EXTRAS,
    _FUZZ_EXTRA_KEYS,
    _FUZZ_NON_STRING,
    _FUZZ_SCHOOL,
    _FUZZ_TEXT,
    _FUZZY_NAME,
    _INDENTS,
    _JUNK_LINES,
    _MAYBE_BSN,
    _MAYBE_REFERENCE,
    _MAYBE_SCHOOL,
    _MOSTLY,
    _RARELY,
    _TODAYS,
    _VALID_NAME,
    _random_case,
    date_text,
    format_date,
    label,
    plausible_birthdate,
)

from gateway.core.model import Child, Signal

# --- strategies: the MIME entity around a payload -----------------------------------------------

_PDF_PART = (
    b"Content-Type: application/pdf\n"
    b"Content-Disposition: attachment; filename=\"verslag.pdf\"\n"
    b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQKJcOkw7zDtsOfCg==\n"
)
_NOTE_PART = (
    b"Content-Type: text/plain; charset=utf-8\n"
    b"Content-Disposition: attachment; filename=\"notities.txt\"\n\nvertrouwelijk\n"
)
_HTML_PART = b"Content-Type: text/html; charset=utf-8\n\n<p>zie tekst</p>\n"
_GREETING_PART = b"Content-Type: text/plain; charset=utf-8\n\nZie de bijlage.\n"
_RFC822_HEADERS_PART = (
    b"Content-Type: text/rfc822-headers; protected-headers=\"v1\"\n"
    b"Content-Disposition: inline\n\nSubject: Handle with Care\n"
)


def _multipart(subtype: str, boundary: str, parts: list[bytes], extra: str = "") -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{extra}\n\n'.encode()
    body = b"".join(f"--{boundary}\n".encode() + part + b"\n" for part in parts)
    return head + b"This is a multi-part message in MIME format.\n" + body \
        + f"--{boundary}--\n".encode()


_CTES = st.sampled_from((None, "7bit", "8bit", "binary", "quoted-printable", "base64"))
_JSON_TYPES = st.sampled_from([
    "Content-Type: application/json",
    "Content-Type: application/json; charset=utf-8",
    "Content-Type: application/octet-stream\n"
    "Content-Disposition: attachment; filename=\"signaal.json\"",
])
_CHARSETS = ["", "; charset=utf-8", "; charset=UTF-8", '; charset="utf-8"']
_TEXT_CHARSETS = st.sampled_from(_CHARSETS)
_FUZZ_CHARSETS = st.sampled_from(
    [*_CHARSETS, "; charset=us-ascii", "; charset=iso-8859-1", "; charset=bogus"])
_SHAPES = st.sampled_from(("bare", "mixed", "nested", "protected"))
_TAGS = st.integers(0, 10**6)
_EXTRA_PARTS = st.lists(st.sampled_from((_PDF_PART, _NOTE_PART)), max_size=2)


def wrap_payload(draw: st.DrawFn, payload: bytes, form: str, *, fuzz: bool) -> bytes:
    """The payload as one leaf part with a random transfer encoding, alone or inside the
    multipart shapes real clients send, with LF or CRLF line ends."""
    cte = draw(_CTES)
    if cte == "quoted-printable":
        body = quopri.encodestring(payload)
    elif cte == "base64":
        body = base64.encodebytes(payload)
    else:
        body = payload
    if form == "json":
        content_type = draw(_JSON_TYPES)
    else:
        content_type = "Content-Type: text/plain" + draw(_FUZZ_CHARSETS if fuzz else _TEXT_CHARSETS)
    head = content_type + "\n"
    if cte is not None:
        head += f"Content-Transfer-Encoding: {_random_case(draw, cte)}\n"
    leaf = head.encode() + b"\n" + body
    shape = draw(_SHAPES)
    tag = draw(_TAGS)
    if shape == "bare":
        entity = b"MIME-Version: 1.0\n" + leaf if draw(st.booleans()) else leaf
    elif shape == "mixed":
        extras = draw(_EXTRA_PARTS)
        if form == "json" and draw(st.booleans()):
            extras.append(_GREETING_PART)  # JSON wins over an inline greeting
        at = draw(st.integers(0, len(extras)))
        entity = _multipart("mixed", f"=_hwc_mixed_{tag}", [*extras[:at], leaf, *extras[at:]])
    elif shape == "nested":
        alternative = _multipart("alternative", f"=_hwc_alt_{tag}", [leaf, _HTML_PART])
        entity = _multipart("mixed", f"=_hwc_outer_{tag}", [alternative, _PDF_PART])
    else:  # Thunderbird's protected headers (RFC 7508 draft) around the body
        entity = _multipart("mixed", f"=_hwc_protected_{tag}", [_RFC822_HEADERS_PART, leaf],
                            extra='; protected-headers="v1"')
    if draw(st.booleans()):
        entity = entity.replace(b"\n", b"\r\n")
    return entity


# --- strategies: whole signals ----------------------------------------------------------------


@dataclass(frozen=True)
class Generated:
    """A generated entity, the day it is read, and the values it carries."""

    entity: bytes
    today: dt.date
    values: tuple[str, ...] = ()  # names and birth dates as written, for the leak check
    expected: Signal | None = None  # set for well-formed signals


def _encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate becomes invalid UTF-8, which is what a forger would send.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def fuzzed_signals(draw: st.DrawFn) -> Generated:
    """A signal-shaped entity with hostile names, odd dates, extra keys and lines."""
    today = draw(_TODAYS)
    form = draw(st.sampled_from(("json", "text")))
    codeword = draw(_CODEWORD) if draw(_MOSTLY) else draw(_FUZZ_TEXT)
    children: list[dict[str, str]] = []
    for _ in range(draw(_CHILD_COUNTS)):
        child: dict[str, str] = {}
        if draw(_MOSTLY):
            child["name"] = draw(_FUZZY_NAME)
        if draw(_MOSTLY):
            child["birthdate"] = date_text(draw, today)
        if draw(_RARELY):
            child["bsn"] = draw(_FUZZ_BSN)
        if draw(_RARELY):
            child["school"] = draw(_FUZZ_SCHOOL)
        children.append(child)
    reference = draw(_MAYBE_REFERENCE) if draw(_MOSTLY) else draw(_FUZZ_TEXT)
    values = tuple(v for c in children for k, v in c.items() if k in ("name", "birthdate"))

    if form == "json":
        items: list[dict[str, object]] = []
        for child in children:
            item: dict[str, object] = dict(child)
            item.update(draw(_FUZZ_EXTRA_KEYS))
            if draw(_RARELY):  # a non-string where a string belongs
                item[draw(st.sampled_from(("name", "birthdate")))] = draw(_FUZZ_NON_STRING)
            items.append(item)
        document: dict[str, object] = {"codeword": codeword, "children": items}
        if reference is not None:
            document["reference"] = reference
        document.update(draw(_FUZZ_DOCUMENT_EXTRAS))
        text = json.dumps(document, ensure_ascii=draw(st.booleans()),
                          indent=draw(_INDENTS))
    else:
        lines = draw(st.lists(_JUNK_LINES, max_size=3))
        lines.append(label(draw, "codeword") + codeword)
        if reference is not None:
            lines.append(label(draw, "reference") + reference)
        for child in children:
            lines.extend(draw(st.lists(_JUNK_LINES, max_size=2)))
            keys = list(child)
            if "name" in keys and draw(_MOSTLY):
                keys.remove("name")
                keys.insert(0, "name")
            lines.extend(label(draw, key) + child[key] for key in keys)
        lines.extend(draw(st.lists(_JUNK_LINES, max_size=3)))
        text = "\n".join(lines) + "\n"
        if draw(_RARELY):
            text = "\ufeff" + text
    entity = wrap_payload(draw, _encode(text), form, fuzz=True)
    return Generated(entity, today, values)


@st.composite
def well_formed_signals(draw: st.DrawFn) -> Generated:
    """A valid signal in either form, any encoding and shape; `expected` is what it says."""
    today = draw(_TODAYS)
    form = draw(_FORMS)
    written: list[dict[str, str]] = []
    expected: list[Child] = []
    for _ in range(draw(st.integers(1, 4))):
        name = draw(_VALID_NAME)
        birth = plausible_birthdate(draw, today)
        child = {"name": name, "birthdate": format_date(birth, draw(_DATE_FORMATS))}
        bsn = draw(_MAYBE_BSN)
        school = draw(_MAYBE_SCHOOL)
        if bsn is not None:
            child["bsn"] = bsn[0]
        if school is not None:
            child["school"] = school[0]
        written.append(child)
        expected.append(Child(name, birth, bsn=bsn[1] if bsn else None,
                              school_hint=school[1] if school else None))
    reference = draw(_MAYBE_REFERENCE)
    codeword = draw(_CODEWORD)
    if form == "json":
        document: dict[str, object] = {"codeword": codeword, "children": written}
        if reference is not None:
            document["reference"] = reference
        if draw(st.booleans()):
            document["incident"] = "vader aangehouden"  # read by nobody
        text = json.dumps(document, ensure_ascii=draw(st.booleans()),
                          indent=draw(_INDENTS))
    else:
        lines = ["Goedemorgen,", "", label(draw, "codeword") + codeword]
        if reference is not None:
            lines.append(label(draw, "reference") + reference)
        for child in written:
            lines.append("")
            lines.extend(label(draw, key) + value for key, value in child.items())
        lines += ["", "Toelichting: incident in de nacht", "Met vriendelijke groet,"]
        text = "\n".join(lines) + "\n"
    entity = wrap_payload(draw, text.encode(), form, fuzz=False)
    return Generated(entity, today, expected=Signal(tuple(expected), reference))


_SPLICES = (
    b"\n", b"\r\n", b"\n\n", b"--", b"\"", b"\\", b"\x00", b"=", b"=?utf-8?b?", b":",
    b"Content-Type: multipart/mixed; boundary=x\n\n--x\n",
    b"Content-Transfer-Encoding: base64\n", b"Content-Type: message/rfc822\n\n",
    b"charset=\"utf-7\"", b"; boundary=\"", b"{\"children\": [", b"Naam: ", b"\xff\xfe",
    b"\r", b"\r--", b"; x*", b"; name*0*=utf-8''%ff",
)


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """Bytes of a structured message with a few random splices, deletions and truncations."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(("insert", "delete", "replace", "truncate")))
        piece = draw(st.one_of(st.sampled_from(_SPLICES), st.binary(min_size=1, max_size=6)))
        if op == "insert":
            data[at:at] = piece
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        elif op == "replace":
            data[at:at + len(piece)] = piece
        else:
            del data[at:]
    return bytes(data)


arbitrary_entities = st.one_of(
    st.binary(max_size=2048),
    mutated(fuzzed_signals().map(lambda g: g.entity)),
    mutated(well_formed_signals().map(lambda g: g.entity)),
)
