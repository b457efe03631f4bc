"""Attack class 13, what a signal carries and where it goes: names, JSON, odd
encryption and too many children, a school without STARTTLS, the gateway key rotated.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
"""

from __future__ import annotations

import json
import re
import time

from common import notices_for, ref_of, rid
from lab import Lab
from lab_mail import (
    SCHOOL_A,
    SCHOOL_P,
    SENDER_ADDRESS,
    birth,
    build_signal,
    crlf,
    encrypted_envelope,
    gpg,
    json_entity,
    signal_json,
)
from lab_smtp import Reply
from report import ERROR, FAIL, PASS, Report, expect, no_values, short

# ---------------------------------------------------------------------------------------------
# 13. Further classes: content and keys


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
    r = lab.submit(build_signal(entity, lab.sender, lab.gateway_fpr))
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
                  "--encrypt", "--hidden-recipient", lab.gateway_fpr, data=crlf(entity))
    r = lab.submit(encrypted_envelope(armored))
    expect(rep, "signal encrypted with a hidden recipient (--throw-keyids)",
           "250 accepted, or 554 5.7.5; never 451", r, r.code in (250, 554), info=True)
    # Signed by the sender, encrypted to the gateway AND to a stranger.
    stranger = lab.others["opvang"]
    lab.sender.import_key(stranger.public())
    entity = json_entity(signal_json([lab.pupil("Julia Mulder")], f"VT-2R-{rid()}"))
    armored = gpg(lab.sender.home, "--armor", "--sign", "--local-user", f"{lab.sender.fpr}!",
                  "--encrypt", "-r", lab.gateway_fpr, "-r", stranger.fpr, data=crlf(entity))
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
        r_new = lab.submit(build_signal(json_entity(signal_json(
            [lab.pupil("Sem Bos")], f"VT-NEW-{rid()}")), lab.sender, new))
        lab.gateway_fpr = new
    rep.add("13", "`keys rotate --overlap-days 0`, `keys retire OLD`, then a signal to the old "
            "key and one to the new", "old: 554 5.7.5; new: 250",
            f"rotate exit {rc}, retire exit {rc2}; old: {short(str(r_old), 60)}; new: "
            f"{short(str(r_new), 60)}"
            + "".join(f"; `{short(e.strip(), 80)}`" for e in (err, err2) if e.strip()),
            PASS if rc == 0 and rc2 == 0 and str(r_old).startswith("554 5.7.5")
            and r_new.code == 250 else FAIL)
