"""The administrator's command line: exit codes, what each verb says, what it refuses."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    DUO_CSV,
    PUPILS_CSV,
    SCHOOL_A,
    Identities,
    Template,
    copy_gateway_state,
    free_port,
)

from gateway.cli import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfg(template: Template, tmp_path: Path) -> str:
    return str(copy_gateway_state(template, tmp_path).path)


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
    code, out, _ = run(capsys, "--config", cfg, "pupils", "import", str(tmp_path / "pupils.csv"))
    assert code == 0 and "3 pupils at 2 schools, 1 rows refused" in out
    assert "row 5" in out and "31-02" not in out
    (tmp_path / "small.csv").write_text(PUPILS_CSV.splitlines()[0] + "\n")
    code, _, err = run(capsys, "--config", cfg, "pupils", "import", str(tmp_path / "small.csv"))
    assert code == 1 and "--force" in err
    code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
    school = next(s for s in json.loads(out) if s["code"] == SCHOOL_A)
    assert school["contacts"][0]["usable"] and school["route"] == "127.0.0.1:2626"


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


def test_demo_runs_and_shows_each_school_its_notice() -> None:
    """`hwc-gateway demo` exits 0 and ends with decrypted notices and an intact chain."""
    result = subprocess.run([sys.executable, "-m", "gateway", "demo"], capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    schools = [line for line in out.splitlines() if line.startswith("-- school")]
    assert len(schools) == 3 and all("signed by the gateway key" in line for line in schools)
    assert out.count("Status van uw signaal") == 3 and "Acknowledgement recorded" in out
    assert "Signal accepted as" in out and "554 5.7.7" in out
    assert "not in the register and no school named" in out
    assert "intact" in out
