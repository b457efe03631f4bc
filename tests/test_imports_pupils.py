"""The administrator's CSV files: the pupil register, read row by row, refused by line without
its values."""

from __future__ import annotations

import datetime as dt

import pytest
from conftest import csv_bytes

from gateway.admin.imports import PROBLEM_BSN_TWICE, ImportFormatError, RowProblem, parse_pupils_csv
from gateway.core.model import Pupil

BSN_A = "123456782"
BSN_B = "111222333"
BSN_8 = "10000008"  # 010000008 once zero-padded to 9 digits


# --- pupil register ---


def test_pupils_valid_rows_are_read() -> None:
    """Each field is normalised: BSN, NFC name, Dutch or ISO date, upper-case school code."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            f"{BSN_A};Sanne  de Vries;12-04-2016;34cd00",
            ";Daan de Vries;2013-09-03;12AB01",
        )
    )
    assert result.refused == ()
    assert result.pupils == (
        Pupil("Sanne de Vries", dt.date(2016, 4, 12), "34CD00", BSN_A),
        Pupil("Daan de Vries", dt.date(2013, 9, 3), "12AB01", None),
    )


def test_pupils_name_written_surname_first_is_read() -> None:
    """A register that writes surname first ("Berg, Johannes van der") loses no pupil."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            f"{BSN_A};\"Berg, Johannes van der\";12-04-2016;34CD00",
        )
    )
    assert result.refused == ()
    assert [p.name for p in result.pupils] == ["Berg, Johannes van der"]


def test_pupils_header_any_order_and_case() -> None:
    """Header names are case-insensitive and the columns may come in any order."""
    result = parse_pupils_csv(
        csv_bytes(
            "Vestigingscode; NAAM ;GeboorteDatum;BSN",
            f"34CD00;Sanne de Vries;12-04-2016;{BSN_A}",
        )
    )
    assert result.pupils == (Pupil("Sanne de Vries", dt.date(2016, 4, 12), "34CD00", BSN_A),)


def test_pupils_extra_columns_are_ignored() -> None:
    """Columns the gateway does not need (an address) are not read at all."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;adres;geboortedatum;vestigingscode",
            ";Sanne de Vries;Dorpsstraat 1;12-04-2016;34CD00",
        )
    )
    assert result.pupils == (Pupil("Sanne de Vries", dt.date(2016, 4, 12), "34CD00"),)


def test_pupils_eight_digit_bsn_is_padded() -> None:
    """A pre-2007 eight-digit BSN is stored as nine digits."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode", f"{BSN_8};Sanne de Vries;1-4-2016;34CD00"
        )
    )
    assert result.refused == ()
    assert result.pupils[0].bsn == "010000008"


def test_pupils_bom_and_empty_lines() -> None:
    """A UTF-8 BOM is not part of the first column name; empty lines are skipped."""
    data = b"\xef\xbb\xbf" + csv_bytes(
        "bsn;naam;geboortedatum;vestigingscode",
        "",
        ";Zoë Müller;12-04-2016;34CD00",
        "   ",
        ";;;",
    )
    result = parse_pupils_csv(data)
    assert result.refused == ()
    assert [p.name for p in result.pupils] == ["Zoë Müller"]


def test_pupils_latin1_file() -> None:
    """A Latin-1 file (not valid UTF-8) is read with its accented names intact."""
    data = csv_bytes(
        "bsn;naam;geboortedatum;vestigingscode",
        ";Chloë Hélène Jansen;12-04-2016;34CD00",
        encoding="latin-1",
    )
    assert [p.name for p in parse_pupils_csv(data).pupils] == ["Chloë Hélène Jansen"]


