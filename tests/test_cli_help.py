"""The CLI's help text is pinned: `hwc-gateway --help` and every `VERB [ACTION] --help`.

`tests/cli_help.txt` holds them all as argparse prints them 100 columns wide. A change of help
text is then a deliberate one, seen in review together with the README. After such a change,
write the file anew with `PYTHONPATH=. python tests/test_cli_help.py > tests/cli_help.txt`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.admin.cli import build_parser
from gateway.admin.handlers import HANDLERS

PINNED = Path(__file__).with_name("cli_help.txt")


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def every_help() -> str:
    """The help of the command, each verb and each action, in the parser's order."""
    return "".join(f"=== {p.prog}\n{p.format_help()}" for p in _parsers(build_parser()))


def test_help_of_every_verb_is_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every `--help` the command line prints is byte for byte the pinned text."""
    monkeypatch.setenv("COLUMNS", "100")
    assert every_help() == PINNED.read_text(encoding="utf-8")


def test_every_verb_and_action_has_a_handler() -> None:
    """Each (verb, action) the parser accepts has one handler in the table, and the table has
    none the parser cannot reach; serve, check-config, demo and `keys init` run without one."""
    parsed = set()
    for p in _parsers(build_parser()):
        words = p.prog.split()[1:]
        if len(words) == 2 or (len(words) == 1 and not any(
                isinstance(a, argparse._SubParsersAction) for a in p._actions)):
            parsed.add((words[0], words[1] if len(words) == 2 else None))
    without = {("serve", None), ("check-config", None), ("demo", None), ("keys", "init")}
    assert set(HANDLERS) == parsed - without


if __name__ == "__main__":
    os.environ["COLUMNS"] = "100"
    sys.stdout.write(every_help())
