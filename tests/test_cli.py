"""The administrator's command line: exit codes, what each verb says, what it refuses."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import structlog
from conftest import (
    CONTACT_A,
    DUO_CSV,
    PUPILS_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    HarnessFactory,
    Identities,
    Template,
    copy_gateway_state,
    free_port,
)
from conftest import run_cli as run

from gateway.admin.cli import main, pairs_text
from gateway.core.inert import inert
from gateway.core.timetext import local_time_text
from gateway.devkit.demokit import json_payload


def test_check_config_accepts_the_repository_default(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """The committed config.toml is valid (on a free port: whatever else this machine runs on
    127.0.0.1:2525 is not the test's business)."""
    text = (Path(__file__).parent.parent / "config.toml").read_text()
    assert 'listen = "127.0.0.1:2525"' in text
    config = tmp_path / "config.toml"
    config.write_text(text.replace('listen = "127.0.0.1:2525"',
                                   f'listen = "127.0.0.1:{free_port()}"'))
    code, out, err = run(capsys, "--config", str(config), "check-config")
    assert code == 0 and "valid" in out, err


def test_check_config_names_every_problem(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    """check-config reports each problem with its key path and exits 1."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[gateway]\naddress = "nope"\ncolour = "red"\n[smtp]\nmax_message_bytes = "x"\n')
    code, _, err = run(capsys, "--config", str(bad), "check-config")
    assert code == 1
    for path in ("gateway.address", "gateway.colour: unknown key", "smtp.max_message_bytes"):
        assert path in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown verb is a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2


def test_keys_init_is_idempotent(capsys: pytest.CaptureFixture[str], cfg: str) -> None:
    """keys init on a home that has a key keeps it and says so."""
    code, out, _ = run(capsys, "--config", cfg, "keys", "init")
    assert code == 0 and "already present" in out
    code, out, _ = run(capsys, "--config", cfg, "keys", "init", "--if-missing")
    assert code == 0 and out == ""


def test_keys_export_prints_the_public_key(capsys: pytest.CaptureFixture[str], cfg: str) -> None:
    """keys export prints an armored public key and nothing secret."""
    code, out, _ = run(capsys, "--config", cfg, "keys", "export")
    assert code == 0 and "BEGIN PGP PUBLIC KEY BLOCK" in out and "PRIVATE" not in out


def test_senders_add_with_password_on_stdin(capsys: pytest.CaptureFixture[str], cfg: str,
                                            identities: Identities, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """senders add pins the key, reads the password from stdin and lists the sender."""
    key = tmp_path / "sender.asc"
    key.write_bytes(identities.sender.public_key())
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    code, out, _ = run(capsys, "--config", cfg, "senders", "add", "vt", "--key", str(key),
                       "--fingerprint", identities.sender.fingerprint.lower(),
                       "--password-stdin", "--allow-from", "a@vt.example.nl")
    assert code == 0 and identities.sender.fingerprint in out
    code, out, _ = run(capsys, "--config", cfg, "senders", "list", "--json")
    [row] = json.loads(out)
    assert row["name"] == "vt" and row["allow_from"] == ["a@vt.example.nl"]
    assert row["keys"] == [{"fingerprint": identities.sender.fingerprint, "usable": True}]


def test_key_with_other_fingerprint_is_refused(capsys: pytest.CaptureFixture[str], cfg: str,
                                               identities: Identities, tmp_path: Path) -> None:
    """A key file whose key is not the pinned fingerprint is refused with one line, exit 1."""
    key = tmp_path / "school.asc"
    key.write_bytes(identities.school_a.public_key())
    code, _, err = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "X",
                       "--email", CONTACT_A, "--key", str(key),
                       "--fingerprint", identities.school_b.fingerprint)
    assert code == 1 and "no key with fingerprint" in err and err.count("\n") == 1


def test_schools_and_pupils_import(capsys: pytest.CaptureFixture[str], cfg: str,
                                   identities: Identities, tmp_path: Path) -> None:
    """DUO import, onboarding a contact and a register import each say what they changed."""
    (tmp_path / "duo.csv").write_text(DUO_CSV, encoding="latin-1")
    code, out, _ = run(capsys, "--config", cfg, "schools", "import-duo", str(tmp_path / "duo.csv"))
    assert code == 0 and out.startswith("3 schools read")
    key = tmp_path / "school.asc"
    key.write_bytes(identities.school_a.public_key())
    code, out, _ = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--email", CONTACT_A,
                       "--key", str(key), "--fingerprint", identities.school_a.fingerprint,
                       "--route", "127.0.0.1:2626")
    assert code == 0 and "route 127.0.0.1:2626" in out
    (tmp_path / "pupils.csv").write_text(PUPILS_CSV + "bad;;31-02-2016;12AB00\n")
    code, out, _ = run(capsys, "--config", cfg, "pupils", "import", str(tmp_path / "pupils.csv"),
                       "--accept-refused")
    assert code == 0 and "3 pupils at 2 schools (was 0 pupils at 0 schools), 1 rows refused" in out
    assert "line 5" in out and "31-02" not in out
    (tmp_path / "small.csv").write_text(PUPILS_CSV.splitlines()[0] + "\n")
    code, _, err = run(capsys, "--config", cfg, "pupils", "import", str(tmp_path / "small.csv"))
    assert code == 1 and "--force" in err
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    school = next(s for s in json.loads(out) if s["code"] == SCHOOL_A)
    assert school["contacts"][0]["usable"] and school["route"] == "127.0.0.1:2626"


def test_an_unbracketed_ipv6_route_is_refused(capsys: pytest.CaptureFixture[str], cfg: str,
                                              identities: Identities, tmp_path: Path) -> None:
    """`--route ::1:25` (which colon ends the address?) is refused with one line, exit 1, as
    the config file refuses it (core.validate.parse_hostport)."""
    key = tmp_path / "key.asc"
    key.write_bytes(identities.school_a.public_key())
    code, _, err = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--email", CONTACT_A,
                       "--key", str(key), "--fingerprint", identities.school_a.fingerprint,
                       "--route", "::1:25")
    assert code == 1 and err == "hwc-gateway: --route must be HOST:PORT\n"


def test_a_contact_address_with_a_tab_is_refused(capsys: pytest.CaptureFixture[str], cfg: str,
                                                 identities: Identities, tmp_path: Path) -> None:
    """`--email` with a tab is refused with one line, exit 1, as the config file refuses it
    (core.validate.is_address)."""
    key = tmp_path / "key.asc"
    key.write_bytes(identities.school_a.public_key())
    code, _, err = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--email",
                       "hwc\t@regenboog.example.nl", "--key", str(key),
                       "--fingerprint", identities.school_a.fingerprint)
    assert code == 1 and "is not an e-mail address" in err and err.count("\n") == 1


def test_receipts_verify_and_status(capsys: pytest.CaptureFixture[str], cfg: str) -> None:
    """receipts verify passes on a fresh log; status reports the listener down (exit 1)."""
    code, out, _ = run(capsys, "--config", cfg, "receipts", "verify")
    assert code == 0 and "intact" in out
    code, out, _ = run(capsys, "--config", cfg, "status", "--json")
    data = json.loads(out)
    assert code == 1 and data["listener"]["up"] is False and data["attention"]


def test_held_list_is_empty_json(capsys: pytest.CaptureFixture[str], cfg: str) -> None:
    """held list --json prints a JSON list."""
    code, out, _ = run(capsys, "--config", cfg, "held", "list", "--json")
    assert code == 0 and json.loads(out) == []


# -- the command line behaves like its peers (issue 12, point 8) --------------------------------

def test_config_is_taken_before_or_after_the_verb(capsys: pytest.CaptureFixture[str], cfg: str,
                                                  tmp_path: Path) -> None:
    """`--config PATH` works after the verb and after the action as well; the last one given
    wins."""
    code, out, _ = run(capsys, "status", "--config", cfg, "--json")
    assert code == 1 and json.loads(out)["listener"]["up"] is False
    code, out, _ = run(capsys, "receipts", "verify", "--config", cfg)
    assert code == 0 and "intact" in out
    code, out, _ = run(capsys, "keys", "--config", cfg, "list", "--json")
    assert code == 0 and json.loads(out)[0]["owner"].startswith("gateway")
    missing = str(tmp_path / "missing.toml")
    code, out, _ = run(capsys, "--config", missing, "held", "list", "--config", cfg, "--json")
    assert code == 0 and json.loads(out) == []
    code, _, err = run(capsys, "--config", cfg, "held", "list", "--config", missing)
    assert code == 1 and "missing.toml" in err


def test_local_time_text_has_the_zone_and_its_offset() -> None:
    """Stored UTC shows as the zone's wall clock with its offset, across the autumn change."""
    zone = "Europe/Amsterdam"
    assert local_time_text("2026-12-01T08:30:00Z", zone) == "2026-12-01 09:30 +01:00"
    assert local_time_text("2026-07-01T08:30:00+00:00", zone) == "2026-07-01 10:30 +02:00"
    # 02:30 happens twice on 25 October 2026: the offset tells the two apart.
    assert local_time_text("2026-10-25T00:30:00Z", zone) == "2026-10-25 02:30 +02:00"
    assert local_time_text("2026-10-25T01:30:00Z", zone) == "2026-10-25 02:30 +01:00"
    assert local_time_text(dt.datetime(2026, 7, 1, 8, 30, tzinfo=dt.UTC),
                           "America/St_Johns") == "2026-07-01 06:00 -02:30"
    assert local_time_text("not a time", zone) == "not a time"


def test_pairs_text_is_one_unambiguous_line() -> None:
    """Detail pairs: bare words stay bare, text with spaces, quotes or `=` is quoted, lists are
    joined by commas, None is `-`; made inert, a line break inside a value stays inside."""
    assert pairs_text({"attempt": 2, "reply": "250 2.0.0 Ok: queued", "fingerprints": ["A", "B"],
                       "previous": None, "changed": True, "why": 'a="b"\\'}) == (
        'attempt=2 reply="250 2.0.0 Ok: queued" fingerprints=A,B previous=- changed=true '
        'why="a=\\"b\\"\\\\"')
    assert inert(pairs_text({"reply": "451 x\r\n250 ok"})) == 'reply="451 x\\x0d\\x0a250 ok"'
    assert pairs_text({}) == ""


async def run_async(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`main` runs its own event loop: from an async test, call it in a worker thread (and give
    the running gateway its own logging back). What the gateway logged before is dropped."""
    capsys.readouterr()
    saved = structlog.get_config()
    try:
        code = await asyncio.to_thread(main, list(args))
    finally:
        structlog.configure(**saved)
    out, err = capsys.readouterr()
    return code, out, err


ZONE = "Asia/Kolkata"  # +05:30 all year: the offset cannot be mistaken for UTC or for CET
LOCAL = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d \+05:30")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|\+00:00)")
HOSTILE = "\x1b]0;pwned\x07\x1b[2K"


async def test_times_are_shown_in_the_configured_zone_and_json_keeps_utc(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """status, queue list, held list, receipts list and keys list show every time in `[schedule]
    timezone` with its offset; their --json keeps ISO UTC."""
    h = await harness_factory(extra_config=f'[schedule]\ntimezone = "{ZONE}"\n')
    h.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()},
                            {"name": "Nobody Known", "birthdate": "2015-01-01"}])
    assert (await h.send(h.signal(payload))).code == 250
    await h.drain()
    cfg = str(h.ctx.config.path)

    async def both(*verb: str) -> tuple[str, Any]:
        code, text, _ = await run_async(capsys, "--config", cfg, *verb)
        code_json, out, _ = await run_async(capsys, "--config", cfg, *verb, "--json")
        assert code == code_json
        return text, json.loads(out)

    text, queue = await both("queue", "list")
    [notice] = queue
    assert notice["next_attempt"].endswith("Z")
    assert local_time_text(notice["next_attempt"], ZONE) in text
    text, held = await both("held", "list")
    [child] = held
    assert local_time_text(child["deadline"], ZONE) in text
    text, receipts = await both("receipts", "list")
    assert all(r["at"].endswith("Z") for r in receipts)
    assert all(local_time_text(r["at"], ZONE) in text for r in receipts)
    text, keys = await both("keys", "list")
    assert all(local_time_text(k["expires"], ZONE) in text for k in keys)
    text, status = await both("status")
    assert status["oldest_queued"].endswith("Z")
    assert f"oldest since {local_time_text(status['oldest_queued'], ZONE)}" in text
    assert f"due {local_time_text(status['next_deadline']['deadline'], ZONE)}" in text
    for verb in (("queue", "list"), ("held", "list"), ("receipts", "list"), ("keys", "list"),
                 ("status",)):
        _, text, _ = await run_async(capsys, "--config", cfg, *verb)
        assert LOCAL.search(text), verb
        assert not ISO_UTC.search(text), (verb, text)


async def test_receipts_list_shows_the_detail_json_holds(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """Each receipt is one line with all its detail as key=value pairs: the school server's
    reply (inert), the rule, the held reason, the fingerprints sealed to."""
    h = await harness_factory()
    h.inboxes[SCHOOL_A].fail_next(f"451 4.0.0 {HOSTILE}")
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()},
                            {"name": "Nobody Known", "birthdate": "2015-01-01"}])
    assert (await h.send(h.signal(payload))).code == 250
    await h.drain()
    h.clock.advance(seconds=61)
    await h.drain()
    cfg = str(h.ctx.config.path)
    code, out, _ = await run_async(capsys, "--config", cfg, "receipts", "list", "--json")
    receipts = json.loads(out)
    code, text, err = await run_async(capsys, "--config", cfg, "receipts", "list")
    assert code == 0 and err == ""
    lines = text.splitlines()
    assert lines[0].split() == ["SEQ", "AT", "EVENT", "REF", "SCHOOL", "DETAIL"]
    assert len(lines) == len(receipts) + 1, "one line per receipt"
    by_event = {}
    for receipt, line in zip(receipts, lines[1:], strict=True):
        assert line.startswith(str(receipt["seq"]))
        for key in set(receipt) - {"seq", "at", "event", "ref", "school"}:
            assert f" {key}=" in line, (key, line)
        by_event[receipt["event"]] = line
    assert 'reply="451 4.0.0 \\x1b]0;pwned\\x07\\x1b[2K"' in by_event["deferred"]
    assert "\x1b" not in text and "\x07" not in text
    assert 'reply="250 ' in by_event["delivered"]
    assert f"fingerprints={h.ids.school_a.fingerprint}" in by_event["sealed"]
    assert f"signer={h.gateway_fpr}" in by_event["sealed"]
    assert re.search(r" rule=\w+", by_event["resolved"])
    assert 'reason="not in the register and no school named"' in by_event["held"]


def test_key_verbs_say_their_times_in_the_configured_zone(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path,
        identities: Identities) -> None:
    """`keys rotate` (end of the overlap) and `keys update` (expiry) print times in `[schedule]
    timezone` with the offset, like the listings."""
    cfg = str(copy_gateway_state(template, tmp_path,
                                 extra_config=f'[schedule]\ntimezone = "{ZONE}"\n').path)
    code, out, err = run(capsys, "--config", cfg, "keys", "rotate", "--overlap-days", "30")
    assert code == 0 and LOCAL.search(out) and not ISO_UTC.search(out), out + err
    key = tmp_path / "school.asc"
    key.write_bytes(identities.school_a.public_key())
    assert run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "De Regenboog",
               "--email", CONTACT_A, "--key", str(key),
               "--fingerprint", identities.school_a.fingerprint)[0] == 0
    code, out, err = run(capsys, "--config", cfg, "keys", "update", str(key))
    assert code == 0 and re.search(r"expires " + LOCAL.pattern, out), out + err
