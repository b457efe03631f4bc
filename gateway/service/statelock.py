"""One daemon per state: an exclusive lock on `<storage path>.lock`, held for the daemon's life.

Takes the database path; produces a held `StateLock` (the file then names the holder's pid) or
`StateLocked`, one line naming the lock file and, when it says, the pid of the daemon that holds
it. `holder` tells the command line whether a daemon serves this state now, without taking the
lock from it. The lock is `flock(2)`: the kernel lets go of it when the process ends, however it
ends, so a `kill -9` leaves no stale lock behind, and the file itself stays (removing it would
let a second daemon lock a new file while the first still holds the old one). The other verbs do
not take it: SQLite serialises their writes with the daemon's (`gateway.store.sqlite.connection`).

Before this lock the bound port was the only guard, and a second `serve` on the same state with
another `[smtp] listen` started beside the first, taking over the leases of the attempts the
first one still had open (issue 12).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path


class StateLocked(Exception):
    """Another daemon serves this state, or the lock file cannot be made; one line."""


def lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def _pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip())
    return None


class StateLock:
    """The held lock; `release` (or the end of the process) lets go of it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    @classmethod
    def acquire(cls, database: Path, wait_seconds: float = 2.0) -> StateLock:
        """Take the lock or say who has it. A `status` looking at the lock holds it shared for
        an instant: a daemon starting in that instant tries again for `wait_seconds`."""
        path = lock_path(database)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateLocked(f"cannot create the lock file {path}: {exc.strerror} (the state "
                              "directory must be writable by the service user)") from None
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    pid = _pid(fd)
                    os.close(fd)
                    who = f"another daemon (pid {pid})" if pid else "another daemon"
                    raise StateLocked(f"{who} already serves this state: it holds {path} "
                                      "(stop it first; the other verbs work beside it)") from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = -1


def holder(database: Path) -> int | None:
    """The pid of the daemon holding this state's lock (0 when it did not write one), or None
    when no daemon holds it. Read-only: works for a user who may read but not write the state."""
    path = lock_path(database)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
