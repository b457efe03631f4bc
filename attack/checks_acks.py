"""Attack 5: the acknowledgement addresses (ack tokens) of the notices, and guessing them.

Takes the `Lab` and the `Report`; sends signals, answers their notices as a school would
(and as a bounce, an out-of-office, a duplicate) and adds a row per finding.
"""

from __future__ import annotations

import collections
import secrets
import time

from common import notices_for, receipts_for, ref_of, rid, smtp_setting
from lab import Lab
from lab_mail import ACK_RE, CONTACTS, SCHOOL_A, header_section, signal_json
from lab_smtp import Raw, Reply, dot_stuff
from report import ERROR, FAIL, INFO, PASS, Report, short

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


def ack_tokens(lab: Lab, rep: Report) -> tuple[list[str], dict[str, str]] | None:
    """Four signals and the ack address of each notice (None after an ERROR row when they
    did not all arrive); adds the row on ack tokens in the notices' outer headers."""
    names = ["Sanne de Vries", "Daan de Vries", "Eva Maria Jansen", "Julia Mulder"]
    got_refs = [ref_of(lab.submit(lab.signal(signal_json([lab.pupil(name)],
                                                        f"VT-ACK-{rid()}"))))
                for name in names]
    refs = [ref for ref in got_refs if ref]
    if len(refs) != len(names):
        rep.add("5", "acknowledgements", "-", f"signals not accepted: {got_refs}", ERROR)
        return None
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
        return None
    rep.add("5", "ack token in the notice's outer (unencrypted) headers",
            "not readable outside the encryption",
            f"readable in the outer headers of {len(outer_leaks)}/4 notices (e.g. "
            f"`Reply-To: {tokens[refs[0]].split('+')[0]}+<26 chars>@...`)" if outer_leaks
            else "not in the outer headers (only inside the encryption)",
            FAIL if outer_leaks else PASS)
    return refs, tokens


def ack_replies(lab: Lab, rep: Report, refs: list[str], tokens: dict[str, str]) -> None:
    """Replies to the first three notices: as a bounce, an out-of-office, a duplicated RCPT."""
    contact = CONTACTS[SCHOOL_A]
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


def ack_timing(lab: Lab, rep: Report, live: str) -> None:
    """RCPT latency of the live token against random and same-prefix ones (INFO)."""
    # Timing of RCPT for the live token (not consumed by RCPT) against unknown ones. Every
    # unknown token counts against the client address, so the block (421) ends this early:
    # only real answers are timed.
    contact = CONTACTS[SCHOOL_A]
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


def ack_guessing(lab: Lab, rep: Report) -> None:
    """50 unknown tokens from one address: 452 per transaction, then the block."""
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


def a5_acks(lab: Lab, rep: Report) -> None:
    found = ack_tokens(lab, rep)
    if found is None:
        return
    refs, tokens = found
    ack_replies(lab, rep, refs, tokens)
    ack_timing(lab, rep, tokens[refs[3]])
    ack_guessing(lab, rep)
