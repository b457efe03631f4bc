"""Property tests (hypothesis) over extract, the MIME entry points, the gpg verdicts and the
acknowledgement path (ack addresses, automatic replies).

What they pin: arbitrary bytes never make a pure stage raise (so never a traceback, never a 451
for a sender's garbage, never a 5xx that is our own fault), every accepted name is clean, every
accepted birth date plausible, no refusal carries a value from the message, and a well-formed
signal comes out exactly as it went in. The examples per test are few so that `make test` stays
fast; `fuzz/run.py` runs the same properties (`PROPERTIES`) with many more.
"""

from __future__ import annotations

import ast
import base64
import datetime as dt
import inspect
import json
import quopri
import re
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.core.model import CODEWORD, Child, RejectClass, Rejection, Signal
from gateway.crypto.gpg import GpgResult
from gateway.delivery.seal import ack_address, new_ack_token
from gateway.ingress.acks import ack_token, automatic_reply
from gateway.ingress.replies import rejection_reply
from gateway.pipeline import extract, opener
from gateway.pipeline.extract import parse_signal

# Hypothesis caches its Unicode tables under its home directory, `.hypothesis` in the working
# directory by default: keep them out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hwc-gateway-hypothesis")

EXAMPLES = 120  # per test in `make test`; fuzz/run.py runs thousands
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)

TODAY = dt.date(2026, 3, 2)
PUPIL_MAX_AGE_YEARS = 25
NAME_MAX = 200

# docs/protocol.md §5, the reply table: the one reply code per refusal class.
SPEC_REPLY = {
    RejectClass.NOT_ENCRYPTED: "554 5.7.5",
    RejectClass.BAD_SIGNATURE: "554 5.7.7",
    RejectClass.INVALID_SIGNAL: "554 5.6.0",
    RejectClass.TOO_LARGE: "552 5.3.4",
}
FORBIDDEN_IN_NAMES = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))
# The catch-all detail of parse_signal: an exception inside extract, i.e. not a decision.
CATCH_ALL = "signal could not be read"


# --- oracles --------------------------------------------------------------------------------


def years_before(today: dt.date, years: int) -> dt.date:
    """The same day `years` earlier; 28 February for 29 February."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


def _fixed_texts() -> tuple[str, ...]:
    """Every string literal in extract's code (docstrings excluded), and the codeword: the only
    text a refusal detail may be made of."""
    tree = ast.parse(inspect.getsource(extract))
    docstrings = {
        id(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    texts = {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    }
    return (*sorted(texts), CODEWORD)


FIXED_TEXTS = _fixed_texts()
_CHILD_PREFIX = re.compile(r"child [0-9]+: ")


def assert_safe_detail(rejection: Rejection) -> None:
    """A refusal detail fit for an SMTP reply: printable ASCII, one line, 1..200 characters."""
    detail = rejection.detail
    assert detail.isascii(), detail
    assert detail.isprintable(), detail  # no CR, LF, tab or other control character
    assert 0 < len(detail) <= 200, detail


def assert_no_value_in(detail: str, values: tuple[str, ...]) -> None:
    """No generated value of 4 or more characters appears in `detail`, unless the value is
    itself part of extract's fixed wording (a name "Care" is in "Handle with Care")."""
    body = _CHILD_PREFIX.sub("", detail)
    for value in values:
        if len(value) >= 4 and value in body:
            assert any(value in text for text in FIXED_TEXTS), (value, detail)


def assert_valid_signal(signal: Signal, today: dt.date) -> None:
    """Every child of an accepted signal has a clean name and a plausible birth date."""
    assert 1 <= len(signal.children) <= extract.MAX_CHILDREN
    earliest = years_before(today, PUPIL_MAX_AGE_YEARS)
    for child in signal.children:
        name = child.name
        assert 1 <= len(name) <= NAME_MAX
        assert unicodedata.is_normalized("NFC", name)
        for char in name:
            assert unicodedata.category(char) not in FORBIDDEN_IN_NAMES, hex(ord(char))
            assert unicodedata.category(char) != "Nd" and not char.isdigit(), hex(ord(char))
        assert isinstance(child.birthdate, dt.date)
        assert earliest <= child.birthdate <= today
        if child.bsn is not None:
            assert re.fullmatch(r"[0-9]{9}", child.bsn)
        if child.school_hint is not None:
            assert re.fullmatch(r"[0-9]{2}[A-Z]{2}([0-9]{2})?", child.school_hint)
    if signal.reference is not None:
        assert re.fullmatch(r"[A-Za-z0-9._/-]{1,64}", signal.reference)


# --- strategies: building blocks --------------------------------------------------------------

# Letters that render as nothing (Hangul fillers, Khmer inherent vowels): refused as names.
_INVISIBLE_LETTERS = "\u115f\u1160\u17b4\u17b5\u3164\uffa0"
_LETTER = st.characters(
    categories=("Lu", "Ll", "Lt", "Lo"), exclude_characters=_INVISIBLE_LETTERS
)
# Characters that have broken name and line handling elsewhere: controls, separators that
# str.splitlines() honours, bidi and zero-width format characters, invisible letters, non-ASCII
# digits, a lone surrogate, private use, and the punctuation the parsers split on.
_NASTY = (
    "\x00\t\n\x0b\x0c\r\x1c\x1e\x7f\x85\xa0\xad\u034f\u0301\u115f\u1160\u17b4\u180b\u200b"
    "\u200d\u200e\u202e\u2028\u2029\u2066\u3164\ufe0f\ufeff\uffa0\ud800\U000e0001\U000e0100"
    "\U000f0000\u0663\uff11\u00b2\u2160-'\u2019. :\"\\={}[],"
)
_ANY_CHAR = st.one_of(
    st.characters(),  # every code point but surrogates
    st.characters(categories=["Cs"]),
    st.sampled_from(_NASTY),
    _LETTER,
)
_CODEWORD_WORDS = CODEWORD.split()


