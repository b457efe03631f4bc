"""The outbox in SQLite: mails that are not notices (status mails, alerts, enrolment mails),
leased as notices.

One row per mail, `kind` "status", "alert" or "enrol" (`topic` its school). A status mail has
`child` 0 for a signal's own mail, n for the follow-up about child n; UNIQUE(ref, child) makes
each exist once, whoever queues it (an alert or an enrolment mail has no ref and no child:
NULLs never collide). `message` is the mail as sealed (encrypted and signed; an alert in plain
text only when no [alerts] key is set; an enrolment mail sealed with the vault); `pending`
(JSON, on a status mail) lists the children it reported as with leerplicht whose follow-up has
yet to be queued. Produces `OutboxRecord`s and `PendingFollowUp`s.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Sequence

from gateway.core.records import OutboxRecord, PendingFollowUp, iso
from gateway.store.sqlite.base import Session


def _pending(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(n) for n in json.loads(text)) if text is not None else None


def outbox_of(row: sqlite3.Row) -> OutboxRecord:
    child = row["child"]
    return OutboxRecord(
        id=int(row["id"]), kind=row["kind"], topic=row["topic"], ref=row["ref"],
        child=None if child is None else int(child), sender=row["sender"],
        recipient=row["recipient"], fingerprint=row["fingerprint"],
        message_id=row["message_id"], message=bytes(row["message"]), state=row["state"],
        attempts=int(row["attempts"]), crashes=int(row["crashes"]),
        next_attempt_at=row["next_attempt_at"], lease_until=row["lease_until"],
        lease_owner=row["lease_owner"], created_at=row["created_at"],
        last_reply=row["last_reply"], pending=_pending(row["pending"]))


class SqliteOutbox:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def due(self, now: dt.datetime, limit: int = 50, kind: str = "status") -> list[int]:
        return [int(r["id"]) for r in self._s.all(
            "SELECT id FROM outbox WHERE kind = ? AND state = 'queued' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at, id LIMIT ?",
            (kind, iso(now), iso(now), limit))]

    async def pending_follow_ups(self) -> list[PendingFollowUp]:
        rows = self._s.all(
            "SELECT m.id, m.ref, m.sender, m.state, m.pending,"
            " coalesce(d.status_mail, 0) AS status_mail FROM outbox m"
            " LEFT JOIN senders d ON d.name = m.sender WHERE m.kind = 'status'"
            " AND m.pending IS NOT NULL AND m.state != 'queued' ORDER BY m.id")
        return [PendingFollowUp(int(r["id"]), r["ref"], r["sender"], r["state"],
                                _pending(r["pending"]) or (), bool(r["status_mail"]))
                for r in rows]

    async def all(self, ref: str | None = None) -> list[OutboxRecord]:
        if ref is not None:
            rows = self._s.all("SELECT * FROM outbox WHERE kind = 'status' AND ref = ?"
                               " ORDER BY id", (ref,))
        else:
            rows = self._s.all("SELECT * FROM outbox WHERE kind = 'status' ORDER BY id")
        return [outbox_of(r) for r in rows]

    async def alerts(self) -> list[OutboxRecord]:
        return [outbox_of(r) for r in
                self._s.all("SELECT * FROM outbox WHERE kind = 'alert' ORDER BY id")]

    async def leased(self, kind: str, node: str) -> list[OutboxRecord]:
        return [outbox_of(r) for r in self._s.all(
            "SELECT * FROM outbox WHERE kind = ? AND state = 'queued' AND lease_owner = ?"
            " ORDER BY id", (kind, node))]

    async def insert(self, ref: str, child: int, sender: str, recipient: str, fingerprint: str,
                     message_id: str, message: bytes, at: dt.datetime,
                     pending: Sequence[int] = ()) -> int | None:
        cur = self._s.run(
            "INSERT INTO outbox (kind, ref, child, sender, recipient, fingerprint, message_id,"
            " message, state, next_attempt_at, created_at, pending)"
            " VALUES ('status', ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)"
            " ON CONFLICT(ref, child) DO NOTHING",
            (ref, child, sender, recipient, fingerprint, message_id, message, iso(at), iso(at),
             json.dumps(list(pending)) if pending else None))
        return int(cur.lastrowid or 0) if cur.rowcount == 1 else None

    async def insert_alert(self, topic: str, recipient: str, fingerprint: str, message_id: str,
                           message: bytes, at: dt.datetime) -> int:
        cur = self._s.run(
            "INSERT INTO outbox (kind, topic, recipient, fingerprint, message_id, message, state,"
            " next_attempt_at, created_at) VALUES ('alert', ?, ?, ?, ?, ?, 'queued', ?, ?)",
            (topic, recipient, fingerprint, message_id, message, iso(at), iso(at)))
        return int(cur.lastrowid or 0)

    async def insert_enrolment(self, school: str, recipient: str, message_id: str,
                               message: bytes, at: dt.datetime) -> int:
        cur = self._s.run(
            "INSERT INTO outbox (kind, topic, recipient, fingerprint, message_id, message, state,"
            " next_attempt_at, created_at) VALUES ('enrol', ?, ?, '', ?, ?, 'queued', ?, ?)",
            (school, recipient, message_id, message, iso(at), iso(at)))
        return int(cur.lastrowid or 0)

    async def supersede_enrolments(self, school: str, recipient: str | None, reply: str) -> int:
        cur = self._s.run(
            "UPDATE outbox SET state = 'superseded', last_reply = ?, message = X'',"
            " lease_until = NULL, lease_owner = NULL WHERE kind = 'enrol' AND topic = ?"
            " AND (? IS NULL OR recipient = ?) AND state = 'queued'",
            (reply, school, recipient, recipient))
        return cur.rowcount

    async def claim(self, mail_id: int, lease_until: dt.datetime,
                    now: dt.datetime) -> OutboxRecord | None:
        if not self._s.lease("outbox", mail_id, iso(lease_until), iso(now)):
            return None
        row = self._s.one("SELECT * FROM outbox WHERE id = ?", (mail_id,))
        return outbox_of(row) if row else None

    async def finish(self, mail_id: int, state: str, reply: str, erase: bool) -> bool:
        cur = self._s.run(
            "UPDATE outbox SET state = ?, last_reply = ?, lease_until = NULL, lease_owner = NULL,"
            " message = CASE WHEN ? THEN X'' ELSE message END WHERE id = ? AND state = 'queued'",
            (state, reply, erase, mail_id))
        return cur.rowcount == 1

    async def defer(self, mail_id: int, reply: str, next_at: dt.datetime) -> bool:
        cur = self._s.run("UPDATE outbox SET last_reply = ?, next_attempt_at = ?,"
                          " lease_until = NULL, lease_owner = NULL"
                          " WHERE id = ? AND state = 'queued'", (reply, iso(next_at), mail_id))
        return cur.rowcount == 1

    async def record_crash(self, mail_id: int, next_at: dt.datetime, park: bool) -> bool:
        cur = self._s.run(
            "UPDATE outbox SET crashes = crashes + 1, next_attempt_at = ?, lease_until = NULL,"
            " lease_owner = NULL, state = CASE WHEN ? THEN 'parked' ELSE state END"
            " WHERE id = ? AND state = 'queued'", (iso(next_at), park, mail_id))
        return cur.rowcount == 1

    async def settle_pending(self, mail_id: int, numbers: Sequence[int]) -> None:
        row = self._s.one("SELECT pending FROM outbox WHERE id = ?", (mail_id,))
        if row is None or row["pending"] is None:
            return
        left = [n for n in json.loads(row["pending"]) if n not in numbers]
        self._s.run("UPDATE outbox SET pending = ? WHERE id = ?",
                    (json.dumps(left) if left else None, mail_id))
