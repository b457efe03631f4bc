"""Custody of keys/: modes after `keys init`, refusals to start, and the gateway key's passphrase.

docs/protocol.md §14: keys/ directories are 0700, files 0600; `check-config` and `serve` refuse to
start while secret material is readable by others. The gateway's secret key is unprotected only
where the config says so (`allow_no_passphrase = true`); otherwise its passphrase comes from
`[keys] passphrase_file` or `$CREDENTIALS_DIRECTORY/gateway-passphrase` (systemd
LoadCredential), and is never passed as "" (python-gnupg would then take a line of the data).
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    Harness,
    Identities,
    Template,
    _config_text,
    copy_gateway_state,
    start_harness,
    stop_harness,
)
from conftest import run_cli as run
from test_process import free_port

from gateway.admin.cli import main
from gateway.core.config import load_config
from gateway.crypto.custody import CREDENTIAL_NAME
from gateway.crypto.gpg import Gpg, GpgError
from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import json_payload
from gateway.observe.logs import configure

REPO = Path(__file__).resolve().parent.parent
PASSPHRASE = "a passphrase only the service knows"


async def run_async(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`main` runs its own event loop: from an async test, call it in a worker thread."""
    code = await asyncio.to_thread(main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_config(base: Path, ca_file: Path, keys_extra: str, listen: int | None = None) -> str:
    """A config of this file's own: only `[keys]` differs between the tests."""
    path = base / "config.toml"
    path.write_text(_config_text(base, ca_file, listen=listen, keys_extra=keys_extra))
    return str(path)


def modes(root: Path) -> dict[Path, int]:
    """Every directory and regular file under `root` (root included) with its permission bits."""
    found = {}
    for path in [root, *root.rglob("*")]:
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
            found[path] = stat.S_IMODE(info.st_mode)
    return found


def gpg_cli(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
                          input=data, capture_output=True, timeout=60, check=False)


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's shell or a systemd unit could set it; each test decides for itself.
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


# -- modes after keys init, refusals to start ---------------------------------------------------

def test_keys_init_leaves_directories_0700_and_files_0600(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """`keys init` on a fresh checkout makes every directory under keys/ 0700, every file 0600."""
    cfg = write_config(tmp_path, template.school_ca, "allow_no_passphrase = true")
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o755)  # as a fresh checkout has it: world-readable, with its README
    keys.chmod(0o755)
    (keys / "README.md").write_text("Development keys are generated here.\n")
    before = os.umask(0o022)  # an administrator's ordinary shell
    try:
        code, out, err = run(capsys, "--config", cfg, "keys", "init")
    finally:
        os.umask(before)
    home = load_config(Path(cfg)).gnupg_home
    try:
        assert code == 0, err
        assert "created gateway key" in out and "created secret" in out
        found = {p: m for p, m in modes(keys).items() if p.name != "README.md"}
        assert {keys / "gnupg", keys / "secrets", keys / "tls",
                keys / "secrets" / "vault.key", keys / "tls" / "server.key"} <= set(found)
        wrong = {str(p.relative_to(tmp_path)): f"{m:04o}" for p, m in found.items()
                 if m != (0o700 if p.is_dir() else 0o600)}
        assert wrong == {}
        code, out, err = run(capsys, "--config", cfg, "check-config")
        assert code == 0 and "valid" in out, err
    finally:
        stop_agent(home)


@pytest.mark.parametrize(("relative", "mode", "complaint"), [
    ("keys/secrets/vault.key", 0o644, "readable by others (mode 0644"),
    ("keys/gnupg", 0o755, "directory is open to others (mode 0755"),
    ("keys/tls/server.key", 0o640, "readable by others (mode 0640"),
])
def test_check_config_refuses_secret_material_open_to_others(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path,
        relative: str, mode: int, complaint: str) -> None:
    """check-config exits 1 naming the file or directory that others may read or enter."""
    cfg = str(copy_gateway_state(template, tmp_path).path)
    code, out, err = run(capsys, "--config", cfg, "check-config")
    assert code == 0 and "valid" in out, err
    (tmp_path / relative).chmod(mode)
    code, out, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1 and out == ""
    assert "secret material is not kept safely" in err
    assert f"{tmp_path / relative}: {complaint}" in err


@pytest.mark.parametrize(("relative", "mode"), [
    ("keys/secrets/vault.key", 0o644),
    ("keys/gnupg", 0o755),
    ("keys/tls/server.key", 0o640),
])
def test_serve_refuses_to_start_and_does_not_listen(template: Template, tmp_path: Path,
                                                    relative: str, mode: int) -> None:
    """`serve` exits 1 with the same message as check-config and never starts its listener."""
    port = free_port()
    config = copy_gateway_state(template, tmp_path, listen=port)
    (tmp_path / relative).chmod(mode)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("CREDENTIALS_DIRECTORY", None)
    result = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config.path),
                             "serve"], capture_output=True, text=True, timeout=60, env=env,
                            check=False, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "secret material is not kept safely" in result.stderr
    assert str(tmp_path / relative) in result.stderr
    assert "gateway.started" not in result.stdout + result.stderr
    with socket.socket() as probe:  # nothing was left behind on the configured port either
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_passphrase_file_readable_by_others_is_refused(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """A passphrase file that others may read is a custody problem like the key itself."""
    copy_gateway_state(template, tmp_path)
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o644)
    cfg = write_config(tmp_path, template.school_ca, f'passphrase_file = "{secret}"')
    code, _, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1 and f"{secret}: readable by others (mode 0644" in err