# Strategies are built once: building one inside a composite costs more than drawing from it.
_MASK = st.integers(0, 2**24 - 1)
_GAP = st.sampled_from((" ", "  ", "\t", " \t "))
_WORDS = st.lists(st.text(_LETTER, min_size=1, max_size=12), min_size=1, max_size=5)
_NAME_SEP = st.sampled_from((" ", "-", "'", "\u2019"))


def _random_case(draw: st.DrawFn, text: str) -> str:
    mask = draw(_MASK)
    return "".join(c.upper() if mask >> (i % 24) & 1 else c.lower() for i, c in enumerate(text))


@st.composite
def codewords(draw: st.DrawFn) -> str:
    """The codeword in any case and spacing docs/protocol.md §4 allows."""
    first, second, third = _CODEWORD_WORDS
    return _random_case(draw, first + draw(_GAP) + second + draw(_GAP) + third)


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    """A name of letters with single spaces, hyphens and apostrophes between the words, NFC."""
    words = draw(_WORDS)
    name = words[0] + "".join(draw(_NAME_SEP) + word for word in words[1:])
    return unicodedata.normalize("NFC", name)


_VALID_NAME = valid_names()


@st.composite
def fuzzy_names(draw: st.DrawFn) -> str:
    """Anything that might be typed, pasted or forged into a name field."""
    kind = draw(st.sampled_from(("valid", "valid", "valid", "spliced", "spliced", "text", "long")))
    if kind == "valid":
        return draw(_VALID_NAME)
    if kind == "text":
        return draw(st.text(_ANY_CHAR, max_size=30))
    if kind == "long":
        return draw(_VALID_NAME) * draw(st.integers(10, 40))
    name = draw(_VALID_NAME)
    at = draw(st.integers(0, len(name)))
    return name[:at] + draw(st.text(_ANY_CHAR, min_size=1, max_size=3)) + name[at:]


_FUZZY_NAME = fuzzy_names()


DATE_FORMATS = ("DD-MM-YYYY", "D-M-YYYY", "DD/MM/YYYY", "D/M/YYYY", "YYYY-MM-DD")


def format_date(day: dt.date, form: str) -> str:
    if form == "YYYY-MM-DD":
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"
    sep = "/" if "/" in form else "-"
    if form.startswith("DD"):
        return f"{day.day:02d}{sep}{day.month:02d}{sep}{day.year:04d}"
    return f"{day.day}{sep}{day.month}{sep}{day.year:04d}"


def date_text(draw: st.DrawFn, today: dt.date) -> str:
    """A birth date as text: near the age limits, anywhere, impossible, or not a date."""
    kind = draw(st.sampled_from(
        ("plausible", "plausible", "plausible", "edge", "any", "impossible", "junk", "foreign")))
    form = draw(st.sampled_from(DATE_FORMATS))
    if kind == "plausible":
        return format_date(plausible_birthdate(draw, today), form)
    if kind == "edge":  # the day before, of and after each end of the plausible range
        base = draw(st.sampled_from((years_before(today, PUPIL_MAX_AGE_YEARS), today)))
        offset = dt.timedelta(days=draw(st.integers(-2, 2)))
        return format_date(base + offset, form)
    if kind == "any":
        return format_date(draw(st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31))), form)
    if kind == "impossible":
        day, month = draw(st.integers(0, 39)), draw(st.integers(0, 19))
        year = draw(st.integers(0, 9999))
        sep = draw(st.sampled_from(("-", "/", ".")))
        return draw(st.sampled_from([
            f"{day:02d}{sep}{month:02d}{sep}{year:04d}",
            f"{year:04d}{sep}{month:02d}{sep}{day:02d}",
            f"{day}{sep}{month}{sep}{year % 100:02d}",
            f"{year}-{month}-{day}",
        ]))
    if kind == "foreign":  # right shape, digits from another script
        text = format_date(plausible_birthdate(draw, today), form)
        digits = draw(st.sampled_from(("٠١٢٣٤٥٦٧٨٩", "０１２３４５６７８９", "۰۱۲۳۴۵۶۷۸۹")))
        return "".join(digits[int(c)] if c.isdigit() else c for c in text)
    return draw(st.text(st.one_of(st.sampled_from("0123456789-/. \t"), _ANY_CHAR), max_size=14))


def _check_digit(digits: str) -> int:
    total = sum(w * int(d) for w, d in zip(range(9, 1, -1), digits, strict=True))
    return total % 11


@st.composite
def valid_bsns(draw: st.DrawFn) -> tuple[str, str]:
    """(as written, as canonical 9 digits) for a BSN passing the eleven-test."""
    digits = draw(st.text("0123456789", min_size=8, max_size=8).filter(
        lambda d: _check_digit(d) != 10 and d != "00000000"))
    bsn = digits + str(_check_digit(digits))
    written = draw(st.sampled_from([
        bsn, f"{bsn[:4]}.{bsn[4:6]}.{bsn[6:]}", f"{bsn[:3]} {bsn[3:6]} {bsn[6:]}",
        bsn[1:] if bsn.startswith("0") else bsn,
    ]))
    return written, bsn


@st.composite
def valid_schools(draw: st.DrawFn) -> tuple[str, str]:
    """(as written, canonical) for a vestigingscode or BRIN."""
    code = draw(st.from_regex(r"[0-9]{2}[A-Z]{2}([0-9]{2})?", fullmatch=True))
    return draw(st.sampled_from((code, code.lower()))), code


