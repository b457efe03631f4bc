"""Output the other side controls is inert (issue 11): server replies, school names, file
names reach the administrator's terminal and the alert mail only as visible escapes; audit
records name the real user, never LOGNAME or USER."""

from __future__ import annotations

import json
import os
import pwd
import unicodedata
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    DUO_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    HarnessFactory,
    Identities,
    Template,
    copy_gateway_state,
    start_relay,
)
from conftest import run_cli as run
from test_cli import run_async

from gateway.admin.held import held_list, held_show
from gateway.admin.queue import queue_list
from gateway.core.inert import inert, inert_json
from gateway.devkit.demokit import json_payload
from gateway.observe.logs import configure, get_logger
from gateway.observe.operator import operator_text

HOSTILE = "\x1b]0;pwned\x07\x1b[2K"
# Bytes a terminal acts on: C0 controls but the newline that ends a line, DEL, and C1 (UTF-8).
STEERING = [bytes([c]) for c in range(0x20) if c != 0x0A] + [b"\x7f"] + [
    chr(c).encode() for c in range(0x80, 0xA0)] + ["\u202e".encode(), "\u2066".encode()]


def steering(text: str) -> list[bytes]:
    data = text.encode("utf-8", "surrogateescape")
    return [b for b in STEERING if b in data]




def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


# -- the pure functions -------------------------------------------------------------------------

def test_inert_escapes_controls_and_keeps_letters() -> None:
    """C0, C1, DEL, bidi and zero-width characters become visible escapes; letters stay."""
    assert inert(f"451 4.0.0 {HOSTILE}") == "451 4.0.0 \\x1b]0;pwned\\x07\\x1b[2K"
    assert inert("Sint-Jozefschool 's-Hertogenbosch, école, Łódź, 東京") == \
        "Sint-Jozefschool 's-Hertogenbosch, école, Łódź, 東京"
    assert inert("a\x7fb\x9bc\u202ed\u200be\u2028f\tg\rh\ni") == \
        "a\\x7fb\\x9bc\\u202ed\\u200be\\u2028f\\x09g\\x0dh\\x0ai"
    assert inert("\U000e0001\udcff") == "\\U000e0001\\udcff"


def test_inert_leaves_no_control_or_format_character() -> None:
    """No character of category Cc, Cf, Zl or Zp survives `inert` or `inert_json`, and the
    JSON still reads back as the same text."""
    unsafe = ("Cc", "Cf", "Zl", "Zp")
    for code in [*range(0x20), *range(0x7F, 0xA0), 0x200E, 0x202E, 0x2066, 0xFEFF, 0xE0001,
                 0x2028]:
        text = f"x{chr(code)}y"
        assert all(unicodedata.category(c) not in unsafe for c in inert(text)), hex(code)
        dumped = inert_json(json.dumps({"v": text}, ensure_ascii=False))
        assert json.loads(dumped) == {"v": text}
        assert all(unicodedata.category(c) not in unsafe for c in dumped), hex(code)


# -- what the administrator's terminal and the alert mail get ---------------------------------

