"""Attacks on what the gateway keeps and shows: 6 terminal escapes in a school server's
reply, 7 the receipt chain rewritten, 10 the vault key replaced by a symlink.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sqlite3
from typing import Any

from common import ref_of, rid
from lab import Lab, set_key, toml_str
from lab_mail import SCHOOL_E, signal_json
from report import ERROR, FAIL, PASS, Report, short

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
    cfg.write_text(set_key(lab.config.read_text(), "storage", "path", toml_str(copy)))
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
            text = set_key(text, "smtp", k, toml_str(v))
        text = set_key(text, "keys", "dir", toml_str(copy))
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
