"""Custody of the secret material under `keys/` (SPEC §6).

Takes the config; produces the gateway key's passphrase (or None where the config explicitly
allows an unprotected key) and the list of custody problems: a directory under `keys/` that
others may enter, a file they may read, a passphrase policy that is not met. `check-config`
reports them and `serve` refuses to start while there are any.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gateway.config import Config

CREDENTIAL_NAME = "gateway-passphrase"  # systemd: LoadCredential=gateway-passphrase:/etc/...


class CustodyError(Exception):
    """The secret material is not kept as it must be; the message says what to fix."""


def _passphrase_source(config: Config) -> Path | None:
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL_NAME).is_file():
        return Path(credentials) / CREDENTIAL_NAME
    return config.keys.passphrase_file


def read_passphrase(config: Config) -> str | None:
    """The gateway key's passphrase, or None when the config allows a key without one."""
    source = _passphrase_source(config)
    if source is None:
        if config.keys.allow_no_passphrase:
            return None
        raise CustodyError("the gateway key needs a passphrase: set [keys] passphrase_file, pass "
                           f"${{CREDENTIALS_DIRECTORY}}/{CREDENTIAL_NAME}, or set "
                           "[keys] allow_no_passphrase = true for development")
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise CustodyError(f"cannot read the passphrase file {source}: {exc.strerror}") from None
    passphrase = text.rstrip("\r\n")
    if not passphrase:
        # Never "": python-gnupg would make gpg take the first line of the data instead.
        raise CustodyError(f"the passphrase file {source} is empty")
    return passphrase


def _open_to_others(mode: int) -> bool:
    return bool(stat.S_IMODE(mode) & 0o077)


def custody_problems(config: Config) -> list[str]:
    """Everything under keys/ (and the passphrase file) that others could read or enter."""
    problems = []
    root = config.keys.dir
    inside = [p for p in root.rglob("*") if p.name != "README.md"] if root.exists() else []
    # A fresh checkout's keys/ holds only its README: nothing to protect until `keys init`,
    # which makes the directory 0700 before it puts anything in it.
    paths = [root, *inside] if inside else []
    source = _passphrase_source(config)
    if source is not None and source.exists():
        paths.append(source)
    for path in paths:
        try:
            info = path.lstat()
        except OSError:
            continue  # a gpg-agent socket that went away while we looked
        if stat.S_ISSOCK(info.st_mode) or stat.S_ISLNK(info.st_mode) or path.name == "README.md":
            continue
        if stat.S_ISDIR(info.st_mode) and _open_to_others(info.st_mode):
            problems.append(f"{path}: directory is open to others "
                            f"(mode {stat.S_IMODE(info.st_mode):04o}, must be 0700)")
        elif stat.S_ISREG(info.st_mode) and _open_to_others(info.st_mode):
            problems.append(f"{path}: readable by others "
                            f"(mode {stat.S_IMODE(info.st_mode):04o}, must be 0600)")
    try:
        read_passphrase(config)
    except CustodyError as exc:
        problems.append(f"keys: {exc}")
    return problems
