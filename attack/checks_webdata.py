"""Attacks on the pickup page, part two: W7 oversized and malformed bodies, W8 slow headers,
W9 the database and its backup, W10 an OpenPGP notice's acknowledgement link.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding.
Expected outcomes: docs/protocol.md §17, README "The pickup page" (a stolen database or backup
does not reveal notices waiting for pickup; run the page behind nginx), issue 15.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import socket
import sqlite3
import time
from pathlib import Path

from checks_web import first_link, raw_get
from common import notices_for, receipts_for, ref_of, rid
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from lab import Lab
from lab_mail import SCHOOL_A, signal_json
from lab_smtp import HOST
from lab_web import PICKUP_CODE, PICKUP_CONTACT, PICKUP_PUPIL, Web, ensure_web, pickup_notice
from report import ERROR, FAIL, INFO, PASS, Report, short

MB10 = 10 * 1024 * 1024
# Every column that may hold something sealed with the gateway's vault.
BLOBS = ["SELECT parcel FROM notices", "SELECT message FROM outbox",
         "SELECT secret FROM credentials WHERE secret IS NOT NULL",
         "SELECT sealed FROM pickups WHERE sealed IS NOT NULL"]


def raw_post(web: Web, path: str, ctype: str, body: bytes, csrf: str, cookie: str,
             chunked: bool = False, header_token: bool = True) -> tuple[int, str]:
    """(status, body) of one POST written byte for byte, the body in 64 KB pieces (-1: the
    connection closed without an answer)."""
    host = web.origin.split("//", 1)[1]
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nOrigin: {web.origin}\r\n"
            f"Cookie: csrf={cookie}\r\nContent-Type: {ctype}\r\nConnection: close\r\n"
            + (f"X-CSRF-Token: {csrf}\r\n" if header_token else "")
            + ("Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {len(body)}\r\n")
            + "\r\n").encode()
    data = b""
    with socket.create_connection((HOST, web.port), timeout=20) as s:
        try:
            s.sendall(head)
            for i in range(0, len(body), 65536):
                piece = body[i:i + 65536]
                s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            if chunked:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server stopped reading: its answer, if any, is still there
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return (int(m.group(1)) if m else -1), data.decode("utf-8", "replace")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def bodies(csrf: str) -> list[tuple[str, str, str, bytes, dict[str, bool]]]:
    """(what, endpoint tail, Content-Type, body, raw_post options) of each malformed POST."""
    form, js = "application/x-www-form-urlencoded", "application/json"
    deep = b"[" * 60000
    multi, garbage = "multipart/form-data; boundary=zzz", b"--zzz\r\nnonsense\r\n--zz"
    nested = b64(b'{"challenge": ' + b"[" * 15000 + b"]" * 15000 + b"}")
    return [
        ("10 MB form", "/code", form, b"csrf=" + csrf.encode() + b"&code=" + b"1" * MB10, {}),
        ("10 MB form, chunked", "/code", form, b"code=" + b"1" * MB10, {"chunked": True}),
        ("10 MB JSON to the passkey endpoint", "/passkey", js, b'{"a":"' + b"x" * MB10 + b'"}',
         {}),
        ("broken percent-encoding", "/code", form,
         b"csrf=" + csrf.encode() + b"&code=%ZZ%E0%A4&email=%", {"header_token": False}),
        ("invalid UTF-8 in a form", "/code", form,
         b"csrf=" + csrf.encode() + b"&code=\xff\xfe&email=\xc3", {"header_token": False}),
        ("a form with charset=x-unknown", "/code", form + "; charset=x-unknown",
         b"csrf=" + csrf.encode() + b"&code=123456", {"header_token": False}),
        ("multipart with a garbage body (token in the form)", "/code", multi, garbage,
         {"header_token": False}),
        ("multipart with a garbage body (token in the header)", "/code", multi, garbage, {}),
        ("JSON where a form is expected", "/code", js,
         json.dumps({"email": "x@example.nl", "code": "123456"}).encode(), {}),
        ("a form where JSON is expected", "/passkey", form, b"csrf=" + csrf.encode(), {}),
        ("JSON with charset=x-unknown", "/passkey", js + "; charset=x-unknown", b"{}", {}),
        ("JSON nested 60000 deep", "/passkey", js, deep, {}),
        ("WebAuthn: clientDataJSON nested 15000 deep", "/passkey", js,
         json.dumps({"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                     "response": {"clientDataJSON": nested}}).encode(), {}),
        ("WebAuthn: clientDataJSON not base64, rawId a number", "/passkey", js,
         json.dumps({"rawId": 5, "response": {"clientDataJSON": "!!!%%%"}}).encode(), {}),
        ("WebAuthn: response a list, a 5000-digit number", "/passkey", js,
         b'{"response": [], "n": ' + b"9" * 5000 + b"}", {}),
        ("WebAuthn: a challenge never issued, junk signature", "/passkey", js,
         json.dumps({"id": b64(b"x" * 1300), "rawId": b64(b"x" * 1300), "type": "public-key",
                     "response": {"clientDataJSON": b64(json.dumps(
                         {"type": "webauthn.get", "challenge": b64(b"c" * 32),
                          "origin": "https://evil.example"}).encode()),
                         "authenticatorData": b64(b"\0" * 37), "signature": b64(b"\0" * 70)}}
                    ).encode(), {}),
        ("JSON `null`", "/passkey/opties", js, b"null", {}),
    ]


def w7_bodies(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    token = first_link(lab, web, "BODY")
    b = web.browser()
    csrf = b.get(f"/bericht/{token}").csrf()
    cookie = b.jar.get("csrf", "")
    results = []
    for what, tail, ctype, body, opts in bodies(csrf):
        status, text = raw_post(web, f"/bericht/{token}{tail}", ctype, body, csrf, cookie,
                                **opts)
        results.append((what, status, bool(re.search(r"Traceback|File \"", text))))
    rss = lab.proc_status("VmHWM")
    bad = [(w, s) for w, s, t in results if s >= 500 or t]
    closed = [w for w, s, _ in results if s < 0]
    rep.add("W7", "oversized and malformed bodies: " + "; ".join(w for w, _, _ in results),
            "4xx each (413 for the 10 MB ones), never a 5xx or a trace",
            ", ".join(f"{w}: {s}" for w, s, _ in results) + f"; daemon peak RSS {rss // 1024} MB",
            FAIL if bad else (INFO if closed else PASS))


def w8_slow_headers(lab: Lab, rep: Report, seconds: float = 20) -> None:
    web = ensure_web(lab)
    host = web.origin.split("//", 1)[1]
    drip: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        for i in range(120):
            s = socket.create_connection((HOST, web.port), timeout=5)
            if i < 100:
                s.sendall(f"GET /bericht/x HTTP/1.1\r\nHost: {host}\r\n".encode())
                drip.append(s)
            else:
                idle.append(s)
        started = time.monotonic()
        latency = []
        while time.monotonic() - started < seconds:
            for s in drip:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-a: b\r\n")
            latency.append(raw_get(web.port, b"/static/style.css", host)[2])
            time.sleep(2)
        open_drip = sum(alive(s) for s in drip)
        open_idle = sum(alive(s) for s in idle)
    finally:
        for s in drip + idle:
            s.close()
    rep.add("W8", f"slowloris: 100 connections sending a header line every 2 s and 20 idle "
            f"ones, for {seconds:.0f} s, against the web port",
            "no promise (aiohttp has no header-read timeout; README: run the page behind "
            "nginx, which has one)",
            f"after {seconds:.0f} s still open: {open_drip}/100 dripping, {open_idle}/20 idle; "
            f"a normal GET meanwhile took at most {max(latency) * 1000:.0f} ms", INFO)


def alive(s: socket.socket) -> bool:
    """Whether the server still holds the connection (no FIN or reset received)."""
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def box_key(secret: bytes) -> AESGCM:
    """The pickup box's key as docs/architecture.md §9 names it: HKDF-SHA256 of the link's
    token (here of whatever is tried in its place)."""
    return AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"hwc-gateway pickup box v1").derive(secret))


def opens(aead: AESGCM, blob: bytes, aad: str) -> bytes | None:
    try:
        return aead.decrypt(blob[:12], blob[12:], aad.encode())
    except Exception:
        return None


def w9_database(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    ref, token, _ = pickup_notice(lab, web, "DB")
    copy = lab.base / "w9-backup"
    copy.mkdir(exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(lab.db) + suffix)
        if src.exists():
            shutil.copy2(src, copy / (src.name))
    blob = b"".join(p.read_bytes() for p in copy.iterdir())
    b, name, born = PICKUP_PUPIL[0], PICKUP_PUPIL[1], PICKUP_PUPIL[2]
    wanted = {"the link token": token, "the name": name, "the surname": name.split()[-1],
              "the birth date (ISO)": born.isoformat(), "the birth date": f"{born:%d-%m-%Y}",
              "the BSN": b, "the enrolment code": web.phone_code,
              "the enrolment code (no dash)": web.phone_code.replace("-", ""),
              "the enrolment link's token": web.enrol_token}
    found = [what for what, value in wanted.items() if value.encode() in blob]
    rep.add("W9", "a copy of the SQLite file and its WAL, a pickup notice delivered and not "
            "read: searched for its secrets",
            "none of: " + ", ".join(wanted),
            f"{len(blob)} bytes searched; found {found or 'none'}", FAIL if found else PASS)
    box_row(lab, rep, copy / lab.db.name, ref, token)


def box_row(lab: Lab, rep: Report, db: Path, ref: str, token: str) -> None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT p.sealed, n.message_id, p.token_digest, length(n.parcel) "
                           "FROM pickups p JOIN "
                           "notices n ON n.id = p.notice_id WHERE n.ref = ? AND p.sealed IS "
                           "NOT NULL", (ref,)).fetchone()
        mids = [r[0] for r in conn.execute("SELECT message_id FROM notices")]
        blobs = [bytes(v) for query in BLOBS for (v,) in conn.execute(query)]
    finally:
        conn.close()
    if row is None:
        rep.add("W9", "the pickup box with the vault key", "-", "no sealed box in the copy",
                ERROR)
        return
    sealed, mid, digest, parcel = bytes(row[0]), row[1], row[2], row[3]
    aad = f"pickup:{mid}"
    control = opens(box_key(token.encode()), sealed, aad)
    secrets_dir = lab.keys / "secrets"
    vault_key = (secrets_dir / "vault.key").read_bytes()
    tries = {"the vault key as the AES-GCM key": AESGCM(vault_key),
             "HKDF of the vault key": box_key(vault_key),
             "HKDF of the vault key in hex": box_key(vault_key.hex().encode()),
             "HKDF of the stored token digest": box_key(digest.encode()),
             "HKDF of the pseudonym key": box_key((secrets_dir / "pseudonym.key").read_bytes())}
    opened = [what for what, aead in tries.items() if opens(aead, sealed, aad) is not None]
    vault = AESGCM(vault_key)
    # The contact's app secret (aad as gateway/web/enrol.py binds it) is the search's control.
    aads = [a for m in mids for a in (f"pickup-mail:{m}", f"pickup:{m}")] + [
        f"totp:{PICKUP_CODE}\0{PICKUP_CONTACT}"]
    plains = [p for blob in blobs for a in aads if (p := opens(vault, blob, a)) is not None]
    with_token = sum(token.encode() in p for p in plains)
    rep.add("W9", "the database copy and the keys directory's vault.key: the pickup box, and "
            "every vault-sealed blob (notices, outbox, credentials, pickups) for the link",
            "the box opens with the link's token only; nothing sealed with the vault holds "
            "the token (the notification mail is erased once sent)",
            f"control: the box {'opens' if control else 'does NOT open'} with the token "
            f"(HKDF-SHA256, AES-256-GCM, aad pickup:<Message-ID>)"
            f"{' and holds the child' if control and PICKUP_PUPIL[1].encode() in control else ''}"
            f"; opened by {opened or 'none'} of: {', '.join(tries)}; {len(blobs)} blobs x "
            f"{len(aads)} aads under the vault key: {len(plains)} opened (the app secret: "
            f"by design, the server computes app codes), {with_token} with the token; the "
            f"notice's stored notification mail: {parcel} bytes (erased once sent)",
            FAIL if opened or with_token or parcel or not control else PASS)


def w10_ack_link(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    reply = lab.submit(lab.signal(signal_json([lab.pupil("Noor Smit")], f"VT-LINK-{rid()}")))
    ref = ref_of(reply)
    items = lab.wait_for(lambda: notices_for(lab, SCHOOL_A, ref), 30) if ref else []
    m = re.search(r"/bevestig/([A-Za-z0-9_-]{20,64})", items[0][2]) if items else None
    if ref is None or m is None:
        rep.add("W10", "an OpenPGP notice's acknowledgement link", "-",
                f"no notice with a link: {short(str(reply), 80)}", ERROR)
        return
    token = m.group(1)
    web.secrets.add(token)
    path = f"/bevestig/{token}"
    scanner = web.browser()
    seen = [scanner.get(path).status, scanner.request("HEAD", path).status,
            scanner.get(path).status]
    time.sleep(0.5)
    by_get = len(receipts_for(lab, "acknowledged", ref))
    b = web.browser()
    csrf = b.get(path).csrf()
    forged = b.post(path, {"csrf": csrf}, origin="https://evil.example")
    time.sleep(0.5)
    by_forged = len(receipts_for(lab, "acknowledged", ref))
    first = b.post(path, {"csrf": csrf})
    second = b.post(path, {"csrf": csrf})
    later = b.get(path)
    time.sleep(0.5)
    n = len(receipts_for(lab, "acknowledged", ref))
    rep.add("W10", "an OpenPGP notice's acknowledgement link: GET/HEAD (a scanner), a POST "
            "from another origin, the POST, the POST again",
            "GET records nothing; the forged POST 403; acknowledged once; the second POST "
            "says it was done already",
            f"GET/HEAD/GET {seen}: {by_get} receipt(s); forged {forged.status}: {by_forged}; "
            f"POST {first} `{short(first.element('message'), 50)}`; again {second} "
            f"`{short(second.element('message'), 70)}`; GET then {later.status}; "
            f"`acknowledged` receipts: {n}",
            PASS if by_get == 0 and by_forged == 0 and forged.status == 403
            and first.status == 200 and second.status in (404, 409, 410) and n == 1 else FAIL)
