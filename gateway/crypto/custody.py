"""Custody of the secret material under `keys/` (docs/protocol.md §14).

Takes the config; produces the gateway key's passphrase (or None where the config explicitly
allows an unprotected key) and the list of custody problems: a directory under `keys/` that
others may enter, a file they may read, a passphrase policy that is not met. A link is judged
by what it points to, for everything under `keys/`, the TLS key, the gpg home and the
passphrase file alike. `check-config` reports them and `serve` refuses to start while there are
any.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from gateway.core.config import Config

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


def _walk(path: Path, seen: set[Path]) -> Iterator[Path]:
    """`path` and everything under it, following links: a secret behind a link is judged by
    the file it points to (issue 11: a world-readable target passed where the same file
    without the link was refused). Each real directory is entered once, so a loop of links
    ends."""
    yield path
    try:
        real = path.resolve()
        entered = path.is_dir() and real not in seen
    except (OSError, RuntimeError):
        return
    if entered:
        seen.add(real)
        try:
            children = sorted(path.iterdir())
        except OSError:
            return
        for child in children:
            yield from _walk(child, seen)


def _secret_paths(config: Config) -> list[Path]:
    """Every path that holds secret material: keys/ and all in it (a fresh checkout's keys/
    with only its README holds nothing yet), the gpg home, the secrets, the TLS keys (of the
    listener and of the pickup page) and the passphrase file, wherever the config puts them."""
    root = config.keys.dir
    inside = [p for p in root.rglob("*") if p.name != "README.md"] if root.exists() else []
    starts = [root] if inside else []
    for path in (config.gnupg_home, config.secrets_dir, config.smtp.tls_key,
                 config.web.tls_key, _passphrase_source(config)):
        if path is not None and (path.is_symlink() or path.exists()):
            starts.append(path)
    seen: set[Path] = set()
    paths: dict[Path, None] = {}
    for start in starts:
        for path in _walk(start, seen):
            paths.setdefault(path)
    return list(paths)


def _problem(path: Path) -> str | None:
    """What is wrong with one path (a link judged by its target), or None."""
    try:
        info = path.lstat()
    except OSError:
        return None  # a gpg-agent socket that went away while we looked
    where = f"{path}"
    if stat.S_ISLNK(info.st_mode):
        target = os.readlink(path)
        try:
            info = path.stat()
        except OSError:
            return (f"{path}: a link to {target}, which does not exist: put the file itself "
                    "in its place")
        where = f"{path} (a link to {target})"
    if stat.S_ISSOCK(info.st_mode) or path.name == "README.md":
        return None
    if stat.S_ISDIR(info.st_mode) and _open_to_others(info.st_mode):
        return (f"{where}: directory is open to others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}, must be 0700)")
    if stat.S_ISREG(info.st_mode) and _open_to_others(info.st_mode):
        return (f"{where}: readable by others "
                f"(mode {stat.S_IMODE(info.st_mode):04o}, must be 0600)")
    return None


def custody_problems(config: Config) -> list[str]:
    """Everything under keys/ (and the TLS key and passphrase file) that others could read or
    enter, links followed to what they point to."""
    problems = [problem for path in _secret_paths(config) if (problem := _problem(path))]
    try:
        read_passphrase(config)
    except CustodyError as exc:
        problems.append(f"keys: {exc}")
    return problems
