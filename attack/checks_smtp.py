"""Attack class 13, the SMTP dialogue: control characters, smuggling, STARTTLS
injection, pipelining, many recipients, long lines, header floods, odd AUTH.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
"""

from __future__ import annotations

import base64
import collections
import time

from common import rid
from lab import Lab, log_events
from lab_mail import (
    GATEWAY,
    PASSWORD,
    SENDER,
    SENDER_ADDRESS,
    build_signal,
    json_entity,
    signal_json,
)
from lab_smtp import Raw, Reply, auth_plain_line, dot_stuff
from report import ERROR, FAIL, INFO, PASS, Report, expect, short

# ---------------------------------------------------------------------------------------------
# 13. Further classes: the SMTP dialogue


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
    msg = build_signal(json_entity(signal_json([lab.pupil("Sem Bos")], f"VT-X-{rid()}")),
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
    before = len(log_events(lab.log))
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
    events = log_events(lab.log)[before:]
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
    r = lab.submit(build_signal(entity, lab.sender, lab.gateway_fpr))
    expect(rep, "inner header flood: 3000 header lines inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))
    parts = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\nx{i}\r\n" for i in range(2000))
    entity = (b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts.encode()
              + b"--b--\r\n")
    r = lab.submit(build_signal(entity, lab.sender, lab.gateway_fpr))
    expect(rep, "2000 MIME parts inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))
    nested = b""
    for i in range(200):
        nested += f'Content-Type: multipart/mixed; boundary="n{i}"\r\n\r\n--n{i}\r\n'.encode()
    nested += b"Content-Type: text/plain\r\n\r\nx\r\n"
    for i in reversed(range(200)):
        nested += f"--n{i}--\r\n".encode()
    r = lab.submit(build_signal(nested, lab.sender, lab.gateway_fpr))
    expect(rep, "MIME nested 200 deep inside the encryption", "554 5.6.0", r,
           str(r).startswith("554 5.6.0"))


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
