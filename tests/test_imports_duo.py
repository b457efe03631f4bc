"""The administrator's CSV files: DUO's school locations, in each of DUO's file families and
encodings."""

from __future__ import annotations

import pytest
from conftest import csv_bytes

from gateway.admin.imports import (
    PROBLEM_CODE_TWICE,
    DuoSchool,
    ImportFormatError,
    RowProblem,
    parse_duo_csv,
)

# --- DUO school locations ---


def test_duo_brin_nummer_family_pads_vestigingsnummer() -> None:
    """`BRIN NUMMER` + `VESTIGINGSNUMMER`: the numbers 0 and 1 become 00 and 01."""
    result = parse_duo_csv(
        csv_bytes(
            "PROVINCIE;BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM;PLAATSNAAM",
            "Limburg;12AB;0;De Regenboog;Venlo",
            "Limburg;12AB;1;De Regenboog dependance;Blerick",
        )
    )
    assert result.refused == ()
    assert result.schools == (
        DuoSchool("12AB00", "De Regenboog", "Venlo"),
        DuoSchool("12AB01", "De Regenboog dependance", "Blerick"),
    )


def test_duo_instellingscode_family_full_and_short_codes() -> None:
    """`INSTELLINGSCODE` + `VESTIGINGSCODE`: the code may be the full six characters or a number."""
    result = parse_duo_csv(
        csv_bytes(
            "INSTELLINGSCODE;VESTIGINGSCODE;VESTIGINGSNAAM",
            "34CD;34CD00;Sint-Jozefschool",
            "34cd;2;Sint-Jozefschool Oost",
        )
    )
    assert result.refused == ()
    assert result.schools == (
        DuoSchool("34CD00", "Sint-Jozefschool", None),
        DuoSchool("34CD02", "Sint-Jozefschool Oost", None),
    )


def test_duo_latin1_with_accents() -> None:
    """A Latin-1 DUO file keeps ë and é in school names and places."""
    data = csv_bytes(
        "BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM;PLAATSNAAM",
        "34CD;0;Sint-Jozefschool Roermond;Roermond",
        "56EF;0;Basisschool De Piëzo;Geleen",
        "78GH;1;École Française;Maastricht",
        encoding="latin-1",
    )
    result = parse_duo_csv(data)
    assert result.refused == ()
    assert [s.name for s in result.schools] == [
        "Sint-Jozefschool Roermond",
        "Basisschool De Piëzo",
        "École Française",
    ]


def test_duo_windows_1252_typographic_apostrophe() -> None:
    """An Excel (Windows-1252) export keeps its typographic apostrophe."""
    data = csv_bytes(
        "BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM", "12AB;0;’t Schrijvertje", encoding="cp1252"
    )
    assert parse_duo_csv(data).schools == (DuoSchool("12AB00", "’t Schrijvertje"),)


def test_duo_bom_quoted_fields_and_header_spacing() -> None:
    """BOM, quoted fields (with semicolons inside) and loosely spaced header names are read."""
    data = b"\xef\xbb\xbf" + csv_bytes(
        '" brin  nummer ";"Vestigingsnummer";"VESTIGINGSNAAM";"PLAATSNAAM"',
        '"12AB";"00";"School ""De Linde""; locatie Noord";"\'s-Hertogenbosch"',
    )
    result = parse_duo_csv(data)
    assert result.refused == ()
    assert result.schools == (
        DuoSchool("12AB00", 'School "De Linde"; locatie Noord', "'s-Hertogenbosch"),
    )


def test_duo_instellingsnaam_when_no_vestigingsnaam() -> None:
    """Without a VESTIGINGSNAAM column the INSTELLINGSNAAM is the school's name."""
    result = parse_duo_csv(
        csv_bytes("INSTELLINGSCODE;VESTIGINGSCODE;INSTELLINGSNAAM", "12AB;12AB00;De Linde")
    )
    assert result.schools == (DuoSchool("12AB00", "De Linde"),)


def test_duo_control_characters_are_stripped_from_names() -> None:
    """Control and bidi characters are removed from school names, which are otherwise kept."""
    result = parse_duo_csv(
        csv_bytes("BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM", "12AB;0;De\x07 Lin\u202ede\t Oost")
    )
    assert result.schools == (DuoSchool("12AB00", "De Linde Oost"),)


def test_duo_bad_rows_reported_by_line() -> None:
    """Rows with a bad code, a mismatched full code or no name are refused by line number."""
    result = parse_duo_csv(
        csv_bytes(
            "BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM",
            "12AB;0;De Linde",
            "XXXX;0;Nergens",
            "12AB;123;Te lang",
            "12AB;;",
            "12AB;34CD00;Andere BRIN",
        )
    )
    assert result.schools == (DuoSchool("12AB00", "De Linde"),)
    assert [r.row for r in result.refused] == [3, 4, 5, 6]
    assert result.refused[2].problem == "VESTIGINGSNAAM is empty or too long"
    assert "Nergens" not in repr(result.refused)


def test_duo_duplicate_code_refuses_both_rows() -> None:
    """Two rows for one vestigingscode: which name is right is a guess, both are refused."""
    result = parse_duo_csv(
        csv_bytes(
            "BRIN NUMMER;VESTIGINGSNUMMER;VESTIGINGSNAAM",
            "12AB;0;De Linde",
            "12AB;00;De Eik",
            "12AB;1;De Beuk",
        )
    )
    assert result.schools == (DuoSchool("12AB01", "De Beuk"),)
    assert result.refused == (RowProblem(2, PROBLEM_CODE_TWICE), RowProblem(3, PROBLEM_CODE_TWICE))


@pytest.mark.parametrize(
    ("header", "missing"),
    [
        ("VESTIGINGSNUMMER;VESTIGINGSNAAM", "BRIN NUMMER"),
        ("BRIN NUMMER;VESTIGINGSNAAM", "VESTIGINGSNUMMER"),
        ("BRIN NUMMER;VESTIGINGSNUMMER;PLAATSNAAM", "VESTIGINGSNAAM"),
    ],
)
def test_duo_missing_column_is_a_format_error(header: str, missing: str) -> None:
    """A DUO file without a code or name column is refused, naming the columns it needs."""
    with pytest.raises(ImportFormatError, match=f"missing column: .*{missing}"):
        parse_duo_csv(csv_bytes(header, "12AB;0;x"))