_REFERENCES = st.from_regex(r"[A-Za-z0-9._/-]{1,64}", fullmatch=True)
_FORMS = st.sampled_from(("json", "text"))
_DATE_FORMATS = st.sampled_from(DATE_FORMATS)
_MAYBE_BSN = st.none() | valid_bsns()
_MAYBE_SCHOOL = st.none() | valid_schools()
_MAYBE_REFERENCE = st.none() | _REFERENCES
_INDENTS = st.sampled_from((None, 2))
_CODEWORD = codewords()
# Weighted choices: most fields right, so that whole signals get through, a few hostile.
_MOSTLY = st.sampled_from((True,) * 9 + (False,))
_RARELY = st.sampled_from((False,) * 4 + (True,))
_CHILD_COUNTS = st.sampled_from((1, 1, 1, 2, 2, 3, 4, 0))
_FUZZ_TEXT = st.text(_ANY_CHAR, max_size=20)
_FUZZ_BSN = st.one_of(valid_bsns().map(lambda b: b[0]), st.text("0123456789 .", max_size=11))
_FUZZ_SCHOOL = st.one_of(valid_schools().map(lambda s: s[0]), st.text(_ANY_CHAR, max_size=7))
_FUZZ_EXTRA_KEYS = st.dictionaries(
    st.text(max_size=8), st.one_of(st.text(max_size=8), st.integers(), st.none()), max_size=2)
_FUZZ_NON_STRING = st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2))
_FUZZ_DOCUMENT_EXTRAS = st.dictionaries(
    st.sampled_from(("incident", "address", "parents", "note", "x")),
    st.text(_ANY_CHAR, max_size=20), max_size=3)
_TODAYS = st.one_of(
    st.dates(dt.date(1990, 1, 1), dt.date(2100, 12, 31)),
    st.sampled_from([dt.date(2024, 2, 29), dt.date(2028, 2, 29), dt.date(2026, 1, 1),
                     dt.date(2026, 12, 31)]),
)
_LABEL_SPELLINGS = {
    "codeword": ["Codewoord", "Codeword"],
    "reference": ["Referentie", "Reference"],
    "name": ["Naam", "Name"],
    "birthdate": ["Geboortedatum", "Date of birth", "Birthdate", "Date  of\tbirth"],
    "bsn": ["BSN"],
    "school": ["School", "Vestiging", "BRIN"],
}
_JUNK_LINES = st.one_of(
    st.sampled_from(["", "Goedemorgen,", "Toelichting: incident in de nacht",
                     "Adres: Dorpsstraat 1", "Met vriendelijke groet,", "-- ",
                     "Telefoon: 0800-2000", "Ouders: onbekend"]),
    st.text(st.one_of(_ANY_CHAR, st.sampled_from(":abn ")), max_size=40),
)


_SPELLING = {field: st.sampled_from(spellings) for field, spellings in _LABEL_SPELLINGS.items()}
_COLON = st.sampled_from((":", ": ", " : ", ":\t", ":   "))


def label(draw: st.DrawFn, field: str) -> str:
    """`Label: ` for a field, in any spelling and case docs/protocol.md §4 allows."""
    return _random_case(draw, draw(_SPELLING[field])) + draw(_COLON)


def plausible_birthdate(draw: st.DrawFn, today: dt.date) -> dt.date:
    """A day from 25 years before `today` up to `today`, both included."""
    earliest = years_before(today, PUPIL_MAX_AGE_YEARS)
    return earliest + dt.timedelta(days=draw(st.integers(0, (today - earliest).days)))


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

# --- strategies: RFC 3156 envelopes -----------------------------------------------------------

ARMOR = (
    b"-----BEGIN PGP MESSAGE-----\n\nhF4DAAAAAAAAAAASAQdAbm90IHJlYWxseSBjaXBoZXJ0ZXh0\n"
    b"=Zm9v\n-----END PGP MESSAGE-----\n"
)
SIGNATURE = (
    b"-----BEGIN PGP SIGNATURE-----\n\niHUEARYKAB0WIQRub3QgcmVhbGx5IGEgc2lnbmF0dXJl\n"
    b"=YmFy\n-----END PGP SIGNATURE-----\n"
)


class Flaws:
    """At most one deliberate flaw per generated message, so most are right and each wrong one
    is wrong in a single known way; `right` says whether the flaw was drawn at all."""

    def __init__(self, draw: st.DrawFn, names: tuple[str, ...]) -> None:
        self.draw = draw
        self.flaw = draw(st.sampled_from(("", "", "", "", *names)))
        self.right = self.flaw == ""

    def pick(self, name: str, good: tuple[str, ...], bad: tuple[str, ...]) -> str:
        return self.draw(st.sampled_from(bad if self.flaw == name else good))


_ENCRYPTED_FLAWS = ("protocol", "control type", "version", "body type", "armor", "parts")


