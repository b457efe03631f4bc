"""`make attack`: the attack review of hwc-gateway, on loopback, against a checkout.

    python attack/run.py [--repo PATH] [--out FILE] [--name NAME]
                         [--only 1,2,13] [--skip 1] [--keep]

Sets a gateway up from its README in a temporary directory (`lab.py`), attacks it over
127.0.0.1 (the pickup page last, W1-W10: `lab_web.py`) and writes a report (attack |
expected | observed | verdict). The daemon and every CLI verb run as `PYTHONPATH=REPO python
-m gateway ...` with this interpreter, so the checkout given with --repo (default: the one
this file is in) is the code under test. The report goes to stdout and to --out, or else to
`report.md` in a new temporary directory (its path is printed at the end); progress goes to
stderr. Exits 0 when every verdict is PASS or INFO, 1 when one is FAIL or ERROR or the set-up
failed (one line on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

# The modules beside this file: Python puts a script's own directory first on sys.path.
from checks_acks import a5_acks
from checks_dos import a1_bomb, a4_stalling, a4b_commands_before_tls, a9_auth_spray
from checks_input import a13_json, a13_misc, a13_names, a13_plaintext_school, a13_rotation
from checks_signals import a2_weak_digests, a3_reference_reuse, a11_oracle_and_a8, a12_revoked_key
from checks_smtp import (
    a13_auth_odd,
    a13_controls,
    a13_header_floods,
    a13_long_lines,
    a13_many_rcpts,
    a13_pipelining,
    a13_smuggling,
    a13_starttls_injection,
)
from checks_state import a6_escape_reply, a7_receipt_chain, a10_symlink
from checks_sweep import sweep
from checks_web import w1_scanner, w2_guessing, w3_lockout, w4_forged_posts, w5_replay, w6_headers
from checks_webdata import w7_bodies, w8_slow_headers, w9_database, w10_ack_link
from lab import Lab
from report import ERROR, FAIL, Report, short

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the checkout attack/ lives in


# ---------------------------------------------------------------------------------------------

ATTACKS: list[tuple[str, Callable[[Lab, Report], None], bool]] = [
    # (id, function, restart the daemon afterwards: it leaves counters behind)
    ("1", a1_bomb, False),
    ("2", a2_weak_digests, False),
    ("3", a3_reference_reuse, False),
    ("11", a11_oracle_and_a8, False),  # also 8
    ("6", a6_escape_reply, False),
    ("12", a12_revoked_key, False),
    ("13", a13_controls, False),
    ("13", a13_smuggling, False),
    ("13", a13_starttls_injection, False),
    ("13", a13_pipelining, False),
    ("13", a13_many_rcpts, False),
    ("13", a13_header_floods, False),
    ("13", a13_names, False),
    ("13", a13_json, False),
    ("13", a13_misc, False),
    ("13", a13_long_lines, True),
    ("13", a13_auth_odd, True),
    ("5", a5_acks, True),
    ("4", a4_stalling, True),
    ("4", a4b_commands_before_tls, True),
    ("9", a9_auth_spray, True),
    ("13", a13_plaintext_school, False),
    ("13", a13_rotation, False),
    ("7", a7_receipt_chain, False),
    ("10", a10_symlink, False),
    # The pickup page (W1-W11): last, since the first one turns [web] on (lab_web.ensure_web),
    # and with it OpenPGP notices carry a link instead of the ack address attack 5 replies to.
    ("W1", w1_scanner, False),
    ("W5", w5_replay, False),
    ("W2", w2_guessing, False),
    ("W4", w4_forged_posts, False),
    ("W7", w7_bodies, False),
    ("W10", w10_ack_link, False),
    ("W9", w9_database, False),
    ("W3", w3_lockout, False),  # after every sign-in: it locks the contact for a minute
    ("W8", w8_slow_headers, True),
    ("W6", w6_headers, False),  # over every answer the others got
]


def git(repo: Path, *args: str) -> str:
    """What git says about the checkout ("" without git, or outside a git checkout)."""
    path = shutil.which("git")
    if path is None:
        return ""
    return subprocess.run([path, "-C", str(repo), *args], capture_output=True, text=True,
                          check=False).stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=ROOT,
                   help="the checkout whose code runs (default: the one holding this file)")
    p.add_argument("--out", type=Path,
                   help="write the report here (default: report.md in a new temp directory)")
    p.add_argument("--name", help="the name in the report's title (default: the checkout's)")
    p.add_argument("--only", help="comma-separated attack numbers (1-13, W1-W10; web: all "
                   "attacks on the pickup page) to run")
    p.add_argument("--skip", help="comma-separated attack numbers to leave out")
    p.add_argument("--keep", action="store_true",
                   help="keep the laboratory's temp directory (its path is printed first)")
    args = p.parse_args()
    repo = args.repo.resolve()
    if not (repo / "gateway" / "__main__.py").is_file() or not (repo / "config.toml").is_file():
        p.error(f"{repo} is not a hwc-gateway checkout (no gateway/ and config.toml)")
    name = args.name or repo.name
    only = set(args.only.upper().split(",")) if args.only else None
    skip = set(args.skip.upper().split(",")) if args.skip else set()
    for chosen in (only or set(), skip):
        if "WEB" in chosen:  # every attack on the pickup page
            chosen.update(num for num, _, _ in ATTACKS if num.startswith("W"))
    if only and "8" in only:
        only.add("11")
    commit = git(repo, "log", "-1", "--format=%h %s")
    dirty = git(repo, "status", "--porcelain", "--", "gateway", "config.toml")
    rep = Report()
    lab = Lab(repo, keep=args.keep)
    started = time.monotonic()
    try:
        print(f"setting up in {lab.base} ...", file=sys.stderr, flush=True)
        try:
            lab.setup()
            lab.start_daemon()
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"attack review: the set-up failed: {short(str(exc), 300)}", file=sys.stderr)
            return 1
        rep.timings.append(("set-up", time.monotonic() - started))
        for num, fn, restart in ATTACKS:
            if (only and num not in only) or num in skip:
                continue
            t = time.monotonic()
            print(f"{fn.__name__} ...", file=sys.stderr, flush=True)
            try:
                if lab.daemon is None or lab.daemon.proc.poll() is not None:
                    rep.notes.append(f"the daemon was not running before {fn.__name__} "
                                     f"(exit {lab.daemon.proc.returncode if lab.daemon else '-'})"
                                     "; restarted")
                    lab.start_daemon()
                fn(lab, rep)
            except Exception as exc:
                rep.add(num, fn.__name__, "-", f"harness error: {type(exc).__name__}: "
                        f"{short(str(exc), 200)}", ERROR)
                traceback.print_exc()
            if restart:
                lab.restart_daemon()
            rep.timings.append((fn.__name__.split("_", 1)[0], time.monotonic() - t))
        lab.stop_daemon()
        sweep(lab, rep)
    finally:
        lab.close()
    total = time.monotonic() - started
    title = (f"Attack review of hwc-gateway: {name} ({repo}, {commit or 'no git commit'}"
             f"{', uncommitted changes' if dirty else ''})")
    text = rep.markdown(title) + f"\nWhole run: {total:.0f} s.\n"
    print(text)
    out: Path = args.out or Path(tempfile.mkdtemp(prefix="hwc-attack-report-")) / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    verdicts = collections.Counter(r.verdict for r in rep.rows)
    print(f"attack review: {', '.join(f'{k} {v}' for k, v in sorted(verdicts.items()))}; "
          f"report in {out}", file=sys.stderr)
    return 1 if verdicts[FAIL] or verdicts[ERROR] else 0


if __name__ == "__main__":
    sys.exit(main())
