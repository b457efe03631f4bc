"""Attacks on the pickup page (issue 15), part one: W1 a scanner's fetch before the person,
W5 a replayed app code, W2 guessed and malformed links, W4 forged POSTs (CSRF, Origin), W3
wrong codes locking the link and the contact, W6 the headers and cookies of every answer.

Each check takes the `Lab` and the `Report` and adds its rows; none raises on a finding. The
first one turns `[web]` on (`lab_web.ensure_web`). Expected outcomes: docs/protocol.md §17,
README "The pickup page", the design's hardening list.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import socket
import sqlite3
import statistics
import time
from collections.abc import Callable

from common import receipts_for
from lab import Lab
from lab_smtp import HOST
from lab_web import (
    PICKUP_CONTACT,
    PICKUP_NAME,
    PICKUP_PUPIL,
    Http,
    Resp,
    Web,
    cut,
    ensure_web,
    pickup_notice,
    sign_in,
)
from report import FAIL, INFO, PASS, Report, short

TRACE = re.compile(r"Traceback|File \"|/site-packages/|aiohttp\.|jinja2\.|gateway/")


def first_link(lab: Lab, web: Web, tag: str) -> str:
    """W1's link (or a new one, when W1 did not run)."""
    if not web.first_link:
        web.first_link = pickup_notice(lab, web, tag)[1]
    return web.first_link


def leaks_checked(name: str, born: dt.date, bsn: str, ref: str) -> list[str]:
    """What neither the notification mail nor the landing may show."""
    return [*name.split(), born.isoformat(), f"{born:%d-%m-%Y}", bsn, "Handle with Care",
            PICKUP_NAME, ref, "VT-SCAN-"]