@st.composite
def encrypted_messages(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(a message shaped like RFC 3156 §4, whether every piece of it is right)."""
    flaws = Flaws(draw, _ENCRYPTED_FLAWS)
    protocol = flaws.pick("protocol", (
        '; protocol="application/pgp-encrypted"', '; protocol="Application/PGP-Encrypted"',
    ), (
        "; protocol=application/pgp-encrypted", '; protocol="application/pgp-signature"', "",
        '; protocol=""',
    ))
    control_type = flaws.pick("control type", ("application/pgp-encrypted",
                                               "Application/PGP-Encrypted"),
                              ("text/plain", "application/octet-stream"))
    control_body = flaws.pick("version", ("Version: 1\n", "version: 1", "Version: 1"),
                              ("", "Version: 2\n", "Version:1\n"))
    body_type = flaws.pick("body type", ("application/octet-stream",),
                           ("text/plain", "application/pgp-encrypted"))
    armor = ARMOR if flaws.flaw != "armor" else draw(st.sampled_from(
        (b"", b"not armor\n", ARMOR.replace(b"BEGIN", b""))))
    cte = draw(st.sampled_from((None, "7bit", "base64", "quoted-printable")))
    body = {"base64": base64.encodebytes(armor), "quoted-printable": quopri.encodestring(armor)}\
        .get(cte or "", armor)
    parts = [
        f"Content-Type: {control_type}\nContent-Description: PGP/MIME version identification\n"
        f"\n{control_body}".encode(),
        f"Content-Type: {body_type}; name=\"encrypted.asc\"\n".encode()
        + (f"Content-Transfer-Encoding: {cte}\n".encode() if cte else b"") + b"\n" + body,
    ]
    count = 2 if flaws.flaw != "parts" else draw(st.sampled_from((0, 1, 3)))
    parts = [*parts, _NOTE_PART][:count]
    boundary = f"=_hwc_enc_{draw(st.integers(0, 10**6))}"
    head = (
        "From: signalen@veiligthuis.example.nl\nTo: leerplicht@hwc.example.nl\n"
        "Subject: ...\nMIME-Version: 1.0\n"
        f'Content-Type: multipart/encrypted{protocol}; boundary="{boundary}"\n\n'
    ).encode()
    message = head + b"".join(f"--{boundary}\n".encode() + p + b"\n" for p in parts) \
        + f"--{boundary}--\n".encode()
    if draw(st.booleans()):
        message = message.replace(b"\n", b"\r\n")
    return message, flaws.right


_BODY_LINES = st.lists(st.text(st.characters(exclude_characters="\r\n-"), max_size=30),
                      max_size=5)


_SIGNED_FLAWS = ("protocol", "signature type", "parts", "closing")


@st.composite
def signed_entities(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """(a multipart/signed entity, the exact signed bytes when every piece of it is right)."""
    flaws = Flaws(draw, _SIGNED_FLAWS)
    protocol = flaws.pick("protocol", ('; protocol="application/pgp-signature"',
                                       '; protocol="Application/PGP-Signature"'),
                          ("; protocol=application/pgp-signature",
                           '; protocol="application/pkcs7-signature"', ""))
    sig_type = flaws.pick("signature type", ("application/pgp-signature",), ("text/plain",))
    lines = draw(_BODY_LINES)
    first = (
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
        + "".join(f"{line}\n" for line in lines)
    ).encode("utf-8", "surrogatepass")
    boundary = f"=_hwc_sig_{draw(st.integers(0, 10**6))}"
    padding = draw(st.sampled_from(("", "", " ", " \t")))  # transport padding, RFC 2046
    delimiter = f"--{boundary}{padding}\n".encode()
    parts = [first, f"Content-Type: {sig_type}; name=\"signature.asc\"\n\n".encode() + SIGNATURE]
    count = 2 if flaws.flaw != "parts" else draw(st.sampled_from((1, 3)))
    parts = [*parts, _NOTE_PART][:count]
    closing = flaws.pick("closing", (f"--{boundary}--\n", f"--{boundary}-- \n"),
                         ("", f"--{boundary}\n"))
    entity = (
        f"Content-Type: multipart/signed; micalg=pgp-sha256{protocol};\n"
        f' boundary="{boundary}"\n\n'
        + draw(st.sampled_from(("", "This is an OpenPGP/MIME signed message.\n")))
    ).encode() + b"".join(delimiter + part + b"\n" for part in parts) + closing.encode()
    entity += draw(st.sampled_from((b"", b"epilogue\n")))
    crlf = draw(st.booleans())
    if crlf:
        entity = entity.replace(b"\n", b"\r\n")
    signed = first.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return entity, signed if flaws.right else None


# --- strategies: gpg status lines -------------------------------------------------------------

PINNED = ("A" * 40, "B" * 40)
STRANGER = "C" * 40
SUBKEY = "D" * 40
_SIGNATURE_PROBLEMS = ("BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "NO_PUBKEY")
KEYWORDS = (
    "NEWSIG", "GOODSIG", "VALIDSIG", *_SIGNATURE_PROBLEMS, "SIG_ID", "KEY_CONSIDERED",
    "TRUST_UNDEFINED", "TRUST_ULTIMATE", "TRUST_FULLY", "ENC_TO", "BEGIN_DECRYPTION",
    "END_DECRYPTION", "DECRYPTION_OKAY", "DECRYPTION_FAILED", "DECRYPTION_INFO",
    "DECRYPTION_KEY", "DECRYPTION_COMPLIANCE_MODE", "GOODMDC", "BADMDC", "PLAINTEXT",
    "PLAINTEXT_LENGTH", "NEED_PASSPHRASE", "NEED_PASSPHRASE_SYM", "SYMKEY_ENC", "NO_SECKEY",
    "KEYEXPIRED", "KEYREVOKED", "FAILURE", "ERROR", "NODATA", "UNEXPECTED", "NOTATION_NAME",
    "NOTATION_DATA", "VERIFICATION_COMPLIANCE_MODE",
)
_FINGERPRINTS = st.sampled_from(
    (*PINNED, STRANGER, SUBKEY, PINNED[0].lower(), "", "0x" + PINNED[0]))
_WORD = st.text(st.characters(exclude_characters="\r\n"), max_size=12)
# OpenPGP hash algorithm IDs (RFC 9580 §9.5): SHA2-256/384/512 and SHA3-256/512 are strong;
# MD5, SHA-1, RIPEMD-160, SHA-224 and anything else are not.
STRONG_HASHES = ("8", "9", "10", "12", "14")
_HASH_ALGORITHMS = (*STRONG_HASHES, "10", "10", "1", "2", "3", "11", "0", "13", "x")


@st.composite
def validsig_values(draw: st.DrawFn) -> str:
    """A VALIDSIG value: gpg's ten fields (primary fingerprint last, hash algorithm eighth),
    fewer, none, or junk."""
    signer, primary = draw(_FINGERPRINTS), draw(_FINGERPRINTS)
    hash_algo = draw(st.sampled_from(_HASH_ALGORITHMS))
    fields = [signer or "X", "2026-03-02", "1772409600", "0", "4", "0", "22", hash_algo, "00",
              primary]
    fields = fields[: draw(st.sampled_from((10, 10, 10, 11, 9, 1, 0)))]
    if len(fields) == 11:
        fields.append("extra")
    value = " ".join(f for f in fields if f)
    junk = draw(_WORD.filter(lambda w: bool(w.split())))
    return draw(st.sampled_from((value, value, value, junk)))


_VALIDSIG_VALUE = validsig_values()


def _status_value(draw: st.DrawFn, keyword: str) -> str:
    if keyword == "VALIDSIG":
        return draw(_VALIDSIG_VALUE)
    if keyword == "DECRYPTION_INFO":
        return " ".join(draw(st.lists(st.sampled_from(("0", "2", "7", "9", "x", "")), max_size=4)))
    if keyword in ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"):
        return f"{draw(_FINGERPRINTS)[-16:]} Sender <signalen@veiligthuis.example.nl>"
    return draw(st.one_of(st.just(""), _WORD, _FINGERPRINTS))


@st.composite
def status_lines(draw: st.DrawFn) -> tuple[str, str]:
    keyword = draw(st.one_of(
        st.sampled_from(KEYWORDS), st.sampled_from(KEYWORDS).map(str.lower),
        _WORD.filter(lambda w: w not in KEYWORDS),
    ))
    return keyword, _status_value(draw, keyword)


_STATUS_LINE = status_lines()

GOOD_SIGNATURE = (
    ("NEWSIG", ""),
    ("KEY_CONSIDERED", PINNED[0] + " 0"),
    ("SIG_ID", "abc 2026-03-02 1772409600"),
    ("GOODSIG", PINNED[0][-16:] + " Sender <signalen@veiligthuis.example.nl>"),
    ("VALIDSIG", f"{SUBKEY} 2026-03-02 1772409600 0 4 0 22 10 00 {PINNED[0]}"),
    ("TRUST_UNDEFINED", "0 pgp"),
)
GOOD_DECRYPTION = (
    ("ENC_TO", "0123456789ABCDEF 18 0"),
    ("KEY_CONSIDERED", PINNED[1] + " 0"),
    ("DECRYPTION_KEY", f"{PINNED[1]} {PINNED[1]} u"),
    ("BEGIN_DECRYPTION", ""),
    ("DECRYPTION_INFO", "2 9 0"),
    ("PLAINTEXT", "62 1772409600"),
    ("DECRYPTION_OKAY", ""),
    ("GOODMDC", ""),
    ("END_DECRYPTION", ""),
)


def _with_hash(validsig: str, hash_algo: str) -> str:
    fields = validsig.split(" ")
    return " ".join([*fields[:7], hash_algo, *fields[8:]])


@st.composite
def gpg_results(draw: st.DrawFn) -> tuple[GpgResult, bool]:
    """(a gpg result: a good decryption and signature, mangled or not; whether it is pristine)."""
    lines = list(GOOD_DECRYPTION[:5] + GOOD_SIGNATURE + GOOD_DECRYPTION[5:])
    pristine = draw(st.integers(0, 3)) == 0
    if not pristine and draw(st.integers(0, 3)) == 0:
        # Only the signature's hash algorithm changes: then it alone decides.
        hash_algo = draw(st.sampled_from(_HASH_ALGORITHMS))
        lines = [(key, _with_hash(value, hash_algo) if key == "VALIDSIG" else value)
                 for key, value in lines]
    elif not pristine:
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(("drop", "duplicate", "insert", "replace")))
            at = draw(st.integers(0, max(len(lines) - 1, 0)))
            if op == "insert" or not lines:
                lines.insert(at, draw(_STATUS_LINE))
            elif op == "drop":
                del lines[at]
            elif op == "duplicate":
                lines.insert(at, lines[at])
            else:
                lines[at] = (lines[at][0], _status_value(draw, lines[at][0]))
        if draw(st.integers(0, 9)) == 0:
            lines = draw(st.lists(_STATUS_LINE, max_size=12))
    returncode = 0 if pristine else draw(st.sampled_from((0, 0, 0, 1, 2, None, -9)))
    return GpgResult(returncode, b"", tuple(lines)), pristine


_PINNED_SETS = st.sampled_from([frozenset(PINNED), frozenset(PINNED[:1]), frozenset()])


# --- the properties, as plain checks (shared with fuzz/run.py) --------------------------------


def check_parse_signal_on_arbitrary_bytes(entity: bytes) -> None:
    """parse_signal never raises; a refusal is INVALID_SIGNAL with a safe detail."""
    result = parse_signal(entity, today=TODAY)
    if isinstance(result, Signal):
        assert_valid_signal(result, TODAY)
    else:
        assert isinstance(result, Rejection)
        assert result.kind is RejectClass.INVALID_SIGNAL
        assert_safe_detail(result)


def check_parse_signal_on_fuzzed_signal(case: Generated) -> None:
    """Accepted names and dates are clean; refusals are decisions that carry no value."""
    result = parse_signal(case.entity, today=case.today)
    if isinstance(result, Signal):
        assert_valid_signal(result, case.today)
        return
    assert isinstance(result, Rejection)
    assert result.kind is RejectClass.INVALID_SIGNAL
    assert_safe_detail(result)
    # The entity is well-formed MIME: an exception inside extract here is our fault, not the
    # sender's, and must not be answered with a 5xx.
    assert result.detail != CATCH_ALL
    assert_no_value_in(result.detail, case.values)


def check_round_trip(case: Generated) -> None:
    """A well-formed signal is accepted with exactly its children, in order."""
    result = parse_signal(case.entity, today=case.today)
    assert isinstance(result, Signal), result
    assert case.expected is not None
    got = [(c.name, c.birthdate, c.bsn, c.school_hint) for c in result.children]
    want = [(c.name, c.birthdate, c.bsn, c.school_hint) for c in case.expected.children]
    assert got == want
    assert result.reference == case.expected.reference


def check_encrypted_payload(case: tuple[bytes, bool]) -> None:
    """encrypted_payload never raises; it returns the armor of a right message, else a refusal."""
    raw, right = case
    result = opener.encrypted_payload(raw)
    if isinstance(result, Rejection):
        assert result.kind in (RejectClass.NOT_ENCRYPTED, RejectClass.TOO_LARGE)
        assert_safe_detail(result)
        assert not right, result
    else:
        assert isinstance(result, bytes)
        assert b"-----BEGIN PGP MESSAGE-----" in result
        if right:
            assert ARMOR.strip() in result.replace(b"\r\n", b"\n")


def check_signed_parts(case: tuple[bytes, bytes | None]) -> None:
    """signed_parts never raises; what it calls signed is bytes of the input, exact if right."""
    entity, signed = case
    result = opener.signed_parts(entity)
    if result is None:
        assert signed is None
    elif isinstance(result, Rejection):
        assert result.kind is RejectClass.BAD_SIGNATURE
        assert_safe_detail(result)
        assert signed is None, result
    else:
        got, signature = result
        assert isinstance(got, bytes) and isinstance(signature, bytes)
        assert got in entity.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if signed is not None:
            assert got == signed
            assert signature.replace(b"\r\n", b"\n").strip() == SIGNATURE.strip()


def check_rejection_reply(rejection: Rejection) -> None:
    """Every refusal is one 55x line with its enhanced code (docs/protocol.md §5), no CR or LF."""
    reply = rejection_reply(rejection)
    code = SPEC_REPLY[rejection.kind]
    assert re.match(r"55[0-9] 5\.[0-9]{1,3}\.[0-9]{1,3}( |$)", reply), reply
    assert reply == code or reply.startswith(code + " "), reply
    assert "\r" not in reply and "\n" not in reply
    assert len(reply.splitlines()) == 1
    if rejection.detail.isascii():
        assert reply.isascii() and len(reply) <= len(code) + 1 + 200


def check_decryption_verdict(case: tuple[GpgResult, bool]) -> None:
    """decryption_verdict never raises and passes only a real, integrity-protected decryption."""
    result, pristine = case
    verdict = opener.decryption_verdict(result)
    if verdict is not None:
        assert isinstance(verdict, Rejection)
        assert verdict.kind is RejectClass.NOT_ENCRYPTED
        assert_safe_detail(verdict)
        assert not pristine, verdict
        return
    keys = [key for key, _ in result.status]
    assert "DECRYPTION_OKAY" in keys and "END_DECRYPTION" in keys
    assert "DECRYPTION_FAILED" not in keys and "NEED_PASSPHRASE_SYM" not in keys
    infos = [value.split() for key, value in result.status if key == "DECRYPTION_INFO"]
    assert infos
    for info in infos:
        assert (info and info[0] != "0") or (len(info) > 2 and info[2] != "0")


def check_signature_verdict(case: tuple[tuple[GpgResult, bool], frozenset[str]]) -> None:
    """signature_verdict never raises and accepts exactly one good signature by a pinned key."""
    (result, pristine), pinned = case
    verdict = opener.signature_verdict(result, pinned)
    count = {key: 0 for key in ("NEWSIG", "GOODSIG", "VALIDSIG", *_SIGNATURE_PROBLEMS)}
    for key, _ in result.status:
        if key in count:
            count[key] += 1
    valid = result.keywords("VALIDSIG")
    fields = valid[0].split() if len(valid) == 1 else []
    # gpg writes the primary-key fingerprint as VALIDSIG's tenth field (DETAILS); the verdict
    # falls back to the first field for a gpg too old to write it.
    primary = fields[9] if len(fields) >= 10 else (fields[0] if fields else None)
    acceptable = (
        count["NEWSIG"] == count["GOODSIG"] == count["VALIDSIG"] == 1
        and not any(count[key] for key in _SIGNATURE_PROBLEMS)
        and result.returncode == 0
        and len(fields) >= 8 and fields[7] in STRONG_HASHES
        and primary is not None
        and primary in pinned
    )
    if isinstance(verdict, str):
        assert acceptable, verdict
        assert verdict == primary
    else:
        assert isinstance(verdict, Rejection)
        assert verdict.kind is RejectClass.BAD_SIGNATURE
        assert_safe_detail(verdict)
        assert not acceptable, verdict
    if pristine and PINNED[0] in pinned:
        assert verdict == PINNED[0]


# --- the acknowledgement path ----------------------------------------------------------------

_TOKEN = re.compile(r"ack\+([a-z2-7]{26})", re.ASCII | re.IGNORECASE)
_BASE32 = "abcdefghijklmnopqrstuvwxyz234567"


@st.composite
def ack_addresses(draw: st.DrawFn) -> str:
    """Addresses near `ack+TOKEN@domain`: right and wrong lengths, cases, alphabets, prefixes
    and characters that lower-case into ASCII (the Kelvin sign), or any text at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(_ANY_CHAR, max_size=80))
    alphabet = draw(st.sampled_from((_BASE32, _BASE32 + _BASE32.upper(), _BASE32 + "018+.-@",
                                     _BASE32 + "\u212a\u0130\u017f")))
    token = draw(st.text(st.sampled_from(alphabet), min_size=24, max_size=28))
    prefix = draw(st.sampled_from(("ack+", "ACK+", "Ack+", "ack", "ack++", "nack+", "")))
    domain = draw(st.sampled_from(("@hwc.example.nl", "@", "", "@x@hwc.example.nl")))
    return prefix + token + domain


