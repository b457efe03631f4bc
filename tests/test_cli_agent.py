"""The command line lets go of the gateway's key: a verb that made gpg start an agent in the
gateway's GnuPG home stops it when it ends, so no unlocked key stays cached after an
administrator's command; a running daemon's agent is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_cli

from gateway.core.config import load_config
from gateway.crypto.keyadmin import stop_agent
from gateway.service.statelock import StateLock


def agents_of(home: Path) -> list[int]:
    """The pids of the gpg-agents running for `home` (read from /proc)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"gpg-agent") and str(home).encode() in argv:
            found.append(int(proc.name))
    return found


def test_keys_rotate_leaves_no_agent_running(capsys: pytest.CaptureFixture[str],
                                             cfg: str) -> None:
    """`keys rotate` makes and signs with a new secret key, which starts an agent; when the
    command ends, no agent runs in the gateway's GnuPG home any more."""
    home = load_config(Path(cfg)).gnupg_home
    code, _, err = run_cli(capsys, "--config", cfg, "keys", "rotate")
    assert code == 0, err
    assert agents_of(home) == []


def test_a_running_daemons_agent_is_left_alone(capsys: pytest.CaptureFixture[str],
                                               cfg: str) -> None:
    """While a daemon holds the state's lock, the agent belongs to it: a verb leaves it
    running (the daemon stops it when it ends)."""
    config = load_config(Path(cfg))
    lock = StateLock.acquire(config.storage.path)
    try:
        code, _, err = run_cli(capsys, "--config", cfg, "keys", "rotate")
        assert code == 0, err
        assert agents_of(config.gnupg_home) != []
    finally:
        lock.release()
        stop_agent(config.gnupg_home)
