"""`make bench`: the gateway's throughput, latency and memory, against raw gpg on the same work.

    python bench/run.py [--signals N] [--concurrency C] [--per-session K] [--one-at-a-time S]
                        [--backlog M | --skip-backlog] [--profile FILE]

Builds a complete gateway on temporary state (own keys and database, `allow_no_passphrase`),
a sender with its own key and three schools with loopback mail servers of their own CA, then
runs the daemon as a separate process (`python -m gateway --config X serve`), so that its peak
resident memory can be read from /proc and the load generator does not share its event loop.
The senders' MTAs (smtplib, threads) and the school servers (aiosmtpd) run in this process.

1. One at a time: S signals over one session, each sent only after the school received the
   previous one. Latency is from the end of DATA (the final dot written by the sender) to the
   school server's 250 for the notice; each notice is decrypted afterwards with the school's
   key and matched to its signal by the reference the gateway returned.
2. Under load: N signals over C concurrent sessions, each session (STARTTLS, AUTH once) sending
   up to K messages, as a sender's MTA with connection caching does. Signals/s is N over the time
   from the first connection to the last notice at a school.
3. Raw gpg, in the same run: through python-gnupg, on a copy of the gateway's GnuPG home, the
   exact ciphertexts of phase 2 are decrypted and verified, and a notice-sized plaintext is
   signed and encrypted to the same school key, N times, with the gateway's gpg concurrency
   and with C threads. The ratio is the gateway's signals/s over the faster of the two.
4. Backlog: the third school's server is down (its port closed) while M signals for it are
   submitted; once M notices wait, the server comes up and the time until all M are delivered
   is measured, with the number of sessions the server saw.

Prints the machine, the command, every figure and PASS/FAIL per target of the issue. Exits 0
whatever the figures (it is a measurement); 1 when the run itself went wrong (a signal refused,
a notice lost, the daemon died); 2 on a usage error. Everything temporary is removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shlex
import smtplib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from load import BenchError
from measure import NOISE_SHARE, verdict
from phases import Bench
from report import Report, filesystem, machine
from rig import Options

from gateway.observe.logs import configure


def parse_args(argv: Sequence[str] | None) -> Options:
    p = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0]
                                if __doc__ else None)
    p.add_argument("--signals", type=int, default=300, metavar="N",
                   help="signals under load (default 300)")
    p.add_argument("--concurrency", type=int, default=8, metavar="C",
                   help="concurrent SMTP sessions under load (default 8)")
    p.add_argument("--per-session", type=int, default=20, metavar="K",
                   help="messages a sender's session carries before it reconnects (default 20)")
    p.add_argument("--one-at-a-time", type=int, default=30, metavar="S",
                   help="signals sent one at a time (default 30)")
    p.add_argument("--backlog", type=int, default=10_000, metavar="M",
                   help="notices waiting for a school server that comes back (default 10000)")
    p.add_argument("--skip-backlog", action="store_true", help="leave out the backlog phase")
    p.add_argument("--profile", type=Path, metavar="FILE",
                   help="run the daemon under pyinstrument and write its text report to FILE"
                        " (pip install pyinstrument into the virtual environment first)")
    args = p.parse_args(argv)
    for name in ("signals", "concurrency", "per_session", "one_at_a_time"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.backlog < 0:
        p.error("--backlog must not be negative")
    if args.profile is not None and importlib.util.find_spec("pyinstrument") is None:
        p.error("--profile needs pyinstrument: .venv/bin/pip install pyinstrument")
    return Options(args.signals, args.concurrency, args.per_session, args.one_at_a_time,
                   0 if args.skip_backlog else args.backlog,
                   args.profile.resolve() if args.profile else None)


async def _main(options: Options, base: Path, report: Report) -> int:
    bench = Bench(base, options, report)
    failed = None
    try:
        await bench.run()
    except (BenchError, OSError, smtplib.SMTPException) as exc:
        failed = f"{type(exc).__name__}: {exc}"
    finally:
        await bench.close()
    errors = bench.errors_logged()
    report.say(f"daemon log: {len(errors)} error line(s)"
               + (f", e.g. {errors[0][:300]}" if errors else ""))
    if options.profile is not None:
        report.say(f"profile of the daemon (pyinstrument): {options.profile}")
    if report.noisy:
        report.say("note: the machine was shared; other processes and steal took more than"
                   f" {NOISE_SHARE:.0%} of the CPU during " + ", ".join(report.noisy)
                   + ": the figures of those phases are lower than a quiet machine's")
    report.say()
    report.say("targets (issue, 2-core machine):")
    for name, ok, measured in report.targets:
        report.say(f"   {verdict(ok)}  {name}: {measured}")
    if failed:
        report.say(f"\nthe run went wrong: {failed}")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    # As `hwc-gateway` does: the gateway refuses to serve keys others could read.
    os.umask(0o077)
    configure(level=40)  # this process's own gateway calls (set-up) log errors only
    report = Report()
    report.say("hwc-gateway benchmark")
    for line in machine():
        report.say(line)
    report.say("command: " + shlex.join([Path(sys.executable).name, *sys.argv]))
    with tempfile.TemporaryDirectory(prefix="hwc-bench-") as tmp:
        base = Path(tmp)
        report.say(f"state: {base} ({filesystem(base)}; SQLite WAL, synchronous=FULL)")
        report.say(f"settings: {options.one_at_a_time} one at a time; {options.signals} signals"
                   f" under load over {options.concurrency} sessions, at most"
                   f" {options.per_session} per session; backlog {options.backlog or 'skipped'};"
                   " retry 1-5 s")
        return asyncio.run(_main(options, base, report))


if __name__ == "__main__":
    sys.exit(main())
