"""Receipts in SQLite: the append-only, keyed chain (`gateway.store.chain`).

Takes events with their detail; produces `Receipt`s. UPDATE on the table is refused by a
trigger (`schema.APPEND_ONLY_TRIGGER`); a purge deletes from the oldest on and records where
the chain goes on (`meta.chain_anchor`), so that it never restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from typing import Any

from gateway.core.records import Anchor, Receipt, iso
from gateway.store.chain import GENESIS, detail_text, receipt_hash
from gateway.store.sqlite.base import Session


def receipt_of(row: sqlite3.Row) -> Receipt:
    return Receipt(row["seq"], row["at"], row["event"], row["ref"], row["school"],
                   json.loads(row["detail"]), row["pseudonym"], row["prev"], row["hash"])


class SqliteReceipts:
    def __init__(self, s: Session) -> None:
        self._s = s

    async def append(self, event: str, *, at: dt.datetime, ref: str | None = None,
                     school: str | None = None, pseudonym: str | None = None,
                     **detail: Any) -> Receipt:
        s = self._s
        last = s.head
        if last is None:
            row = s.one("SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1")
            last = (int(row["seq"]), str(row["hash"])) if row is not None else None
        if last is not None:
            seq, prev = last[0] + 1, last[1]
        else:
            # Every receipt purged: the chain goes on from the anchor, never restarts.
            anchor = s.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
            anchor_seq, prev = json.loads(anchor["value"]) if anchor else (0, GENESIS)
            seq = anchor_seq + 1
        at_text = iso(at)
        text = detail_text(detail)
        digest = receipt_hash(s.chain_key, prev, seq, at_text, event, ref, school, text,
                              pseudonym)
        s.run("INSERT INTO receipts (seq, at, event, ref, school, detail, pseudonym, prev, hash)"
              " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
              (seq, at_text, event, ref, school, text, pseudonym, prev, digest))
        s.head = (seq, digest)
        return Receipt(seq, at_text, event, ref, school, detail, pseudonym, prev, digest)

    async def purge_before(self, cutoff: dt.datetime) -> tuple[int, Anchor | None]:
        s = self._s
        s.head = None
        row = s.one("SELECT seq, hash FROM receipts WHERE at < ? ORDER BY seq DESC LIMIT 1",
                    (iso(cutoff),))
        if row is None:
            return 0, None
        anchor = Anchor(int(row["seq"]), str(row["hash"]))
        cur = s.run("DELETE FROM receipts WHERE seq <= ?", (anchor.seq,))
        s.set_meta("chain_anchor", json.dumps([anchor.seq, anchor.hash]))
        return cur.rowcount, anchor

    async def all(self, since: dt.datetime | None = None,
                   ref: str | None = None) -> list[Receipt]:
        sql, params = "SELECT * FROM receipts WHERE 1=1", []
        if since is not None:
            sql += " AND at >= ?"
            params.append(iso(since))
        if ref is not None:
            sql += " AND (ref = ? OR ref LIKE ?)"
            params += [ref, ref + "-%"]
        return [receipt_of(row) for row in self._s.all(sql + " ORDER BY seq", params)]

    async def by_pseudonym(self, pseudonym: str) -> list[Receipt]:
        rows = self._s.all("SELECT * FROM receipts WHERE pseudonym = ? ORDER BY seq",
                           (pseudonym,))
        return [receipt_of(row) for row in rows]

    async def last(self, event: str) -> Receipt | None:
        row = self._s.one("SELECT * FROM receipts WHERE event = ? ORDER BY seq DESC LIMIT 1",
                          (event,))
        return receipt_of(row) if row else None

    async def count_before(self, cutoff: dt.datetime) -> int:
        row = self._s.one("SELECT count(*) AS n FROM receipts WHERE at < ?", (iso(cutoff),))
        return int(row["n"]) if row else 0

    async def anchor(self) -> Anchor | None:
        row = self._s.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
        if row is None:
            return None
        seq, digest = json.loads(row["value"])
        return Anchor(int(seq), str(digest))

    async def escalations(self) -> dict[str, set[str]]:
        """One query, whatever the number of signals waiting."""
        rows = self._s.all(
            "SELECT ref, detail FROM receipts WHERE event = 'escalated' AND ref IN ("
            " SELECT ref FROM children WHERE state IN ('routed', 'held', 'sealed')"
            " UNION SELECT ref FROM notices WHERE state = 'delivered'"
            " AND ack_digest IS NOT NULL AND acked_at IS NULL)")
        done: dict[str, set[str]] = {}
        for row in rows:
            done.setdefault(str(row["ref"]), set()).add(str(json.loads(row["detail"])["what"]))
        return done
