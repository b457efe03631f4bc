"""`make attack`: the attack review of hwc-gateway, on loopback, against a checkout.

    python attack/run.py [--repo PATH] [--out FILE] [--name NAME]
                         [--only 1,2,13] [--skip 1] [--keep]

Sets a gateway up from its README in a temporary directory (`lab.py`), attacks it over
127.0.0.1 and writes a report (attack | expected | observed | verdict). The daemon and every
CLI verb run as `PYTHONPATH=REPO python -m gateway ...` with this interpreter, so the checkout
given with --repo (default: the one this file is in) is the code under test. The report goes
to stdout and to --out, or else to `report.md` in a new temporary directory (its path is
printed at the end); progress goes to stderr. Exits 0 when every verdict is PASS or INFO, 1
when one is FAIL or ERROR or the set-up failed (one line on stderr), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import re
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# lab.py is found beside this file: Python puts a script's own directory first on sys.path.
import lab as L
from lab import (
    ACK_RE,
    GATEWAY,
    PASSWORD,
    SCHOOL_A,
    SCHOOL_D,
    SCHOOL_E,
    SCHOOL_P,
    SENDER,
    SENDER_ADDRESS,
    Lab,
    Raw,
    Reply,
    armored_blocks,
    auth_plain_line,
    birth,
    bsn_with_prefix,
    dot_stuff,
    encrypted_envelope,
    gpg,
    header_section,
    inner_text,
    json_entity,
    list_packets,
    signal_json,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent  # the checkout attack/ lives in
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


def rid() -> str:
    return secrets.token_hex(3).upper()


def ref_of(reply: Reply) -> str | None:
    m = re.search(r"accepted as (HWC-[0-9A-Z-]+)", reply.text)
    return m.group(1) if m else None


def smtp_setting(lab: Lab, key: str, default: int) -> int:
    """A limit of `[smtp]` in the laboratory's config.toml (the checkout's own value)."""
    return int(tomllib.loads(lab.config.read_text()).get("smtp", {}).get(key, default))


def receipts_for(lab: Lab, event: str, ref: str | None = None) -> list[dict[str, Any]]:
    return [r for r in lab.receipts() if r.get("event") == event
            and (ref is None or r.get("ref") == ref)]


def notices_for(lab: Lab, code: str, ref: str) -> list[tuple[L.Got, str, str]]:
    """(received, inner header section, inner text) of each notice of `ref` a school got."""
    out = []
    for got in lab.inbox[code].all():
        for block in armored_blocks(got.data):
            plain, _ = lab.schools[code].decrypt(block)
            if plain and f"{ref}-" in plain.decode("utf-8", "replace"):
                head, body = inner_text(plain)
                out.append((got, head, body))
    return out


# ---------------------------------------------------------------------------------------------
# 1. Decompression bomb


def a1_bomb(lab: Lab, rep: Report) -> None:
    """256 MiB of zeros, bzip2 -z 9, signed and encrypted: refusal, bounded memory, live loop."""
    t = time.monotonic()
    # The zeros come from a sparse file: 256 MiB to read, nothing on disk, nothing in memory.
    zeros = lab.base / "zeros"
    with zeros.open("wb") as sink:
        sink.truncate(256 << 20)
    with zeros.open("rb") as f:
        proc = subprocess.run(
            [L.tool("gpg"), "--homedir", str(lab.sender.home), "--batch", "--trust-model",
             "always", "--pinentry-mode", "loopback", "--passphrase", "", "-z", "9",
             "--compress-algo", "bzip2", "--armor", "--sign", "--encrypt",
             "--recipient", lab.gateway_fpr, "--local-user", f"{lab.sender.fpr}!"],
            stdin=f, capture_output=True, timeout=300, check=False)
    zeros.unlink()
    if proc.returncode != 0:
        rep.add("1", "decompression bomb", "-", f"gpg failed: {proc.stderr[-200:]!r}", ERROR)
        return
    message = encrypted_envelope(proc.stdout)
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
# 2. Weak digests


def a2_weak_digests(lab: Lab, rep: Report) -> None:
    child = lab.pupil("Noor Smit")
    for digest in ("SHA256", "SHA1", "RIPEMD160"):
        for mode in ("combined", "signed-inside"):
            ref = f"VT-DIG-{digest}-{mode[:4]}-{rid()}"
            msg = lab.signal(signal_json([child], ref), mode=mode, digest=digest)
            r = lab.submit(msg)
            if digest == "SHA256":
                ok = r.code == 250 and "accepted as" in r.text
                rep.add("2", f"control: {mode} signature with --digest-algo SHA256",
                        "250 accepted", short(str(r)), PASS if ok else FAIL)
            else:
                ok = str(r).startswith("554 5.7.7")
                rep.add("2", f"{mode} signature with --digest-algo {digest}", "554 5.7.7",
                        short(str(r)), PASS if ok else FAIL)


# ---------------------------------------------------------------------------------------------
# 3. Reused reference


def a3_reference_reuse(lab: Lab, rep: Report) -> None:
    ref = f"VT-REUSE-{rid()}"
    first = lab.signal(signal_json([lab.pupil("Finn de Jong")], ref))
    r1 = lab.submit(first)
    ref1 = ref_of(r1)
    rep.add("3", "first signal with sender reference R", "250 accepted", short(str(r1)),
            PASS if ref1 and "already" not in r1.text else FAIL)
    second = lab.signal(signal_json([lab.pupil("Sem Bos")], ref))
    r2 = lab.submit(second)
    ref2 = ref_of(r2)
    # README "What senders submit": the case reference never makes a duplicate.
    verdict = (PASS if r2.code == 250 and "already" not in r2.text and ref2 and ref2 != ref1
               else FAIL)
    rep.add("3", "second signal, same reference R, another child (other content)",
            "250 accepted as a NEW ref; never `already accepted`",
            short(str(r2)) + (f" (first was {ref1})" if ref1 else ""), verdict)
    if "already accepted" in r2.text:
        # What it costs: the second child reaches nobody.
        time.sleep(3)
        got = notices_for(lab, SCHOOL_A, ref1 or "?")
        sem = [1 for _, _, body in got if "Sem Bos" in body]
        rep.notes.append(f"3: after the swallowed second signal the school got {len(got)} notice(s)"
                         f" for {ref1}, {len(sem)} naming the second child: it reaches nobody, "
                         "and the sender was told it was already accepted")
    r3 = lab.submit(first)
    rep.add("3", "true resend: the first signal's exact bytes again",
            f"250 already accepted as {ref1}", short(str(r3)),
            PASS if "already accepted" in r3.text and ref1 and ref1 in r3.text else FAIL)
    again = lab.signal(signal_json([lab.pupil("Finn de Jong")], ref))  # new signature, new MID
    r4 = lab.submit(again)
    rep.add("3", "replay: the first signal's content re-signed, new Message-ID",
            f"250 already accepted as {ref1}", short(str(r4)),
            PASS if "already accepted" in r4.text and ref1 and ref1 in r4.text else FAIL)


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
# 5. Acknowledgements


def ack_session(lab: Lab, mail_from: str, rcpts: list[str], body: bytes | None
                ) -> tuple[list[Reply], Reply | None]:
    c = Raw(lab.port, timeout=20)
    c.cmd("EHLO school.example")
    c.starttls(lab.gw_ca)
    c.cmd("EHLO school.example")
    replies = [c.cmd(f"MAIL FROM:<{mail_from}>")]
    replies += [c.cmd(f"RCPT TO:<{a}>") for a in rcpts]
    final = None
    if body is not None:
        r = c.cmd("DATA")
        if r.code == 354:
            c.send(dot_stuff(body) + b".\r\n")
            final = c.reply()
        else:
            final = r
    c.cmd("QUIT", timeout=3)
    c.close()
    return replies, final


def a5_acks(lab: Lab, rep: Report) -> None:
    names = ["Sanne de Vries", "Daan de Vries", "Eva Maria Jansen", "Julia Mulder"]
    got_refs = [ref_of(lab.submit(lab.signal(signal_json([lab.pupil(name)],
                                                        f"VT-ACK-{rid()}"))))
                for name in names]
    refs = [ref for ref in got_refs if ref]
    if len(refs) != len(names):
        rep.add("5", "acknowledgements", "-", f"signals not accepted: {got_refs}", ERROR)
        return
    found = {ref: lab.wait_for(lambda ref=ref: notices_for(lab, SCHOOL_A, ref), 20)
             for ref in refs}
    tokens: dict[str, str] = {}
    outer_leaks = []
    for ref, items in found.items():
        if not items:
            continue
        got, head, body = items[0]
        m = ACK_RE.search(head + "\n" + body)
        if m:
            tokens[ref] = m.group(0)
        outer = header_section(got.data).decode("utf-8", "replace")
        if ACK_RE.search(outer) or ACK_RE.search(got.data.split(b"-----BEGIN PGP")[0].decode(
                "utf-8", "replace")):
            outer_leaks.append(ref)
    if len(tokens) < 4:
        rep.add("5", "acknowledgements", "-", f"only {len(tokens)} of 4 notices with an ack "
                f"address arrived ({ {k: len(v) for k, v in found.items()} })", ERROR)
        return
    rep.add("5", "ack token in the notice's outer (unencrypted) headers",
            "not readable outside the encryption",
            f"readable in the outer headers of {len(outer_leaks)}/4 notices (e.g. "
            f"`Reply-To: {tokens[refs[0]].split('+')[0]}+<26 chars>@...`)" if outer_leaks
            else "not in the outer headers (only inside the encryption)",
            FAIL if outer_leaks else PASS)
    contact = L.CONTACTS[SCHOOL_A]
    reply_body = (b"From: " + contact.encode() + b"\r\nSubject: Re: Vertrouwelijk bericht\r\n\r\n"
                  b"Ontvangen, dank u.\r\n")
    # (a) null sender
    before = {ref: len(receipts_for(lab, "acknowledged", ref)) for ref in refs[:3]}
    rc_a, fin_a = ack_session(lab, "", [tokens[refs[0]]], reply_body)
    # (b) auto-replied
    auto = (b"From: " + contact.encode() + b"\r\nAuto-Submitted: auto-replied\r\n"
            b"Subject: Automatisch antwoord: Vertrouwelijk bericht\r\n\r\nIk ben afwezig.\r\n")
    rc_b, fin_b = ack_session(lab, contact, [tokens[refs[1]]], auto)
    # (c) a real reply, its RCPT given three times
    rc_c, fin_c = ack_session(lab, contact, [tokens[refs[2]]] * 3, reply_body)
    time.sleep(1)
    after = {ref: len(receipts_for(lab, "acknowledged", ref)) for ref in refs[:3]}
    n_a, n_b, n_c = (after[r] - before[r] for r in refs[:3])
    rep.add("5", "ack reply with null sender `MAIL FROM:<>` (a bounce)",
            "not recorded as an acknowledgement",
            f"MAIL/RCPT {[r.code for r in rc_a]}, DATA `{short(str(fin_a), 70)}`; "
            f"{n_a} `acknowledged` receipt(s)", PASS if n_a == 0 else FAIL)
    rep.add("5", "ack reply with `Auto-Submitted: auto-replied` (out-of-office)",
            "not recorded as an acknowledgement",
            f"MAIL/RCPT {[r.code for r in rc_b]}, DATA `{short(str(fin_b), 70)}`; "
            f"{n_b} `acknowledged` receipt(s)", PASS if n_b == 0 else FAIL)
    rep.add("5", "real ack reply, its RCPT given 3 times",
            "recorded once; duplicate RCPTs collapsed",
            f"MAIL/RCPT {[r.code for r in rc_c]}, DATA `{short(str(fin_c), 70)}`; "
            f"{n_c} `acknowledged` receipt(s)", PASS if n_c == 1 else FAIL)
    reuse, _ = ack_session(lab, contact, [tokens[refs[2]]], None)
    rep.add("5", "the used ack address again (RCPT)", "550 5.1.1 (single use)",
            short(str(reuse[-1])), PASS if str(reuse[-1]).startswith("550 5.1.1") else FAIL)
    st = lab.cli_json("status")
    rep.notes.append(f"5: after the three replies `status --json` says unacknowledged="
                     f"{st.get('unacknowledged')} (of notices sent in this run)")

    # Timing of RCPT for the live token (not consumed by RCPT) against unknown ones. Every
    # unknown token counts against the client address, so the block (421) ends this early:
    # only real answers are timed.
    live = tokens[refs[3]]
    live_local = live.split("@")[0]
    timed: dict[str, list[float]] = {"live": [], "unknown": [], "prefix": []}
    c = Raw(lab.port, timeout=20)
    c.cmd("EHLO school.example")
    c.starttls(lab.gw_ca)
    c.cmd("EHLO school.example")
    c.cmd(f"MAIL FROM:<{contact}>")
    cut = ""
    for _ in range(15):
        for kind, addr in (
                ("live", live),
                ("unknown", "ack+" + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567")
                                             for _ in range(26)) + "@hwc.example.nl"),
                ("prefix", live_local[:-3] + ("aaa" if not live_local.endswith("aaa")
                                              else "bbb") + "@hwc.example.nl")):
            s = time.perf_counter()
            r = c.cmd(f"RCPT TO:<{addr}>")
            d = time.perf_counter() - s
            if r.code in (421, -1):
                cut = short(str(r), 50)
                break
            timed[kind].append(d)
        if cut:
            break
        c.cmd("RSET")
        c.cmd(f"MAIL FROM:<{contact}>")
    c.close()

    def med(xs: list[float]) -> str:
        return f"{sorted(xs)[len(xs) // 2] * 1000:.2f} ms ({len(xs)})" if xs else "-"

    rep.add("13", "ack token guessing: RCPT latency, live token vs random vs 23-char prefix",
            "no measurable difference between random and same-prefix tokens (keyed digest "
            "look-up); the live one is answered 250 without being used up",
            f"median (answers) live {med(timed['live'])}, random {med(timed['unknown'])}, "
            f"same prefix {med(timed['prefix'])}, one session"
            + (f", until the client address was blocked: `{cut}`" if cut else ""), INFO)

    # (d) 50 unknown tokens from one address, on a fresh daemon (the timing above has used up
    # the address's refusals): a new transaction after each 452, a new session after each cut.
    lab.restart_daemon()
    limit = smtp_setting(lab, "max_refusals_per_client", 10)
    codes: list[int] = []
    sessions = 0
    t0 = time.monotonic()
    guesser: Raw | None = None
    while len(codes) < 50 and time.monotonic() - t0 < 60:
        if guesser is None:
            sessions += 1
            try:
                guesser = Raw(lab.port, timeout=10)
            except OSError:
                codes.append(-2)
                continue
            if guesser.greeting is None or guesser.greeting.code != 220:
                codes.append(guesser.greeting.code if guesser.greeting else -1)
                guesser.close()
                guesser = None
                continue
            guesser.cmd("EHLO guesser.example")
            guesser.starttls(lab.gw_ca)
            guesser.cmd("EHLO guesser.example")
            guesser.cmd("MAIL FROM:<guesser@example.org>")
        token = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26))
        r = guesser.cmd(f"RCPT TO:<ack+{token}@hwc.example.nl>")
        codes.append(r.code)
        if r.code in (421, -1):
            guesser.close()
            guesser = None
        elif r.code == 452:
            guesser.cmd("RSET")
            guesser.cmd("MAIL FROM:<guesser@example.org>")
    if guesser is not None:
        guesser.close()
    hist = dict(collections.Counter(codes))
    first_452 = next((i + 1 for i, x in enumerate(codes) if x == 452), None)
    looked_up = codes.count(550)
    # README: at most 5 distinct ack addresses per transaction (452 4.5.3); each unknown one
    # counts against the client address, `max_refusals_per_client` of them and it gets 421.
    rep.add("5", "50 RCPTs of unknown ack tokens from one address (RSET after a 452, reconnect "
            "after a cut)", f"452 4.5.3 after 5 in one transaction; at most {limit} looked up "
            "(550) in all, then 421 4.7.0 (also at connect)",
            f"replies {hist} over {sessions} session(s) in {time.monotonic() - t0:.1f} s; "
            f"first 452 at attempt {first_452}; {looked_up} answered 550",
            PASS if first_452 == 6 and looked_up <= limit and 421 in codes else FAIL)


# ---------------------------------------------------------------------------------------------
# 6. Terminal escapes in a school server's reply


def a6_escape_reply(lab: Lab, rep: Report) -> None:
    evil = "451 4.0.0 \x1b]0;pwned\x07\x1b[2K"
    lab.inbox[SCHOOL_E].default = evil
    r = lab.submit(lab.signal(signal_json([lab.pupil("Milan Visser")], f"VT-ESC-{rid()}")))
    ref = ref_of(r)
    if not ref:
        rep.add("6", "escape sequences in a school's reply", "-", f"not accepted: {r}", ERROR)
        return

    def queued() -> Any:
        rows = [q for q in lab.cli_json("queue", "list") if q.get("ref") == ref]
        return rows if rows and any(q.get("attempts") for q in rows) and lab.inbox[
            SCHOOL_E].all() else None

    rows = lab.wait_for(queued, 20, 1)
    outputs = {}
    for args in (("queue", "list"), ("queue", "list", "--json"), ("status",),
                 ("status", "--json"), ("receipts", "list"), ("receipts", "list", "--json")):
        _, out, err = lab.cli(*args)
        outputs[" ".join(args)] = out + err
    lab.inbox[SCHOOL_E].default = None
    for name in ("queue list", "queue list --json"):
        out = outputs[name]
        bad = [c for c in ("\x1b", "\x07") if c in out]
        line = next((ln for ln in out.splitlines() if ref in ln or "last_reply" in ln), "")
        rep.add("6", f"school replies `451 4.0.0 ESC]0;pwned BEL ESC[2K`: `{name}`",
                "no ESC or BEL byte in the output",
                (f"raw {'+'.join(repr(b) for b in bad)} in the output: "
                 f"`{short(line, 120)}`" if bad else f"clean: `{short(line, 120)}`")
                + ("" if rows else " (notice not seen in the queue within 20 s)"),
                FAIL if bad else (PASS if rows else ERROR))
    others = [n for n in ("status", "status --json", "receipts list", "receipts list --json")
              if "\x1b" in outputs[n] or "\x07" in outputs[n]]
    rep.add("6", "same reply: `status`, `receipts list` (text and --json)",
            "no ESC or BEL byte", f"raw ESC/BEL in: {', '.join(others)}" if others else "clean",
            FAIL if others else PASS)


# ---------------------------------------------------------------------------------------------
# 7. Receipt chain rewritten with plain SHA-256


def a7_receipt_chain(lab: Lab, rep: Report) -> None:
    copy = lab.base / "tamper.sqlite3"
    src = sqlite3.connect(f"file:{lab.db}?mode=ro", uri=True)
    dst = sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    cfg = lab.base / "config-tamper.toml"
    cfg.write_text(L.set_key(lab.config.read_text(), "storage", "path", L.toml_str(copy)))
    rc0, out0, err0 = lab.cli("receipts", "verify", config=cfg)
    db = sqlite3.connect(copy)
    rows = db.execute("SELECT seq, at, event, ref, school, detail, pseudonym, prev, hash FROM "
                      "receipts ORDER BY seq").fetchall()
    if len(rows) < 4:
        rep.add("7", "receipt chain", "-", f"only {len(rows)} receipts", ERROR)
        return
    # Receipt N: an `accepted` (or any) receipt in the middle; say it had one more child.
    mid = len(rows) // 2
    n_idx = next((i for i in range(mid, len(rows)) if rows[i][2] == "accepted"), mid)
    n = rows[n_idx][0]
    detail = json.loads(rows[n_idx][5])
    if "children" in detail:
        detail["children"] = int(detail["children"]) + 1
    else:
        detail["tampered"] = True
    db.execute("DROP TRIGGER IF EXISTS receipts_append_only")
    prev = rows[n_idx - 1][8]
    for i in range(n_idx, len(rows)):
        seq, at, event, ref, school, det, pseud, _, _ = rows[i]
        if i == n_idx:
            det = json.dumps(detail, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
        canonical = json.dumps([prev, seq, at, event, ref, school, det, pseud],
                               ensure_ascii=True, separators=(",", ":")).encode()
        digest = hashlib.sha256(canonical).hexdigest()
        db.execute("UPDATE receipts SET detail = ?, prev = ?, hash = ? WHERE seq = ?",
                   (det, prev, digest, seq))
        prev = digest
    db.commit()
    db.close()
    rc, out, err = lab.cli("receipts", "verify", config=cfg)
    text = out + err
    first = next((ln for ln in text.splitlines() if "receipt" in ln), "")
    named = re.search(rf"receipt {n}\b", text) is not None
    rep.add("7", f"receipt {n} of {len(rows)} edited (trigger dropped), every later link "
            "recomputed with plain SHA-256",
            f"`receipts verify` fails and names receipt {n}",
            f"before: exit {rc0} `{short(out0 + err0, 60)}`; after: exit {rc}, first line "
            f"`{short(first, 90)}`", PASS if rc != 0 and named and rc0 == 0 else FAIL)


# ---------------------------------------------------------------------------------------------
# 8 + 11. Held child shown under a forged LOGNAME; the status-mail oracle


def a11_oracle_and_a8(lab: Lab, rep: Report) -> None:
    name = "Pietje Pukkel"
    born = birth(8, 8, 8)
    lab.add_canary(name, born)
    unregistered = bsn_with_prefix("99887766")
    lab.canaries.add(unregistered)
    ra = f"VT-ORA-A-{rid()}"
    rb = f"VT-ORA-B-{rid()}"
    before = len(lab.relay.all())
    r_a = lab.submit(lab.signal(signal_json(
        [{"name": name, "birthdate": born.isoformat(), "bsn": "123456782"}], ra)))
    r_b = lab.submit(lab.signal(signal_json(
        [{"name": name, "birthdate": born.isoformat(), "bsn": unregistered}], rb)))
    ref_a, ref_b = ref_of(r_a), ref_of(r_b)
    if not (ref_a and ref_b):
        rep.add("11", "status-mail oracle", "-", f"not accepted: {r_a} / {r_b}", ERROR)
        return
    # 8: held show with a forged login name
    child_id = f"{ref_a}-1"
    held = lab.wait_for(lambda: [h for h in lab.cli_json("held", "list")
                                 if h.get("id") == child_id], 10)
    rc, _, err = lab.cli("held", "show", child_id,
                           env={"LOGNAME": "mallory", "USER": "mallory", "LNAME": "mallory",
                                "USERNAME": "mallory"})
    shown = [r for r in receipts_for(lab, "held.shown") if r.get("ref") == child_id]
    operator = shown[-1].get("operator") if shown else None
    rep.add("8", "`held show ID` with LOGNAME=mallory USER=mallory",
            "the receipt names the real account, not mallory",
            f"exit {rc}; receipt `held.shown` operator={operator!r}"
            + ("" if held else " (child not in held list)")
            + (f"; `{short(err.strip(), 80)}`" if rc != 0 else ""),
            PASS if rc == 0 and shown and operator != "mallory" else
            (FAIL if operator == "mallory" else ERROR))

    # 11: the status mails
    def mails() -> Any:
        got = {}
        for item in lab.relay.all()[before:]:
            for block in armored_blocks(item.data):
                plain, _ = lab.sender.decrypt(block)
                text = plain.decode("utf-8", "replace")
                for ref in (ref_a, ref_b):
                    if ref in text:
                        got[ref] = inner_text(plain)[1]
        return got if len(got) == 2 else None

    got = lab.wait_for(mails, 25, 1)
    if not got:
        rep.add("11", "status-mail oracle: BSN in register + wrong name vs BSN not in register",
                "the sender's status mails do not differ in reason",
                f"status mails did not both arrive within 25 s (relay got "
                f"{len(lab.relay.all()) - before})", ERROR)
        return

    def norm(text: str, ref: str, own: str) -> str:
        text = text.replace(ref, "<REF>").replace(own, "<OWN>")
        # The times the two mails name may fall in different minutes: not a difference in reason.
        return re.sub(r"(\d{4}-\d\d-\d\d|\d\d-\d\d-\d{4}) \d\d:\d\d( UTC| [+-]\d\d:\d\d)?",
                      "<TIME>", text)

    na, nb = norm(got[ref_a], ref_a, ra), norm(got[ref_b], ref_b, rb)
    la = next((ln for ln in na.splitlines() if ln.startswith("Kind")), na[:120])
    lb = next((ln for ln in nb.splitlines() if ln.startswith("Kind")), nb[:120])
    rep.add("11", "status-mail oracle: signal with a registered BSN but a wrong name (A) vs a "
            "BSN not in the register (B)", "the two status mails do not differ in reason",
            f"A: `{short(la, 110)}`; B: `{short(lb, 110)}`" + (" (identical)" if na == nb
                                                              else ""),
            PASS if na == nb else FAIL)
    leaked = [c for c in lab.canaries if c in got[ref_a] or c in got[ref_b]]
    if leaked:
        rep.notes.append(f"11: the status mails hold personal data: {leaked}")


# ---------------------------------------------------------------------------------------------
# 12. A queued notice, then the school's key revoked


def a12_revoked_key(lab: Lab, rep: Report) -> None:
    inbox = lab.inbox[SCHOOL_D]
    inbox.default = "451 4.3.0 Try again later"
    r = lab.submit(lab.signal(signal_json([lab.pupil("Lotte Bakker")], f"VT-REV-{rid()}")))
    ref = ref_of(r)
    if not ref:
        rep.add("12", "revoked school key", "-", f"not accepted: {r}", ERROR)
        return
    first = lab.wait_for(lambda: inbox.all(), 20)
    if not first:
        inbox.default = None
        rep.add("12", "revoked school key", "-", "no first attempt within 20 s", ERROR)
        return
    party = lab.schools[SCHOOL_D]
    revoked_ids = party.subkey_ids()
    keyfile = lab.base / "school-d-revoked.asc"
    keyfile.write_bytes(party.revoked_public())
    rc, out, err = lab.cli("keys", "update", str(keyfile))
    t_rev = time.monotonic()
    inbox.default = None
    time.sleep(12)  # retries every 2-4 s
    later = [g for g in inbox.all() if g.at > t_rev]
    to_revoked = []
    for g in later:
        ids = set(re.findall(r"keyid ([0-9A-F]{16})", "".join(
            list_packets(party.home, b) for b in armored_blocks(g.data))))
        if ids & revoked_ids:
            to_revoked.append(g)
    held = [h for h in lab.cli_json("held", "list") if str(h.get("id", "")).startswith(ref)]
    queue = [q for q in lab.cli_json("queue", "list") if q.get("ref") == ref]
    rep.add("12", "notice queued (school answers 451), then the school key revoked with "
            "`keys update`", "the school server never receives a message encrypted to the "
            "revoked key (the child waits, held)",
            f"keys update exit {rc}: `{short(out.strip() or err.strip(), 80)}`; after it the "
            f"server got {len(later)} message(s), {len(to_revoked)} encrypted to the revoked "
            f"key ({', '.join(g.reply[:3] for g in to_revoked) or '-'}); held now "
            f"{[h.get('reason') for h in held]}, queued {len(queue)}",
            FAIL if to_revoked else (PASS if rc == 0 else ERROR))


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


# ---------------------------------------------------------------------------------------------
# 10. vault.key replaced by a symlink


def a10_symlink(lab: Lab, rep: Report) -> None:
    for variant in ("file", "dir"):
        copy = lab.base / f"keys-{variant}"
        shutil.copytree(lab.keys, copy, symlinks=True,
                        ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
        copy.chmod(0o700)
        cfg = lab.base / f"config-{variant}.toml"
        text = lab.config.read_text()
        for k, v in (("tls_cert", copy / "tls" / "server.pem"),
                     ("tls_key", copy / "tls" / "server.key")):
            text = L.set_key(text, "smtp", k, L.toml_str(v))
        text = L.set_key(text, "keys", "dir", L.toml_str(copy))
        cfg.write_text(text)
        rc0, _, _ = lab.cli("check-config", config=cfg)
        world = lab.base / f"world-{variant}"
        world.mkdir(mode=0o755)
        world.chmod(0o755)
        if variant == "file":
            target = world / "vault.key"
            shutil.copy2(copy / "secrets" / "vault.key", target)
            target.chmod(0o644)
            (copy / "secrets" / "vault.key").unlink()
            (copy / "secrets" / "vault.key").symlink_to(target)
            what = "`keys/secrets/vault.key` -> symlink to a 0644 copy"
        else:
            target = world / "secrets"
            shutil.copytree(copy / "secrets", target)
            target.chmod(0o755)
            for f in target.iterdir():
                f.chmod(0o644)
            shutil.rmtree(copy / "secrets")
            (copy / "secrets").symlink_to(target)
            what = "`keys/secrets` -> symlink to a 0755 directory of 0644 copies"
        rc, out, err = lab.cli("check-config", config=cfg)
        rep.add("10", what, "`check-config` refuses (exit 1, names the file)",
                f"before: exit {rc0}; after: exit {rc} `{short((err or out).strip(), 110)}`",
                PASS if rc != 0 and rc0 == 0 else FAIL)


# ---------------------------------------------------------------------------------------------
# 13. Further classes


def expect(rep: Report, attack: str, expected: str, reply: Reply, ok: bool,
           extra: str = "", info: bool = False) -> None:
    rep.add("13", attack, expected, short(str(reply)) + (f"; {extra}" if extra else ""),
            INFO if info else (PASS if ok else FAIL))


def no_values(reply: Reply, *values: str) -> bool:
    return not any(v and v in reply.text for v in values)


def a13_controls(lab: Lab, rep: Report) -> None:
    plain = (b"From: x\r\nTo: y\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n"
             b"Codewoord: Handle with Care\r\nNaam: Sanne de Vries\r\n")
    r = lab.submit(plain)
    expect(rep, "control: plaintext signal", "554 5.7.5", r, str(r).startswith("554 5.7.5"))
    c = Raw(lab.port)
    c.cmd("EHLO x.example")
    r = c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")
    r2 = c.cmd(auth_plain_line(SENDER, PASSWORD))
    c.close()
    expect(rep, "control: MAIL and AUTH without STARTTLS", "530 5.7.0 to both (AUTH not offered)",
           r, str(r).startswith("530 5.7.0") and str(r2).startswith("530 5.7.0"),
           f"AUTH: {short(str(r2), 60)}")
    r = lab.submit(lab.signal(signal_json([lab.pupil("Sem Bos")])), rcpt="someone@example.org")
    expect(rep, "control: RCPT of another address (open relay)", "550 5.1.1", r,
           str(r).startswith("550 5.1.1"))
    r = lab.submit(lab.signal(signal_json([lab.pupil("Sem Bos")])),
                   mail_from="ceo@veiligthuis.example.nl")
    expect(rep, "control: MAIL FROM not allowed for the sender", "550 5.7.1", r,
           str(r).startswith("550 5.7.1"))
    other = lab.others["politie"]
    msg = L.build_signal(json_entity(signal_json([lab.pupil("Sem Bos")], f"VT-X-{rid()}")),
                         other, lab.gateway_fpr)
    r = lab.submit(msg)
    expect(rep, "control: signal signed by another sender's pinned key", "554 5.7.7", r,
           str(r).startswith("554 5.7.7"))


def a13_smuggling(lab: Lab, rep: Report) -> None:
    smuggled = (f"MAIL FROM:<{SENDER_ADDRESS}>\r\nRCPT TO:<{GATEWAY}>\r\nDATA\r\n"
                "Subject: smuggled\r\n\r\nsmuggled\r\n").encode()
    for name, sep in (("<LF>.<CR><LF>", b"\n.\r\n"), ("<CR>.<CR><LF>", b"\r.\r\n"),
                      ("<LF>.<LF>", b"\n.\n"), ("<CR><LF>.<LF>", b"\r\n.\n"),
                      ("<CR><LF>.<CR>", b"\r\n.\r")):
        c, r = lab.session()
        if r.code != 235:
            c.close()
            rep.add("13", f"SMTP smuggling with {name}", "-", f"AUTH failed: {r}", ERROR)
            continue
        c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")
        c.cmd(f"RCPT TO:<{GATEWAY}>")
        c.cmd("DATA")
        c.send(b"Subject: first\r\n\r\nhello" + sep + smuggled + b".\r\n")
        replies = []
        while True:
            rr = c.reply(timeout=3)
            if rr.code < 0:
                break
            replies.append(rr)
        c.close()
        ok = len(replies) == 1 and replies[0].code >= 500
        rep.add("13", f"SMTP smuggling with {name} then a second transaction",
                "one transaction: a single 5xx reply, nothing for the smuggled commands",
                " / ".join(short(str(x), 60) for x in replies) or "no reply",
                PASS if ok else FAIL)


def a13_starttls_injection(lab: Lab, rep: Report) -> None:
    c = Raw(lab.port)
    c.cmd("EHLO x.example")
    c.send(b"STARTTLS\r\nNOOP\r\nNOOP\r\n")
    r = c.reply()
    stray = Reply(-1, "")
    if r.code == 220:
        c.starttls(lab.gw_ca, send_command=False)
        stray = c.reply(timeout=2)
    after = c.cmd("EHLO x.example")
    c.close()
    rep.add("13", "STARTTLS command injection: `STARTTLS\\r\\nNOOP\\r\\nNOOP` in one packet",
            "the NOOPs sent before the handshake are never answered inside TLS",
            f"STARTTLS: {r.code}; inside TLS before our EHLO: "
            f"{'nothing' if stray.code < 0 else short(str(stray), 60)}; EHLO: {after.code}",
            PASS if stray.code < 0 and after.code == 250 else FAIL)
    c = Raw(lab.port)
    c.cmd("EHLO x.example")
    c.send(b"STARTTLS\r\n" + auth_plain_line(SENDER, PASSWORD) + b"\r\n")
    r = c.reply()
    c.starttls(lab.gw_ca, send_command=False)
    stray = c.reply(timeout=2)
    c.cmd("EHLO x.example")
    m = c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")
    rc = c.cmd(f"RCPT TO:<{GATEWAY}>")
    c.close()
    rep.add("13", "STARTTLS injection of `AUTH PLAIN <valid>` before the handshake",
            "not authenticated afterwards (RCPT 530)",
            f"stray: {'nothing' if stray.code < 0 else short(str(stray), 50)}; MAIL {m.code}; "
            f"RCPT {short(str(rc), 60)}", PASS if rc.code == 530 and stray.code < 0 else FAIL)


def a13_pipelining(lab: Lab, rep: Report) -> None:
    msg = lab.signal(signal_json([lab.pupil("Julia Mulder")], f"VT-PIPE-{rid()}"))
    c, r = lab.session()
    if r.code != 235:
        c.close()
        rep.add("13", "pipelining", "-", f"AUTH failed: {r}", ERROR)
        return
    c.send(f"MAIL FROM:<{SENDER_ADDRESS}>\r\nRCPT TO:<{GATEWAY}>\r\nDATA\r\n".encode()
           + dot_stuff(msg) + b".\r\nQUIT\r\n")
    replies = []
    while True:
        rr = c.reply(timeout=15)
        if rr.code < 0:
            break
        replies.append(rr)
    c.close()
    codes = [x.code for x in replies]
    rep.add("13", "pipelining: MAIL, RCPT, DATA, the message and QUIT in one write (not "
            "waiting for 354)", "either processed in order or refused; no confusion",
            f"replies {codes}: {short(str(replies[-2]) if len(replies) > 1 else '', 70)}",
            PASS if codes[:3] == [250, 250, 354] and (len(codes) < 4 or codes[3] in (250, 554))
            else INFO)


def a13_many_rcpts(lab: Lab, rep: Report) -> None:
    before = len(L.log_events(lab.log))
    c, r = lab.session()
    if r.code != 235:
        c.close()
        rep.add("13", "1000 RCPTs in one transaction", "-", f"AUTH failed: {r}", ERROR)
        return
    c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}>")
    t = time.monotonic()
    c.send(b"".join(f"RCPT TO:<{GATEWAY}>\r\n".encode() for _ in range(500)))
    same = [c.reply(timeout=20).code for _ in range(500)]
    c.send(b"".join(f"RCPT TO:<user{i}@example.org>\r\n".encode() for i in range(500)))
    other = [c.reply(timeout=20).code for _ in range(500)]
    took = time.monotonic() - t
    c.close()
    time.sleep(0.5)
    events = L.log_events(lab.log)[before:]
    refused_logged = sum(1 for e in events if e.get("event") == "envelope.refused")
    cuts = [e for e in events if e.get("event") == "session.cut"
            and e.get("reason") == "recipients"]
    # SECURITY.md "Denial of service": ten foreign recipients are answered 550 5.1.1 and
    # logged, the eleventh gets 421 4.7.0 and the connection closes.
    closed = other[:10] == [550] * 10 and other[10] == 421 and set(other[11:]) <= {-1}
    rep.add("13", "1000 RCPTs in one transaction (500 x the gateway address, 500 x others), "
            "pipelined", "others: 10 x 550 5.1.1, then 421 4.7.0 and the connection closed; "
            "at most 10 `envelope.refused` log lines and one `session.cut`",
            f"gateway address {dict(collections.Counter(same))}, others "
            f"{dict(collections.Counter(other))} in {took:.1f} s; {refused_logged} "
            f"`envelope.refused` and {len(cuts)} `session.cut` (recipients) log lines",
            PASS if closed and refused_logged <= 10 and len(cuts) == 1 else FAIL)


def a13_long_lines(lab: Lab, rep: Report) -> None:
    for label, tls, line in (
            ("a 4 MiB `NOOP` line before STARTTLS", False, b"NOOP " + b"A" * (4 << 20)),
            ("a 4 MiB `EHLO` line inside TLS", True, b"EHLO " + b"a" * (4 << 20)),
            ("a 4 MiB line without CRLF, then the connection held open", False,
             b"X" * (4 << 20))):
        rss0 = lab.proc_status("VmRSS")
        c = Raw(lab.port, timeout=20)
        if tls:
            c.cmd("EHLO x.example")
            c.starttls(lab.gw_ca)
        if label.startswith("a 4 MiB line without"):
            c.send(line)
            time.sleep(2)
            rss1 = lab.proc_status("VmRSS")
            r = c.cmd("NOOP", timeout=10)
        else:
            r = c.cmd(line, timeout=20)
            rss1 = lab.proc_status("VmRSS")
        after = c.cmd("NOOP", timeout=5)
        c.close()
        growth = (rss1 - rss0) / 1024
        rep.add("13", label, "500 line too long (or a cut), memory flat",
                f"{short(str(r), 70)}; next NOOP {after.code}; RSS +{growth:.0f} MB",
                PASS if r.code in (500, 421, -1, 552) and growth < 20 else FAIL)


def a13_header_floods(lab: Lab, rep: Report) -> None:
    msg = lab.signal(signal_json([lab.pupil("Sem Bos")], f"VT-HF-{rid()}"),
                     extra_headers="".join(f"X-Flood-{i}: a\r\n" for i in range(3000)))
    r = lab.submit(msg)
    expect(rep, "outer header flood: 3000 header lines", "552 5.3.4", r,
           str(r).startswith("552 5.3.4"))
    entity = ("".join(f"X-Flood-{i}: a\r\n" for i in range(3000))).encode() + json_entity(
        signal_json([lab.pupil("Sem Bos")], f"VT-HF2-{rid()}"))
    r = lab.submit(L.build_signal(entity, lab.sender, lab.gateway_fpr))
    expect(rep, "inner header flood: 3000 header lines inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\nx{i}\r\n" for i in range(2000))
    entity = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts.encode()
              + b"--b--\r\n")
    r = lab.submit(L.build_signal(entity, lab.sender, lab.gateway_fpr))
    expect(rep, "2000 MIME parts inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))
    nested = b""
    for i in range(200):
        nested += f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n'.encode()
    nested += b"Content-Type: text/plain\r\n\r\nx\r\n"
    for i in reversed(range(200)):
        nested += f"--n{i}--\r\n".encode()
    r = lab.submit(L.build_signal(nested, lab.sender, lab.gateway_fpr))
    expect(rep, "MIME nested 200 deep inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))


def a13_names(lab: Lab, rep: Report) -> None:
    base = lab.pupil("Sem Bos")
    cases = [
        ("bidi override (U+202E) in the name", "Sem\u202e Bos", None),
        ("zero-width space (U+200B) in the name", "Sem\u200b Bos", None),
        ("CRLF + header in the name", "Sem Bos\r\nBcc: evil@example.org", None),
        ("NUL in the name", "Sem\x00 Bos", None),
        ("bidi in the reference", None, "VT-\u202e2026-1"),
        ("CRLF in the reference", None, "VT-1\r\nX-Evil: 1"),
        ("reference of 100,000 characters", None, "A" * 100_000),
    ]
    for label, name, ref in cases:
        child = dict(base)
        if name is not None:
            child["name"] = name
        r = lab.submit(lab.signal(signal_json([child], ref or f"VT-N-{rid()}")))
        values = [v for v in (name, ref) if v]
        ok = str(r).startswith("554 5.6.0") and no_values(r, *(v.strip() for v in values),
                                                             "Sem", "Bos")
        expect(rep, f"{label} (JSON)", "554 5.6.0 naming field and child, not the value", r,
               ok)
    r = lab.submit(lab.signal(signal_json([base], "A" * 64)))
    expect(rep, "reference of exactly 64 characters (the limit)", "250 accepted", r,
           r.code == 250)
    text = ("Codewoord: Handle with Care\r\nReferentie: VT-T-" + rid()
            + "\r\nNaam: Sem Bos=0D=0ABcc: evil@example.org\r\nGeboortedatum: "
            + f"{birth(9, 10, 10):%d-%m-%Y}\r\n")
    entity = (b'Content-Type: text/plain; charset="utf-8"\r\n'
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + text.encode())
    r = lab.submit(L.build_signal(entity, lab.sender, lab.gateway_fpr))
    ref = ref_of(r)
    seen = ""
    if ref:
        items = lab.wait_for(lambda: notices_for(lab, SCHOOL_A, ref), 15)
        seen = ("notice to 12AB00 " + ("carries `Bcc`/`evil`" if any(
            "evil" in body or "Bcc" in body for _, _, body in items) else "has no `Bcc` line")
            if items else "no notice within 15 s")
    leak = "evil" in seen or "carries" in seen
    rep.add("13", "labelled text with a QP-encoded CR LF + `Bcc:` after the name",
            "the CR LF only ends the line (the `Bcc:` line is an unknown label, discarded), or "
            "554 5.6.0; nothing of it in the notice", f"{short(str(r), 70)}; {seen}",
            FAIL if leak or r.code == 451 else PASS)


def a13_json(lab: Lab, rep: Report) -> None:
    base = lab.pupil("Sem Bos")
    deep = ('{"codeword": "Handle with Care", "reference": "VT-J1", "children": '
            + "[" * 100_000 + "]" * 100_000 + "}")
    cases = [
        ("JSON with arrays nested 100,000 deep", deep),
        ("JSON with a 6000-digit integer as bsn",
         '{"codeword": "Handle with Care", "reference": "VT-J2-' + rid() + '", "children": '
         '[{"name": "Sem Bos", "birthdate": "' + base["birthdate"] + '", "bsn": '
         + "9" * 6000 + "}]}"),
        ("JSON with 1e999999 as birthdate",
         '{"codeword": "Handle with Care", "children": [{"name": "Sem Bos", '
         '"birthdate": 1e999999}]}'),
        ("JSON with NaN and a duplicate key",
         '{"codeword": "Handle with Care", "codeword": "Handle with Care", "children": '
         '[{"name": "Sem Bos", "birthdate": NaN}]}'),
        ("JSON of 700 kB: 20,000 unknown keys",
         json.dumps({**signal_json([base], f"VT-J5-{rid()}"),
                     **{f"k{i}": "x" * 20 for i in range(20000)}})),
    ]
    for label, body in cases:
        t = time.monotonic()
        r = lab.submit(lab.signal(body))
        took = time.monotonic() - t
        ok = r.code in (554, 552) and r.code != 451 and no_values(r, "Sem", "Bos")
        if label.startswith("JSON of 700"):
            ok = r.code in (250, 552, 554)
        expect(rep, label, "a precise 5xx (554 5.6.0 / 552), never 451, within seconds", r,
               ok and took < 20, f"{took:.1f} s")


def a13_auth_odd(lab: Lab, rep: Report) -> None:
    cases: list[tuple[str, str | bytes, str | bytes]] = [
        ("AUTH PLAIN with a Unicode login `vt-utrécht\\u202e`", "vt-utrécht\u202e", "x"),
        ("AUTH PLAIN with invalid UTF-8 in the login", b"\xff\xfe\xfd", b"\xc3\x28"),
        ("AUTH PLAIN with NUL-separated extra fields", b"vt-utrecht\0extra", b"x\0y"),
    ]
    for label, user, pw in cases:
        c, r = lab.session(None, None)
        r = c.cmd(auth_plain_line(user, pw))
        c.close()
        expect(rep, label, "535 5.7.8 (or 501), no 451, no traceback", r,
               r.code in (535, 501, 454))
    c, r = lab.session(None, None)
    r = c.cmd("AUTH LOGIN " + base64.b64encode("résumé\u200b".encode()).decode())
    r2 = c.cmd(base64.b64encode(b"pw").decode()) if r.code == 334 else r
    c.close()
    expect(rep, "AUTH LOGIN with a Unicode login", "535 5.7.8, no 451", r2,
           r2.code in (535, 501, 454))
    rss0 = lab.proc_status("VmRSS")
    c, r = lab.session(None, None)
    blob = base64.b64encode(b"\0" + b"u" * (3 << 20) + b"\0pw")
    r = c.cmd(b"AUTH PLAIN " + blob, timeout=20)
    r2 = c.cmd("AUTH PLAIN", timeout=10)
    r3 = c.cmd(blob, timeout=20) if r2.code == 334 else r2
    alive = c.cmd("NOOP", timeout=5)
    c.close()
    rss1 = lab.proc_status("VmRSS")
    # SECURITY.md "Denial of service": an overlong answer to an AUTH challenge ends the
    # session with 421 4.7.0 (never 451); the inline one is a plain overlong command line.
    expect(rep, "AUTH PLAIN with a 4 MiB base64 blob (inline, and as a continuation line)",
           "inline: 500/501; continuation: `421 4.7.0 Authentication line too long` and the "
           "connection closed; no 451, memory flat", r,
           r.code in (500, 501) and str(r3).startswith("421 4.7.0") and alive.code == -1
           and (rss1 - rss0) < 20 * 1024,
           f"continuation: {short(str(r3), 70)}; next NOOP "
           f"{'(closed)' if alive.code == -1 else alive.code}; RSS "
           f"+{(rss1 - rss0) / 1024:.0f} MB")


def a13_misc(lab: Lab, rep: Report) -> None:
    c, r = lab.session()
    r = c.cmd(f"MAIL FROM:<{SENDER_ADDRESS}> SIZE=99999999999999999999")
    c.close()
    expect(rep, "MAIL FROM with SIZE=10^20", "552 5.3.4 at MAIL (or accepted; the DATA limit "
           "holds)", r, True, info=True)
    c, r = lab.session()
    r = c.cmd(b"NOOP\x00\x1b[2J")
    r2 = c.cmd(b"MAIL FROM:<sig\x00nalen@veiligthuis.example.nl>")
    c.close()
    expect(rep, "NUL and ESC in commands", "a 5xx syntax error, no 451", r,
           r.code != 451 and r2.code != 451, f"MAIL with NUL: {short(str(r2), 60)}")
    # A signal encrypted with a hidden recipient (--throw-keyids), a legitimate option.
    entity = json_entity(signal_json([lab.pupil("Julia Mulder")], f"VT-HID-{rid()}"))
    armored = gpg(lab.sender.home, "--armor", "--sign", "--local-user", f"{lab.sender.fpr}!",
                  "--encrypt", "--hidden-recipient", lab.gateway_fpr, data=L.crlf(entity))
    r = lab.submit(encrypted_envelope(armored))
    expect(rep, "signal encrypted with a hidden recipient (--throw-keyids)",
           "250 accepted, or 554 5.7.5; never 451", r, r.code in (250, 554), info=True)
    # Signed by the sender, encrypted to the gateway AND to a stranger.
    stranger = lab.others["opvang"]
    lab.sender.import_key(stranger.public())
    entity = json_entity(signal_json([lab.pupil("Julia Mulder")], f"VT-2R-{rid()}"))
    armored = gpg(lab.sender.home, "--armor", "--sign", "--local-user", f"{lab.sender.fpr}!",
                  "--encrypt", "-r", lab.gateway_fpr, "-r", stranger.fpr, data=L.crlf(entity))
    r = lab.submit(encrypted_envelope(armored))
    expect(rep, "signal encrypted to the gateway and to a third party", "accepted (the "
           "sender's choice) or refused; never 451", r, r.code in (250, 554), info=True)
    # 21 children (one over the limit).
    kids = [{"name": f"Kind Nummer{i}", "birthdate": birth(8, 1, 1 + i % 28).isoformat()}
            for i in range(21)]
    r = lab.submit(lab.signal(signal_json(kids, f"VT-21-{rid()}")))
    expect(rep, "21 children in one signal", "554 5.6.0 too many children", r,
           str(r).startswith("554 5.6.0"))


def a13_plaintext_school(lab: Lab, rep: Report) -> None:
    inbox = lab.inbox[SCHOOL_P]
    r = lab.submit(lab.signal(signal_json([lab.pupil("Bram Kok")], f"VT-PL-{rid()}")))
    ref = ref_of(r)
    time.sleep(10)
    queue = [q for q in lab.cli_json("queue", "list") if q.get("ref") == ref]
    got = inbox.all()
    rep.add("13", "a school server that offers no STARTTLS", "nothing sent (deferred, retried); "
            "never plaintext", f"signal: {short(str(r), 50)}; the server got {len(got)} "
            f"message(s); queue: attempts {[q.get('attempts') for q in queue]}, last reply "
            f"`{short(str(queue[0].get('last_reply')) if queue else '-', 80)}`",
            FAIL if got else (PASS if ref else ERROR))


def a13_rotation(lab: Lab, rep: Report) -> None:
    old = lab.gateway_fpr
    rc, out, err = lab.cli("keys", "rotate", "--overlap-days", "0")
    new = next((m for m in re.findall(r"[0-9A-F]{40}", out) if m != old), None)
    rc2, _, err2 = lab.cli("keys", "retire", old)
    time.sleep(1.5)
    r_old = lab.submit(lab.signal(signal_json([lab.pupil("Sem Bos")], f"VT-OLD-{rid()}")))
    r_new = Reply(-1, "no new key")
    if new:
        lab.sender.import_key(lab.must("keys", "export").encode())
        r_new = lab.submit(L.build_signal(json_entity(signal_json(
            [lab.pupil("Sem Bos")], f"VT-NEW-{rid()}")), lab.sender, new))
        lab.gateway_fpr = new
    rep.add("13", "`keys rotate --overlap-days 0`, `keys retire OLD`, then a signal to the old "
            "key and one to the new", "old: 554 5.7.5; new: 250",
            f"rotate exit {rc}, retire exit {rc2}; old: {short(str(r_old), 60)}; new: "
            f"{short(str(r_new), 60)}"
            + "".join(f"; `{short(e.strip(), 80)}`" for e in (err, err2) if e.strip()),
            PASS if rc == 0 and rc2 == 0 and str(r_old).startswith("554 5.7.5")
            and r_new.code == 250 else FAIL)


# ---------------------------------------------------------------------------------------------
# After the run: logs, database, temp files, replies


def sweep(lab: Lab, rep: Report) -> None:
    events = L.log_events(lab.log)
    errors = collections.Counter(e.get("event") for e in events
                                 if e.get("level") in ("error", "critical", "exception"))
    not_json = [e["raw"] for e in events if e.get("event") == "(not JSON)"]
    tracebacks = [ln for ln in not_json if "Traceback" in ln or "Error" in ln]
    rep.add("sweep", "daemon log: errors and tracebacks over the whole run",
            "no traceback; error events only for causes outside the gateway",
            f"{len(events)} lines; error-level events {dict(errors) or 'none'}; "
            f"{len(not_json)} non-JSON line(s)"
            + (f", e.g. `{short(tracebacks[0], 100)}`" if tracebacks else ""),
            FAIL if tracebacks or errors.get("session.failed") or errors.get(
                "runner.step_failed") else (INFO if errors else PASS))
    for e in events:
        if e.get("event") in ("session.failed", "runner.step_failed", "notice.attempt_crashed",
                              "signal.deferred"):
            rep.notes.append(f"log: {json.dumps(e)[:300]}")
    log_text = lab.log.read_text(errors="replace")
    in_log = sorted(c for c in lab.canaries if c in log_text)
    rep.add("sweep", "personal data (names, birth dates, BSNs of this run) in the daemon log",
            "none", ", ".join(in_log) or "none", FAIL if in_log else PASS)
    blobs = b""
    for path in [lab.db, Path(str(lab.db) + "-wal"), *(lab.base / "tmp").rglob("*")]:
        if path.is_file():
            blobs += path.read_bytes()
    in_db = sorted(c for c in lab.canaries if c.encode() in blobs)
    rep.add("sweep", "personal data in the database (and WAL) and the daemon's TMPDIR", "none",
            ", ".join(in_db) or "none", FAIL if in_db else PASS)
    r451 = [(sent, got) for sent, got in L.SEEN if got.startswith("451")]
    leaks = [(sent, got) for sent, got in L.SEEN if any(c in got for c in lab.canaries)]
    rep.add("sweep", f"every SMTP reply of the run ({len(L.SEEN)})",
            "no 451 (the gateway's own fault) and no personal data in a reply",
            f"{len(r451)} x 451" + (f" (after `{short(r451[0][0], 40)}`: "
                                    f"`{short(r451[0][1], 60)}`)" if r451 else "")
            + f"; {len(leaks)} with personal data"
            + (f" (`{short(leaks[0][1], 80)}`)" if leaks else ""),
            FAIL if r451 or leaks else PASS)


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
    p.add_argument("--only", help="comma-separated attack numbers (1-13) to run")
    p.add_argument("--skip", help="comma-separated attack numbers to leave out")
    p.add_argument("--keep", action="store_true",
                   help="keep the laboratory's temp directory (its path is printed first)")
    args = p.parse_args()
    repo = args.repo.resolve()
    if not (repo / "gateway" / "__main__.py").is_file() or not (repo / "config.toml").is_file():
        p.error(f"{repo} is not a hwc-gateway checkout (no gateway/ and config.toml)")
    name = args.name or repo.name
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
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
