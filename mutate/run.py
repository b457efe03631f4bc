"""Mutation testing of the decision modules with mutmut, one module at a time.

Takes the modules named in mutate/modules.toml (or those given on the command line) and, for each,
builds a scratch copy of the project under mutate/work/<module>/ whose pyproject.toml tells mutmut
to mutate that one file and to run only that module's fast tests. mutmut records which tests reach
each function and re-runs just those for every mutant. Produces one line per module (killed,
survived, timed out, not reached by a fast test) and every survivor's file, line and change; a
survivor listed in tests/mutation_equivalents.toml is shown as equivalent with its reason.
Exits 1 when a survivor is neither killed nor listed, when a function outside the module's
`edge` (its I/O, tested elsewhere) is reached by no fast test, or when mutmut itself fails.

    python mutate/run.py [--workers N] [MODULE ...]
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ROOT / "mutate" / "modules.toml"
EQUIVALENTS = ROOT / "tests" / "mutation_equivalents.toml"
WORK = ROOT / "mutate" / "work"

# mutmut's exit codes per mutant (mutmut/stats.py), folded into the four counts we report.
KILLED = {1, 3, 37}
SURVIVED = {0}
TIMEOUT = {36, 24, -24, 152, 255}
NOT_REACHED = {5, 33, 34}


@dataclass(frozen=True)
class Mutant:
    name: str
    function: str  # "f", or "Class.f" for a method
    status: str  # killed | survived | timeout | not reached | other
    line: int
    before: str
    after: str


def _toml_list(values: list[str]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def _prepare(name: str, spec: dict[str, object]) -> Path:
    """A fresh scratch copy with a [tool.mutmut] table for this module only."""
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gateway", work / "gateway", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    tests = [str(t) for t in spec["tests"]]  # type: ignore[attr-defined]
    table = "\n".join([
        "", "[tool.mutmut]",
        'source_paths = ["gateway"]',
        f"only_mutate = {_toml_list([str(spec['source'])])}",
        f"pytest_add_cli_args_test_selection = {_toml_list(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
        "use_setproctitle = false",
        "",
    ])
    (work / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + table)
    return work


def _status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in TIMEOUT:
        return "timeout"
    if code in NOT_REACHED:
        return "not reached"
    return "other"


def _collect(work: Path, source: str) -> list[Mutant]:
    """Every mutant of `source` with its status and its changed line (run inside `work`)."""
    meta = json.loads((work / "mutants" / (source + ".meta")).read_text())
    codes: dict[str, int | None] = meta["exit_code_by_key"]
    source_text = (ROOT / source).read_text()
    script = (
        "import json, sys\n"
        "from mutmut.mutation.diff_apply import get_diff_for_mutant\n"
        f"path = {json.dumps(source)}\n"
        "print(json.dumps({n: get_diff_for_mutant(n, path=path) for n in json.load(sys.stdin)}))\n"
    )
    survivors = [n for n, c in codes.items() if _status(c) != "killed"]
    done = subprocess.run([sys.executable, "-c", script], cwd=work, input=json.dumps(survivors),
                          capture_output=True, text=True, check=True)
    diffs: dict[str, str] = json.loads(done.stdout)
    mutants = []
    for mutant_name, code in sorted(codes.items()):
        before, after, line = "", "", 0
        diff = diffs.get(mutant_name, "")
        changed = diff.splitlines()
        removed = [d[1:] for d in changed if d.startswith("-") and not d.startswith("---")]
        added = [d[1:] for d in changed if d.startswith("+") and not d.startswith("+++")]
        before = " / ".join(r.strip() for r in removed)
        after = " / ".join(a.strip() for a in added)
        if removed:
            line = _find_line(source_text, mutant_name, diff)
        cls, function = _function_of(mutant_name)
        qualname = f"{cls}.{function}" if cls else function
        mutants.append(Mutant(mutant_name, qualname, _status(code), line, before, after))
    return mutants


def _function_of(mutant_name: str) -> tuple[str | None, str]:
    """(class, function) of a mutant: `gateway.m.x_f__mutmut_3`, `gateway.m.xǁCǁf__mutmut_1`."""
    key = re.sub(r"__mutmut_\d+$", "", mutant_name.rsplit(".", 1)[-1])
    if "ǁ" in key:
        _, cls, function = key.split("ǁ", 2)
        return cls, function
    return None, key.removeprefix("x_")


def _find_line(source: str, mutant_name: str, diff: str) -> int:
    """The file line of the first changed line: the function's first line (decorators included)
    plus the offset the function-level diff gives."""
    cls, function = _function_of(mutant_name)
    start = 0
    for node in ast.walk(ast.parse(source)):
        if cls is not None and not (isinstance(node, ast.ClassDef) and node.name == cls):
            continue
        body = node.body if isinstance(node, ast.ClassDef) else [node]
        for item in body:
            if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and item.name == function:
                first = item.decorator_list[0].lineno if item.decorator_list else item.lineno
                start = start or first
    offset = 0
    for text in diff.splitlines():
        hunk = re.match(r"@@ -(\d+)", text)
        if hunk:
            offset = int(hunk.group(1)) - 1
        elif text.startswith("---") or text.startswith("+++"):
            continue
        elif text.startswith("-"):
            return start + offset
        elif not text.startswith("+"):
            offset += 1
    return start


def _equivalents() -> list[dict[str, str]]:
    if not EQUIVALENTS.exists():
        return []
    return list(tomllib.loads(EQUIVALENTS.read_text()).get("mutant", []))


def _reason(equivalents: list[dict[str, str]], source: str, m: Mutant) -> str | None:
    """The listed reason when this survivor is a known equivalent (matched by file, function,
    before and after text, not by mutmut's numbers or line numbers, which move with edits)."""
    for e in equivalents:
        if (e["file"] == source and e["function"] == m.function.rsplit(".", 1)[-1]
                and e["before"] == m.before
                and e["after"] == m.after):
            return e["reason"]
    return None


def _run(name: str, spec: dict[str, object], mutmut: Path, workers: int) -> tuple[Path, int]:
    """mutmut over one module in a fresh scratch copy: (the copy, mutmut's exit status)."""
    work = _prepare(name, spec)
    log = work / "mutmut.log"
    env = {**os.environ, "PYTHONPATH": "", "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        rc = subprocess.run([str(mutmut), "run", "--max-children", str(workers)],
                            cwd=work, stdout=out, stderr=subprocess.STDOUT,
                            env=env).returncode
    return work, rc


def _judge(spec: dict[str, object], mutants: list[Mutant], equivalents: list[dict[str, str]],
           name: str, seconds: float) -> tuple[str, list[str], int]:
    """One module's mutants judged: (its summary line, a line per survivor or unreached
    function, how many of those are neither killed nor listed as equivalent)."""
    source = str(spec["source"])
    unexplained = 0
    count = {s: sum(m.status == s for m in mutants)
             for s in ("killed", "survived", "timeout", "not reached", "other")}
    listed = 0
    lines = []
    edge = [str(e) for e in spec.get("edge", [])]  # type: ignore[attr-defined]
    unreached = sorted({m.function for m in mutants if m.status == "not reached"
                        and not any(fnmatch.fnmatch(m.function, e) for e in edge)})
    for function in unreached:
        # A decision function no fast test calls is not pinned at all.
        unexplained += 1
        lines.append(f"    {source}: {function}: no fast test calls it  [NOT REACHED]")
    for m in sorted(mutants, key=lambda m: (m.line, m.name)):
        if m.status in ("killed", "not reached"):
            continue
        reason = _reason(equivalents, source, m) if m.status == "survived" else None
        if reason is not None:
            listed += 1
            lines.append(f"    {source}:{m.line}: {m.before}  ->  {m.after}"
                         f"  [equivalent: {reason}]")
        else:
            unexplained += m.status == "survived"
            lines.append(f"    {source}:{m.line}: {m.before}  ->  {m.after}"
                         f"  [{m.status.upper()} {m.name}]")
    total = len(mutants) - count["not reached"]
    head = (f"{name}: {total} mutants: {count['killed']} killed, {count['survived']} survived"
            f" ({listed} listed as equivalent), {count['timeout']} timed out"
            + (f", {count['other']} other" if count["other"] else "")
            + f"; {count['not reached']} not reached by a fast test"
            + f" ({', '.join(sorted(edge)) or 'none allowed'}); {seconds:.0f}s")
    return head, lines, unexplained


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module names from mutate/modules.toml")
    parser.add_argument("--workers", type=int, default=1, help="mutmut --max-children")
    parser.add_argument("--report", action="store_true",
                        help="only report the last run's results again (after editing the list"
                             " of equivalents), without running mutmut")
    args = parser.parse_args()
    specs: dict[str, dict[str, object]] = tomllib.loads(MODULES.read_text())
    names = args.modules or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        print(f"unknown module(s): {', '.join(unknown)}; known: {', '.join(specs)}")
        return 2
    equivalents = _equivalents()
    mutmut = Path(sys.executable).parent / "mutmut"
    unexplained = 0
    failed = []
    summary = []
    started = time.monotonic()
    for name in names:
        spec = specs[name]
        source = str(spec["source"])
        t0 = time.monotonic()
        work = WORK / name
        log = work / "mutmut.log"
        rc = 0
        if not args.report:
            work, rc = _run(name, spec, mutmut, args.workers)
        seconds = time.monotonic() - t0
        if rc != 0 or not (work / "mutants" / (source + ".meta")).exists():
            print(f"{name}: mutmut failed (exit {rc}); see {log.relative_to(ROOT)}")
            failed.append(name)
            continue
        head, lines, found = _judge(spec, _collect(work, source), equivalents, name, seconds)
        unexplained += found
        print(head, flush=True)
        for text in lines:
            print(text, flush=True)
        summary.append(head)
    print(f"\nmutation run done in {(time.monotonic() - started) / 60:.1f} min")
    for head in summary:
        print("  " + head)
    if failed:
        print(f"mutmut failed on: {', '.join(failed)}")
        return 1
    if unexplained:
        print(f"{unexplained} survivor(s) (or unreached decision functions) neither killed by a"
              f" test nor listed in {EQUIVALENTS.relative_to(ROOT)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
