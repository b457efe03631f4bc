"""The administrator's CSV files: the pupil register and DUO's school locations."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from pathlib import Path

import pytest
from conftest import (
    DAAN_BIRTH,
    DUO_CSV,
    EVA_BIRTH,
    PUPILS_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
)
from conftest import run_cli as _cli

from gateway.admin.imports import (
    PROBLEM_BSN_TWICE,
    PROBLEM_CODE_TWICE,
    DuoSchool,
    ImportFormatError,
    RowProblem,
    change_lines,
    parse_duo_csv,
    parse_pupils_csv,
)
from gateway.core.model import Pupil

BSN_A = "123456782"
BSN_B = "111222333"
BSN_8 = "10000008"  # 010000008 once zero-padded to 9 digits


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


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


# --- what an import says about the register it replaces ---


def test_change_lines_name_each_school_gained_or_lost() -> None:
    """Per vestigingscode the pupils gained or lost; an emptied school says so; the rest counted."""
    before = {"12AB00": 2, "34CD01": 1, "56EF00": 3, "78GH00": 4}
    after = {"12AB00": 1, "34CD01": 2, "78GH00": 4, "90IJ00": 1}
    assert change_lines(before, after) == [
        "  12AB00: lost 1 (1 pupil, was 2)",
        "  34CD01: gained 1 (2 pupils, was 1)",
        "  56EF00: lost 3 (no pupils left, was 3)",
        "  90IJ00: gained 1 (1 pupil, was 0)",
        "  1 other school unchanged",
    ]
    assert change_lines({}, {}) == ["  no school in either register"]


# --- the import verbs through the real command line (issue 12) ---


def _register(cfg: str) -> list[tuple[str, bytes]]:
    """The stored register as it is on disk: each pupil's school and sealed record."""
    db = sqlite3.connect(Path(cfg).parent / "var" / "hwc-gateway.sqlite3")
    try:
        return db.execute("SELECT school, blob FROM pupils ORDER BY id").fetchall()
    finally:
        db.close()


BAD_ROW = f"999999999;Lotte Bakker;{EVA_BIRTH:%d-%m-%Y};{SCHOOL_B}\n"  # fails the BSN check
PERSONAL = ("999999999", "Lotte", "Noor", "Bakker", "Sanne", "Daan", "Eva", "123456782",
            f"{EVA_BIRTH:%d-%m-%Y}", f"{SANNE_BIRTH:%d-%m-%Y}", f"{DAAN_BIRTH:%d-%m-%Y}")


def test_pupils_import_with_a_refused_row_fails_and_keeps_the_register(
        capsys: pytest.CaptureFixture[str], cfg: str, tmp_path: Path) -> None:
    """One bad row: exit 1, the register on disk unchanged, the line and column named, no value."""
    first = tmp_path / "first.csv"
    first.write_text(PUPILS_CSV)
    code, _, _ = _cli(capsys, "--config", cfg, "pupils", "import", str(first))
    assert code == 0
    stored = _register(cfg)
    bad = tmp_path / "bad.csv"
    bad.write_text(PUPILS_CSV + BAD_ROW + f";Noor Bakker;{EVA_BIRTH:%d-%m-%Y};{SCHOOL_B}\n")
    code, out, err = _cli(capsys, "--config", cfg, "pupils", "import", str(bad))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "hwc-gateway: pupils import refused, the register is unchanged: 1 of 5 rows refused "
        "(correct the file, or leave these rows out with --accept-refused)",
        "  line 5: bsn is not a valid BSN",
        "per school (vestigingscode), had the import gone ahead without the refused rows:",
        f"  {SCHOOL_B}: gained 1 (2 pupils, was 1)",
        "  1 other school unchanged",
    ]
    assert not [value for value in PERSONAL if value in out + err]
    assert _register(cfg) == stored
    code, out, _ = _cli(capsys, "--config", cfg, "receipts", "list", "--json")
    assert [r["event"] for r in json.loads(out)].count("register.imported") == 1