def check_ack_token(address: str) -> None:
    """ack_token never raises and returns, lower-cased, exactly a 26-character base32 token
    after `ack+` in an ASCII local part; anything else is None."""
    local = address.rpartition("@")[0]
    match = _TOKEN.fullmatch(local)
    assert ack_token(address) == (match.group(1).lower() if match else None), address


_MARKERS: tuple[tuple[str, str, str | None], ...] = (
    ("Auto-Submitted", "auto-replied", "auto_submitted"),
    ("auto-submitted", "Auto-Generated (vacation)", "auto_submitted"),
    ("Auto-Submitted", 'auto-notified; owner-email="a@b.example"', "auto_submitted"),
    ("Auto-Submitted", "", "auto_submitted"),
    ("Auto-Submitted", "no", None),
    ("AUTO-SUBMITTED", "No (a person wrote this)", None),
    ("Precedence", "bulk", "precedence"),
    ("Precedence", "JUNK", "precedence"),
    ("Precedence", "auto_reply", "precedence"),
    ("Precedence", "list", "precedence"),
    ("Precedence", "first-class", None),
    ("X-Autoreply", "yes", "x_autoreply"),
    ("x-autorespond", "Out of office", "x_autorespond"),
)
_PLAIN_NAMES = ("From", "To", "Subject", "Date", "Message-ID", "X-Mailer", "In-Reply-To",
                "Auto-Submitted-Not", "X-Autoreplyish", "Precedences")


