"""Hypothesis strategies for the property tests (tests/test_properties_*.py, fuzz/run.py): the
building blocks of a signal (names, birth dates, BSNs, school codes, labels) and the addresses
and replies of the acknowledgement path. Whole signals are in tests/signal_strategies.py, RFC 3156
envelopes and gpg status lines in tests/gpg_strategies.py."""

from __future__ import annotations

import datetime as dt
import tempfile
import unicodedata
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.core.model import CODEWORD

# Hypothesis caches its Unicode tables under its home directory, `.hypothesis` in the working
# directory by default: keep them out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hwc-gateway-hypothesis")

TODAY = dt.date(2026, 3, 2)
PUPIL_MAX_AGE_YEARS = 25
NAME_MAX = 200


def years_before(today: dt.date, years: int) -> dt.date:
    """The same day `years` earlier; 28 February for 29 February."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:
        return today.replace(year=today.year - years, day=28)


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


# --- strategies: the acknowledgement path -------------------------------------------------

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
