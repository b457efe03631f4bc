"""Tests for gateway.core.fields: the validators shared by extract and the CSV imports."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.core.fields import (
    bsn_digits,
    clean_name,
    format_date_nl,
    normalise_bsn,
    normalise_school,
    parse_date,
    passes_eleven_test,
    vestigingscode,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12-04-2016", dt.date(2016, 4, 12)),
        ("2-4-2016", dt.date(2016, 4, 2)),
        ("12/04/2016", dt.date(2016, 4, 12)),
        ("2/4/2016", dt.date(2016, 4, 2)),
        ("2016-04-12", dt.date(2016, 4, 12)),
        ("  12-04-2016 \t", dt.date(2016, 4, 12)),
        ("29-02-2016", dt.date(2016, 2, 29)),
    ],
)
def test_parse_date_accepts_dutch_and_iso_forms(text: str, expected: dt.date) -> None:
    """Every date form docs/protocol.md §4 lists parses to the same calendar date."""
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "31-02-2016",
        "29-02-2015",
        "00-01-2016",
        "12-00-2016",
        "0000-01-01",
        "01-01-0000",
        "12-04-16",
        "12 april 2016",
        "12.04.2016",
        "12-04/2016",
        "2016/04/12",
        "2016-4-12",
        "12-04-2016x",
        "",
        "١٢-٠٤-٢٠١٦",
        "12-04-2016\n12-04-2016",
    ],
)
def test_parse_date_refuses_other_forms_and_impossible_dates(text: str) -> None:
    """Impossible dates, 2-digit years, month names and other separators give None."""
    assert parse_date(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Sanne de Vries", "Sanne de Vries"),
        ("  Sanne \t  de\t\tVries ", "Sanne de Vries"),
        ("Daan 't Hart", "Daan 't Hart"),
        ("Zoë d’Ancona", "Zoë d’Ancona"),
        ("Zoe\u0308 d’Ancona", "Zoë d’Ancona"),
        ("Jan-Willem v.d. Berg", "Jan-Willem v.d. Berg"),
        ("Łukasz Żółć", "Łukasz Żółć"),
        ("Мария Иванова", "Мария Иванова"),
        ("محمد", "محمد"),
        ("Berg, Johannes van der", "Berg, Johannes van der"),
        ("Berg,Johannes  van der", "Berg, Johannes van der"),
        ("Ancona , Zoë d’", "Ancona, Zoë d’"),
    ],
)
def test_clean_name_accepts_real_names_and_normalises(text: str, expected: str) -> None:
    """Names with accents, apostrophes, hyphens and other scripts survive, NFC and collapsed."""
    assert clean_name(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Sanne\r\nde Vries",
        "Sanne\nde Vries",
        "Sanne\rde Vries",
        "Sanne\x00",
        "Sanne \u202eseirV ed",
        "San\u200bne",
        "San\u200dne",
        "Sanne\u2028Vries",
        "Sanne\ufeff",
        "Sanne\ue000",
        "Sanne\ud800",
        "Sanne\x0b",
        "\u3164",
        "Sanne\ufe0f",
        "Sanne2",
        "Sanne <sanne@example.nl>",
        "Sanne; DROP",
        "Sanne: x",
        "",
        "   ",
        "- . '",
        "a" * 201,
        "Berg,",
        ", Johannes",
        "Berg, Johannes, van der",
        "Berg, Jo\u200bhannes",
        "Berg\u202e, Johannes",
        ",",
    ],
)
def test_clean_name_refuses_hidden_characters_and_non_name_text(text: str) -> None:
    """Control, format, bidi, zero-width, digits, symbols, no letter, too long: None, not edited."""
    assert clean_name(text) is None


def test_clean_name_length_limit_is_200_after_collapsing() -> None:
    """Exactly 200 characters is accepted; collapsing spaces happens before counting."""
    assert clean_name("a" * 200) == "a" * 200
    assert clean_name("a" * 100 + "     " + "b" * 99) == "a" * 100 + " " + "b" * 99


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("123456782", "123456782"),
        ("111222333", "111222333"),
        ("1234.56.782", "123456782"),
        (" 123 456 782 ", "123456782"),
        ("12345672", "012345672"),
    ],
)
def test_normalise_bsn_accepts_numbers_passing_eleven_test(text: str, expected: str) -> None:
    """Valid BSNs, with spaces/dots or as 8 digits, come back as 9 digits."""
    assert normalise_bsn(text) == expected


@pytest.mark.parametrize(
    "text",
    ["123456789", "111222334", "000000000", "00000000", "12345678a", "1234567", "1234567820", ""],
)
def test_normalise_bsn_refuses_bad_numbers(text: str) -> None:
    """Failing the eleven-test, all zeros, letters or the wrong length give None."""
    assert normalise_bsn(text) is None


def test_bsn_shape_and_eleven_test_are_separable() -> None:
    """bsn_digits checks only shape, so extract can say which of the two failed."""
    assert bsn_digits("123456789") == "123456789"
    assert not passes_eleven_test("123456789")
    assert bsn_digits("12345") is None
    assert not passes_eleven_test("12345678")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("12AB00", "12AB00"), (" 12ab01 ", "12AB01"), ("12ab", "12AB")],
)
def test_normalise_school_accepts_vestigingscode_and_bare_brin(text: str, expected: str) -> None:
    """A 6-character vestigingscode or a 4-character BRIN, uppercased."""
    assert normalise_school(text) == expected


@pytest.mark.parametrize(
    "text", ["12AB0", "12AB000", "AB1200", "1ABC00", "12A", "", "12ıB00", "１２AB00", "12AB-00"]
)
def test_normalise_school_refuses_other_codes(text: str) -> None:
    """Wrong shapes and non-ASCII look-alikes give None."""
    assert normalise_school(text) is None


@pytest.mark.parametrize(
    ("brin", "number", "expected"),
    [
        ("12AB", "0", "12AB00"),
        ("12ab", "1", "12AB01"),
        ("12AB", "00", "12AB00"),
        ("12AB", "17", "12AB17"),
        ("12AB", "", "12AB00"),
        ("12AB", "12ab03", "12AB03"),
        ("", "12AB03", "12AB03"),
    ],
)
def test_vestigingscode_from_duo_columns(brin: str, number: str, expected: str) -> None:
    """BRIN plus a zero-padded vestigingsnummer, or a full code already in the number column."""
    assert vestigingscode(brin, number) == expected


@pytest.mark.parametrize(
    ("brin", "number"),
    [("12AB", "123"), ("12AB", "x"), ("1AB", "0"), ("", "0"), ("12AB", "34CD00"), ("12AB", "-1")],
)
def test_vestigingscode_refuses_invalid_columns(brin: str, number: str) -> None:
    """A bad BRIN, a bad number or a full code of another BRIN give None."""
    assert vestigingscode(brin, number) is None


def test_format_date_nl_is_zero_padded_dutch_order() -> None:
    """Dates are written DD-MM-YYYY with zero padding."""
    assert format_date_nl(dt.date(2016, 4, 2)) == "02-04-2016"
    assert format_date_nl(dt.date(999, 1, 1)) == "01-01-0999"
