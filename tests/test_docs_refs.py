"""Tests that the repository's citations of its own documents hold: every `docs/<file>.md §N`
and `docs/architecture.md invariant N` names a section or invariant that is there, and nothing
cites the design documents the project was started from, which are not in the repository."""

from __future__ import annotations

import functools
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
# Where citations live: the code, its tests and tools, and the documents themselves.
SCANNED = ["gateway", "tests", "fuzz", "bench", "attack", "mutate", "docs"]
SCANNED_FILES = ["README.md", "SECURITY.md", "config.toml"]
SUFFIXES = {".py", ".md", ".toml"}

CITED_DOCUMENT = re.compile(r"\bdocs/([a-z_]+)\.md\b")
CITED_SECTION = re.compile(r"\bdocs/([a-z_]+)\.md`?\s+§(\d+)")
CITED_INVARIANT = re.compile(r"\bdocs/architecture\.md`?\s+invariant\s+(\d+)",
                             re.IGNORECASE)
# The outside documents by name, spelled in pieces so that this file does not cite them itself.
# A word joined to an underscore (a test constant's name) is no citation: `\b` sees none there.
OUTSIDE = re.compile(r"\b(?:" + "SP" "EC" + "|" + "DES" "IGN" + "|" + "LIBRAR" "IES" + r")\b"
                     + "|/work/" + "shared")


def scanned_texts() -> dict[str, str]:
    """The text of every file that may cite a document, by its path in the repository."""
    paths = [p for name in SCANNED for p in sorted((ROOT / name).rglob("*"))
             if p.suffix in SUFFIXES and p.is_file() and "work" not in p.relative_to(ROOT).parts]
    paths += [ROOT / name for name in SCANNED_FILES]
    return {str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths}


@functools.cache
def sections(document: str) -> set[str]:
    """The section numbers of a document: its headings `## §N ...`."""
    text = (ROOT / "docs" / f"{document}.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#+ §(\d+)\b", text, re.MULTILINE))


def invariants() -> set[str]:
    """The invariant numbers of docs/architecture.md: its headings `### Invariant N: ...`."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"^### Invariant (\d+):", text, re.MULTILINE))


def test_every_cited_document_exists() -> None:
    """Each `docs/<file>.md` named anywhere in the code, tests or documents is a file in docs/."""
    cited = {name for text in scanned_texts().values() for name in CITED_DOCUMENT.findall(text)}
    assert {"protocol", "architecture", "libraries"} <= cited
    assert {name for name in cited if not (ROOT / "docs" / f"{name}.md").is_file()} == set()


def test_every_cited_section_exists() -> None:
    """Each `docs/<file>.md §N` cited anywhere names a section heading `§N` of that file."""
    missing, found = [], 0
    for path, text in scanned_texts().items():
        for document, number in CITED_SECTION.findall(text):
            found += 1
            if (ROOT / "docs" / f"{document}.md").is_file() and number in sections(document):
                continue
            missing.append(f"{path}: docs/{document}.md §{number}")
    assert found > 20  # the scan sees the code's citations at all
    assert missing == []


def test_every_cited_invariant_exists() -> None:
    """Each `docs/architecture.md invariant N` cited anywhere is an invariant heading there."""
    known = invariants()
    cited = [(path, number) for path, text in scanned_texts().items()
             for number in CITED_INVARIANT.findall(text)]
    assert len(cited) > 5
    assert [f"{path}: invariant {n}" for path, n in cited if n not in known] == []


def test_sections_and_invariants_are_numbered_in_order() -> None:
    """The documents number their sections and invariants 1, 2, 3 ... without gaps, so that a
    citation cannot silently shift to a neighbour when one is inserted or removed."""
    for document in ("protocol", "architecture", "libraries"):
        numbers = sorted(int(n) for n in sections(document))
        assert numbers == list(range(1, len(numbers) + 1)), document
    numbers = sorted(int(n) for n in invariants())
    assert numbers == list(range(1, len(numbers) + 1))


def test_nothing_cites_the_outside_documents() -> None:
    """No docstring, comment or document points at the design texts outside the repository."""
    found = [f"{path}:{n}: {line.strip()}" for path, text in scanned_texts().items()
             for n, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert found == []


def test_readme_layout_names_every_subpackage() -> None:
    """README's "Layout" section and docs/architecture.md §1 name exactly the subpackages of
    gateway/, so the map a newcomer reads is the tree they find."""
    tree = {p.parent.name for p in (ROOT / "gateway").glob("*/__init__.py")}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^  (\w+)/ ", layout, re.MULTILINE)) == tree
    architecture = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    layers = architecture.split("\n## §1 ", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"^\| `(\w+)/` \|", layers, re.MULTILINE)) == tree
