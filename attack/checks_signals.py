"""Attacks through signals themselves: 2 weak digests, 3 a reused sender reference,
8 + 11 a held child under a forged LOGNAME and the status-mail oracle, 12 a school key revoked
while its notice is queued.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
"""

from __future__ import annotations

import re
import time
from typing import Any

from common import notices_for, receipts_for, ref_of, rid
from lab import Lab
from lab_mail import (
    SCHOOL_A,
    SCHOOL_D,
    armored_blocks,
    birth,
    bsn_with_prefix,
    inner_text,
    list_packets,
    signal_json,
)
from report import ERROR, FAIL, PASS, Report, short

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
