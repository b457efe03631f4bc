"""Tests for pipeline.extract: the JSON and the labelled text form, the codeword, the reference and
the children."""

from __future__ import annotations

import datetime as dt

import pytest
from extract_helpers import (
    DAAN_JSON,
    DUTCH_TEXT,
    EXAMPLE_JSON,
    EXAMPLE_SIGNAL,
    SANNE_JSON,
    json_child,
    json_leaf,
    leaf,
    one_child,
    rejected,
    signal,
    text_signal,
)

from gateway.core.model import Child, Signal

# --- the two forms ------------------------------------------------------------------------


def test_json_spec_example_with_siblings() -> None:
    """The docs/protocol.md §4 JSON example gives two children with their BSN and school hint."""
    assert signal(json_leaf(EXAMPLE_JSON)) == EXAMPLE_SIGNAL


def test_json_accepts_dutch_date_forms() -> None:
    """JSON birthdates may also be written the Dutch way."""
    result = signal(json_child(name="Sanne", birthdate="12/04/2016"))
    assert result.children[0].birthdate == dt.date(2016, 4, 12)


def test_text_form_dutch_labels_with_free_text_around() -> None:
    """Dutch labelled text between greetings and incident details gives the same signal."""
    assert signal(leaf(DUTCH_TEXT)) == EXAMPLE_SIGNAL


def test_text_form_english_labels() -> None:
    """English labels, including both birth date spellings, are read."""
    entity = text_signal(
        "Codeword: Handle with Care",
        "Reference: VT-HVB-2026-000123",
        "Name: Sanne de Vries",
        "Date of birth: 2016-04-12",
        "BSN: 1234.56.782",
        "Vestiging: 12ab00",
        "Name: Daan de Vries",
        "Birthdate: 03/09/2013",
    )
    assert signal(entity) == EXAMPLE_SIGNAL


def test_text_labels_case_insensitive_and_padded_colon() -> None:
    """Labels match in any case, with whitespace before the colon or inside the label."""
    entity = text_signal(
        "CODEWOORD : handle  WITH care",
        "  naam :Sanne de Vries",
        "DATE   OF BIRTH\t: 12-04-2016",
        "brin: 12ab",
    )
    child = signal(entity).children[0]
    assert (child.name, child.birthdate, child.school_hint) == (
        "Sanne de Vries",
        dt.date(2016, 4, 12),
        "12AB",
    )


@pytest.mark.parametrize("birthdate", ["12-04-2016", "12/04/2016", "2016-04-12"])
def test_text_accepts_every_date_form(birthdate: str) -> None:
    """DD-MM-YYYY, DD/MM/YYYY and ISO all give the same birth date."""
    assert signal(one_child(birthdate=birthdate)).children[0].birthdate == dt.date(2016, 4, 12)


@pytest.mark.parametrize("birthdate", ["2-4-2016", "2/4/2016"])
def test_text_accepts_single_digit_day_and_month(birthdate: str) -> None:
    """D-M-YYYY and D/M/YYYY are read."""
    assert signal(one_child(birthdate=birthdate)).children[0].birthdate == dt.date(2016, 4, 2)


def test_extra_lines_do_not_survive() -> None:
    """Unknown lines (incident, address, Subject) leave nothing in the result."""
    result = signal(
        one_child("Sanne de Vries", "12-04-2016", "Subject: geheim", "Incident: vader aangehouden")
    )
    assert result == Signal(children=(Child("Sanne de Vries", dt.date(2016, 4, 12)),))


def test_json_extra_keys_are_ignored_and_do_not_survive() -> None:
    """Keys outside the contract, at any level, are dropped without complaint."""
    document = {
        **EXAMPLE_JSON,
        "incident": {"description": "vader aangehouden", "address": "Dorpsstraat 1"},
        "parents": ["Piet de Vries"],
        "children": [
            {**SANNE_JSON, "notes": "slaapt slecht", "name_mother": 7},
            DAAN_JSON,
        ],
    }
    assert signal(json_leaf(document)) == EXAMPLE_SIGNAL


def test_json_null_optional_fields_are_absent() -> None:
    """null for reference, bsn or school means not given."""
    entity = json_leaf(
        {
            "codeword": "Handle with Care",
            "reference": None,
            "children": [{"name": "Sanne", "birthdate": "2016-04-12", "bsn": None, "school": None}],
        }
    )
    assert signal(entity) == Signal(children=(Child("Sanne", dt.date(2016, 4, 12)),))


def test_empty_optional_text_lines_are_absent() -> None:
    """A template line left empty (BSN:, School:, Referentie:) means not given."""
    result = signal(one_child("Sanne", "12-04-2016", "BSN:", "School:  ", "Referentie:"))
    assert result == Signal(children=(Child("Sanne", dt.date(2016, 4, 12)),))


# --- codeword, reference, children ----------------------------------------------------------


def test_missing_codeword_rejected_in_both_forms() -> None:
    """No codeword is refused, in text and in JSON."""
    assert rejected(text_signal("Naam: Sanne", "Geboortedatum: 12-04-2016")) == "codeword missing"
    document = {"children": [{"name": "Sanne", "birthdate": "2016-04-12"}]}
    assert rejected(json_leaf(document)) == "codeword missing"
    assert rejected(text_signal("Codewoord:", "Naam: Sanne")) == "codeword missing"


def test_wrong_codeword_rejected() -> None:
    """A codeword other than Handle with Care is refused."""
    entity = text_signal(
        "Codewoord: Handle with caution", "Naam: Sanne", "Geboortedatum: 12-04-2016"
    )
    assert rejected(entity) == "codeword is not Handle with Care"
    document = {"codeword": 1, "children": [{"name": "Sanne", "birthdate": "2016-04-12"}]}
    assert rejected(json_leaf(document)) == "codeword is not a string"


def test_reference_must_be_a_plain_token() -> None:
    """A reference with characters outside [A-Za-z0-9._/-] or over 64 long is refused."""
    for reference in ("VT 123", "VT<123>", "x" * 65, "VT-ë"):
        entity = text_signal(f"Referentie: {reference}", "Codewoord: Handle with Care", "Naam: S")
        assert rejected(entity) == "reference is malformed"
    assert signal(one_child("Sanne", "12-04-2016", "Reference: " + "x" * 64)).reference == "x" * 64


def test_no_children_rejected() -> None:
    """A signal naming no child is refused, in both forms."""
    assert rejected(text_signal("Codewoord: Handle with Care")) == "no child named"
    assert rejected(json_leaf({"codeword": "Handle with Care", "children": []})) == "no child named"
    assert rejected(json_leaf({"codeword": "Handle with Care"})) == "children missing"
    document = {"codeword": "Handle with Care", "children": {"name": "Sanne"}}
    assert rejected(json_leaf(document)) == "children is not a list"


def test_too_many_children_rejected() -> None:
    """More than 20 children is refused; exactly 20 is accepted."""
    child = {"name": "Sanne", "birthdate": "2016-04-12"}
    assert (
        len(signal(json_leaf({"codeword": "Handle with Care", "children": [child] * 20})).children)
        == 20
    )
    assert (
        rejected(json_leaf({"codeword": "Handle with Care", "children": [child] * 21}))
        == "too many children"
    )
    lines = ["Naam: Sanne\nGeboortedatum: 12-04-2016"] * 21
    assert rejected(text_signal("Codewoord: Handle with Care", *lines)) == "too many children"
