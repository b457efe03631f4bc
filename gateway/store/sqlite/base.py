"""What every SQLite repository shares: the connection of the transaction, the statements.

Takes a `sqlite3.Connection` of the store's database thread; produces rows for the repository
modules, which turn them into `gateway.core.records`. Nothing here suspends: every method of a
repository runs inside the store's one database thread (`gateway.store.sqlite.connection`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Session:
    """One transaction's (or one read's) connection, with what the repositories need."""

    conn: sqlite3.Connection
    chain_key: bytes
    node: str
    # The receipt chain's head once read: later receipts of the same transaction follow it
    # without asking SQLite again (nobody else can write while BEGIN IMMEDIATE holds the lock).
    head: tuple[int, str] | None = field(default=None)

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        found: sqlite3.Row | None = self.conn.execute(sql, params).fetchone()
        return found

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return list(self.conn.execute(sql, params).fetchall())

    def run(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, params)

    def lease(self, table: Literal["notices", "outbox"], item_id: int, until: str,
              now: str) -> bool:
        """Lease a queued item of a delivery queue to this node until `until`, counting the
        attempt, unless a live lease is on it: whether it was leased. The one claim rule of
        both queues (`table` is one of two names, never a value from outside)."""
        cur = self.run(
            f"UPDATE {table} SET lease_until = ?, lease_owner = ?, attempts = attempts + 1"  # noqa: S608
            " WHERE id = ? AND state = 'queued' AND (lease_until IS NULL OR lease_until < ?)",
            (until, self.node, item_id, now))
        return cur.rowcount == 1

    def bump_directory_version(self) -> None:
        """Tell a running daemon that senders, schools, keys or the register changed."""
        self.run("INSERT INTO meta (key, value) VALUES ('directory_version', '1') ON CONFLICT(key)"
                 " DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")

    def set_meta(self, key: str, value: str) -> None:
        self.run("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                 " DO UPDATE SET value = excluded.value", (key, value))


def placeholders(values: Sequence[Any]) -> str:
    """`?,?,…` for an IN list: only placeholders are interpolated, values go as parameters."""
    return ",".join("?" * len(values))
