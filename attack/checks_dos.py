"""Attacks on the daemon's resources: 1 the decompression bomb, 4 stalling sessions and
commands before STARTTLS, 9 the AUTH spray.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
"""

from __future__ import annotations

import collections
import secrets
import subprocess
import threading
import time
from typing import Any

from common import smtp_setting
from lab import Lab
from lab_mail import GATEWAY, PASSWORD, SENDER, SENDER_ADDRESS, encrypted_envelope, tool
from lab_smtp import Raw, Reply, dot_stuff
from report import ERROR, FAIL, PASS, Report, short

# ---------------------------------------------------------------------------------------------
# 1. Decompression bomb


def build_bomb(lab: Lab, rep: Report) -> bytes | None:
    """The bomb as the sender mails it; None (and an ERROR row) when gpg could not make it."""
    # The zeros come from a sparse file: 256 MiB to read, nothing on disk, nothing in memory.
    zeros = lab.base / "zeros"
    with zeros.open("wb") as sink:
        sink.truncate(256 << 20)
    with zeros.open("rb") as f:
        proc = subprocess.run(
            [tool("gpg"), "--homedir", str(lab.sender.home), "--batch", "--trust-model",
             "always", "--pinentry-mode", "loopback", "--passphrase", "", "-z", "9",
             "--compress-algo", "bzip2", "--armor", "--sign", "--encrypt",
             "--recipient", lab.gateway_fpr, "--local-user", f"{lab.sender.fpr}!"],
            stdin=f, capture_output=True, timeout=300, check=False)
    zeros.unlink()
    if proc.returncode != 0:
        rep.add("1", "decompression bomb", "-", f"gpg failed: {proc.stderr[-200:]!r}", ERROR)
        return None
    return encrypted_envelope(proc.stdout)


def probe_greetings(lab: Lab, result: dict[str, Any]
                    ) -> tuple[list[threading.Thread], list[tuple[float, float, bool]]]:
    """Five clients connecting at set offsets while the bomb is opened (started, not joined):
    their threads and the list each appends (offset, greeting latency, overlapped) to."""
    latencies: list[tuple[float, float, bool]] = []  # (start offset, greeting latency, overlapped)

    def probe(offset: float) -> None:
        time.sleep(offset)
        start = time.monotonic()
        overlapped = "at" not in result
        try:
            p = Raw(lab.port, timeout=60)
            latency = time.monotonic() - start
            p.cmd("QUIT", timeout=2)
            p.close()
            ok = p.greeting is not None and p.greeting.code == 220
        except OSError:
            latency, ok = time.monotonic() - start, False
        latencies.append((offset, latency if ok else float("inf"), overlapped))

    probes = [threading.Thread(target=probe, args=(o,), daemon=True)
              for o in (0.3, 1.5, 3.0, 6.0, 10.0)]
    for p in probes:
        p.start()
    return probes, latencies