@st.composite
def replies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A reply: ordinary header fields, at most one automatic-reply marker among them (maybe
    folded), any body (markers in it included); and the reason the header section gives."""
    eol = draw(st.sampled_from(("\r\n", "\n")))
    value = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)
    fields = [f"{name}: {text}" for name, text in draw(st.lists(
        st.tuples(st.sampled_from(_PLAIN_NAMES), value), max_size=6))]
    expected = None
    if draw(st.booleans()):
        name, text, expected = draw(st.sampled_from(_MARKERS))
        fold = eol + draw(st.sampled_from((" ", "\t"))) if draw(st.booleans()) else " "
        fields.insert(draw(st.integers(0, len(fields))), f"{name}:{fold}{text}")
    body = draw(st.one_of(st.binary(max_size=200),
                          st.sampled_from(_MARKERS).map(lambda m: f"{m[0]}: {m[1]}".encode())))
    return (eol.join(fields) + eol + eol).encode() + body, expected


def check_automatic_reply(case: tuple[bytes, str | None]) -> None:
    """automatic_reply reads the header section only and names the marker it holds."""
    message, expected = case
    assert automatic_reply(message) == expected, message


def check_automatic_reply_on_arbitrary_bytes(message: bytes) -> None:
    """automatic_reply never raises on any bytes and answers None or one known reason."""
    assert automatic_reply(message) in (None, "auto_submitted", "precedence", "x_autoreply",
                                        "x_autorespond")


T = TypeVar("T")


@dataclass(frozen=True)
class Property(Generic[T]):
    """One property: a strategy and the check every value it draws must pass."""

    name: str
    strategy: st.SearchStrategy[T]
    check: Callable[[T], None]


_REJECTIONS = st.builds(Rejection, st.sampled_from(RejectClass), st.text(_ANY_CHAR, max_size=300))
_STATUS_FOR_SIGNATURES = st.tuples(gpg_results(), _PINNED_SETS)

PROPERTIES: tuple[Property[Any], ...] = (
    Property("parse_signal/arbitrary", arbitrary_entities, check_parse_signal_on_arbitrary_bytes),
    Property("parse_signal/fuzzed", fuzzed_signals(), check_parse_signal_on_fuzzed_signal),
    Property("parse_signal/round-trip", well_formed_signals(), check_round_trip),
    Property("encrypted_payload", st.one_of(
        encrypted_messages(),
        st.tuples(st.binary(max_size=1024), st.just(False)),
        st.tuples(mutated(encrypted_messages().map(lambda m: m[0])), st.just(False)),
    ), check_encrypted_payload),
    Property("signed_parts", st.one_of(
        signed_entities(),
        st.tuples(st.binary(max_size=1024), st.none()),
        st.tuples(mutated(signed_entities().map(lambda m: m[0])), st.none()),
    ), check_signed_parts),
    Property("rejection_reply", _REJECTIONS, check_rejection_reply),
    Property("decryption_verdict", gpg_results(), check_decryption_verdict),
    Property("signature_verdict", _STATUS_FOR_SIGNATURES, check_signature_verdict),
    Property("ack_token", ack_addresses(), check_ack_token),
    Property("automatic_reply", replies(), check_automatic_reply),
    Property("automatic_reply/arbitrary", st.binary(max_size=2048),
             check_automatic_reply_on_arbitrary_bytes),
)


# --- the tests --------------------------------------------------------------------------------


@SETTINGS
@given(arbitrary_entities)
def test_parse_signal_never_raises_on_arbitrary_bytes(entity: bytes) -> None:
    """Arbitrary bytes give a clean Signal or INVALID_SIGNAL with an ASCII one-line detail."""
    check_parse_signal_on_arbitrary_bytes(entity)


@SETTINGS
@given(fuzzed_signals())
def test_accepted_names_and_dates_are_clean(case: Generated) -> None:
    """Hostile names and dates are never accepted unclean, and never echoed in a refusal."""
    check_parse_signal_on_fuzzed_signal(case)


@SETTINGS
@given(well_formed_signals())
def test_well_formed_signal_round_trips(case: Generated) -> None:
    """A well-formed signal in any form, encoding and MIME shape yields exactly its children."""
    check_round_trip(case)


@SETTINGS
@given(PROPERTIES[3].strategy)
def test_encrypted_payload_never_raises(case: tuple[bytes, bool]) -> None:
    """encrypted_payload returns the armor of an RFC 3156 message and refuses anything else."""
    check_encrypted_payload(case)


@SETTINGS
@given(PROPERTIES[4].strategy)
def test_signed_parts_never_raises(case: tuple[bytes, bytes | None]) -> None:
    """signed_parts returns the exact signed bytes of a multipart/signed, else None or refusal."""
    check_signed_parts(case)


@SETTINGS
@given(_REJECTIONS)
def test_rejection_reply_is_one_spec_line(rejection: Rejection) -> None:
    """Any Rejection's reply is one line starting with its 55x and 5.x.x (docs/protocol.md §5)."""
    check_rejection_reply(rejection)


