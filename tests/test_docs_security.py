"""Tests that SECURITY.md and the README stay true to the code where a scan can tell: every test
SECURITY.md cites as `file::test` exists, every image the README shows is in the repository,
every metric the gateway exports is in the README's "Metrics", and the pickup page's headers the
README quotes are the ones `gateway.web.guard` sends (issue 15)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.web.guard import CSP, HSTS, security_headers

ROOT = Path(__file__).parent.parent
# `test_x.py::test_y`, or `::test_z` going on with the file named before it in the same cell.
CITED = re.compile(r"`(test_\w+\.py)(?:::(\w+))?`|`::(\w+)`")


def cited_tests(text: str) -> list[tuple[str, str | None]]:
    """The (file, test) pairs a document's table rows cite; test None for a whole file."""
    found: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        if not line.startswith("|"):
            continue
        current = None
        for match in CITED.finditer(line):
            name, test, more = match.groups()
            if name:
                current = name
                found.append((name, test))
            elif current is not None:
                found.append((current, more))
    return found


def test_every_test_security_md_cites_exists() -> None:
    """Each `tests/` file SECURITY.md names exists, and each test it names is defined in that
    file, so a renamed or removed test cannot leave a threat row pointing at nothing."""
    cited = cited_tests((ROOT / "SECURITY.md").read_text(encoding="utf-8"))
    assert len(cited) > 100  # the scan sees the tables at all
    assert ("test_web_guard.py", "test_a_post_must_come_from_our_origin") in cited
    missing = []
    for name, test in cited:
        path = ROOT / "tests" / name
        if not path.is_file():
            missing.append(name)
        elif test and not re.search(rf"^(async )?def {test}\(", path.read_text(),
                                    re.MULTILINE):
            missing.append(f"{name}::{test}")
    assert missing == []


def test_every_image_the_readme_shows_is_there() -> None:
    """Each `![...](path)` of the README names a file of the repository."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", readme)
    assert "docs/screenshots/notice.png" in images
    assert [path for path in images if not (ROOT / path).is_file()] == []


def test_every_metric_is_in_the_readme() -> None:
    """Each metric `gateway/observe/metrics.py` defines is named in the README's "Metrics"."""
    code = (ROOT / "gateway" / "observe" / "metrics.py").read_text(encoding="utf-8")
    names = set(re.findall(r'(?:Counter|Gauge|Histogram|OptionalGauge)\("(hwc_\w+)"', code))
    assert {"hwc_pickup_waiting", "hwc_pickup_next_expiry_seconds"} <= names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    metrics = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    assert sorted(name for name in names if f"`{name}" not in metrics) == []


def test_the_readme_quotes_the_pages_headers() -> None:
    """The README's pickup section names every header the page sends, and quotes the CSP and
    HSTS values as `gateway.web.guard` has them (line breaks aside)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The pickup page", 1)[1].split("\n## ", 1)[0]
    flat = " ".join(section.split())
    assert f"Content-Security-Policy: {CSP}" in flat
    assert f"Strict-Transport-Security: {HSTS}" in flat
    assert [name for name in security_headers(True) if f"`{name}:" not in flat] == []