# -- the passphrase policy ----------------------------------------------------------------------

def test_no_passphrase_and_no_explicit_allowance_is_refused(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """Without passphrase_file and without allow_no_passphrase, check-config and keys init say
    so and no gateway key is made."""
    cfg = write_config(tmp_path, template.school_ca, "")
    code, out, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1 and out == ""
    assert "[keys] passphrase_file" in err and "allow_no_passphrase" in err
    code, out, err = run(capsys, "--config", cfg, "keys", "init")
    home = load_config(Path(cfg)).gnupg_home
    stop_agent(home)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith("hwc-gateway: ") and "[keys] passphrase_file" in err
    assert "created gateway key" not in out
    assert gpg_cli(home, "--list-secret-keys", "--with-colons").stdout == b""


def test_refused_keys_init_creates_nothing(capsys: pytest.CaptureFixture[str],
                                           template: Template, tmp_path: Path) -> None:
    """A `keys init` refused for want of a passphrase leaves no secret material behind."""
    cfg = write_config(tmp_path, template.school_ca, "")
    code, _, _ = run(capsys, "--config", cfg, "keys", "init")
    stop_agent(load_config(Path(cfg)).gnupg_home)
    assert code == 1
    left = sorted(str(p.relative_to(tmp_path)) for p, _ in modes(tmp_path / "keys").items()
                  if p.is_file()) if (tmp_path / "keys").exists() else []
    assert left == []


def test_empty_passphrase_is_never_a_passphrase(capsys: pytest.CaptureFixture[str],
                                                template: Template, tmp_path: Path) -> None:
    """An empty passphrase file is refused, and the gpg adapter refuses passphrase=""."""
    copy_gateway_state(template, tmp_path)
    secret = tmp_path / "passphrase"
    secret.write_text("\n")
    secret.chmod(0o600)
    cfg = write_config(tmp_path, template.school_ca, f'passphrase_file = "{secret}"')
    code, _, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1 and f"the passphrase file {secret} is empty" in err
    with pytest.raises(GpgError):
        Gpg(tmp_path / "scratch-gnupg", passphrase="")


# -- a passphrase-protected gateway key, end to end ---------------------------------------------

def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


def assert_protected(home: Path, fpr: str, passphrase: str) -> None:
    """The secret key does not come out of gpg with a wrong passphrase, and does with the right
    one (the agent stopped first: a cached passphrase would prove nothing)."""
    loopback = ("--pinentry-mode", "loopback", "--passphrase")
    stop_agent(home)
    wrong = gpg_cli(home, *loopback, "not the passphrase", "--export-secret-keys", fpr)
    assert wrong.returncode != 0 and wrong.stdout == b""
    stop_agent(home)
    empty = gpg_cli(home, *loopback, "", "--export-secret-keys", fpr)
    assert empty.returncode != 0 and empty.stdout == b""
    stop_agent(home)
    right = gpg_cli(home, *loopback, passphrase, "--export-secret-keys", fpr)
    assert right.returncode == 0 and right.stdout
    stop_agent(home)


async def init_protected(capsys: pytest.CaptureFixture[str], cfg: str) -> str:
    """`keys init` through the command line; the new gateway key's fingerprint."""
    code, out, err = await run_async(capsys, "--config", cfg, "keys", "init")
    assert code == 0, err
    [line] = [line for line in out.splitlines() if line.startswith("created gateway key ")]
    code, out, err = await run_async(capsys, "--config", cfg, "check-config")
    assert code == 0 and "valid" in out, err
    return line.rsplit(" ", 1)[1]


async def deliver_one_signal(cfg: str, fpr: str, identities: Identities, template: Template,
                             base: Path) -> None:
    """A signal in and a notice out, with the agent stopped before opening and before sealing,
    so that gpg gets the passphrase from the gateway each time."""
    configure(json=True)
    config = load_config(Path(cfg))
    h: Harness = await start_harness(config, identities, template, base)
    try:
        assert h.gateway_fpr == fpr
        stop_agent(config.gnupg_home)
        reply = await h.send(h.signal(sanne()))
        assert reply.code == 250, reply
        stop_agent(config.gnupg_home)
        await h.drain()
        [(text, result, item)] = h.notices(SCHOOL_A)
        assert "Naam: Sanne de Vries" in text
        assert result.valid and result.pubkey_fingerprint == fpr
        assert item.rcpt_tos == [CONTACT_A] and b"Sanne" not in item.data
        assert h.inboxes[SCHOOL_B].received == []
    finally:
        await stop_harness(h)


async def test_protected_gateway_key_with_passphrase_file(
        capsys: pytest.CaptureFixture[str], identities: Identities, template: Template,
        tmp_path: Path) -> None:
    """With [keys] passphrase_file, keys init protects the key with it, and the gateway opens
    and signs with it: a signal is delivered signed by the gateway key."""
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")  # as `echo` writes it: the newline is not part of it
    secret.chmod(0o600)
    cfg = write_config(tmp_path, template.school_ca, f'passphrase_file = "{secret}"')
    fpr = await init_protected(capsys, cfg)
    assert_protected(tmp_path / "keys" / "gnupg", fpr, PASSPHRASE)
    await deliver_one_signal(cfg, fpr, identities, template, tmp_path)


async def test_protected_gateway_key_with_systemd_credential(
        capsys: pytest.CaptureFixture[str], identities: Identities, template: Template,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With $CREDENTIALS_DIRECTORY/gateway-passphrase (LoadCredential) and no passphrase_file,
    the key is protected by it and a signal is delivered signed by the gateway key."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / CREDENTIAL_NAME).write_text(PASSPHRASE)
    (credentials / CREDENTIAL_NAME).chmod(0o400)  # as systemd leaves it
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    cfg = write_config(tmp_path, template.school_ca, "")
    fpr = await init_protected(capsys, cfg)
    assert_protected(tmp_path / "keys" / "gnupg", fpr, PASSPHRASE)
    await deliver_one_signal(cfg, fpr, identities, template, tmp_path)


async def test_wrong_passphrase_defers_signals(
        capsys: pytest.CaptureFixture[str], identities: Identities, template: Template,
        tmp_path: Path) -> None:
    """With a wrong passphrase in the file, signals get 451 4.3.0 (never 5xx) and nothing is
    delivered."""
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE)
    secret.chmod(0o600)
    cfg = write_config(tmp_path, template.school_ca, f'passphrase_file = "{secret}"')
    await init_protected(capsys, cfg)
    secret.write_text("not the passphrase")
    configure(json=True)
    config = load_config(Path(cfg))
    h = await start_harness(config, identities, template, tmp_path)
    try:
        replies = []
        for _ in range(2):
            stop_agent(config.gnupg_home)
            replies.append(await h.send(h.signal(sanne())))
        await h.drain()
        codes: Sequence[tuple[int, str]] = [(r.code, r.text[:5]) for r in replies]
        assert codes == [(451, "4.3.0")] * 2, replies
        assert h.inboxes[SCHOOL_A].received == [] and h.inboxes[SCHOOL_B].received == []
    finally:
        await stop_harness(h)


# -- links: a secret is judged where it points (issue 11) ---------------------------------------

def test_secret_behind_a_link_to_a_world_readable_file_is_refused(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """keys/secrets/vault.key as a link to a world-readable copy is refused like the copy."""
    cfg = str(copy_gateway_state(template, tmp_path).path)
    secret = tmp_path / "keys" / "secrets" / "vault.key"
    elsewhere = tmp_path / "shared" / "vault.key"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(secret.read_bytes())
    elsewhere.chmod(0o644)
    secret.unlink()
    secret.symlink_to(elsewhere)
    code, out, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1 and out == ""
    [line] = [x for x in err.splitlines() if str(secret) in x]
    assert line.strip() == (f"{secret} (a link to {elsewhere}): readable by others "
                            "(mode 0644, must be 0600)")
    elsewhere.chmod(0o600)
    code, out, err = run(capsys, "--config", cfg, "check-config")
    assert code == 0 and "valid" in out, err


def test_passphrase_file_behind_a_link_to_a_world_readable_file_is_refused(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """A passphrase_file that links to a world-readable file is refused, naming the link."""
    copy_gateway_state(template, tmp_path)
    target = tmp_path / "world" / "passphrase"
    target.parent.mkdir()
    target.write_text(PASSPHRASE + "\n")
    target.chmod(0o644)
    link = tmp_path / "passphrase"
    link.symlink_to(target)
    cfg = write_config(tmp_path, template.school_ca, f'passphrase_file = "{link}"')
    code, _, err = run(capsys, "--config", cfg, "check-config")
    assert code == 1
    assert f"{link} (a link to {target}): readable by others (mode 0644, must be 0600)" in err


def test_tls_key_and_gpg_home_behind_links_are_judged_where_they_point(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """A linked TLS key outside keys/ and a linked gpg home are checked at their targets."""
    copy_gateway_state(template, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    key = tmp_path / "keys" / "tls" / "server.key"
    (outside / "server.key").write_bytes(key.read_bytes())
    (outside / "server.key").chmod(0o644)
    (tmp_path / "tls.key").symlink_to(outside / "server.key")
    home = tmp_path / "keys" / "gnupg"
    home.rename(outside / "gnupg")
    (outside / "gnupg").chmod(0o755)
    home.symlink_to(outside / "gnupg")
    cfg = tmp_path / "config.toml"
    cfg.write_text(cfg.read_text().replace(f'tls_key = "{key}"',
                                           f'tls_key = "{tmp_path / "tls.key"}"'))
    code, _, err = run(capsys, "--config", str(cfg), "check-config")
    assert code == 1
    assert f"{tmp_path / 'tls.key'} (a link to {outside / 'server.key'}): readable by others" in err
    assert f"{home} (a link to {outside / 'gnupg'}): directory is open to others" in err


def test_the_pickup_pages_tls_key_is_kept_as_safely(
        capsys: pytest.CaptureFixture[str], template: Template, tmp_path: Path) -> None:
    """`[web] tls_key`, wherever it lies, is secret material like the listener's: readable by
    others, check-config refuses it by name."""
    copy_gateway_state(template, tmp_path)
    key = tmp_path / "keys" / "tls" / "server.key"
    web_key = tmp_path / "web.key"
    web_key.write_bytes(key.read_bytes())
    web_key.chmod(0o644)
    cfg = tmp_path / "config.toml"
    cfg.write_text(cfg.read_text() + f'\n[web]\nlisten = "127.0.0.1:8449"\n'
                   f'public_url = "https://ophalen.example.nl"\n'
                   f'tls_cert = "{tmp_path / "keys" / "tls" / "server.pem"}"\n'
                   f'tls_key = "{web_key}"\n')
    code, _, err = run(capsys, "--config", str(cfg), "check-config")
    assert code == 1
    assert f"{web_key}: readable by others" in err