@SETTINGS
@given(gpg_results())
def test_decryption_verdict_never_raises(case: tuple[GpgResult, bool]) -> None:
    """decryption_verdict passes only DECRYPTION_OKAY + END_DECRYPTION with integrity proof."""
    check_decryption_verdict(case)


@SETTINGS
@given(_STATUS_FOR_SIGNATURES)
def test_signature_verdict_accepts_only_one_pinned_good_signature(
    case: tuple[tuple[GpgResult, bool], frozenset[str]],
) -> None:
    """signature_verdict accepts iff one NEWSIG/GOODSIG/VALIDSIG, pinned, a SHA-2 or SHA-3
    hash, no problem, exit 0."""
    check_signature_verdict(case)


@SETTINGS
@given(st.text(" \t\u00a0\u2003", max_size=3))
@example("")
def test_signature_verdict_survives_blank_validsig(value: str) -> None:
    """A VALIDSIG status line with no fields is refused as BAD_SIGNATURE, not an exception."""
    status = tuple((k, value if k == "VALIDSIG" else v) for k, v in GOOD_SIGNATURE)
    verdict = opener.signature_verdict(GpgResult(0, b"", status), frozenset(PINNED))
    assert isinstance(verdict, Rejection)
    assert verdict.kind is RejectClass.BAD_SIGNATURE