def a1_bomb(lab: Lab, rep: Report) -> None:
    """256 MiB of zeros, bzip2 -z 9, signed and encrypted: refusal, bounded memory, live loop."""
    t = time.monotonic()
    message = build_bomb(lab, rep)
    if message is None:
        return
    built = time.monotonic() - t
    # A fresh daemon, so that its high-water mark is the bomb's.
    lab.restart_daemon()
    time.sleep(1.0)
    rss0 = lab.proc_status("VmRSS")
    hwm0 = lab.proc_status("VmHWM")
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(lab.proc_status("VmRSS"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    c, r = lab.session(timeout=180)
    if r.code != 235:
        stop.set()
        rep.add("1", "decompression bomb", "-", f"AUTH failed: {r}", ERROR)
        return
    c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")
    c.cmd(f"RCPT TO:<{GATEWAY}>")
    c.cmd("DATA")
    c.send(dot_stuff(message) + b".\r\n")
    t_dot = time.monotonic()
    result: dict[str, Any] = {}

    def wait_reply() -> None:
        result["reply"] = c.reply(timeout=180)
        result["at"] = time.monotonic() - t_dot

    waiter = threading.Thread(target=wait_reply, daemon=True)
    waiter.start()
    probes, latencies = probe_greetings(lab, result)
    waiter.join(200)
    for p in probes:
        p.join(70)
    stop.set()
    sampler.join(2)
    c.close()
    hwm1 = lab.proc_status("VmHWM")
    alive = lab.daemon is not None and lab.daemon.proc.poll() is None
    reply: Reply = result.get("reply", Reply(-1, "no reply within 180 s"))
    growth_mb = (max(hwm1, max(samples or [0])) - rss0) / 1024
    worst = max((lat for _, lat, _ in latencies), default=float("inf"))
    overlapped = sum(1 for _, _, o in latencies if o)
    # README "What senders submit": decrypting to more than four times the size limit is 552.
    ok_reply = str(reply).startswith("552 5.3.4")
    verdict = PASS if ok_reply and growth_mb < 100 and worst < 0.5 and alive else FAIL
    rep.add("1", "decompression bomb: 256 MiB of zeros, gpg -z 9 bzip2, signed+encrypted "
            f"({len(message)} bytes on the wire)",
            "552 5.3.4; peak RSS growth < ~100 MB; greeting of 5 other clients "
            "< 0.5 s during the opening",
            f"reply `{short(str(reply))}` after {result.get('at', float('nan')):.1f} s; RSS "
            f"{rss0 / 1024:.0f} MB before, VmHWM {hwm0 / 1024:.0f} -> {hwm1 / 1024:.0f} MB "
            f"(growth {growth_mb:.0f} MB); greeting latencies "
            + ", ".join(f"{lat:.2f}s@+{off}s{'' if o else '(after reply)'}"
                        for off, lat, o in sorted(latencies))
            + f" ({overlapped}/5 while opening); daemon {'alive' if alive else 'DEAD'}; "
            f"bomb built in {built:.0f} s", verdict)


# ---------------------------------------------------------------------------------------------
# 4. Stalling plaintext sessions


def a4_stalling(lab: Lab, rep: Report) -> None:
    results: list[tuple[int, float, str]] = []  # (NOOPs answered 250, seconds, how it ended)
    lock = threading.Lock()
    limit = 45.0

    def stall(i: int) -> None:
        start = time.monotonic()
        try:
            c = Raw(lab.port, timeout=10)
        except OSError as exc:
            with lock:
                results.append((0, 0.0, f"connect failed {exc}"))
            return
        if c.greeting is None or c.greeting.code != 220:
            with lock:
                results.append((0, 0.0, f"greeting {c.greeting}"))
            c.close()
            return
        c.cmd(f"EHLO stall{i}.example")
        ok = 0
        end = "still open at 45 s (closed by us)"
        while time.monotonic() - start < limit:
            time.sleep(2)
            r = c.cmd("NOOP", timeout=10)
            if r.code == 250:
                ok += 1
                continue
            end = f"{short(str(r), 60)}"
            break
        c.close()
        with lock:
            results.append((ok, time.monotonic() - start, end))

    threads = [threading.Thread(target=stall, args=(i,), daemon=True) for i in range(10)]
    for th in threads:
        th.start()
        time.sleep(0.05)
    # Meanwhile, does a real sender get in?
    probes: list[str] = []
    t0 = time.monotonic()
    while any(th.is_alive() for th in threads) and time.monotonic() - t0 < limit + 5:
        time.sleep(5)
        try:
            p = Raw(lab.port, timeout=5)
            probes.append(f"+{time.monotonic() - t0:.0f}s:{p.greeting.code if p.greeting else '-'}")
            p.cmd("QUIT", timeout=2)
            p.close()
        except OSError:
            probes.append(f"+{time.monotonic() - t0:.0f}s:refused")
    for th in threads:
        th.join(20)
    cut = [r for r in results if r[2].startswith("421")]
    slowest = max((r[1] for r in cut), default=float("inf"))
    verdict = PASS if len(cut) == 10 and slowest <= 30 else FAIL
    noops = sorted(r[0] for r in results)
    ends = collections.Counter(r[2] for r in results)
    rep.add("4", "10 plaintext sessions from one address, NOOP every 2 s",
            "each cut off with 421 well before long (here: within 30 s)",
            f"{len(cut)}/10 cut with 421 (slowest after {slowest:.0f} s); NOOPs answered 250 "
            f"per session {noops}; endings {dict(ends)}; a new client meanwhile got greeting "
            f"{' '.join(probes)}", verdict)


def a4b_commands_before_tls(lab: Lab, rep: Report) -> None:
    cycle = ["NOOP", "RSET", "HELP", "VRFY postmaster", "EHLO again.example",
             "MAIL FROM:<x@example.org>", "RCPT TO:<leerplicht@hwc.example.nl>", "NOOP"]
    c = Raw(lab.port, timeout=10)
    codes: list[int] = []
    end = "not cut within 80 commands"
    for i in range(80):
        r = c.cmd(cycle[i % len(cycle)], timeout=10)
        codes.append(r.code)
        if r.code in (421, -1):
            end = f"cut after {i} commands: {short(str(r), 60)}"
            break
    c.close()
    answered = len([x for x in codes if x not in (421, -1)])
    hist = dict(collections.Counter(codes))
    limit = smtp_setting(lab, "max_stalling_commands", 10)
    rep.add("4", "commands allowed before STARTTLS (NOOP/RSET/HELP/VRFY/EHLO/MAIL/RCPT, fast)",
            f"at most `max_stalling_commands` ({limit}) answered, then 421 4.7.0",
            f"{answered} answered; {end}; codes {hist}",
            PASS if answered <= limit and 421 in codes else FAIL)


# ---------------------------------------------------------------------------------------------
# 9. AUTH spray


def a9_auth_spray(lab: Lab, rep: Report) -> None:
    logins = ["politie", "opvang", "onbekend", "admin", "vt-amsterdam", "postmaster"]
    seq: list[str] = []
    fails: list[int] = []
    t0 = time.monotonic()

    def attempt(user: str, password: str, out: list[tuple[str, int]]) -> None:
        c, r = lab.session(user, password, timeout=60)
        c.cmd("QUIT", timeout=2)
        c.close()
        out.append((user, r.code))

    k = 0
    for _ in range(8):
        ok: list[tuple[str, int]] = []
        attempt(SENDER, PASSWORD, ok)
        seq.append(f"S{ok[0][1]}")
        out: list[tuple[str, int]] = []
        threads = []
        for _ in range(3):
            user = logins[k % len(logins)]
            k += 1
            th = threading.Thread(target=attempt, args=(user, "wrong-" + secrets.token_hex(4),
                                                        out))
            th.start()
            threads.append(th)
            time.sleep(0.05)
        for th in threads:
            th.join(90)
        for _, code in out:
            seq.append(f"F{code}")
            fails.append(code)
    first_454 = next((i + 1 for i, c in enumerate(fails) if c == 454), None)
    # README: 10 failures from one client address, then 454 4.7.0, the right password too.
    # The 3 attempts of a round run at once, each slowed by the throttle: those checked before
    # the 10th failure was counted may still be answered 535, so at most 10 + 2 get 535 and
    # every failure after the 12th, and every good login after the first 454, gets 454.
    limit, in_flight = 10, 3
    answered_535 = fails.count(535)
    good_after = [x for x in seq[seq.index("F454"):] if x.startswith("S")] if first_454 else []
    verdict = (PASS if first_454 and answered_535 <= limit + in_flight - 1
               and all(c == 454 for c in fails[limit + in_flight - 1:])
               and all(x == "S454" for x in good_after) else FAIL)
    rep.add("9", "AUTH spray: 24 wrong passwords over 6 other logins from one address, a "
            "successful login before every 3", "454 4.7.0 once 10 failures are counted (the "
            "2 attempts in flight with the 10th may still get 535), the right password too",
            f"{' '.join(seq)} ({time.monotonic() - t0:.0f} s); "
            + (f"first 454 at failure {first_454}, {answered_535} answered 535" if first_454
               else "no 454 at all"), verdict)
