"""The attack review's report: one row per check (attack | expected | observed | verdict).

Takes the checks' findings through `Report.add` (each also printed to stderr as it comes);
produces the Markdown report with its verdict counts, notes and time per attack. Verdicts are
PASS, FAIL, INFO (observed, not judged) and ERROR (the harness could not tell).
"""

from __future__ import annotations

import collections
import sys
from dataclasses import dataclass

from lab_smtp import Reply

PASS, FAIL, INFO, ERROR = "PASS", "FAIL", "INFO", "ERROR"


@dataclass
class Row:
    num: str
    attack: str
    expected: str
    observed: str
    verdict: str


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.notes: list[str] = []
        self.timings: list[tuple[str, float]] = []

    def add(self, num: str, attack: str, expected: str, observed: str, verdict: str) -> None:
        row = Row(num, attack, expected, observed, verdict)
        self.rows.append(row)
        print(f"  [{verdict}] {num} {attack}: {observed}", file=sys.stderr, flush=True)

    def markdown(self, title: str) -> str:
        def cell(text: str) -> str:
            text = text.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
            return text.replace("|", "\\|").replace("\r", "\\r").replace("\n", "<br>")

        counts = collections.Counter(r.verdict for r in self.rows)
        out = [f"# {title}", "",
               "Verdicts: " + ", ".join(f"{k} {counts[k]}" for k in (PASS, FAIL, INFO, ERROR)
                                        if counts[k]), "",
               "| # | attack | expected | observed | verdict |",
               "|---|---|---|---|---|"]
        out += [f"| {cell(r.num)} | {cell(r.attack)} | {cell(r.expected)} | {cell(r.observed)} "
                f"| **{r.verdict}** |" for r in self.rows]
        if self.notes:
            out += ["", "## Notes", ""] + [f"- {cell(n)}" for n in self.notes]
        if self.timings:
            out += ["", "## Time per attack", "",
                    ", ".join(f"{name} {secs:.0f} s" for name, secs in self.timings)]
        return "\n".join(out) + "\n"


def short(text: str, n: int = 160) -> str:
    text = " ".join(str(text).split()) if "\x1b" not in str(text) else str(text)
    return text if len(text) <= n else text[: n - 3] + "..."


def expect(rep: Report, attack: str, expected: str, reply: Reply, ok: bool,
           extra: str = "", info: bool = False) -> None:
    rep.add("13", attack, expected, short(str(reply)) + (f"; {extra}" if extra else ""),
            INFO if info else (PASS if ok else FAIL))


def no_values(reply: Reply, *values: str) -> bool:
    return not any(v and v in reply.text for v in values)
