"""Validators for the few fields that may pass through the gateway.

Takes: text as a sender, DUO or the leerplicht administration wrote it (a date, a name, a BSN, a
school code). Produces: the canonical form of that value, or None when it is not one. Fails:
never raises on any `str`; None is the only refusal, and the caller decides what to tell whom
(the caller names the field, never the value). Trusts: nothing about its input.

Shared by extract (signals) and the CSV imports (pupil register, DUO school list), so that a
signal and the register agree on what a valid date, BSN or vestigingscode is.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

# ASCII digits only: `\d` would also match Arabic-Indic or fullwidth digits, which no Dutch
# register uses and which would then compare unequal to the register's own.
_DUTCH_DATE = re.compile(r"([0-9]{1,2})([-/])([0-9]{1,2})\2([0-9]{4})")
_ISO_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")

_BRIN = re.compile(r"[0-9]{2}[A-Z]{2}")
_VESTIGINGSCODE = re.compile(r"[0-9]{2}[A-Z]{2}[0-9]{2}")
_VESTIGINGSNUMMER = re.compile(r"[0-9]{1,2}")
_BSN_DIGITS = re.compile(r"[0-9]{8,9}")

_SPACE_RUN = re.compile(r"[ \t]+")
_NAME_MAX = 200
_NAME_PUNCTUATION = frozenset(" -'’.")
# Letters and combining marks that render as nothing (Hangul fillers, variation selectors, the
# combining grapheme joiner, Mongolian selectors, Khmer inherent vowels): a "name" made of them
# looks empty or identical to another name to the teacher who reads it.
_INVISIBLE = frozenset(
    (
        *(0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0),
        *range(0xFE00, 0xFE10),
        *range(0xE0100, 0xE01F0),
    )
)


def parse_date(text: str) -> dt.date | None:
    """`DD-MM-YYYY`, `D-M-YYYY`, `DD/MM/YYYY`, `D/M/YYYY` or ISO `YYYY-MM-DD`; else None.

    Two-digit years and month names are refused: a guessed century routes a child wrongly.
    """
    value = text.strip()
    dutch = _DUTCH_DATE.fullmatch(value)
    if dutch is not None:
        day, month, year = int(dutch[1]), int(dutch[3]), int(dutch[4])
    else:
        iso = _ISO_DATE.fullmatch(value)
        if iso is None:
            return None
        year, month, day = int(iso[1]), int(iso[2]), int(iso[3])
    try:
        return dt.date(year, month, day)
    except ValueError:  # 31-02, day 0, year 0
        return None


def clean_name(text: str) -> str | None:
    """The name, NFC-normalised with runs of spaces/tabs collapsed; None if it is not a name.

    Characters that could hide or reorder text (controls, bidi overrides, zero-width and other
    format characters, line separators) make the whole name invalid rather than being stripped:
    silently editing a name could turn it into another child's.
    """
    name = _SPACE_RUN.sub(" ", unicodedata.normalize("NFC", text)).strip(" ")
    if len(name) > _NAME_MAX:
        return None
    surname, comma, given = name.partition(",")
    if comma:
        # Registers write surname first: "Berg, Johannes van der" (names.name_key reads it).
        # One comma, with a name on each side; the spacing after it is made the usual one.
        surname, given = surname.rstrip(" "), given.lstrip(" ")
        if "," in given or clean_name(surname) is None or clean_name(given) is None:
            return None
        return f"{surname}, {given}"
    has_letter = False
    for char in name:
        if ord(char) in _INVISIBLE:
            return None
        category = unicodedata.category(char)
        if category[0] == "L":
            has_letter = True
        elif category not in ("Mn", "Mc") and char not in _NAME_PUNCTUATION:
            # An allow-list: this also refuses Cc, Cf, Cs, Co, Zl, Zp, digits and symbols.
            return None
    return name if has_letter else None


def bsn_digits(text: str) -> str | None:
    """The 9 digits of a BSN written with optional spaces and dots; 8 digits are zero-padded.

    The Dutch registry writes numbers issued before 2007 with 8 digits; their value is the same.
    This checks only the shape; see `passes_eleven_test`.
    """
    digits = text.strip().replace(" ", "").replace(".", "")
    if _BSN_DIGITS.fullmatch(digits) is None:
        return None
    return digits.zfill(9)


def passes_eleven_test(digits: str) -> bool:
    """Whether 9 digits pass the BSN eleven-test (9*d1 + ... + 2*d8 - d9 divisible by 11)."""
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    if digits == "000000000":
        return False
    total = sum(weight * int(d) for weight, d in zip(range(9, 1, -1), digits[:8], strict=True))
    return (total - int(digits[8])) % 11 == 0


def normalise_bsn(text: str) -> str | None:
    """The BSN as 9 digits when it has the right shape and passes the eleven-test; else None."""
    digits = bsn_digits(text)
    if digits is None or not passes_eleven_test(digits):
        return None
    return digits


def normalise_school(text: str) -> str | None:
    """A DUO vestigingscode (`12AB00`) or bare BRIN (`12AB`), uppercased; else None.

    A bare BRIN is returned as given: whether it may stand for its main location is for resolve
    to decide, not for a parser.
    """
    code = text.strip()
    # isascii first: str.upper() maps some non-ASCII letters onto ASCII ones ("ı" -> "I").
    if not code.isascii():
        return None
    code = code.upper()
    if _VESTIGINGSCODE.fullmatch(code) or _BRIN.fullmatch(code):
        return code
    return None


def vestigingscode(brin: str, number: str) -> str | None:
    """The 6-character vestigingscode from DUO's `BRIN NUMMER` and `VESTIGINGSNUMMER` columns.

    `number` may be 0-2 digits (empty means the main location, `00`) or already the full code;
    a full code with an empty `brin` is taken as is, one whose BRIN differs from `brin` is None.
    """
    brin_code = brin.strip()
    number_text = number.strip()
    if not (brin_code.isascii() and number_text.isascii()):
        return None
    brin_code = brin_code.upper()
    number_text = number_text.upper()
    if _VESTIGINGSCODE.fullmatch(number_text):
        if brin_code in ("", number_text[:4]):
            return number_text
        return None
    if _BRIN.fullmatch(brin_code) is None:
        return None
    if number_text == "":
        return brin_code + "00"
    if _VESTIGINGSNUMMER.fullmatch(number_text) is None:
        return None
    return brin_code + number_text.zfill(2)


def format_date_nl(d: dt.date) -> str:
    """`DD-MM-YYYY`, the form Dutch schools read."""
    # Not strftime: %Y does not zero-pad years below 1000 on every platform.
    return f"{d.day:02d}-{d.month:02d}-{d.year:04d}"
