"""Tests for pipeline.extract: each child's fields (name, birth date, BSN, school), named when
refused, never echoed."""

from __future__ import annotations

import datetime as dt

import pytest
from extract_helpers import (
    TODAY,
    json_child,
    json_leaf,
    leaf,
    one_child,
    rejected,
    signal,
    text_signal,
)

from gateway.core.model import Signal
from gateway.pipeline.extract import parse_signal

# --- per-child fields -----------------------------------------------------------------------


def test_missing_name_names_the_child() -> None:
    """A child without a name is refused with its 1-based number."""
    document = {
        "codeword": "Handle with Care",
        "children": [{"name": "Sanne", "birthdate": "2016-04-12"}, {"birthdate": "2013-09-03"}],
    }
    assert rejected(json_leaf(document)) == "child 2: name missing"
    assert rejected(one_child(" ")) == "child 1: name missing"


def test_missing_birthdate_names_the_child() -> None:
    """A child without a birth date is refused with its 1-based number."""
    entity = text_signal(
        "Codewoord: Handle with Care",
        "Naam: Sanne",
        "Geboortedatum: 12-04-2016",
        "Naam: Daan",
        "BSN: 123456782",
    )
    assert rejected(entity) == "child 2: birthdate missing"


def test_field_before_first_name_rejected() -> None:
    """A birthdate, BSN or school line before any Naam line cannot belong to a child."""
    entity = text_signal("Codewoord: Handle with Care", "Geboortedatum: 12-04-2016", "Naam: Sanne")
    assert rejected(entity) == "birthdate before the first name"
    assert rejected(text_signal("BSN: 123456782", "Naam: Sanne")) == "bsn before the first name"


def test_duplicate_labels_rejected() -> None:
    """The same label twice for one child, or the codeword/reference twice, is refused."""
    entity = one_child("Sanne", "12-04-2016", "Date of birth: 12-04-2016")
    assert rejected(entity) == "child 1: birthdate given twice"
    entity = one_child("Sanne", "12-04-2016", "School: 12AB00", "Vestiging: 12AB00")
    assert rejected(entity) == "child 1: school given twice"
    assert (
        rejected(one_child("Sanne", "12-04-2016", "Codeword: Handle with Care"))
        == "codeword given twice"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "Referentie: a", "Reference: a"))
        == "reference given twice"
    )


def test_json_duplicate_keys_rejected() -> None:
    """Duplicate keys anywhere in the JSON are refused rather than one silently winning."""
    top = b'{"codeword": "Handle with Care", "codeword": "x", "children": []}'
    assert rejected(leaf(top, "application/json")) == "duplicate key in JSON"
    nested = (
        b'{"codeword": "Handle with Care", "children": '
        b'[{"name": "Sanne", "name": "Daan", "birthdate": "2016-04-12"}]}'
    )
    assert rejected(leaf(nested, "application/json")) == "duplicate key in JSON"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_nan_and_infinity_rejected(constant: bytes) -> None:
    """Non-standard JSON constants are refused even in keys nobody reads."""
    body = b'{"codeword": "Handle with Care", "x": ' + constant + b', "children": []}'
    assert rejected(leaf(body, "application/json")) == "JSON contains NaN or Infinity"


@pytest.mark.parametrize(
    ("child", "detail"),
    [
        ({"name": 5, "birthdate": "2016-04-12"}, "child 1: name is not a string"),
        ({"name": "Sanne", "birthdate": 20160412}, "child 1: birthdate is not a string"),
        (
            {"name": "Sanne", "birthdate": "2016-04-12", "bsn": 123456782},
            "child 1: bsn is not a string",
        ),
        (
            {"name": "Sanne", "birthdate": "2016-04-12", "school": ["12AB00"]},
            "child 1: school is not a string",
        ),
    ],
)
def test_json_wrong_types_name_field_and_child(child: dict[str, object], detail: str) -> None:
    """A field of the wrong JSON type is refused, naming the field and child."""
    assert rejected(json_child(**child)) == detail


def test_json_malformed_or_not_an_object() -> None:
    """Invalid JSON, a non-object document, or a child that is not an object are refused."""
    assert rejected(leaf(b'{"codeword": ', "application/json")) == "JSON is malformed"
    assert rejected(leaf(b"[1, 2]", "application/json")) == "JSON is not an object"
    assert rejected(leaf(b"[" * 100000, "application/json")) == "JSON is malformed"
    document = {"codeword": "Handle with Care", "children": ["Sanne"]}
    assert rejected(json_leaf(document)) == "child 1: not an object"


