"""The import verbs: what an import says about the register it replaces, and `pupils import` and
`schools import` through the real command line (issue 12)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import DAAN_BIRTH, DUO_CSV, EVA_BIRTH, PUPILS_CSV, SANNE_BIRTH, SCHOOL_A, SCHOOL_B
from conftest import run_cli as _cli

from gateway.admin.imports import change_lines

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
