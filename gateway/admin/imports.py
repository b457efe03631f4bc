"""The administrator's CSV files: leerplicht's pupil register and DUO's list of school locations.

Takes: the bytes of a file (the CLI reads it; nothing here touches the disk). Semicolon-separated,
a header row, fields possibly quoted; UTF-8 with or without BOM, UTF-16 with a BOM, else Windows
-1252/Latin-1 (what Excel on a Dutch desktop writes).
Produces: `PupilImport` / `DuoImport`: the rows that are valid, and a `RowProblem` per refused
row giving its line number and the column at fault, never the value (the register holds personal
data; a report is printed on a terminal and may be pasted into a ticket).
Fails: `ImportFormatError` (a ValueError) when the file as a whole cannot be read: no header,
a required column missing, a column twice, or broken quoting. Then nothing is imported, so an
import that replaces the register never replaces it with half a file.
Also: `refused_lines` and `change_lines`, what an import says about refused rows and about the
pupils each school gained or lost (issue 12: a child must never fall out of the register
unnoticed).
Trusts: nothing about the content; every field goes through `gateway.core.fields`.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gateway.core import fields
from gateway.core.model import Pupil

PUPIL_COLUMNS = ("bsn", "naam", "geboortedatum", "vestigingscode")

# DUO has published the location list with two generations of column names.
DUO_BRIN_COLUMNS = ("INSTELLINGSCODE", "BRIN NUMMER")
DUO_NUMBER_COLUMNS = ("VESTIGINGSCODE", "VESTIGINGSNUMMER")
DUO_NAME_COLUMNS = ("VESTIGINGSNAAM", "INSTELLINGSNAAM")
DUO_PLACE_COLUMN = "PLAATSNAAM"

PROBLEM_BSN_TWICE = "bsn appears twice"
PROBLEM_CODE_TWICE = "vestigingscode appears twice"
PROBLEM_EXTRA_FIELDS = "more fields than the header has columns"

_SCHOOL_NAME_MAX = 200
_SPACES = re.compile(r"\s+")

T = TypeVar("T")


class ImportFormatError(ValueError):
    """The file as a whole is unusable; the message names what is wrong, never a value."""


@dataclass(frozen=True)
class RowProblem:
    """A refused row: its 1-based line in the file (header = 1) and what is wrong with it."""

    row: int
    problem: str


@dataclass(frozen=True)
class PupilImport:
    pupils: tuple[Pupil, ...]
    refused: tuple[RowProblem, ...]


@dataclass(frozen=True)
class DuoSchool:
    """A school location as DUO lists it. Not personal data."""

    code: str
    name: str
    place: str | None = None


@dataclass(frozen=True)
class DuoImport:
    schools: tuple[DuoSchool, ...]
    refused: tuple[RowProblem, ...]


@dataclass(frozen=True)
class _Row:
    line: int
    values: Mapping[str, str]  # canonical column name -> raw field text
    extra: bool  # non-empty fields beyond the header's columns


def parse_pupils_csv(data: bytes) -> PupilImport:
    """The pupil register from `bsn;naam;geboortedatum;vestigingscode` CSV (any column order)."""
    header, rows = _read(data, fold=str.casefold)
    columns = _require(header, [(c,) for c in PUPIL_COLUMNS])
    checked: list[tuple[int, Pupil | None, str | None, list[str]]] = []
    for row in rows:
        problems = [PROBLEM_EXTRA_FIELDS] if row.extra else []
        raw_bsn = row.values.get(columns["bsn"], "").strip()
        bsn = fields.normalise_bsn(raw_bsn) if raw_bsn else None
        if raw_bsn and bsn is None:
            problems.append("bsn is not a valid BSN")
        name = _field(row, columns["naam"], fields.clean_name, "naam", "a valid name", problems)
        birthdate = _field(
            row, columns["geboortedatum"], fields.parse_date, "geboortedatum", "a valid date",
            problems,
        )  # fmt: skip
        school = _field(
            row, columns["vestigingscode"], _six_char_code, "vestigingscode",
            "a 6-character vestigingscode", problems,
        )  # fmt: skip
        pupil = None
        if name is not None and birthdate is not None and school is not None:
            pupil = Pupil(name=name, birthdate=birthdate, school=school, bsn=bsn)
        checked.append((row.line, pupil, bsn, problems))

    # One BSN on two rows: at least one of them is wrong and we cannot tell which, so neither is
    # trusted (rule 1 routes on the BSN alone).
    seen = Counter(bsn for _, _, bsn, _ in checked if bsn is not None)
    pupils: list[Pupil] = []
    refused: list[RowProblem] = []
    for line, pupil, bsn, problems in checked:
        if bsn is not None and seen[bsn] > 1:
            problems.append(PROBLEM_BSN_TWICE)
        if problems or pupil is None:
            refused.append(RowProblem(line, "; ".join(problems)))
        else:
            pupils.append(pupil)
    return PupilImport(pupils=tuple(pupils), refused=tuple(refused))


def parse_duo_csv(data: bytes) -> DuoImport:
    """School codes, names and places from DUO's location CSV (either family of column names)."""
    header, rows = _read(data, fold=_duo_column)
    columns = _require(header, [DUO_BRIN_COLUMNS, DUO_NUMBER_COLUMNS, DUO_NAME_COLUMNS])
    brin_col = columns[DUO_BRIN_COLUMNS[0]]
    number_col = columns[DUO_NUMBER_COLUMNS[0]]
    fallback_name_col = DUO_NAME_COLUMNS[1] if DUO_NAME_COLUMNS[1] in header else None

    checked: list[tuple[int, DuoSchool | None, list[str]]] = []
    for row in rows:
        problems = [PROBLEM_EXTRA_FIELDS] if row.extra else []
        code = fields.vestigingscode(row.values.get(brin_col, ""), row.values.get(number_col, ""))
        if code is None:
            problems.append(f"{brin_col} or {number_col} does not make a vestigingscode")
        name = _school_text(row.values.get(columns[DUO_NAME_COLUMNS[0]], ""))
        if not name and fallback_name_col is not None:
            name = _school_text(row.values.get(fallback_name_col, ""))
        if not name:
            problems.append(f"{columns[DUO_NAME_COLUMNS[0]]} is empty or too long")
        place = _school_text(row.values.get(DUO_PLACE_COLUMN, "")) or None
        school = DuoSchool(code, name, place) if code and name and not problems else None
        checked.append((row.line, school, problems))

    # Two rows for one code: which name belongs to the code is a guess, so neither is taken.
    seen = Counter(s.code for _, s, _ in checked if s is not None)
    schools: list[DuoSchool] = []
    refused: list[RowProblem] = []
    for line, school, problems in checked:
        if school is not None and seen[school.code] > 1:
            problems.append(PROBLEM_CODE_TWICE)
        if problems or school is None:
            refused.append(RowProblem(line, "; ".join(problems)))
        else:
            schools.append(school)
    return DuoImport(schools=tuple(schools), refused=tuple(refused))


