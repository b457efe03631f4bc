"""Tests that the README stays true to the code: every log event the gateway can emit is listed
in its table of events, with the keys the code gives it (issue: "the README lists every event
with its fields")."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
LEVELS = {"debug", "info", "warning", "error", "critical", "exception"}
# What `**safe_exception(exc)` adds to an event.
EXCEPTION_KEYS = ["error", "frames"]
# Events whose name is chosen at run time (service.stage logs `<kind>.attempt_crashed`,
# `<kind>.parked`, `<kind>.lease_recovered` for each stage), so no `log.<level>("...")` call
# names them; each stage module lists them in its STAGE_EVENTS.
COMPUTED = {f"{kind}.{event}": f"service/{module}.py"
            for kind, module in (("notice", "delivering"), ("seal", "sealing"))
            for event in ("attempt_crashed", "parked", "lease_recovered")}


def _names(node: ast.expr) -> list[str]:
    """The event names an argument can evaluate to: a literal, or either arm of `a if c else b`."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _names(node.body) + _names(node.orelse)
    return []


def _is_log_call(node: ast.Call) -> bool:
    """`log.<level>(...)`, or `(log.<level> if c else log.<level>)(...)`."""
    funcs = ([node.func.body, node.func.orelse] if isinstance(node.func, ast.IfExp)
             else [node.func])
    return all(isinstance(f, ast.Attribute) and f.attr in LEVELS
               and isinstance(f.value, ast.Name) and f.value.id == "log" for f in funcs)


def emitted_events() -> dict[str, tuple[str, set[str]]]:
    """Every event name the gateway package logs: the file it is in and the keys it is given."""
    events: dict[str, tuple[str, set[str]]] = {}
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call) or not node.args or not _is_log_call(node):
                continue
            keys = {key for k in node.keywords for key in ([k.arg] if k.arg else EXCEPTION_KEYS)}
            for name in _names(node.args[0]):
                events.setdefault(name, (path.name, set()))[1].update(keys)
    return events


def readme_rows() -> dict[str, str]:
    """Each event of the README's table and the text of its row."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            for name in cells[1].replace("/", ",").split(","):
                rows[name.strip().split(" ")[0].strip("`()")] = line
    return rows


def test_every_log_event_is_in_the_readme_with_its_keys() -> None:
    """Each event the code logs has a row in the README's table of events, and each key the
    code gives it is named, in backquotes, in that row."""
    rows = readme_rows()
    events = emitted_events()
    assert len(events) > 30  # the scan finds the gateway's logging at all
    for name, where in COMPUTED.items():
        assert f'"{name}"' in (ROOT / "gateway" / where).read_text(), name
        events.setdefault(name, (where, set()))
    missing = {name: where for name, (where, _) in events.items() if name not in rows}
    assert missing == {}
    unlisted = {name: sorted(k for k in keys if f"`{k}`" not in rows[name])
                for name, (_, keys) in events.items()}
    assert {name: keys for name, keys in unlisted.items() if keys} == {}
