"""The long fuzz run: the properties of the property tests with many more examples.

    python fuzz/run.py [--examples N] [--seconds S] [--seed SEED] [--only NAME]

Runs every property in `PROPERTIES` of tests/property_checks.py (the same strategies and checks
that tests/test_properties_*.py run in `make test`, a hundred or so examples each) in
round-robin batches of fresh hypothesis runs, each with its own seed, until every property has
run N examples (default 20,000) or S seconds (default: no limit) are spent. Prints per property
the examples run, the failures and the time; exits 1 on any failure, after printing the shrunk
falsifying example.
Nothing is written to the repository: no example database, and hypothesis's own cache goes to
the temporary directory.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
# Before hypothesis is imported: its Unicode cache would otherwise go to ./.hypothesis.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(tempfile.gettempdir()) / "hwc-gateway-hypothesis")
)

from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis.strategies import SearchStrategy  # noqa: E402

BATCH = 5000  # at most this many examples per hypothesis run; each run gets its own seed
SLICE = 15.0  # seconds per property per round


class PropertyLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def strategy(self) -> SearchStrategy[Any]: ...
    @property
    def check(self) -> Callable[[Any], None]: ...


@dataclass
class Outcome:
    name: str
    examples: int = 0
    runs: int = 0
    failures: int = 0
    seconds: float = 0.0
    first_failure: str = ""


def load_properties() -> Sequence[PropertyLike]:
    """PROPERTIES from tests/property_checks.py (tests/ is not a package, so load it by path;
    its strategy modules beside it are imported by their names, as pytest imports them)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    path = ROOT / "tests" / "property_checks.py"
    spec = importlib.util.spec_from_file_location("property_checks", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["property_checks"] = module
    spec.loader.exec_module(module)
    properties: Sequence[PropertyLike] = module.PROPERTIES
    return properties


class Runner:
    """Runs one property in batches, each a fresh hypothesis run with its own seed."""

    def __init__(self, prop: PropertyLike, base_seed: int) -> None:
        self.prop = prop
        self.base_seed = base_seed
        self.outcome = Outcome(prop.name)
        self.calls = 0

    def _counted(self, value: Any) -> None:
        self.calls += 1
        self.prop.check(value)

    def rate(self) -> float | None:
        """Examples per second so far, once there is something to go by."""
        if self.outcome.runs == 0:
            return None
        return self.outcome.examples / max(self.outcome.seconds, 1e-3)

    def batch(self, examples: int) -> None:
        outcome = self.outcome
        test = seed(self.base_seed + outcome.runs)(settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            print_blob=True,
        )(given(self.prop.strategy)(self._counted)))
        before = self.calls
        start = time.monotonic()
        try:
            test()
        except Exception as exc:
            outcome.failures += 1
            if not outcome.first_failure:
                outcome.first_failure = "".join(traceback.format_exception(exc))
        outcome.seconds += time.monotonic() - start
        outcome.runs += 1
        # Every call of the check counts, shrinking included.
        outcome.examples += max(self.calls - before, 1)


def run_all(runners: list[Runner], examples: int, seconds: float | None) -> None:
    """Round-robin batches until every property has run `examples` or the time is up. Each
    round gives every unfinished property an equal slice of the time left (at most SLICE), and
    a batch is sized from the property's rate to fill it, so cheap properties finish early and
    leave their time to the slow ones, and the last round ends near the deadline."""
    deadline = time.monotonic() + seconds if seconds is not None else float("inf")
    while True:
        active = [r for r in runners if r.outcome.examples < examples]
        if not active or time.monotonic() >= deadline:
            return
        for runner in active:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            size = min(BATCH, examples - runner.outcome.examples)
            rate = runner.rate()
            if rate is None:
                size = min(size, 100)  # calibrate first
            else:
                size = min(size, max(20, int(rate * min(SLICE, left / len(active)))))
            runner.batch(size)
            print(".", end="", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=20_000,
                        help="examples per property (default 20000)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="total time budget (default: none; stop at --examples)")
    parser.add_argument("--seed", type=int, default=None,
                        help="base seed (default: random, printed for reproduction)")
    parser.add_argument("--only", action="append", default=[],
                        help="run only the property with this name (repeatable)")
    args = parser.parse_args(argv)

    everything = load_properties()
    properties = [p for p in everything if not args.only or p.name in args.only]
    if not properties:
        parser.error("no property selected")
    base_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzz: {len(properties)} properties, up to {args.examples} examples each"
          + (f", {args.seconds:g} s in all" if args.seconds is not None else "")
          + f", seed {base_seed}", flush=True)

    runners = [Runner(p, base_seed + 1_000_000 * i) for i, p in enumerate(properties)]
    run_all(runners, args.examples, args.seconds)
    print(file=sys.stderr)
    outcomes = [r.outcome for r in runners]
    for outcome in outcomes:
        rate = outcome.examples / outcome.seconds if outcome.seconds else 0.0
        print(f"  {outcome.name:<26} {outcome.examples:>8} examples  {outcome.runs:>4} runs  "
              f"{outcome.failures} failures  {outcome.seconds:7.1f} s  ({rate:.0f}/s)")
    for outcome in outcomes:
        if outcome.first_failure:
            print(f"\n--- {outcome.name}: first failure ---\n{outcome.first_failure}")

    total = sum(o.examples for o in outcomes)
    failed = sum(o.failures for o in outcomes)
    elapsed = sum(o.seconds for o in outcomes)
    print(f"fuzz: {total} examples, {failed} failures, {elapsed:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
