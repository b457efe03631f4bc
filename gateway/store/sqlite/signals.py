"""Signals in SQLite: one row per accepted signal, its case reference only as digest and seal.

Takes what intake accepted; produces `SignalRecord`s and the views the status mail and the
escalation read (`UnreportedSignal`, `OpenSignal`).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence

from gateway.core.records import OpenSignal, ProtectedRef, SignalRecord, UnreportedSignal, iso
from gateway.store.sqlite.base import Session


def signal_of(row: sqlite3.Row) -> SignalRecord:
    return SignalRecord(row["ref"], row["sender"], row["message_id"], row["content_digest"],
                        row["accepted_at"], int(row["children"]), bool(row["reported"]),
                        row["sender_ref_digest"], row["sender_ref_blob"])


class SqliteSignals:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def get(self, ref: str) -> SignalRecord | None:
        row = self._s.one("SELECT * FROM signals WHERE ref = ?", (ref,))
        return signal_of(row) if row else None

    async def finished_unreported(self) -> list[UnreportedSignal]:
        rows = self._s.all(
            "SELECT s.ref, s.sender, s.sender_ref_blob, coalesce(d.status_mail, 0) AS status_mail"
            " FROM signals s LEFT JOIN senders d ON d.name = s.sender WHERE s.reported = 0"
            " AND NOT EXISTS (SELECT 1 FROM children c WHERE c.ref = s.ref AND c.state IN"
            " ('routed', 'sealed')) ORDER BY s.accepted_at")
        return [UnreportedSignal(r["ref"], r["sender"], r["sender_ref_blob"],
                                 bool(r["status_mail"])) for r in rows]

    async def open(self) -> list[OpenSignal]:
        rows = self._s.all(
            "SELECT s.ref, s.accepted_at, group_concat(DISTINCT c.state) AS states,"
            " group_concat(DISTINCT c.school) AS schools FROM signals s JOIN children c"
            " ON c.ref = s.ref WHERE c.state IN ('routed', 'held', 'sealed') GROUP BY s.ref")
        return [OpenSignal(r["ref"], r["accepted_at"], r["states"], r["schools"]) for r in rows]

    async def find_duplicate(self, sender: str, message_id: str | None, digest: str,
                             since: dt.datetime) -> tuple[str, bool] | None:
        # One indexed look-up per way of being the same signal: with both ORed in one WHERE,
        # SQLite walked every signal of the sender on each intake.
        since_text = iso(since)
        row = self._s.one(
            "SELECT ref, accepted_at, 1 AS same FROM signals WHERE sender = ?"
            " AND content_digest = ? AND accepted_at >= ? UNION ALL SELECT ref, accepted_at,"
            " content_digest = ? FROM signals WHERE sender = ? AND message_id = ?"
            " AND accepted_at >= ? ORDER BY same DESC, accepted_at LIMIT 1",
            (sender, digest, since_text, digest, sender, message_id, since_text))
        return (str(row["ref"]), bool(row["same"])) if row else None

    async def find_sender_ref(self, sender: str, sender_ref_digest: str) -> str | None:
        row = self._s.one("SELECT ref FROM signals WHERE sender = ? AND sender_ref_digest = ?"
                          " ORDER BY accepted_at LIMIT 1", (sender, sender_ref_digest))
        return str(row["ref"]) if row else None

    async def insert(self, ref: str, sender: str, message_id: str | None,
                     sender_ref: ProtectedRef | None, digest: str, children: int,
                     at: dt.datetime) -> None:
        self._s.run(
            "INSERT INTO signals (ref, sender, message_id, sender_ref_digest, sender_ref_blob,"
            " content_digest, accepted_at, children) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref, sender, message_id, sender_ref.digest if sender_ref else None,
             sender_ref.blob if sender_ref else None, digest, iso(at), children))

    async def mark_reported(self, refs: Sequence[str]) -> None:
        self._s.many("UPDATE signals SET reported = 1, sender_ref_blob = NULL WHERE ref = ?",
                     [(ref,) for ref in refs])

    async def purge_finished_before(self, cutoff: dt.datetime) -> int:
        s = self._s
        old = [r["ref"] for r in s.all(
            "SELECT ref FROM signals WHERE accepted_at < ? AND NOT EXISTS (SELECT 1 FROM"
            " children c WHERE c.ref = signals.ref AND c.state IN ('routed', 'held', 'sealed'))",
            (iso(cutoff),))]
        for ref in old:
            # A pickup notice's row goes first: it refers to its notice.
            s.run("DELETE FROM pickups WHERE notice_id IN (SELECT id FROM notices WHERE ref = ?)",
                  (ref,))
            s.run("DELETE FROM notices WHERE ref = ?", (ref,))
            s.run("DELETE FROM outbox WHERE kind = 'status' AND ref = ?", (ref,))
            s.run("DELETE FROM seal_attempts WHERE ref = ?", (ref,))
            s.run("DELETE FROM children WHERE ref = ?", (ref,))
            s.run("DELETE FROM signals WHERE ref = ?", (ref,))
        # Alerts belong to no signal: a finished one goes after the same time.
        s.run("DELETE FROM outbox WHERE kind = 'alert' AND state != 'queued' AND created_at < ?",
              (iso(cutoff),))
        return len(old)
