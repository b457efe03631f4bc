"""What can be checked before the daemon starts, and who answers on the listener.

Takes the config; produces one-line problems (`serve` refuses to start on the first, exit 1;
`check-config` lists them all) and notes (said, not refused): the state directory creatable
and writable, the database a SQLite database if it exists, the key material readable (the TLS
pairs of `[smtp]` and `[web]` too), the listen addresses (`[smtp]`, `[metrics]`, `[web]`) free
to bind, or held by this state's own running daemon (`statelock`).
`listener` answers `status`: whether what answers on `[smtp] listen` is this gateway.

Each check looks and leaves nothing behind (a probe file in the state directory is removed at
once). They run as whoever runs the command: as root, a directory without write permission is
still writable, so the probe is an actual write, which is what the daemon will do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.core.config import Config
from gateway.core.validate import HostPort
from gateway.crypto.vault import PSEUDONYM_KEY, VAULT_KEY
from gateway.service import statelock
from gateway.store.chainkey import RECEIPTS_KEY

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite 3 database
IDENT = "hwc-gateway"  # the SMTP greeting's last word (ingress.listener.start_listener)


@dataclass
class Findings:
    problems: list[str]
    notes: list[str]


def _writable(directory: Path) -> str | None:
    """Why nothing can be created in `directory`, or None when something can."""
    try:
        fd, name = tempfile.mkstemp(dir=directory, prefix=".hwc-gateway-probe-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def storage_problem(database: Path) -> str | None:
    """The one thing that keeps the daemon from opening its database here, or None."""
    directory = database.parent
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return (f"cannot create the state directory {directory}: {existing} is a file, not a "
                "directory (fix [storage] path)")
    if existing != directory:
        why = _writable(existing)
        return None if why is None else (
            f"cannot create the state directory {directory}: {existing} is not writable "
            f"({why}); create {directory} for the service user")
    why = _writable(directory)
    if why is not None:
        return (f"the state directory {directory} is not writable ({why}): the service user "
                "must be able to create files in it")
    if database.is_dir():
        return f"[storage] path {database} is a directory, not a database file"
    if not database.exists():
        return None  # the daemon creates it
    try:
        with database.open("r+b") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"cannot open the database {database}: {exc.strerror}"
    if header and header != SQLITE_HEADER:
        return (f"[storage] path {database} is not a SQLite database: restore the database "
                "from the backup, or point [storage] path at it")
    return None


def _unreadable(path: Path) -> OSError | None:
    """Why `path` cannot be read by this user (as the daemon will read it), or None."""
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return exc
    return None


def web_tls_files(config: Config) -> dict[Path, str]:
    """`[web] tls_cert`/`tls_key` with their key names, when the daemon serves HTTPS itself.
    No `keys init` makes them: the administrator brings the page's certificate."""
    web = config.web
    if not web.enabled or web.tls_cert is None or web.tls_key is None:
        return {}
    return {web.tls_cert: "[web] tls_cert", web.tls_key: "[web] tls_key"}


def key_findings(config: Config) -> Findings:
    """Key material unreadable (a problem), or not made yet (a note: `keys init` makes it)."""
    found = Findings([], [])
    made_by_init = [config.smtp.tls_cert, config.smtp.tls_key,
                    config.secrets_dir / VAULT_KEY, config.secrets_dir / PSEUDONYM_KEY,
                    config.secrets_dir / RECEIPTS_KEY]
    others = {config.smtp.client_ca_file: "[smtp] client_ca_file"} \
        if config.smtp.client_ca_file else {}
    others |= web_tls_files(config)
    missing = []
    for path in [*made_by_init, *others]:
        exc = _unreadable(path)
        if isinstance(exc, FileNotFoundError):
            if path in others:
                found.problems.append(f"{path}: no such file ({others[path]})")
            else:
                missing.append(str(path))
        elif exc is not None:
            found.problems.append(f"cannot read {path}: {exc.strerror}")
    home = config.gnupg_home
    if home.exists():
        if not os.access(home, os.R_OK | os.W_OK | os.X_OK):
            found.problems.append(f"the GnuPG home {home} is not readable and writable by "
                                  "this user")
    else:
        missing.append(str(home))
    if missing:
        found.notes.append(f"not made yet: {', '.join(missing)} (run `hwc-gateway keys init`)")
    return found


def bind_error(address: HostPort) -> OSError | None:
    """Why `address` cannot be bound now (bound as the daemon binds: SO_REUSEADDR), or None."""
    try:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return exc
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return exc
    return None