def test_pupils_import_with_accept_refused_leaves_the_row_out_and_counts(
        capsys: pytest.CaptureFixture[str], cfg: str, tmp_path: Path) -> None:
    """--accept-refused: exit 0, the register replaced without the row, the summary counts it."""
    bad = tmp_path / "bad.csv"
    bad.write_text(PUPILS_CSV + BAD_ROW)
    code, out, err = _cli(capsys, "--config", cfg, "pupils", "import", str(bad),
                          "--accept-refused")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == ("register replaced: 3 pupils at 2 schools (was 0 pupils at 0 schools), "
                        "1 rows refused and left out (--accept-refused)")
    assert lines[1] == "  line 5: bsn is not a valid BSN"
    assert f"  {SCHOOL_A}: gained 2 (2 pupils, was 0)" in lines
    assert f"  {SCHOOL_B}: gained 1 (1 pupil, was 0)" in lines
    assert not [value for value in PERSONAL if value in out]
    assert sorted(school for school, _ in _register(cfg)) == [SCHOOL_A, SCHOOL_A, SCHOOL_B]
    code, out, _ = _cli(capsys, "--config", cfg, "receipts", "list", "--json")
    [receipt] = [r for r in json.loads(out) if r["event"] == "register.imported"]
    assert receipt["refused"] == 1 and receipt["gained"] == 3 and receipt["lost"] == 0


def test_pupils_import_moving_a_pupil_says_what_each_school_gained_and_lost(
        capsys: pytest.CaptureFixture[str], cfg: str, tmp_path: Path) -> None:
    """A second import that moves Eva from school A to B: A lost 1, B gained 1."""
    duo = tmp_path / "duo.csv"
    duo.write_text(DUO_CSV)
    assert _cli(capsys, "--config", cfg, "schools", "import-duo", str(duo))[0] == 0
    first = tmp_path / "first.csv"
    first.write_text(PUPILS_CSV)
    assert _cli(capsys, "--config", cfg, "pupils", "import", str(first))[0] == 0
    moved = tmp_path / "moved.csv"
    moved.write_text(PUPILS_CSV.replace(f"{EVA_BIRTH:%d-%m-%Y};{SCHOOL_A}",
                                        f"{EVA_BIRTH:%d-%m-%Y};{SCHOOL_B}"))
    code, out, _ = _cli(capsys, "--config", cfg, "pupils", "import", str(moved))
    assert code == 0
    assert out.splitlines() == [
        "register replaced: 3 pupils at 2 schools (was 3 pupils at 2 schools), 0 rows refused",
        "per school (vestigingscode), compared with the register it replaced:",
        f"  {SCHOOL_A}: lost 1 (1 pupil, was 2)",
        f"  {SCHOOL_B}: gained 1 (2 pupils, was 1)",
    ]


def test_pupils_import_removing_half_names_the_schools_that_would_lose(
        capsys: pytest.CaptureFixture[str], cfg: str, tmp_path: Path) -> None:
    """The more-than-half refusal also says per school what the import would have removed."""
    first = tmp_path / "first.csv"
    first.write_text(PUPILS_CSV)
    assert _cli(capsys, "--config", cfg, "pupils", "import", str(first))[0] == 0
    small = tmp_path / "small.csv"
    small.write_text("\n".join(PUPILS_CSV.splitlines()[:2]) + "\n")
    code, _, err = _cli(capsys, "--config", cfg, "pupils", "import", str(small))
    assert code == 1 and "--force" in err.splitlines()[0]
    assert f"  {SCHOOL_B}: lost 1 (no pupils left, was 1)" in err.splitlines()
    assert len(_register(cfg)) == 3


def _schools(capsys: pytest.CaptureFixture[str], cfg: str) -> dict[str, str]:
    code, out, _ = _cli(capsys, "--config", cfg, "schools", "list", "--json")
    assert code == 0
    return {s["code"]: s["name"] for s in json.loads(out)}


def test_duo_import_with_a_refused_row_fails_unless_accepted(
        capsys: pytest.CaptureFixture[str], cfg: str, tmp_path: Path) -> None:
    """A DUO file with a bad row: exit 1 and no school taken in; --accept-refused takes the rest."""
    duo = tmp_path / "duo.csv"
    duo.write_text(DUO_CSV + "XXXX;0;Nergensschool;Nergens\n", encoding="latin-1")
    code, out, err = _cli(capsys, "--config", cfg, "schools", "import-duo", str(duo))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        "hwc-gateway: schools import refused, the directory is unchanged: 1 of 4 rows refused "
        "(correct the file, or leave these rows out with --accept-refused)",
        "  line 5: BRIN NUMMER or VESTIGINGSNUMMER does not make a vestigingscode",
    ]
    assert _schools(capsys, cfg) == {}
    code, out, err = _cli(capsys, "--config", cfg, "schools", "import-duo", str(duo),
                          "--accept-refused")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "3 schools read, 3 added or renamed, 1 rows refused and left out; contacts and keys "
        "unchanged",
        "  line 5: BRIN NUMMER or VESTIGINGSNUMMER does not make a vestigingscode",
    ]
    assert sorted(_schools(capsys, cfg)) == [SCHOOL_A, SCHOOL_B, "56EF00"]