def w1_scanner(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    ref, token, mail = pickup_notice(lab, web, "SCAN")
    web.first_link = token
    name, born, bsn = PICKUP_PUPIL[1], PICKUP_PUPIL[2], PICKUP_PUPIL[0]
    flat = mail.replace(b"=\r\n", b"").decode("utf-8", "replace")
    leaks = [v for v in leaks_checked(name, born, bsn, ref) if v in flat]
    rep.add("W1", "the notification mail (headers and text)",
            "no name, birth date, BSN, codeword, school name or reference; a 43-character "
            "token (256 bits)",
            f"{len(flat)} bytes; found {leaks or 'none of them'}; token {len(token)} characters",
            FAIL if leaks or len(token) < 22 else PASS)
    scanner = web.browser()
    ua = {"User-Agent": "Mozilla/5.0 (compatible; SafeLinks scanner)"}
    answers = [scanner.request(m, f"/bericht/{token}{tail}", headers=ua)
               for m, tail in [("GET", ""), ("HEAD", ""), ("GET", ""), ("GET", "/lezen"),
                               ("GET", "/bedankt"), ("HEAD", "/lezen")]]
    told = [v for v in leaks_checked(name, born, bsn, ref) if v in answers[0].body]
    time.sleep(1)
    by_scanner = len(receipts_for(lab, "pickup_opened", ref))
    person = web.browser()
    signed = sign_in(web, person, token)
    shown = person.get(f"/bericht/{token}/lezen")
    opened = name in shown.body and f"{born:%d-%m-%Y}" in shown.body
    after = len(receipts_for(lab, "pickup_opened", ref))
    web.reader = person
    rep.add("W1", "a mail scanner fetches the pickup link before the person (GET, HEAD, "
            "/lezen, /bedankt, without cookies)",
            "the scanner sees the landing only and records nothing; the person then opens the "
            "notice (one `pickup_opened` receipt)",
            f"scanner got {[a.status for a in answers]}, the landing naming {told or 'nothing'}"
            f" of the child, school or codeword; `pickup_opened` after the scanner: "
            f"{by_scanner}; the person's code {signed}, the notice {shown.status} "
            f"{'with the name and birth date' if opened else 'WITHOUT the child'}; receipts "
            f"then: {after}",
            PASS if by_scanner == 0 and opened and after == 1 and not told
            and all(a.status in (200, 303, 405) for a in answers) else FAIL)


def w5_replay(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    token = first_link(lab, web, "REPLAY")
    first = web.browser()
    code = web.next_code()
    ok = sign_in(web, first, token, code)
    again = sign_in(web, web.browser(), token, code)
    # A fresh code clears the failure the replay counted (and shows the app still works).
    fresh = sign_in(web, web.browser(), token)
    rep.add("W5", "an app code replayed (signed in with it, then the same code from another "
            "browser)",
            "the second use refused (each time step once); the next code works",
            f"first use {ok}; replay {again} "
            f"`{short(Resp.element(again, 'error'), 60)}`; next code {fresh}",
            PASS if ok.status == 303 and again.status in (400, 403, 429)
            and fresh.status == 303 else FAIL)


def raw_get(port: int, target: bytes, host: str, extra: bytes = b"") -> tuple[int, str, float]:
    """(status, body, seconds) of one request written byte for byte (-1: no answer)."""
    started = time.monotonic()
    with socket.create_connection((HOST, port), timeout=20) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: " + host.encode()
                  + b"\r\nConnection: close\r\n" + extra + b"\r\n")
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except OSError:
            pass
    m = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    text = data.decode("utf-8", "replace")
    return (int(m.group(1)) if m else -1), text, time.monotonic() - started


def guesses() -> list[bytes]:
    def tok(n: int = 43) -> str:
        return secrets.token_urlsafe(48)[:n]

    def b32() -> str:
        return "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(26))

    paths = [f"/bericht/{tok()}" for _ in range(200)] + [f"/inschrijven/{tok()}"
                                                          for _ in range(100)]
    paths += [f"/bevestig/{b32()}" for _ in range(100)]
    paths += [f"/bericht/{tok()}/lezen" for _ in range(50)]
    odd = ["/bericht/short", f"/bericht/{tok(44)}", f"/bericht/{tok(42)}",
           "/bericht/" + "A" * 8000, "/bericht/../../etc/passwd", "/static/../../etc/passwd",
           "/static/..%2f..%2f..%2fetc%2fpasswd", "/static/%2e%2e/%2e%2e/etc/passwd",
           "/static/%252e%252e/etc/passwd", "/static/style.css%00.html", "/static/",
           "/static/../gateway/web/app.py", "/bericht/%00", f"/bericht/{tok(20)}%00{tok(22)}",
           f"/bericht/{tok()}%00", "/bericht/%ff%fe%fd", "/bericht/%C0%AE%C0%AE/etc/passwd",
           "/bericht/ünïcødé-ünïcødé-ünïcødé-ünïcødé-ünï", "/bericht/ＡＢＣＤ" * 3,
           f"/bericht/{tok()}/../../static/style.css", f"/bericht/{tok()}?token={tok()}",
           "//etc/passwd", "/", "/robots.txt", "/favicon.ico", "/.git/config", "/admin",
           "/bericht", "/bericht/", f"/bericht/{tok()}/", f"/BERICHT/{tok()}",
           f"/bericht/{tok()}/passkey/opties", "/%", "/%%32%65", "*"]
    return [p.encode() for p in paths] + [p.encode("utf-8") for p in odd]


def w2_guessing(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    token = first_link(lab, web, "GUESS")
    host = web.origin.split("//", 1)[1]
    real = f"/bericht/{token}".encode()

    def median_real() -> float:
        return statistics.median(raw_get(web.port, real, host)[2] for _ in range(15))

    before = median_real()
    started = time.monotonic()
    results = [(p, *raw_get(web.port, p, host)) for p in guesses()]
    spent = time.monotonic() - started
    after = median_real()
    statuses: dict[int, int] = {}
    for _, status, _, _ in results:
        statuses[status] = statuses.get(status, 0) + 1
    bad = [(p, s) for p, s, _, _ in results if s >= 500 or s < 0]
    shown_bad = [(short(cut(p.decode("utf-8", "replace")), 40), s) for p, s in bad[:3]]
    traces = [p for p, _, body, _ in results if TRACE.search(body.split("\r\n\r\n", 1)[-1])
              or "root:x:" in body]
    well = [s for p, s, _, _ in results[:450]]
    landing, _, _ = raw_get(web.port, real, host)
    slow = after > max(3 * before, before + 0.05)
    rep.add("W2", f"guessed links: {len(results)} requests (450 well-formed random tokens on "
            "the four pages, path traversal, %00, overlong, unicode, odd paths)",
            "404 pages (4xx), never a 5xx or a trace; the server not slowed; the real link "
            "unaffected",
            f"statuses {dict(sorted(statuses.items()))} in {spent:.1f} s; well-formed tokens: "
            f"{sorted(set(well))}; 5xx/no answer: {shown_bad or 'none'}"
            f"; traces or file contents: {len(traces)}; the real landing's median "
            f"{before * 1000:.0f} ms before, {after * 1000:.0f} ms after; then {landing}",
            FAIL if bad or traces or slow or landing != 200 or set(well) != {404} else PASS)
    stray_link(lab, rep, web, token)


def stray_link(lab: Lab, rep: Report, web: Web, token: str) -> None:
    """A real link mangled on its way (a stray non-ASCII character after the token, a control
    character in a header): what the daemon's log then holds of it."""
    host = web.origin.split("//", 1)[1]
    path = f"/bericht/{token}".encode()
    mark = lab.log.stat().st_size
    answers = [raw_get(web.port, path + b"\xc2\xa0", host),
               raw_get(web.port, path, host, b"Cookie: session=" + token.encode() + b"\x01\r\n")]
    sent = [status for status, _, _ in answers]
    heads = [text.split("\r\n\r\n", 1)[0] for _, text, _ in answers]
    time.sleep(0.5)
    with lab.log.open("rb") as fh:
        fh.seek(mark)
        lines = fh.read().decode("utf-8", "replace").splitlines()
    plain = [ln for ln in lines if not ln.startswith("{")]
    with_token = sum(token in ln for ln in lines)
    rep.add("W2", "a real link with a stray character after the token (`/bericht/TOKEN\\xa0`), "
            "and with a control character in a header",
            "400; the daemon log gets JSON lines only, never the token (README: no token in "
            "a log line)",
            f"{sent}; the daemon log got {len(plain)} non-JSON line(s)"
            + (f" (`{short(plain[0], 60)}`: a traceback of aiohttp's own `aiohttp.server` "
               "logger quoting the raw request line)" if plain else "")
            + f"; {with_token} line(s) with the link's token",
            FAIL if plain or with_token or any(s != 400 for s in sent) else PASS)
    rep.add("W2", "the headers of those 400 answers (made by aiohttp's HTTP parser, before "
            "any middleware)", "no promise: text/plain, no page",
            f"Content-Type {[re.findall(r'(?im)^content-type: *(.*)$', h) for h in heads]}; "
            f"CSP {['Content-Security-Policy' in h for h in heads]}; nosniff "
            f"{['nosniff' in h for h in heads]}", INFO)


def failures_in_db(lab: Lab) -> int:
    conn = sqlite3.connect(f"file:{lab.db}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT COALESCE(SUM(failures), 0) FROM web_failures").fetchone()
        return int(row[0])
    finally:
        conn.close()


def w4_forged_posts(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    token = first_link(lab, web, "CSRF")
    path = f"/bericht/{token}/code"
    b = web.browser()
    good = b.get(f"/bericht/{token}").csrf()
    other = web.browser()
    other_token = other.get(f"/bericht/{token}").csrf()
    form = {"email": PICKUP_CONTACT, "code": "000000"}
    before = failures_in_db(lab)
    cases: list[tuple[str, Resp]] = [
        ("no token", b.post(path, form)),
        ("a wrong token", b.post(path, {**form, "csrf": secrets.token_urlsafe(32)})),
        ("another browser's token", b.post(path, {**form, "csrf": other_token})),
        ("the token without its cookie", Http(web.port, web.origin, web.seen).post(
            path, {**form, "csrf": good})),
        ("Origin https://evil.example", b.post(path, {**form, "csrf": good},
                                               origin="https://evil.example")),
        ("Origin http://localhost.evil.example", b.post(
            path, {**form, "csrf": good}, origin="http://localhost.evil.example")),
        ("no Origin, no Sec-Fetch-Site", b.post(path, {**form, "csrf": good}, origin=None)),
        ("Origin null, Sec-Fetch-Site cross-site", b.post(
            path, {**form, "csrf": good}, origin="null", extra={"Sec-Fetch-Site": "cross-site"})),
    ]
    reader = web.reader
    if reader is not None:
        cases.append(("Gelezen with a session, foreign Origin", reader.post(
            f"/bericht/{token}/gelezen", {"csrf": reader.get(f"/bericht/{token}/lezen").csrf()},
            origin="https://evil.example")))
    after = failures_in_db(lab)
    acks = len([r for r in receipts_for(lab, "acknowledged") if r.get("via") == "pickup"])
    landing = b.get(f"/bericht/{token}")
    wrong = [(what, r.status) for what, r in cases if r.status != 403]
    rep.add("W4", "forged POSTs on the app-code form (and Gelezen): " + "; ".join(
                what for what, _ in cases),
            "403 each; nothing counted or recorded (the wrong codes in them would lock the "
            "link if they were)",
            f"{[r.status for _, r in cases]}; wrong codes counted in web_failures: "
            f"{after - before}; `acknowledged` via pickup: {acks}; the landing then {landing}",
            FAIL if wrong or after != before or acks or landing.status != 200 else PASS)
    if reader is not None:
        page = reader.get(f"/bericht/{token}/lezen")
        first = reader.post(f"/bericht/{token}/gelezen", {"csrf": page.csrf()})
        second = reader.post(f"/bericht/{token}/gelezen", {"csrf": page.csrf()})
        time.sleep(0.5)
        n = len([r for r in receipts_for(lab, "acknowledged") if r.get("via") == "pickup"])
        rep.add("W4", "Gelezen pressed twice (the same session, its own token)",
                "acknowledged once: one `acknowledged` receipt via pickup",
                f"{first}, {second}; receipts: {n}",
                PASS if first.status == 303 and n == 1 else FAIL)


def w3_lockout(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    other = web.first_link
    _, token, _ = pickup_notice(lab, web, "LOCK")
    b = web.browser()
    page = b.get(f"/bericht/{token}")
    wrong: list[Resp] = []
    for i in range(8):
        right_now = {web.app.at(time.time() + d) for d in (-30, 0, 30)}
        code = next(c for c in (f"{(i * 7919 + k) % 1_000_000:06d}" for k in range(10))
                    if c not in right_now)
        r = b.post(f"/bericht/{token}/code", {"csrf": page.csrf(), "email": PICKUP_CONTACT,
                                                "code": code})
        wrong.append(r)
        if r.status == 429:
            break
    right = b.post(f"/bericht/{token}/code", {"csrf": page.csrf(), "email": PICKUP_CONTACT,
                                                "code": web.next_code()})
    elsewhere = sign_in(web, web.browser(), other) if other else None
    retry = int(right.header("Retry-After") or 0)
    rep.add("W3", "wrong app codes on a real link, then the right code there and on another "
            "link of the same contact",
            "locked after `max_failures` (5): 429 with Retry-After; the right code refused "
            "too, on both links, until the lock ends",
            f"wrong codes: {[r.status for r in wrong]} (Retry-After "
            f"{wrong[-1].header('Retry-After') or '-'}); the right code: {right.status}; "
            f"on the other link: {elsewhere.status if elsewhere else '-'}",
            PASS if len(wrong) == 5 and wrong[-1].status == 429 and right.status == 429
            and retry > 0 and (elsewhere is None or elsewhere.status == 429) else FAIL)
    if 0 < retry <= 90:
        time.sleep(retry + 1)
        later = sign_in(web, web.browser(), token)
        rep.add("W3", f"the right code after the lock ended ({retry} s; the lab's "
                "lock_minutes = 1)", "accepted (303)", str(later),
                PASS if later.status == 303 else FAIL)


def w6_headers(lab: Lab, rep: Report) -> None:
    web = ensure_web(lab)
    web.browser().get("/static/style.css")
    web.browser().get("/static/passkey.js")
    seen = list(web.seen)
    statuses = sorted({r.status for r in seen})
    checks: dict[str, Callable[[Resp], bool]] = {
        "CSP without third-party sources, frame-ancestors 'none'": lambda r: csp_ok(
            r.header("Content-Security-Policy")),
        "Referrer-Policy: no-referrer": lambda r: r.header("Referrer-Policy") == "no-referrer",
        "Cache-Control: no-store": lambda r: "no-store" in r.header("Cache-Control"),
        "X-Content-Type-Options: nosniff": lambda r: r.header(
            "X-Content-Type-Options") == "nosniff",
    }
    for what, ok in checks.items():
        missing = [r for r in seen if not ok(r)]
        rep.add("W6", f"{what}: every answer of the run ({len(seen)}; statuses {statuses})",
                "on every answer, pages, errors and static files alike",
                f"{len(seen) - len(missing)}/{len(seen)}" + (
                    f"; missing on e.g. {missing[0].method} {missing[0].path} "
                    f"{missing[0].status}" if missing else ""),
                FAIL if missing else PASS)
    cookies = [c for r in seen for c in r.cookies()]
    bad = [c for c in cookies if not all(f in c.lower() for f in (
        "httponly", "samesite=strict", "secure", "path=/"))]
    ages = sorted({int(m.group(1)) for c in cookies
                   if (m := re.search(r"max-age=(\d+)", c, re.I))})
    rep.add("W6", f"cookie flags ({len(cookies)} Set-Cookie headers)",
            "HttpOnly; SameSite=Strict; Secure; Path=/, short-lived (session_minutes = 10)",
            f"{len(cookies) - len(bad)}/{len(cookies)} with every flag; Max-Age values {ages}"
            + (f"; e.g. `{short(bad[0].split('=', 1)[0], 20)}=...; "
               f"{short(bad[0].split(';', 1)[-1], 80)}`" if bad else ""),
            FAIL if bad or not cookies or any(a > 600 for a in ages) else PASS)
    hsts = {r.header("Strict-Transport-Security") for r in seen}
    rep.add("W6", "HSTS", "over HTTPS only (the lab's public_url is http://localhost)",
            f"values seen: {sorted(hsts)}", INFO)


def csp_ok(csp: str) -> bool:
    if "frame-ancestors 'none'" not in csp:
        return False
    sources = [s for part in csp.split(";") for s in part.split()[1:]]
    return bool(sources) and all(s in ("'self'", "'none'", "data:") for s in sources)