def test_impossible_date_rejected() -> None:
    """31-02-2016 is not a date."""
    assert rejected(one_child(birthdate="31-02-2016")) == "child 1: birthdate is not a valid date"
    assert (
        rejected(one_child(birthdate="12 april 2016")) == "child 1: birthdate is not a valid date"
    )


def test_implausible_birthdates_rejected() -> None:
    """A birth date after today or more than 25 years ago is refused; the bounds are accepted."""
    detail = "child 1: birthdate is not plausible for a pupil"
    assert rejected(one_child(birthdate="03-03-2026")) == detail
    assert rejected(one_child(birthdate="01-03-2001")) == detail
    assert signal(one_child(birthdate="02-03-2026")).children[0].birthdate == TODAY
    assert signal(one_child(birthdate="02-03-2001")).children[0].birthdate == dt.date(2001, 3, 2)


def test_plausibility_on_leap_day() -> None:
    """Counting 25 years back from 29 February does not fail."""
    result = parse_signal(one_child(birthdate="28-02-2003"), today=dt.date(2028, 2, 29))
    assert isinstance(result, Signal)


@pytest.mark.parametrize("bsn", ["123456782", "111222333", "1234 56 782", "012345672", "12345672"])
def test_bsn_passing_eleven_test_kept(bsn: str) -> None:
    """A BSN passing the eleven-test is kept as 9 digits."""
    result = signal(one_child("Sanne", "12-04-2016", f"BSN: {bsn}"))
    assert result.children[0].bsn in ("123456782", "111222333", "012345672")


def test_bsn_failures_named() -> None:
    """A BSN failing the eleven-test or of the wrong shape is refused, saying which."""
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 123456789"))
        == "child 1: bsn fails the eleven-test"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 12345")) == "child 1: bsn is not 9 digits"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 12345678X"))
        == "child 1: bsn is not 9 digits"
    )


def test_bad_school_rejected() -> None:
    """A school that is not a vestigingscode or BRIN is refused."""
    detail = "child 1: school is not a valid vestigingscode"
    assert rejected(one_child("Sanne", "12-04-2016", "School: De Regenboog")) == detail


@pytest.mark.parametrize(
    "name",
    [
        "Sanne\x00",
        "Sanne \u202eseirV ed",
        "San\u200bne",
        "Sanne\rde Vries",
        "Sanne\nde Vries",
        "Sanne2",
    ],
)
def test_name_with_hidden_or_non_name_characters_rejected_json(name: str) -> None:
    """NUL, bidi override, zero-width space, CR, LF and digits make a JSON name invalid."""
    assert (
        rejected(json_child(name=name, birthdate="2016-04-12"))
        == "child 1: name is not a valid name"
    )


@pytest.mark.parametrize(
    "name", ["Sanne\x00", "Sanne \u202eseirV ed", "San\u200bne", "Sanne\rX", "R2D2"]
)
def test_name_with_hidden_or_non_name_characters_rejected_text(name: str) -> None:
    """The same characters in a labelled line are refused, not stripped."""
    assert rejected(one_child(name)) == "child 1: name is not a valid name"


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028"])
def test_text_lines_split_only_at_line_feed(separator: str) -> None:
    """Other line separators inside a Naam line make the name invalid, not a new line."""
    assert rejected(one_child(f"Sanne{separator}Daan")) == "child 1: name is not a valid name"


def test_names_with_accents_and_apostrophes_accepted() -> None:
    """Daan 't Hart and Zoë d’Ancona come through intact, in text and JSON."""
    entity = text_signal(
        "Codewoord: Handle with Care",
        "Naam: Daan 't Hart",
        "Geboortedatum: 12-04-2016",
        "Naam: Zoë d’Ancona",
        "Geboortedatum: 13-04-2016",
    )
    assert [c.name for c in signal(entity).children] == ["Daan 't Hart", "Zoë d’Ancona"]
    assert (
        signal(json_child(name="Zoë d’Ancona", birthdate="2016-04-13")).children[0].name
        == "Zoë d’Ancona"
    )
