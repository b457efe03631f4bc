"""Notices in SQLite: the delivery queue, with leases that name their node.

Takes sealed notices and the outcome of each attempt as the runner decided it; produces
`NoticeRecord`s. A notice is claimed with a lease (`lease_until`, `lease_owner`) and the attempt
counted in the same statement, so that two workers never send one notice at once.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence

from gateway.core.records import Lease, NoticeRecord, Unacknowledged, iso
from gateway.store.api import Conflict
from gateway.store.sqlite.base import Session, placeholders


def notice_of(row: sqlite3.Row) -> NoticeRecord:
    return NoticeRecord(
        id=int(row["id"]), ref=row["ref"], school=row["school"], message_id=row["message_id"],
        recipients=tuple(json.loads(row["recipients"])),
        fingerprints=tuple(json.loads(row["fingerprints"])), parcel=bytes(row["parcel"]),
        state=row["state"], attempts=int(row["attempts"]),
        next_attempt_at=row["next_attempt_at"], lease_until=row["lease_until"],
        lease_owner=row["lease_owner"], created_at=row["created_at"],
        last_reply=row["last_reply"], crashes=int(row["crashes"]),
        ack_digest=row["ack_digest"], acked_at=row["acked_at"],
        requeued_at=row["requeued_at"], last_reason=row["last_reason"],
        channel=row["channel"])


class SqliteNotices:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def get(self, notice_id: int) -> NoticeRecord | None:
        row = self._s.one("SELECT * FROM notices WHERE id = ?", (notice_id,))
        return notice_of(row) if row else None

    async def all(self, states: Sequence[str] = ()) -> list[NoticeRecord]:
        sql = "SELECT * FROM notices"
        if states:
            sql += f" WHERE state IN ({placeholders(states)})"
        return [notice_of(r) for r in self._s.all(sql + " ORDER BY id", list(states))]

    async def due(self, now: dt.datetime, limit: int = 50) -> list[int]:
        return [int(r["id"]) for r in self._s.all(
            "SELECT id FROM notices WHERE state = 'queued' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?",
            (iso(now), iso(now), limit))]

    async def ack_pending(self, ack_digest: str) -> bool:
        return self._s.one("SELECT 1 FROM notices WHERE ack_digest = ? AND acked_at IS NULL",
                           (ack_digest,)) is not None

    async def unacknowledged(self) -> list[Unacknowledged]:
        return [Unacknowledged(int(r["id"]), r["ref"], r["school"], r["accepted_at"])
                for r in self._s.all(
            "SELECT n.id, n.ref, n.school, s.accepted_at FROM notices n JOIN signals s"
            " ON s.ref = n.ref WHERE n.state = 'delivered' AND n.ack_digest IS NOT NULL"
            " AND n.acked_at IS NULL")]

    async def oldest_queued(self) -> str | None:
        row = self._s.one("SELECT min(created_at) AS t FROM notices WHERE state = 'queued'")
        return str(row["t"]) if row and row["t"] else None

    async def count_by_state(self) -> dict[str, int]:
        return {str(r["state"]): int(r["n"]) for r in self._s.all(
            "SELECT state, count(*) AS n FROM notices GROUP BY state")}

    async def queued_for_reasons(self, reasons: Sequence[str]) -> list[int]:
        sql = ("SELECT id FROM notices WHERE state = 'queued' AND last_reason IN"  # noqa: S608
               f" ({placeholders(reasons)}) ORDER BY id")
        return [int(r["id"]) for r in self._s.all(sql, list(reasons))]

    async def insert(self, ref: str, school: str, message_id: str, recipients: Sequence[str],
                     fingerprints: Sequence[str], parcel: bytes, children: Sequence[int],
                     at: dt.datetime, ack_digest: str | None = None,
                     channel: str = "openpgp") -> int:
        cur = self._s.run(
            "INSERT INTO notices (ref, school, message_id, recipients, fingerprints, parcel,"
            " state, next_attempt_at, created_at, ack_digest, channel)"
            " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?)",
            (ref, school, message_id, json.dumps(list(recipients)),
             json.dumps(list(fingerprints)), parcel, iso(at), iso(at), ack_digest, channel))
        notice_id = int(cur.lastrowid or 0)
        for n in children:
            cur = self._s.run(
                "UPDATE children SET state = 'sealed', notice_id = ?, updated_at = ?"
                " WHERE ref = ? AND n = ? AND state = 'routed'", (notice_id, iso(at), ref, n))
            if cur.rowcount != 1:
                # Someone else sealed (or an administrator moved) this child meanwhile: the
                # transaction is rolled back so that no child is ever in two notices.
                raise Conflict(f"child {ref}-{n} is no longer waiting to be sealed")
        return notice_id

    async def claim(self, notice_id: int, lease_until: dt.datetime,
                    now: dt.datetime) -> NoticeRecord | None:
        if not self._s.lease("notices", notice_id, iso(lease_until), iso(now)):
            return None
        return await self.get(notice_id)

    async def leased(self) -> list[Lease]:
        return [Lease(int(r["id"]), r["lease_owner"], r["lease_until"]) for r in self._s.all(
            "SELECT id, lease_owner, lease_until FROM notices WHERE state = 'queued'"
            " AND lease_until IS NOT NULL ORDER BY id")]

    async def finish(self, notice_id: int, state: str, reply: str, at: dt.datetime,
                     child_state: str, erase: bool) -> None:
        self._s.run("UPDATE notices SET state = ?, last_reply = ?, lease_until = NULL,"
                    " lease_owner = NULL, parcel = CASE WHEN ? THEN X'' ELSE parcel END"
                    " WHERE id = ?", (state, reply, erase, notice_id))
        self._s.run("UPDATE children SET state = ?, updated_at = ?,"
                    " blob = CASE WHEN ? THEN NULL ELSE blob END WHERE notice_id = ?",
                    (child_state, iso(at), erase, notice_id))

    async def acknowledge(self, ack_digest: str, at: dt.datetime) -> NoticeRecord | None:
        row = self._s.one("SELECT * FROM notices WHERE ack_digest = ? AND acked_at IS NULL",
                          (ack_digest,))
        if row is not None:
            self._s.run("UPDATE notices SET acked_at = ?, ack_digest = NULL WHERE id = ?",
                        (iso(at), row["id"]))
        return notice_of(row) if row else None

    async def record_crash(self, notice_id: int, next_at: dt.datetime) -> int:
        self._s.run("UPDATE notices SET crashes = crashes + 1, lease_until = NULL,"
                    " lease_owner = NULL, next_attempt_at = ? WHERE id = ?",
                    (iso(next_at), notice_id))
        row = self._s.one("SELECT crashes FROM notices WHERE id = ?", (notice_id,))
        return int(row["crashes"]) if row else 0

    async def park(self, notice_id: int) -> bool:
        return self._s.run("UPDATE notices SET state = 'parked' WHERE id = ?"
                           " AND state = 'queued'", (notice_id,)).rowcount == 1

    async def supersede(self, notice_id: int, reason: str, at: dt.datetime) -> list[int] | None:
        cur = self._s.run(
            "UPDATE notices SET state = 'superseded', last_reply = ?, lease_until = NULL,"
            " lease_owner = NULL, parcel = X'', ack_digest = NULL WHERE id = ?"
            " AND state = 'queued'", (reason, notice_id))
        if cur.rowcount != 1:
            return None
        numbers = [int(r["n"]) for r in self._s.all(
            "SELECT n FROM children WHERE notice_id = ? AND state = 'sealed' ORDER BY n",
            (notice_id,))]
        self._s.run("UPDATE children SET state = 'routed', notice_id = NULL, updated_at = ?"
                    " WHERE notice_id = ? AND state = 'sealed'", (iso(at), notice_id))
        return numbers

    async def defer(self, notice_id: int, reply: str, next_at: dt.datetime) -> None:
        self._s.run("UPDATE notices SET last_reply = ?, next_attempt_at = ?, lease_until = NULL,"
                    " lease_owner = NULL WHERE id = ?", (reply, iso(next_at), notice_id))

    async def note_reason(self, notice_id: int, reason: str) -> None:
        self._s.run("UPDATE notices SET last_reason = ? WHERE id = ?", (reason, notice_id))

    async def requeue(self, notice_id: int, at: dt.datetime) -> NoticeRecord | None:
        before = await self.get(notice_id)
        if before is None or not before.parcel:
            return before
        if before.state in ("failed", "parked"):
            self._s.run(
                "UPDATE notices SET state = 'queued', attempts = 0, crashes = 0,"
                " next_attempt_at = ?, lease_until = NULL, lease_owner = NULL, requeued_at = ?"
                " WHERE id = ?", (iso(at), iso(at), notice_id))
            self._s.run("UPDATE children SET state = 'sealed', updated_at = ?"
                        " WHERE notice_id = ? AND state = 'failed'", (iso(at), notice_id))
        elif before.state == "queued":
            self._s.run("UPDATE notices SET next_attempt_at = ? WHERE id = ? AND state = 'queued'",
                        (iso(at), notice_id))
        return before