def test_pupils_bad_rows_reported_by_line_without_values() -> None:
    """Each bad row is refused with its line number and the column, never the offending value."""
    bad_bsn, bad_date, bad_code = "123456789", "31-02-2016", "34CD"
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            ";Sanne de Vries;12-04-2016;34CD00",
            f"{bad_bsn};Daan de Vries;12-04-2016;34CD00",
            "",
            f";Lotte de Vries;{bad_date};{bad_code}",
            ";R2D2;12-04-2016;34CD00",
            ";;12-04-2016;34CD00",
        )
    )
    assert len(result.pupils) == 1
    assert result.refused == (
        RowProblem(3, "bsn is not a valid BSN"),
        RowProblem(
            5,
            "geboortedatum is not a valid date; vestigingscode is not a 6-character vestigingscode",
        ),
        RowProblem(6, "naam is not a valid name"),
        RowProblem(7, "naam is empty"),
    )
    report = repr(result.refused)
    for value in (bad_bsn, bad_date, bad_code, "Daan", "Lotte", "R2D2"):
        assert value not in report


def test_pupils_line_numbers_count_quoted_line_breaks() -> None:
    """A quoted field spanning two lines is refused at the line where its row starts."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            ';"Sanne\nde Vries";12-04-2016;34CD00',
            ";Daan de Vries;12-04-2016;34CD00",
            ";Lotte;bad;34CD00",
        )
    )
    assert [r.row for r in result.refused] == [2, 5]


def test_pupils_row_with_too_many_fields_is_refused() -> None:
    """A row with more fields than the header (a stray semicolon in a name) is refused."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            ";Sanne;de Vries;12-04-2016;34CD00",
        )
    )
    assert result.pupils == ()
    assert [r.row for r in result.refused] == [2]
    assert "more fields than the header" in result.refused[0].problem


def test_pupils_duplicate_bsn_refuses_both_rows() -> None:
    """One BSN on two rows: neither row can be trusted, both are refused."""
    result = parse_pupils_csv(
        csv_bytes(
            "bsn;naam;geboortedatum;vestigingscode",
            f"{BSN_A};Sanne de Vries;12-04-2016;34CD00",
            f"{BSN_B};Daan de Vries;03-09-2013;34CD00",
            f"{BSN_A};Lotte Jansen;01-01-2015;12AB00",
        )
    )
    assert [p.bsn for p in result.pupils] == [BSN_B]
    assert result.refused == (RowProblem(2, PROBLEM_BSN_TWICE), RowProblem(4, PROBLEM_BSN_TWICE))


@pytest.mark.parametrize("missing", ["bsn", "naam", "geboortedatum", "vestigingscode"])
def test_pupils_missing_column_is_a_format_error(missing: str) -> None:
    """A header without a required column refuses the whole file, naming the column."""
    header = ";".join(c for c in ("bsn", "naam", "geboortedatum", "vestigingscode") if c != missing)
    with pytest.raises(ImportFormatError, match=f"missing column: {missing}"):
        parse_pupils_csv(csv_bytes(header, "x;y;z"))


def test_pupils_empty_file_is_a_format_error() -> None:
    """A file with no header row at all is refused."""
    with pytest.raises(ImportFormatError, match="no header"):
        parse_pupils_csv(b"\r\n\r\n")


def test_pupils_comma_separated_file_is_a_format_error() -> None:
    """A comma-separated export is recognised and refused with a helpful message."""
    with pytest.raises(ImportFormatError, match="not semicolon-separated"):
        parse_pupils_csv(csv_bytes("bsn,naam,geboortedatum,vestigingscode"))


def test_pupils_duplicate_column_is_a_format_error() -> None:
    """A column named twice in the header is refused: which one holds the data is a guess."""
    with pytest.raises(ImportFormatError, match="naam appears twice"):
        parse_pupils_csv(csv_bytes("bsn;naam;Naam;geboortedatum;vestigingscode"))


def test_pupils_broken_quoting_refuses_the_whole_file() -> None:
    """An unterminated quote would swallow the rest of the file, so nothing is imported."""
    data = csv_bytes(
        "bsn;naam;geboortedatum;vestigingscode",
        ";Sanne de Vries;12-04-2016;34CD00",
        ';"Daan de Vries;12-04-2016;34CD00',
        ";Lotte de Vries;12-04-2016;34CD00",
    )
    with pytest.raises(ImportFormatError, match="line 3"):
        parse_pupils_csv(data)


def test_format_error_is_a_value_error() -> None:
    """Callers may catch ImportFormatError as a ValueError."""
    assert issubclass(ImportFormatError, ValueError)