def _field(
    row: _Row,
    column: str,
    parse: Callable[[str], T | None],
    label: str,
    what: str,
    problems: list[str],
) -> T | None:
    """`parse` applied to one field; an empty or invalid field adds a problem naming `label`."""
    raw = row.values.get(column, "")
    if not raw.strip():
        problems.append(f"{label} is empty")
        return None
    value = parse(raw)
    if value is None:
        problems.append(f"{label} is not {what}")
    return value


def _six_char_code(text: str) -> str | None:
    """A full vestigingscode: a bare BRIN says which institution, not which location."""
    code = fields.normalise_school(text)
    return code if code is not None and len(code) == 6 else None


def _duo_column(name: str) -> str:
    return _SPACES.sub(" ", name).strip().upper()


def _school_text(text: str) -> str:
    """A school or place name with control and format characters removed; "" if unusable."""
    kept = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp")
        else "" if unicodedata.category(c) in ("Cf", "Cs", "Co")
        else c
        for c in unicodedata.normalize("NFC", text)
    )  # fmt: skip
    clean = _SPACES.sub(" ", kept).strip()
    return clean if len(clean) <= _SCHOOL_NAME_MAX else ""


def _decode(data: bytes) -> str:
    """UTF-8 (BOM or not), UTF-16 with a BOM, else Windows-1252, else Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ImportFormatError("the file starts as UTF-16 but is not") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # Windows-1252 is Latin-1 plus printable characters where Latin-1 has C1 controls (’ – €),
    # which is what Excel writes on a Dutch desktop. A byte it leaves undefined means the file
    # is really Latin-1 (where that byte is a control character, refused later per row).
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _read(data: bytes, *, fold: Callable[[str], str]) -> tuple[list[str], list[_Row]]:
    """The header (column names folded by `fold`) and the non-blank rows after it."""
    header: list[str] | None = None
    rows: list[_Row] = []
    for line, record in _records(_decode(data)):
        if not any(field.strip() for field in record):
            continue
        if header is None:
            header = _header(record, fold)
            continue
        values = {col: field for col, field in zip(header, record, strict=False) if col}
        extra = any(field.strip() for field in record[len(header) :])
        rows.append(_Row(line=line, values=values, extra=extra))
    if header is None:
        raise ImportFormatError("the file has no header row")
    return header, rows


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, fields) per CSV record; broken quoting stops the whole import."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # Not per row: an unbalanced quote swallows the rows after it, and a register that
            # silently lost its second half must not replace the old one.
            raise ImportFormatError(f"line {start}: the CSV quoting is broken") from exc
        yield start, record


def _header(record: Sequence[str], fold: Callable[[str], str]) -> list[str]:
    names = [fold(name.strip()) for name in record]
    if len(names) == 1 and "," in names[0]:
        raise ImportFormatError("the header is not semicolon-separated")
    for name, count in Counter(n for n in names if n).items():
        if count > 1:
            raise ImportFormatError(f"column {name} appears twice in the header")
    return names


def _require(header: Sequence[str], wanted: Sequence[tuple[str, ...]]) -> dict[str, str]:
    """For each group of alternative column names, the one present, keyed by the first."""
    found: dict[str, str] = {}
    for alternatives in wanted:
        present = next((name for name in alternatives if name in header), None)
        if present is None:
            raise ImportFormatError("missing column: " + " or ".join(alternatives))
        found[alternatives[0]] = present
    return found


@dataclass(frozen=True)
class SchoolChange:
    """How many pupils one school has in a new register, against the register it replaces."""

    school: str
    before: int
    after: int


def school_changes(
    before: Mapping[str, int], after: Mapping[str, int]
) -> tuple[SchoolChange, ...]:
    """Every school whose number of pupils differs, by vestigingscode."""
    return tuple(
        SchoolChange(code, before.get(code, 0), after.get(code, 0))
        for code in sorted(set(before) | set(after))
        if before.get(code, 0) != after.get(code, 0)
    )


def refused_lines(refused: Sequence[RowProblem]) -> list[str]:
    """One line per refused row: its line number and the columns at fault, never a value."""
    return [f"  line {p.row}: {p.problem}" for p in refused]


def change_lines(before: Mapping[str, int], after: Mapping[str, int]) -> list[str]:
    """Per school, the pupils gained or lost. Counted per school, so a pupil who left and
    another who joined the same school show as no change; a school left without pupils says so
    (a whole school missing from an export is the mistake this is for)."""
    changes = school_changes(before, after)
    lines = []
    for c in changes:
        now = f"{c.after} pupil{'' if c.after == 1 else 's'}" if c.after else "no pupils left"
        moved = f"gained {c.after - c.before}" if c.after > c.before else (
            f"lost {c.before - c.after}")
        lines.append(f"  {c.school}: {moved} ({now}, was {c.before})")
    unchanged = len(set(before) | set(after)) - len(changes)
    if unchanged:
        lines.append(f"  {unchanged} other school{'' if unchanged == 1 else 's'} unchanged")
    return lines or ["  no school in either register"]
