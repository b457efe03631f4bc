"""A municipality's first week (issue 12): `status` tells the truth, nothing is a dead end,
delivery identifies itself. Real gateways on loopback, the command line through `main`. Here
`status` and the contacts; delivery in tests/test_first_week_delivery.py, the AUTH lockout in
tests/test_first_week_lockout.py."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    SANNE_BIRTH,
    SCHOOL_A,
    Identities,
)
from conftest import run_cli as run

from gateway.admin.cli import main
from gateway.devkit.demokit import json_payload
from gateway.observe.logs import configure

ALERTS = '[alerts]\naddress = "beheer@leerplicht.example.nl"\n'
HELO_REJECTED = "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname"


def watch_logs() -> io.StringIO:
    """From now on the gateway's log lines go to a buffer of the test's own, which stays open
    for the harness's last lines at teardown (capsys's may be closed by then)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        configure(json=True)
    return buffer


async def cli(*args: str, logs: io.StringIO | None = None) -> tuple[int, str, str]:
    """`main` beside a running harness: in a worker thread (it runs its own event loop), its
    output and its own log lines captured; the daemon's log lines then go back to `logs`."""
    out, err = io.StringIO(), io.StringIO()

    def call() -> int:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            return main(list(args))

    code = await asyncio.to_thread(call)
    with contextlib.redirect_stdout(logs or io.StringIO()):
        configure(json=True)
    return code, out.getvalue(), err.getvalue()


def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


def events(out: str, name: str) -> list[dict[str, object]]:
    """The JSON log lines of one event in captured output."""
    found = []
    for line in out.splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            found.append(json.loads(line))
    return found


def with_relay(cfg: str, relay: str = "127.0.0.1:2") -> None:
    """Give the config file a `[delivery] relay`."""
    path = Path(cfg)
    path.write_text(path.read_text().replace("[delivery]\n", f'[delivery]\nrelay = "{relay}"\n'))


# -- point 4: status tells the truth ----------------------------------------------------------

def key_file(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / f"{name}.asc"
    path.write_bytes(data)
    return str(path)


def test_status_names_every_dead_end_of_the_setup(capsys: pytest.CaptureFixture[str], cfg: str,
                                                  identities: Identities,
                                                  tmp_path: Path) -> None:
    """A school with a contact but no route and no relay, a sender left without a key, no
    relay for status mails, an empty [alerts] address: each is a line of `status` and of
    `status --json`, exit 1; the verbs that made the first two warned at once."""
    school_key = key_file(tmp_path, "school", identities.school_a.public_key())
    code, out, _ = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                       "--email", CONTACT_A, "--key", school_key,
                       "--fingerprint", identities.school_a.fingerprint)
    assert code == 0 and "warning: school 12AB00 has no route and [delivery] relay is empty" in out
    sender_key = key_file(tmp_path, "sender", identities.sender.public_key())
    (tmp_path / "password").write_text("a long enough password\n")
    assert main(["--config", cfg, "senders", "add", "vt", "--key", sender_key, "--fingerprint",
                 identities.sender.fingerprint, "--client-cert", "AB" * 32,
                 "--allow-from", "a@vt.example.nl"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "--config", cfg, "senders", "remove-key", "vt",
                       identities.sender.fingerprint)
    assert code == 0 and "warning: sender vt has no usable key left" in out

    code, out, _ = run(capsys, "--config", cfg, "status")
    attention = out[out.index("attention"):]
    assert code == 1
    for expected in ("1 schools have a contact but no route", "(12AB00)",
                     "senders without a usable key, every signal refused (554 5.7.7): vt",
                     "status mails to 1 senders cannot be sent",
                     "[alerts] address is empty"):
        assert expected in attention, expected
    code, out, _ = run(capsys, "--config", cfg, "status", "--json")
    data = json.loads(out)
    assert code == 1 and data["unreachable_schools"] == [SCHOOL_A]
    assert data["senders_without_key"] == ["vt"] and data["relay"] is None
    assert any("[alerts] address is empty" in line for line in data["attention"])


def test_status_is_quiet_about_a_setup_that_works(capsys: pytest.CaptureFixture[str], cfg: str,
                                                  identities: Identities,
                                                  tmp_path: Path) -> None:
    """With a relay, an alerts address and keys in place, none of those lines appears (only
    the listener, which no daemon serves here)."""
    with_relay(cfg)
    Path(cfg).write_text(Path(cfg).read_text() + ALERTS)
    school_key = key_file(tmp_path, "school", identities.school_a.public_key())
    code, out, _ = run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                       "--email", CONTACT_A, "--key", school_key,
                       "--fingerprint", identities.school_a.fingerprint)
    assert code == 0 and "warning" not in out
    code, out, _ = run(capsys, "--config", cfg, "status", "--json")
    data = json.loads(out)
    assert data["attention"] == ["the listener is not answering"]
    assert data["unreachable_schools"] == [] and data["auth_lockouts"] == []


def test_contacts_change_and_go_without_removing_the_school(
        capsys: pytest.CaptureFixture[str], cfg: str, identities: Identities,
        tmp_path: Path) -> None:
    """`schools set-contact` changes an address (the key stays), `schools remove-contact`
    removes one contact and warns when none is left; each refuses with one line what is not
    there; receipts name the change."""
    with_relay(cfg)
    for identity, email in ((identities.school_a, CONTACT_A),
                            (identities.school_b, "second@regenboog.example.nl")):
        assert main(["--config", cfg, "schools", "add", SCHOOL_A, "--name", "Regenboog",
                     "--email", email, "--key", key_file(tmp_path, email, identity.public_key()),
                     "--fingerprint", identity.fingerprint]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       CONTACT_A.upper(), "--new-email", "nieuw@regenboog.example.nl")
    assert code == 0 and out.strip() == (f"school {SCHOOL_A}: contact {CONTACT_A} is now "
                                         "nieuw@regenboog.example.nl (same key)")
    code, _, err = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       CONTACT_A, "--new-email", "x@regenboog.example.nl")
    assert code == 1 and err.count("\n") == 1 and "has no contact" in err
    code, _, err = run(capsys, "--config", cfg, "schools", "set-contact", SCHOOL_A, "--email",
                       "nieuw@regenboog.example.nl", "--new-email",
                       "second@regenboog.example.nl")
    assert code == 1 and "has a contact second@regenboog.example.nl already" in err
    code, out, _ = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "second@regenboog.example.nl")
    assert code == 0 and "removed" in out and "warning" not in out
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    [school] = [s for s in json.loads(out) if s["code"] == SCHOOL_A]
    assert [(c["email"], c["fingerprint"]) for c in school["contacts"]] == [
        ("nieuw@regenboog.example.nl", identities.school_a.fingerprint)]
    code, out, _ = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "nieuw@regenboog.example.nl")
    assert code == 0 and f"warning: school {SCHOOL_A} has no contact with a usable key" in out
    code, _, err = run(capsys, "--config", cfg, "schools", "remove-contact", SCHOOL_A,
                       "--email", "nieuw@regenboog.example.nl")
    assert code == 1 and err.count("\n") == 1
    code, out, _ = run(capsys, "--config", cfg, "receipts", "list", "--json")
    kinds = [r["event"] for r in json.loads(out)]
    assert kinds.count("school.contact_changed") == 1
    assert kinds.count("school.contact_removed") == 2
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    assert SCHOOL_A in {s["code"] for s in json.loads(out)}, "the school stays"
