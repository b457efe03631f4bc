"""AUTH lockouts in SQLite, shared by the daemon's throttle with the command line.

Takes lockouts the throttle decided and lifts from `senders unlock`; produces
`LockoutRecord`s and the (scope, subject) pairs the daemon is to let go of.
"""

from __future__ import annotations

import datetime as dt

from gateway.core.records import LockoutRecord, iso
from gateway.store.sqlite.base import Session


class SqliteLockouts:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def running(self, now: dt.datetime) -> list[LockoutRecord]:
        return [LockoutRecord(r["scope"], r["subject"], r["login"], r["since"], r["until"])
                for r in self._s.all(
            "SELECT scope, subject, login, since, until FROM auth_lockouts WHERE lifted_at IS"
            " NULL AND until > ? ORDER BY login, scope, subject", (iso(now),))]

    async def any_lifted(self) -> bool:
        return self._s.one("SELECT 1 FROM auth_lockouts WHERE lifted_at IS NOT NULL"
                           " LIMIT 1") is not None

    async def record(self, scope: str, subject: str, login: str, since: dt.datetime,
                     until: dt.datetime) -> None:
        self._s.run("DELETE FROM auth_lockouts WHERE until <= ?", (iso(since),))
        self._s.run(
            "INSERT INTO auth_lockouts (scope, subject, login, since, until) VALUES (?, ?, ?, ?,"
            " ?) ON CONFLICT (scope, subject, login) DO UPDATE SET since = excluded.since,"
            " until = excluded.until, lifted_at = NULL, lifted_by = NULL",
            (scope, subject, login, iso(since), iso(until)))

    async def lift(self, login: str, at: dt.datetime, by: str) -> list[LockoutRecord]:
        """The lifted lockouts as (scope, subject, until); `since` is not read."""
        rows = self._s.all(
            "SELECT DISTINCT scope, subject, until FROM auth_lockouts WHERE login = ?"
            " AND lifted_at IS NULL AND until > ? ORDER BY scope, subject", (login, iso(at)))
        self._s.many(
            "UPDATE auth_lockouts SET lifted_at = ?, lifted_by = ? WHERE scope = ?"
            " AND subject = ? AND lifted_at IS NULL",
            [(iso(at), by, r["scope"], r["subject"]) for r in rows])
        return [LockoutRecord(r["scope"], r["subject"], login, "", r["until"]) for r in rows]

    async def take_lifted(self) -> list[tuple[str, str]]:
        rows = self._s.all("SELECT DISTINCT scope, subject FROM auth_lockouts"
                           " WHERE lifted_at IS NOT NULL")
        # Rows of the same address or login written after the lift go too: it is lifted whole.
        self._s.many("DELETE FROM auth_lockouts WHERE scope = ? AND subject = ?",
                     [(r["scope"], r["subject"]) for r in rows])
        return [(str(r["scope"]), str(r["subject"])) for r in rows]

    async def clear(self) -> None:
        self._s.run("DELETE FROM auth_lockouts")
