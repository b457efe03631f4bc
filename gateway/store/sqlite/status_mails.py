"""Status mails in SQLite: the queue of mails to senders, with the same leases as notices.

One row per mail: `child` 0 for a signal's status mail, n for the follow-up about child n;
UNIQUE(ref, child) makes each one exist once, whoever queues it. `message` is the mail as sealed
(encrypted to the sender's key, signed); `pending` (JSON, on a status mail) lists the children
it reported as with leerplicht whose follow-up has yet to be queued. Produces
`StatusMailRecord`s and `PendingFollowUp`s.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence

from gateway.core.records import PendingFollowUp, StatusMailRecord, iso
from gateway.store.sqlite.base import Session


def _pending(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(n) for n in json.loads(text)) if text is not None else None


def status_mail_of(row: sqlite3.Row) -> StatusMailRecord:
    return StatusMailRecord(
        id=int(row["id"]), ref=row["ref"], child=int(row["child"]), sender=row["sender"],
        recipient=row["recipient"], fingerprint=row["fingerprint"],
        message_id=row["message_id"], message=bytes(row["message"]), state=row["state"],
        attempts=int(row["attempts"]), next_attempt_at=row["next_attempt_at"],
        lease_until=row["lease_until"], lease_owner=row["lease_owner"],
        created_at=row["created_at"], last_reply=row["last_reply"],
        pending=_pending(row["pending"]))


class SqliteStatusMails:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def due(self, now: dt.datetime, limit: int = 50) -> list[int]:
        return [int(r["id"]) for r in self._s.all(
            "SELECT id FROM status_mails WHERE state = 'queued' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at, id LIMIT ?",
            (iso(now), iso(now), limit))]

    async def pending_follow_ups(self) -> list[PendingFollowUp]:
        rows = self._s.all(
            "SELECT m.id, m.ref, m.sender, m.state, m.pending,"
            " coalesce(d.status_mail, 0) AS status_mail FROM status_mails m"
            " LEFT JOIN senders d ON d.name = m.sender"
            " WHERE m.pending IS NOT NULL AND m.state != 'queued' ORDER BY m.id")
        return [PendingFollowUp(int(r["id"]), r["ref"], r["sender"], r["state"],
                                _pending(r["pending"]) or (), bool(r["status_mail"]))
                for r in rows]

    async def all(self, ref: str | None = None) -> list[StatusMailRecord]:
        if ref is not None:
            rows = self._s.all("SELECT * FROM status_mails WHERE ref = ? ORDER BY id", (ref,))
        else:
            rows = self._s.all("SELECT * FROM status_mails ORDER BY id")
        return [status_mail_of(r) for r in rows]

    async def insert(self, ref: str, child: int, sender: str, recipient: str, fingerprint: str,
                     message_id: str, message: bytes, at: dt.datetime,
                     pending: Sequence[int] = ()) -> int | None:
        cur = self._s.run(
            "INSERT INTO status_mails (ref, child, sender, recipient, fingerprint, message_id,"
            " message, state, next_attempt_at, created_at, pending)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT(ref, child) DO NOTHING",
            (ref, child, sender, recipient, fingerprint, message_id, message, iso(at), iso(at),
             json.dumps(list(pending)) if pending else None))
        return int(cur.lastrowid or 0) if cur.rowcount == 1 else None

    async def claim(self, mail_id: int, lease_until: dt.datetime,
                    now: dt.datetime) -> StatusMailRecord | None:
        cur = self._s.run(
            "UPDATE status_mails SET lease_until = ?, lease_owner = ?, attempts = attempts + 1"
            " WHERE id = ? AND state = 'queued' AND (lease_until IS NULL OR lease_until < ?)",
            (iso(lease_until), self._s.node, mail_id, iso(now)))
        if cur.rowcount != 1:
            return None
        row = self._s.one("SELECT * FROM status_mails WHERE id = ?", (mail_id,))
        return status_mail_of(row) if row else None

    async def finish(self, mail_id: int, state: str, reply: str, erase: bool) -> None:
        self._s.run("UPDATE status_mails SET state = ?, last_reply = ?, lease_until = NULL,"
                    " lease_owner = NULL, message = CASE WHEN ? THEN X'' ELSE message END"
                    " WHERE id = ?", (state, reply, erase, mail_id))

    async def defer(self, mail_id: int, reply: str, next_at: dt.datetime) -> None:
        self._s.run("UPDATE status_mails SET last_reply = ?, next_attempt_at = ?,"
                    " lease_until = NULL, lease_owner = NULL WHERE id = ?",
                    (reply, iso(next_at), mail_id))

    async def settle_pending(self, mail_id: int, numbers: Sequence[int]) -> None:
        row = self._s.one("SELECT pending FROM status_mails WHERE id = ?", (mail_id,))
        if row is None or row["pending"] is None:
            return
        left = [n for n in json.loads(row["pending"]) if n not in numbers]
        self._s.run("UPDATE status_mails SET pending = ? WHERE id = ?",
                    (json.dumps(left) if left else None, mail_id))
