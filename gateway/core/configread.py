"""Reading one table of `config.toml` against the dataclass it fills (`gateway.core.config`).

Takes the parsed TOML document, the table's name and its dataclass. Produces each key's value:
the file's, checked and converted, or, where the key is absent, the dataclass field's default,
so that each default is written once, on the dataclass. Fails: never raises; every problem is
appended to a shared list as `table.key: what is wrong`, and the caller raises `ConfigError`
with all of them, so that an operator fixes a file in one go.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.validate import parse_hostport

_REQUIRED = object()


class Table:
    """One table of the file (`[smtp]`), read against its dataclass. Unknown keys are reported
    when it is made, in the file's order; each read reports its own key's problems."""

    def __init__(self, doc: dict[str, Any], name: str, cls: type[Any], base: Path,
                 problems: list[str]) -> None:
        self.name, self.base, self.problems = name, base, problems
        self.fields = {f.name: f for f in dataclasses.fields(cls)}
        raw = doc.get(name, {})
        if not isinstance(raw, dict):
            problems.append(f"{name}: must be a table")
            raw = {}
        problems.extend(f"{name}.{key}: unknown key" for key in raw if key not in self.fields)
        self.raw: dict[str, Any] = raw

    def problem(self, key: str, text: str) -> None:
        self.problems.append(f"{self.name}.{key}: {text}")

    def default(self, key: str) -> Any:
        """The dataclass's default for `key`; `_REQUIRED` where it has none."""
        f = self.fields[key]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return _REQUIRED

    def _read(self, key: str, kind: type[Any]) -> tuple[bool, Any]:
        """(True, the file's value) when present with the right type; else (False, default)."""
        if key not in self.raw:
            default = self.default(key)
            if default is _REQUIRED:
                self.problem(key, "missing")
                return False, None
            return False, default
        value = self.raw[key]
        # bool is an int in Python; a TOML `true` where a number belongs is a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"must be {kind.__name__}, got {type(value).__name__}")
            return False, self.default(key)
        return True, value

    def value(self, key: str, kind: type[Any],
              check: Callable[[Any], str | None] | None = None) -> Any:
        """A value of the file's own type (str, int, bool, list), checked by `check`."""
        present, value = self._read(key, kind)
        problem = check(value) if present and check is not None else None
        if problem:
            self.problem(key, problem)
        return value

    def parsed(self, key: str, parse: Callable[[str], Any], shape: str) -> Any:
        """A string in the file turned into the field's type by `parse` (ValueError: refused,
        reported as `shape`, and the default kept)."""
        present, value = self._read(key, str)
        if not present:
            return value
        try:
            return parse(value)
        except ValueError:
            self.problem(key, shape)
            return self.default(key)

    def path(self, key: str) -> Any:
        """A path, relative ones resolved against the config file's directory, never the working
        directory. `""` leaves a field whose default is None unset."""
        present, value = self._read(key, str)
        if present and value == "" and self.default(key) is None:
            return None
        if present:
            value = Path(value)
        return value if value is None or value.is_absolute() else (self.base / value).resolve()

    def hostport(self, key: str) -> Any:
        """`host:port` (`gateway.core.validate.parse_hostport`). `""` leaves a field whose
        default is None unset."""
        present, value = self._read(key, str)
        if not present:
            return value
        if value == "" and self.default(key) is None:
            return None
        parsed = parse_hostport(value)
        if parsed is None:
            self.problem(key, 'must be "host:port"')
            return self.default(key)
        return parsed


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def timezone_problem(value: str) -> str | None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return "unknown time zone"
    return None


def date_ranges(items: list[Any], path: str, problems: list[str]) -> list[tuple[dt.date, dt.date]]:
    """Inclusive `[first, last]` date ranges; each bad one reported by its index."""
    ranges = []
    for i, item in enumerate(items):
        try:
            first, last = (dt.date.fromisoformat(x) for x in item)
            if last < first:
                raise ValueError
            ranges.append((first, last))
        except (TypeError, ValueError):
            problems.append(f"{path}[{i}]: must be [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]")
    return ranges
