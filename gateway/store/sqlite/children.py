"""Children in SQLite: one row per child of a signal, its personal data only as a vault blob.

Takes state changes; produces `ChildRecord`s.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

from gateway.core.records import ChildRecord, SealAttempt, iso
from gateway.store.sqlite.base import Session, placeholders


def child_of(row: sqlite3.Row) -> ChildRecord:
    return ChildRecord(row["ref"], int(row["n"]), row["state"], row["school"], row["reason"],
                       row["blob"], row["pseudonym"], row["notice_id"], row["updated_at"])


def attempt_of(row: sqlite3.Row) -> SealAttempt:
    return SealAttempt(row["ref"], row["school"], int(row["failures"]),
                       row["next_attempt_at"], row["lease_until"], row["lease_owner"])


class SqliteChildren:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def all(self, state: str | None = None,
                   ref: str | None = None) -> list[ChildRecord]:
        sql, params = "SELECT * FROM children WHERE 1=1", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if ref is not None:
            sql += " AND ref = ?"
            params.append(ref)
        return [child_of(r) for r in self._s.all(sql + " ORDER BY ref, n", params)]

    async def of(self, refs: Sequence[str]) -> list[ChildRecord]:
        found: list[ChildRecord] = []
        for start in range(0, len(refs), 500):  # well within SQLite's limit on parameters
            chunk = list(refs[start:start + 500])
            sql = f"SELECT * FROM children WHERE ref IN ({placeholders(chunk)})"  # noqa: S608
            found += [child_of(r) for r in self._s.all(sql, chunk)]
        return sorted(found, key=lambda child: (child.ref, child.n))

    async def get(self, ref: str, n: int) -> ChildRecord | None:
        row = self._s.one("SELECT * FROM children WHERE ref = ? AND n = ?", (ref, n))
        return child_of(row) if row else None

    async def held_before(self, cutoff: dt.datetime) -> list[ChildRecord]:
        return [child_of(r) for r in self._s.all(
            "SELECT * FROM children WHERE state = 'held' AND updated_at < ? ORDER BY ref, n",
            (iso(cutoff),))]

    async def count_by_state(self) -> dict[str, int]:
        return {str(r["state"]): int(r["n"]) for r in self._s.all(
            "SELECT state, count(*) AS n FROM children GROUP BY state")}

    async def insert(self, ref: str, n: int, state: str, school: str | None,
                     reason: str | None, blob: bytes, pseudonym: str,
                     at: dt.datetime) -> None:
        self._s.run(
            "INSERT INTO children (ref, n, state, school, reason, blob, pseudonym, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref, n, state, school, reason, blob, pseudonym, iso(at)))

    async def set_state(self, ref: str, n: int, state: str, at: dt.datetime, *,
                        school: str | None = None, reason: str | None = None,
                        erase: bool = False, expect: Sequence[str] = ()) -> bool:
        sql = ("UPDATE children SET state = ?, updated_at = ?, school = coalesce(?, school),"
               " reason = ?")
        if erase:
            sql += ", blob = NULL"
        sql += " WHERE ref = ? AND n = ?"
        params: list[Any] = [state, iso(at), school, reason, ref, n]
        if expect:
            sql += f" AND state IN ({placeholders(expect)})"
            params += list(expect)
        return self._s.run(sql, params).rowcount == 1

    async def seal_leases(self) -> list[SealAttempt]:
        return [attempt_of(r) for r in self._s.all(
            "SELECT * FROM seal_attempts WHERE lease_until IS NOT NULL ORDER BY ref, school")]

    async def claim_seal(self, ref: str, school: str, lease_until: dt.datetime,
                         now: dt.datetime) -> SealAttempt | None:
        self._s.run("INSERT OR IGNORE INTO seal_attempts (ref, school, failures,"
                    " next_attempt_at) VALUES (?, ?, 0, ?)", (ref, school, iso(now)))
        cur = self._s.run(
            "UPDATE seal_attempts SET lease_until = ?, lease_owner = ? WHERE ref = ?"
            " AND school = ? AND next_attempt_at <= ? AND (lease_until IS NULL"
            " OR lease_until < ?)", (iso(lease_until), self._s.node, ref, school, iso(now),
                                     iso(now)))
        if cur.rowcount != 1:
            return None
        row = self._s.one("SELECT * FROM seal_attempts WHERE ref = ? AND school = ?",
                          (ref, school))
        return attempt_of(row) if row else None

    async def seal_failed(self, ref: str, school: str, next_at: dt.datetime) -> int:
        self._s.run("UPDATE seal_attempts SET failures = failures + 1, lease_until = NULL,"
                    " lease_owner = NULL, next_attempt_at = ? WHERE ref = ? AND school = ?",
                    (iso(next_at), ref, school))
        row = self._s.one("SELECT failures FROM seal_attempts WHERE ref = ? AND school = ?",
                          (ref, school))
        return int(row["failures"]) if row else 0

    async def seal_finished(self, ref: str, school: str) -> None:
        self._s.run("DELETE FROM seal_attempts WHERE ref = ? AND school = ?", (ref, school))
