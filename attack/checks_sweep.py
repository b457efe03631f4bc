"""The sweep after the run: the daemon's log, database and temp files, and every SMTP
reply of the run, searched for tracebacks, 451s and the run's personal data.

Takes the `Lab` (daemon stopped) and the `Report`; adds its rows.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from lab import Lab, log_events
from lab_smtp import SEEN
from report import FAIL, INFO, PASS, Report, short

# ---------------------------------------------------------------------------------------------
# After the run: logs, database, temp files, replies


def sweep(lab: Lab, rep: Report) -> None:
    events = log_events(lab.log)
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
    web_secrets(lab, rep, log_text, blobs)
    r451 = [(sent, got) for sent, got in SEEN if got.startswith("451")]
    leaks = [(sent, got) for sent, got in SEEN if any(c in got for c in lab.canaries)]
    rep.add("sweep", f"every SMTP reply of the run ({len(SEEN)})",
            "no 451 (the gateway's own fault) and no personal data in a reply",
            f"{len(r451)} x 451" + (f" (after `{short(r451[0][0], 40)}`: "
                                    f"`{short(r451[0][1], 60)}`)" if r451 else "")
            + f"; {len(leaks)} with personal data"
            + (f" (`{short(leaks[0][1], 80)}`)" if leaks else ""),
            FAIL if r451 or leaks else PASS)


def web_secrets(lab: Lab, rep: Report, log_text: str, blobs: bytes) -> None:
    """W11: the pickup page's secrets of the run (link tokens, the enrolment code, the app's
    secret) in the daemon's log and database; with the pickup pupil among the canaries above."""
    found: set[str] = getattr(lab.web, "secrets", set())
    if not found:
        return
    named = {s: ("the enrolment code" if len(s) <= 9 else "the app secret" if len(s) == 32
                 else "a link token") for s in found}
    in_log = sorted({named[s] for s in found if s in log_text})
    in_db = sorted({named[s] for s in found if s.encode() in blobs})
    rep.add("W11", f"the pickup page's secrets of the run ({len(found)}: link tokens, the "
            "enrolment code with and without its dash, the app secret) in the daemon log",
            "none", ", ".join(in_log) or "none", FAIL if in_log else PASS)
    rep.add("W11", "the same in the database (and WAL) and the daemon's TMPDIR", "none",
            ", ".join(in_db) or "none", FAIL if in_db else PASS)
