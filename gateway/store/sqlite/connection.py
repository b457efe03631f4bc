"""The SQLite store: one file, one connection, one thread that runs every statement.

Takes the database path and the receipt key (`gateway.store.chainkey.open_store` gives the
deployment's); produces a `gateway.store.api.Store`. The file is in WAL mode with
`synchronous=FULL`, so a committed transaction survives power loss: the receive stage answers
250 only after `write` returns. Writers take `BEGIN IMMEDIATE`, so the daemon and the command
line (two processes on one file) can both write; SQLite serialises them and `busy_timeout`
waits. Reads outside a transaction run in autocommit, each on its own. SQLite's errors come out
as `StoreError` (with SQLite's message); opening fails with it, or `OSError`, when the file
cannot be made, read or upgraded.

Why a thread of our own: a transaction must run whole in the database's thread in one hop. Under
load every hop waits its turn on the busy event loop, and a transaction held across a dozen hops
kept every other one waiting (`make bench` measured tens of milliseconds per transaction). The
stdlib `sqlite3` connection lives in one dedicated worker (`ThreadPoolExecutor(max_workers=1)`),
which also serialises this process's transactions: no lock on top is needed.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

from gateway.core.records import ProtectedRef
from gateway.store.api import (
    ChildReads,
    Children,
    Directory,
    DirectoryReads,
    LockoutReads,
    Lockouts,
    Meta,
    MetaReads,
    NoticeReads,
    Notices,
    ReceiptReads,
    Receipts,
    Register,
    RegisterReads,
    SignalReads,
    Signals,
    StoreError,
    Tx,
    node_id,
)
from gateway.store.chain import CHAIN_SCHEME
from gateway.store.outbox import Outbox, OutboxReads
from gateway.store.pickups import PickupReads, Pickups
from gateway.store.sqlite import migrate
from gateway.store.sqlite.base import Session
from gateway.store.sqlite.children import SqliteChildren
from gateway.store.sqlite.directory import SqliteDirectory
from gateway.store.sqlite.lockouts import SqliteLockouts
from gateway.store.sqlite.meta import SqliteMeta
from gateway.store.sqlite.notices import SqliteNotices
from gateway.store.sqlite.outbox import SqliteOutbox
from gateway.store.sqlite.pickups import SqlitePickups
from gateway.store.sqlite.receipts import SqliteReceipts
from gateway.store.sqlite.register import SqliteRegister
from gateway.store.sqlite.signals import SqliteSignals

T = TypeVar("T")


class SqliteTx:
    """Every repository on one transaction's connection."""

    def __init__(self, s: Session) -> None:
        self.signals: Signals = SqliteSignals(s)
        self.children: Children = SqliteChildren(s)
        self.notices: Notices = SqliteNotices(s)
        self.outbox: Outbox = SqliteOutbox(s)
        self.status_mails: Outbox = self.outbox
        self.receipts: Receipts = SqliteReceipts(s)
        self.directory: Directory = SqliteDirectory(s)
        self.register: Register = SqliteRegister(s)
        self.lockouts: Lockouts = SqliteLockouts(s)
        self.meta: Meta = SqliteMeta(s)
        self.pickups: Pickups = SqlitePickups(s)


def run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, without an event loop: the repositories' methods
    are coroutines (the interface allows a database that needs the loop) that here never
    wait, so a body that awaits only them runs to its end in one `send`."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    coroutine.close()
    raise RuntimeError("a Store.write body awaited something other than its transaction")


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        migrate.upgrade(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class _Reads:
    """One repository's reads (those of `protocol`), each run on its own in the thread."""

    def __init__(self, store: SqliteStore, make: Callable[[Session], object],
                 protocol: type) -> None:
        self._store, self._make, self._protocol = store, make, protocol

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if name.startswith("_") or not hasattr(self._protocol, name):
            raise AttributeError(name)

        async def read(*args: Any, **kwargs: Any) -> Any:
            def run(conn: sqlite3.Connection) -> Any:
                repo = self._make(self._store.session(conn))
                return run_to_end(getattr(repo, name)(*args, **kwargs))
            return await self._store.in_thread(run)
        return read


class SqliteStore:
    """The `Store` on one SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path, chain_key: bytes,
                 executor: ThreadPoolExecutor, node: str) -> None:
        self._conn, self._executor = conn, executor
        self.path, self.chain_key, self.node = path, chain_key, node
        self.signals = cast(SignalReads, _Reads(self, SqliteSignals, SignalReads))
        self.children = cast(ChildReads, _Reads(self, SqliteChildren, ChildReads))
        self.notices = cast(NoticeReads, _Reads(self, SqliteNotices, NoticeReads))
        self.outbox = cast(OutboxReads, _Reads(self, SqliteOutbox, OutboxReads))
        self.status_mails = self.outbox
        self.receipts = cast(ReceiptReads, _Reads(self, SqliteReceipts, ReceiptReads))
        self.directory = cast(DirectoryReads, _Reads(self, SqliteDirectory, DirectoryReads))
        self.register = cast(RegisterReads, _Reads(self, SqliteRegister, RegisterReads))
        self.lockouts = cast(LockoutReads, _Reads(self, SqliteLockouts, LockoutReads))
        self.meta = cast(MetaReads, _Reads(self, SqliteMeta, MetaReads))
        self.pickups = cast(PickupReads, _Reads(self, SqlitePickups, PickupReads))

    @classmethod
    async def open(cls, path: Path, chain_key: bytes, node: str | None = None) -> SqliteStore:
        """Open (creating or upgrading) the database; receipts are linked under `chain_key`."""
        if len(chain_key) < 32:
            raise ValueError("the receipt key must be at least 32 bytes")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(executor, _connect, path)
            await asyncio.to_thread(path.chmod, 0o600)
        except sqlite3.DatabaseError as exc:
            executor.shutdown(wait=False)
            raise StoreError(str(exc)) from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(conn, path, chain_key, executor, node or node_id())

    def session(self, conn: sqlite3.Connection) -> Session:
        return Session(conn, self.chain_key, self.node)

    async def in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(connection)` in the database thread: one hop. For this package (and tests)."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn,
                                                                    self._conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(str(exc)) from exc

    def _transaction(self, conn: sqlite3.Connection, fn: Callable[[Session], T]) -> T:
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(self.session(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def write(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """`body` as one write transaction run whole inside the database thread: BEGIN
        IMMEDIATE, body, COMMIT; rolled back on any exception, which then propagates."""
        def run(conn: sqlite3.Connection) -> T:
            return self._transaction(conn, lambda s: run_to_end(body(SqliteTx(s))))
        return await self.in_thread(run)

    async def close(self) -> None:
        try:
            await self.in_thread(sqlite3.Connection.close)
        finally:
            self._executor.shutdown(wait=False)

    async def chain_keyed(self) -> bool:
        return await self.meta.get("receipt_chain") == CHAIN_SCHEME

    async def key_chain(self) -> list[str]:
        return await self.in_thread(lambda conn: self._transaction(conn, migrate.key_chain))

    async def protect_sender_refs(self, protect: Callable[[str, str, bool], ProtectedRef]) -> int:
        """Move case references kept in clear (`migrate.protect_sender_refs`), then rewrite
        the file so that none is left in a free page (`migrate.wipe_free_pages`)."""
        moved = 0
        if await self.in_thread(migrate.has_clear_sender_refs):
            moved = await self.in_thread(lambda conn: self._transaction(
                conn, lambda s: migrate.protect_sender_refs(s, protect)))
        await self.in_thread(migrate.wipe_free_pages)
        return moved