def _lone_cr_signed(param: str) -> bytes:
    # Part 1 ends in "x<CR>--b--": a closing delimiter to the email parser (a lone CR ends a
    # line for it), not to signed_parts' CRLF byte split; the "signature part" that follows
    # is epilogue to the first, guarded parse and is only parsed by the second, unguarded one.
    return (
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary="b"\n'
        b"\n--b\n\nx\r--b--\n--b\nContent-Type: application/pgp-signature; "
        + param.encode() + b"\n\n--b--\n"
    )


@SETTINGS
@given(st.sampled_from(("x*", "name*", "x*0*", "name*0*")))
@example("x*")
def test_signed_parts_survives_a_part_after_the_parsers_closing_delimiter(param: str) -> None:
    """signed_parts refuses rather than raises when its byte split and the parser disagree."""
    result = opener.signed_parts(_lone_cr_signed(param))
    assert result is None or isinstance(result, Rejection | tuple)


@SETTINGS
@given(ack_addresses())
@example("ack+\u212a" + "a" * 25 + "@hwc.example.nl")
def test_ack_token_takes_only_exact_base32_tokens(address: str) -> None:
    """ack_token never raises and accepts only `ack+` and 26 ASCII base32 characters."""
    check_ack_token(address)


def test_ack_token_round_trips_a_fresh_address() -> None:
    """The token the gateway writes into a notice is the token read back from the address."""
    for _ in range(50):
        token = new_ack_token()
        assert ack_token(ack_address(token, "leerplicht@hwc.example.nl")) == token


@SETTINGS
@given(replies())
@example((b"\r\nAuto-Submitted: auto-replied\r\n\r\n", None))
@example((b"\nX-Autoreply: yes\n", None))
@example((b"Subject: x\nPrecedence: bulk\n\r\nX-Autoreply: yes\r\n", "precedence"))
def test_automatic_reply_names_the_marker_in_the_header_section(
        case: tuple[bytes, str | None]) -> None:
    """Auto-Submitted (not `no`), Precedence bulk/junk/list/auto_reply, X-Autoreply and
    X-Autorespond in the header section are found, folded or not; in the body, never."""
    check_automatic_reply(case)


@SETTINGS
@given(st.binary(max_size=2048))
def test_automatic_reply_never_raises(message: bytes) -> None:
    """automatic_reply of arbitrary bytes is None or one known reason, never an exception."""
    check_automatic_reply_on_arbitrary_bytes(message)