async def test_server_reply_with_escapes_is_inert_in_queue_list_and_alert_mail(
        harness_factory: HarnessFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """A school server's reply with terminal escapes reaches `queue list` and the alert mail
    only as visible escapes (text and --json alike)."""
    h = await harness_factory(extra_config='[alerts]\naddress = "beheer@leerplicht.example.nl"\n')
    relay = await start_relay(h)
    h.inboxes[SCHOOL_A].fail_next(f"451 4.0.0 {HOSTILE}")
    assert (await h.send(h.signal(sanne()))).code == 250
    await h.drain()
    [queued] = await queue_list(h.ctx)
    assert HOSTILE in queued["last_reply"], "the store keeps the reply as it came"
    cfg = str(h.ctx.config.path)
    code, out, err = await run_async(capsys, "--config", cfg, "queue", "list")
    assert code == 0 and steering(out + err) == []
    assert "\\x1b]0;pwned\\x07\\x1b[2K" in out
    code, out, _ = await run_async(capsys, "--config", cfg, "queue", "list", "--json")
    assert code == 0 and steering(out) == []
    assert json.loads(out)[0]["last_reply"] == f"451 4.0.0 {HOSTILE}"
    # The next attempt is refused for good: the alert mail carries the reply.
    h.inboxes[SCHOOL_A].fail_next(f"554 5.0.0 {HOSTILE}")
    h.clock.advance(seconds=61)
    await h.drain()
    [mail] = [m for m in relay.received if m.rcpt_tos == ["beheer@leerplicht.example.nl"]]
    assert b"\x1b" not in mail.data and b"\x07" not in mail.data
    assert b"554 5.0.0 \\x1b]0;pwned\\x07\\x1b[2K" in mail.data


def test_school_names_with_controls_are_inert_in_schools_list(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path,
        identities: Identities) -> None:
    """A DUO import and a `schools add --name` with control characters, then `schools list`
    (text and --json): no byte that steers a terminal."""
    cfg = str(copy_gateway_state(template, tmp_path).path)
    duo = tmp_path / "duo.csv"
    # Quoted: the escape's ";" would otherwise split the row, which is then refused (issue 12).
    duo.write_text(DUO_CSV.replace("Het Kompas", f'"Het {HOSTILE}Kompas\u202e"')
                   .replace(";Zeist", ";Zeist\x9b2J"), encoding="utf-8")
    code, out, err = run(capsys, "--config", cfg, "schools", "import-duo", str(duo))
    assert code == 0 and steering(out + err) == []
    key = tmp_path / "school.asc"
    key.write_bytes(identities.school_a.public_key())
    code, out, err = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name",
                         f"De Regenboog{HOSTILE}\u202e\x9b", "--email", CONTACT_A, "--key",
                         str(key), "--fingerprint", identities.school_a.fingerprint)
    assert code == 0 and steering(out + err) == []
    code, out, err = run(capsys, "--config", cfg, "schools", "list")
    assert code == 0 and steering(out + err) == []
    assert "De Regenboog\\x1b]0;pwned\\x07\\x1b[2K" in out
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    assert code == 0 and steering(out) == []
    names = {s["code"]: s["name"] for s in json.loads(out)}
    assert names[SCHOOL_A] == f"De Regenboog{HOSTILE}\u202e\x9b"


def test_file_name_with_escapes_is_inert_in_the_refusal(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """A refusal that names a file the administrator gave prints its name inert."""
    cfg = str(copy_gateway_state(template, tmp_path).path)
    code, out, err = run(capsys, "--config", cfg, "schools", "import-duo",
                         str(tmp_path / f"missing{HOSTILE}.csv"))
    assert code == 1 and steering(out + err) == [] and "missing\\x1b" in err


# -- who did it (point 8) ----------------------------------------------------------------------

def test_operator_is_the_real_uid_never_logname_or_user() -> None:
    """The audit name comes from the uid (and, for root, sudo's SUDO_UID), not the environment."""
    names = {0: "root", 1000: "alice", 1001: "mallory"}.get
    forged = {"LOGNAME": "mallory", "USER": "mallory"}
    assert operator_text(1000, forged, names) == "alice (uid 1000)"
    assert operator_text(4242, forged, names) == "uid 4242"
    assert operator_text(1000, {**forged, "SUDO_UID": "0", "SUDO_USER": "root"}, names) == \
        "alice (uid 1000)", "a user who is not root cannot claim to be someone via sudo"
    assert operator_text(0, {"SUDO_UID": "1000", "SUDO_USER": "mallory"}, names) == \
        "root via sudo from alice (uid 1000)"
    assert operator_text(0, {"SUDO_UID": "1500", "SUDO_USER": "bob\x1b[2K"}, names) == \
        "root via sudo from bob\\x1b[2K (uid 1500)"
    assert operator_text(0, {"SUDO_UID": "x", **forged}, names) == "root (uid 0)"


async def test_held_show_records_the_real_user_whatever_logname_says(
        harness_factory: HarnessFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """`held show` with LOGNAME and USER set to another name records the real uid's name."""
    h = await harness_factory()
    payload = json_payload([{"name": "Onbekend Kind", "birthdate": SANNE_BIRTH.isoformat()}])
    assert (await h.send(h.signal(payload))).code == 250
    await h.drain()
    [held] = await held_list(h.ctx)
    monkeypatch.setenv("LOGNAME", "somebody-else")
    monkeypatch.setenv("USER", "somebody-else")
    monkeypatch.delenv("SUDO_UID", raising=False)
    await held_show(h.ctx, held["id"])
    [shown] = [r for r in await h.receipts() if r.event == "held.shown"]
    uid = os.getuid()
    assert shown.detail["operator"] == f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    assert "somebody-else" not in json.dumps([r.detail for r in await h.receipts()])


def test_console_log_lines_show_outside_text_as_escapes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """On a terminal the log is rendered for people (structlog's console renderer writes values
    with repr): a server's reply in it shows its escapes as text, never raw."""
    configure(json=False)
    try:
        get_logger("test").warning("notice.deferred", reply="451 4.0.0 \x1b]0;pwned\x07\x1b[2K")
        out = capsys.readouterr().out
    finally:
        configure(json=True)
    assert "pwned" in out
    assert "\x1b" not in out and "\x07" not in out