def listen_error(address: HostPort, what: str, exc: OSError) -> str:
    """One line for a listener that could not bind."""
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot listen on {address}: the port is in use by another program (stop it, "
                f"or set {what} to a free port)")
    if exc.errno == errno.EACCES:
        return (f"cannot listen on {address}: permission denied (a port below 1024 needs "
                "CAP_NET_BIND_SERVICE, which the systemd unit grants)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {address}: the address is not one of this machine's ({what})"
    return f"cannot listen on {address}: {exc.strerror or exc} ({what})"


def listen_findings(config: Config) -> Findings:
    """The listen addresses free, or held by this state's running daemon (a note)."""
    found = Findings([], [])
    addresses = [(config.smtp.listen, "[smtp] listen")]
    if config.metrics.listen is not None:
        addresses.append((config.metrics.listen, "[metrics] listen"))
    if config.web.listen is not None:
        addresses.append((config.web.listen, "[web] listen"))
    for address, what in addresses:
        error = bind_error(address)
        if error is None:
            continue
        pid = statelock.holder(config.storage.path) if error.errno == errno.EADDRINUSE else None
        if pid is not None:
            found.notes.append(f"{address} ({what}) is in use, by the running gateway of this "
                               f"state (pid {pid or 'unknown'}) as its lock says")
        elif error.errno == errno.EACCES:
            # The unit grants the capability that the user running check-config may lack.
            found.notes.append(listen_error(address, what, error))
        else:
            found.problems.append(listen_error(address, what, error))
    return found


def start_problem(config: Config) -> str | None:
    """What keeps `serve` from starting before it opens anything: the state (as
    `storage_problem`), or a TLS certificate or key of `[smtp]` or `[web]` it cannot read.
    Loading an unreadable pair fails with an errno that used to be reported as the listen
    address ("cannot listen on ...: No such file or directory")."""
    storage = storage_problem(config.storage.path)
    if storage is not None:
        return storage
    files = {config.smtp.tls_cert: "[smtp] tls_cert", config.smtp.tls_key: "[smtp] tls_key",
             **web_tls_files(config)}
    for path, what in files.items():
        exc = _unreadable(path)
        if exc is not None:
            made = isinstance(exc, FileNotFoundError) and what.startswith("[smtp]")
            hint = " (run `hwc-gateway keys init`)" if made else ""
            return f"cannot read {path} ({what}): {exc.strerror or exc}{hint}"
    return None


def check(config: Config) -> Findings:
    """Everything `check-config` looks at beyond the file itself and the custody of keys/."""
    found = Findings([], [])
    storage = storage_problem(config.storage.path)
    if storage is not None:
        found.problems.append(storage)
    for part in (key_findings(config), listen_findings(config)):
        found.problems += part.problems
        found.notes += part.notes
    return found


@dataclass(frozen=True)
class Listener:
    """What answers on `[smtp] listen`: `ours` only when it is this state's daemon."""

    ours: bool
    problem: str | None  # for `status`: why the listener does not count as up


def _greeting(address: HostPort, timeout: float) -> str | None:
    """The first line something on `address` says, or None when nothing answers."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout) as sock:
            data = b""
            with contextlib.suppress(OSError):
                while b"\n" not in data and len(data) < 512:
                    chunk = sock.recv(512)
                    if not chunk:
                        break
                    data += chunk
                sock.sendall(b"QUIT\r\n")
    except OSError:
        return None
    return data.split(b"\n", 1)[0].decode("ascii", "replace").strip()[:120]


def listener(config: Config, timeout: float = 2.0) -> Listener:
    """Whether this gateway answers on its listener: a daemon must hold this state's lock and
    the greeting name the configured hostname and the gateway's ident (or be one of its 421s).
    Any program on the port used to count as the gateway (issue 12)."""
    address = config.smtp.listen
    pid = statelock.holder(config.storage.path)
    greeting = _greeting(address, timeout)
    if greeting is None:
        if pid is not None:
            return Listener(False, f"the gateway (pid {pid or 'unknown'}) runs but {address} "
                                   "does not answer")
        return Listener(False, None)
    words = greeting.split()
    ident = words[:1] == ["220"] and words[-1:] == [IDENT]
    named = ident and words[1:2] == [config.smtp.hostname]
    busy = words[:1] == ["421"]  # our own daemon turning sessions away (limits, stopping)
    if pid is not None and (named or busy):
        return Listener(True, None)
    if ident and pid is None:
        return Listener(False, f"{address} is answered by a gateway, but no daemon holds this "
                               f"state's lock {statelock.lock_path(config.storage.path)}: it "
                               "serves other state")
    if ident:
        return Listener(False, f"{address} is answered by a gateway calling itself "
                               f"{words[1] if len(words) > 2 else '?'!r}, not [smtp] hostname "
                               f"{config.smtp.hostname!r}: restart the daemon if the config "
                               "changed")
    return Listener(False, f"{address} is answered by another program, not this gateway "
                           f"(it says {greeting!r})")
