"""The list of equivalent mutants (tests/mutation_equivalents.toml) stays true to the code: each
entry names a line its module still has, and says why."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_every_listed_equivalent_names_a_line_of_its_module() -> None:
    """Each entry has its file, function, change and reason, and its `before` line is still in
    that file: an entry the code has moved away from is noticed, not kept for ever."""
    entries = tomllib.loads((ROOT / "tests" / "mutation_equivalents.toml").read_text())["mutant"]
    assert entries
    for entry in entries:
        assert set(entry) == {"file", "function", "before", "after", "reason"}, entry
        assert entry["reason"].strip() and entry["before"] != entry["after"], entry
        lines = {line.strip() for line in (ROOT / entry["file"]).read_text().splitlines()}
        first = entry["before"].split(" / ")[0]
        assert first in lines, f"{entry['file']}: no line {first!r}"
