"""The store: the only module that runs SQL.

Takes plain values (strings, ints, bytes: personal data only ever as vault blobs or keyed
digests); produces rows as small dataclasses or dicts. One SQLite file in WAL mode with
`synchronous=FULL`, so a committed transaction survives power loss: the receive stage answers
250 only after `commit` returns (docs/architecture.md invariant 1). Writers `BEGIN IMMEDIATE`: the
daemon and the command line can both write; SQLite serialises them and `busy_timeout` waits.

Receipts are appended in the same transaction as the state change they record, chained by an
HMAC-SHA256 under the receipt key (`keys/secrets/receipts.key`, see `store.chainkey`) over the
previous link and the canonical entry: whoever can write the database but not read that key
cannot rebuild the chain after changing an entry. UPDATE on receipts is refused by a trigger,
and `chain_problems` finds an edited, inserted or deleted row.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

import aiosqlite

SCHEMA_VERSION = 1
T = TypeVar("T")
GENESIS = "0" * 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS senders (
    name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sender_keys (
    sender TEXT NOT NULL REFERENCES senders(name) ON DELETE CASCADE,
    fingerprint TEXT NOT NULL, added_at TEXT NOT NULL, PRIMARY KEY (sender, fingerprint));
CREATE TABLE IF NOT EXISTS sender_addresses (
    sender TEXT NOT NULL REFERENCES senders(name) ON DELETE CASCADE,
    address TEXT NOT NULL, PRIMARY KEY (sender, address));
CREATE TABLE IF NOT EXISTS sender_certs (
    sender TEXT NOT NULL REFERENCES senders(name) ON DELETE CASCADE,
    sha256 TEXT NOT NULL, PRIMARY KEY (sender, sha256));
CREATE TABLE IF NOT EXISTS schools (
    code TEXT PRIMARY KEY, name TEXT NOT NULL, place TEXT NOT NULL DEFAULT '', route TEXT);
CREATE TABLE IF NOT EXISTS contacts (
    school TEXT NOT NULL REFERENCES schools(code) ON DELETE CASCADE,
    email TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (school, email));
CREATE TABLE IF NOT EXISTS pupils (
    id INTEGER PRIMARY KEY, bsn_index TEXT, birthdate_index TEXT NOT NULL,
    school TEXT NOT NULL, blob BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS pupils_bsn ON pupils(bsn_index);
CREATE INDEX IF NOT EXISTS pupils_birthdate ON pupils(birthdate_index);
CREATE TABLE IF NOT EXISTS gateway_keys (
    fingerprint TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL,
    decrypt_until TEXT);
CREATE TABLE IF NOT EXISTS signals (
    ref TEXT PRIMARY KEY, sender TEXT NOT NULL, message_id TEXT,
    content_digest TEXT NOT NULL, accepted_at TEXT NOT NULL, children INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS signals_message_id ON signals(sender, message_id);
CREATE INDEX IF NOT EXISTS signals_digest ON signals(sender, content_digest);
CREATE TABLE IF NOT EXISTS children (
    ref TEXT NOT NULL REFERENCES signals(ref), n INTEGER NOT NULL, state TEXT NOT NULL,
    school TEXT, reason TEXT, blob BLOB, pseudonym TEXT, notice_id INTEGER,
    updated_at TEXT NOT NULL, PRIMARY KEY (ref, n));
CREATE INDEX IF NOT EXISTS children_state ON children(state);
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY, ref TEXT NOT NULL, school TEXT NOT NULL, message_id TEXT NOT NULL,
    recipients TEXT NOT NULL, fingerprints TEXT NOT NULL, message BLOB NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL,
    lease_until TEXT, created_at TEXT NOT NULL, last_reply TEXT);
CREATE INDEX IF NOT EXISTS notices_due ON notices(state, next_attempt_at);
CREATE TABLE IF NOT EXISTS status_mails (
    id INTEGER PRIMARY KEY, ref TEXT NOT NULL, child INTEGER NOT NULL, sender TEXT NOT NULL,
    recipient TEXT NOT NULL, fingerprint TEXT NOT NULL, message_id TEXT NOT NULL,
    message BLOB NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL, lease_until TEXT, created_at TEXT NOT NULL, last_reply TEXT,
    pending TEXT, UNIQUE (ref, child));
CREATE INDEX IF NOT EXISTS status_mails_due ON status_mails(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS status_mails_pending ON status_mails(id) WHERE pending IS NOT NULL;
CREATE TABLE IF NOT EXISTS receipts (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, event TEXT NOT NULL, ref TEXT, school TEXT,
    detail TEXT NOT NULL, pseudonym TEXT, prev TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS receipts_ref ON receipts(ref);
CREATE INDEX IF NOT EXISTS receipts_pseudonym ON receipts(pseudonym);
CREATE TABLE IF NOT EXISTS auth_lockouts (
    scope TEXT NOT NULL, subject TEXT NOT NULL, login TEXT NOT NULL, since TEXT NOT NULL,
    until TEXT NOT NULL, lifted_at TEXT, lifted_by TEXT, PRIMARY KEY (scope, subject, login));
"""
APPEND_ONLY_TRIGGER = """CREATE TRIGGER IF NOT EXISTS receipts_append_only BEFORE UPDATE ON receipts
    BEGIN SELECT RAISE(ABORT, 'receipts are append-only'); END"""
CHAIN_SCHEME = "hmac-sha256"  # meta `receipt_chain`: the receipts are linked under the key

# Columns added after the first release: (table, column, definition, backfill). Added when
# missing, so a database made by an older gateway is brought up to date at start-up; the backfill
# (or "") then gives existing rows the value the new column stands for.
COLUMNS = [
    ("notices", "crashes", "INTEGER NOT NULL DEFAULT 0", ""),
    ("notices", "ack_digest", "TEXT", ""),
    ("notices", "acked_at", "TEXT", ""),
    ("senders", "status_mail", "INTEGER NOT NULL DEFAULT 1", ""),
    # Set once the status mail was dealt with, so the runner looks only at signals still open
    # instead of every signal ever accepted on each step.
    ("signals", "reported", "INTEGER NOT NULL DEFAULT 0",
     "UPDATE signals SET reported = 1 WHERE ref IN (SELECT ref FROM receipts WHERE event IN"
     " ('status_sent', 'status_not_sent'))"),
    # The sender's case reference (a Veilig Thuis case number points at a family) is kept only
    # as a keyed digest, to see it come back, and sealed for the status mail that quotes it.
    # Older databases had it in clear in `sender_ref`: `Store.protect_sender_refs` moves it.
    ("signals", "sender_ref_digest", "TEXT", ""),
    ("signals", "sender_ref_blob", "BLOB", ""),
    # When `queue retry` queued a failed notice again: its give-up time counts from there.
    ("notices", "requeued_at", "TEXT", ""),
    # The fixed reason key of the last attempt's outcome (gateway.delivery.deliver.REASONS).
    ("notices", "last_reason", "TEXT", ""),
]
# Indexes on columns of COLUMNS: made after those exist.
LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS signals_unreported ON signals(accepted_at) WHERE reported = 0;
CREATE INDEX IF NOT EXISTS signals_sender_ref_digest ON signals(sender, sender_ref_digest);
CREATE INDEX IF NOT EXISTS notices_ack ON notices(ack_digest) WHERE ack_digest IS NOT NULL;
"""
# notices_ack: anyone may name an ack address without AUTH; without the index each unknown one
# scanned every notice (62 ms at 30,000 notices, issue 11). Partial: a used token is NULL.
MAX_CRASHES = 5  # attempts that ended in a crash before a notice is parked for a person


def iso(t: dt.datetime) -> str:
    """Times are stored as UTC ISO strings of fixed width, so text order is time order."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Receipt:
    seq: int
    at: str
    event: str
    ref: str | None
    school: str | None
    detail: dict[str, Any]
    pseudonym: str | None
    prev: str
    hash: str


def _canonical(prev: str, seq: int, at: str, event: str, ref: str | None, school: str | None,
               detail: str, pseudonym: str | None) -> bytes:
    return json.dumps([prev, seq, at, event, ref, school, detail, pseudonym],
                      ensure_ascii=True, separators=(",", ":")).encode()


def receipt_hash(key: bytes, prev: str, seq: int, at: str, event: str, ref: str | None,
                 school: str | None, detail: str, pseudonym: str | None) -> str:
    """The chain link: HMAC-SHA256 under the receipt key over the previous link and the
    canonical JSON of the entry. A plain hash could be recomputed by anyone who can write the
    database (an attack review changed receipt 8 of 204, rehashed the rest, and verification
    passed); the key lives with the other secrets, not in the database."""
    canonical = _canonical(prev, seq, at, event, ref, school, detail, pseudonym)
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()


def legacy_receipt_hash(prev: str, seq: int, at: str, event: str, ref: str | None,
                        school: str | None, detail: str, pseudonym: str | None) -> str:
    """The link of chains written before receipts were keyed: plain SHA-256. Only checked once,
    when such a chain is re-linked under the key (`Store.key_chain`)."""
    canonical = _canonical(prev, seq, at, event, ref, school, detail, pseudonym)
    return hashlib.sha256(canonical).hexdigest()


def _detail_text(detail: dict[str, Any]) -> str:
    return json.dumps(detail, ensure_ascii=True, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Anchor:
    """Where the chain starts after old receipts were purged: the last purged receipt."""

    seq: int
    hash: str


def chain_problems(rows: Iterable[Receipt], key: bytes, anchor: Anchor | None = None,
                   link: Callable[..., str] | None = None) -> list[str]:
    """Every break in the chain: a changed entry, a missing or an inserted one. `link` is
    the keyed `receipt_hash` unless given (the legacy check at re-linking)."""
    def keyed(*fields: Any) -> str:
        return receipt_hash(key, *fields)

    check = link or keyed
    problems = []
    prev, expected_seq = (anchor.hash, anchor.seq + 1) if anchor else (GENESIS, None)
    for r in rows:
        if expected_seq is not None and r.seq != expected_seq:
            problems.append(f"receipt {expected_seq}: missing (next is {r.seq})")
        if r.prev != prev:
            problems.append(f"receipt {r.seq}: does not follow the previous receipt")
        if not hmac.compare_digest(check(r.prev, r.seq, r.at, r.event, r.ref, r.school,
                                         _detail_text(r.detail), r.pseudonym), r.hash):
            problems.append(f"receipt {r.seq}: content does not match its hash")
        prev, expected_seq = r.hash, r.seq + 1
    return problems


@dataclass(frozen=True)
class ProtectedRef:
    """A sender's case reference as stored: its keyed digest (to see it come back) and its
    vault blob bound to the signal (for the status mail). Never the reference itself."""

    digest: str
    blob: bytes | None


class Conflict(Exception):
    """A row changed under a transaction; it was rolled back and may be retried."""


class Changed(Protocol):
    """What a write statement tells: sqlite3's cursor and aiosqlite's alike."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...


class Tx:
    """A write transaction: the connection plus the receipt appender that shares it.

    Its statements go through aiosqlite, one hop to the database thread each
    (`Store.transaction`), or straight to the connection from inside that thread
    (`Store.write`), where none of them suspends."""

    def __init__(self, db: aiosqlite.Connection | sqlite3.Connection, chain_key: bytes) -> None:
        self.db = db
        self._chain_key = chain_key
        # The chain's head once read: later receipts of the same transaction follow it without
        # asking SQLite again (nobody else can write while BEGIN IMMEDIATE holds the lock).
        self._head: tuple[int, str] | None = None

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Changed:
        if isinstance(self.db, sqlite3.Connection):
            return self.db.execute(sql, params)
        return await self.db.execute(sql, params)

    async def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        if isinstance(self.db, sqlite3.Connection):
            self.db.executemany(sql, params)
        else:
            await self.db.executemany(sql, params)

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        if isinstance(self.db, sqlite3.Connection):
            found: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
            return found
        async with self.db.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if isinstance(self.db, sqlite3.Connection):
            return list(self.db.execute(sql, params).fetchall())
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def receipt(self, event: str, *, at: dt.datetime, ref: str | None = None,
                      school: str | None = None, pseudonym: str | None = None,
                      **detail: Any) -> Receipt:
        last = self._head
        if last is None:
            row = await self.one("SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1")
            last = (int(row["seq"]), str(row["hash"])) if row is not None else None
        if last is not None:
            seq, prev = last[0] + 1, last[1]
        else:
            # Every receipt purged: the chain goes on from the anchor, never restarts.
            anchor = await self.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
            anchor_seq, prev = json.loads(anchor["value"]) if anchor else (0, GENESIS)
            seq = anchor_seq + 1
        at_text = iso(at)
        detail_text = _detail_text(detail)
        digest = receipt_hash(self._chain_key, prev, seq, at_text, event, ref, school,
                              detail_text, pseudonym)
        await self.execute(
            "INSERT INTO receipts (seq, at, event, ref, school, detail, pseudonym, prev, hash)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, at_text, event, ref, school, detail_text, pseudonym, prev, digest))
        self._head = (seq, digest)
        return Receipt(seq, at_text, event, ref, school, detail, pseudonym, prev, digest)

    async def purge_receipts_before(self, cutoff: dt.datetime) -> tuple[int, Anchor | None]:
        """Delete receipts older than `cutoff`; the chain then starts at a recorded anchor."""
        self._head = None
        row = await self.one("SELECT seq, hash FROM receipts WHERE at < ? ORDER BY seq DESC"
                             " LIMIT 1", (iso(cutoff),))
        if row is None:
            return 0, None
        anchor = Anchor(int(row["seq"]), str(row["hash"]))
        cur = await self.execute("DELETE FROM receipts WHERE seq <= ?", (anchor.seq,))
        await self.execute("INSERT INTO meta (key, value) VALUES ('chain_anchor', ?)"
                           " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           (json.dumps([anchor.seq, anchor.hash]),))
        return cur.rowcount, anchor

    async def purge_finished_signals_before(self, cutoff: dt.datetime) -> int:
        """Forget signals older than `cutoff` of which nothing is waiting any more."""
        old = [r["ref"] for r in await self.all(
            "SELECT ref FROM signals WHERE accepted_at < ? AND NOT EXISTS (SELECT 1 FROM"
            " children c WHERE c.ref = signals.ref AND c.state IN ('routed', 'held', 'sealed'))",
            (iso(cutoff),))]
        for ref in old:
            await self.execute("DELETE FROM notices WHERE ref = ?", (ref,))
            await self.execute("DELETE FROM status_mails WHERE ref = ?", (ref,))
            await self.execute("DELETE FROM children WHERE ref = ?", (ref,))
            await self.execute("DELETE FROM signals WHERE ref = ?", (ref,))
        return len(old)

    async def bump_directory_version(self) -> None:
        """Tell a running daemon that senders, schools, keys or the register changed."""
        await self.execute(
            "INSERT INTO meta (key, value) VALUES ('directory_version', '1') ON CONFLICT(key)"
            " DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)")

    # -- senders ----------------------------------------------------------------------------

    async def add_sender(self, name: str, password_hash: str, fingerprint: str,
                         allow_from: Sequence[str], client_certs: Sequence[str],
                         at: dt.datetime, status_mail: bool = True) -> None:
        await self.execute("INSERT INTO senders (name, password_hash, created_at, status_mail)"
                           " VALUES (?, ?, ?, ?)", (name, password_hash, iso(at), status_mail))
        await self.add_sender_key(name, fingerprint, at)
        await self.executemany("INSERT OR IGNORE INTO sender_addresses (sender, address)"
                               " VALUES (?, ?)", [(name, a) for a in allow_from])
        await self.executemany("INSERT OR IGNORE INTO sender_certs (sender, sha256)"
                               " VALUES (?, ?)", [(name, c) for c in client_certs])

    async def add_sender_key(self, name: str, fingerprint: str, at: dt.datetime) -> None:
        await self.execute("INSERT OR IGNORE INTO sender_keys (sender, fingerprint, added_at)"
                           " VALUES (?, ?, ?)", (name, fingerprint, iso(at)))
        await self.bump_directory_version()

    async def remove_sender_key(self, name: str, fingerprint: str) -> int:
        cur = await self.execute("DELETE FROM sender_keys WHERE sender = ? AND fingerprint = ?",
                                 (name, fingerprint))
        await self.bump_directory_version()
        return cur.rowcount

    async def remove_sender(self, name: str) -> int:
        cur = await self.execute("DELETE FROM senders WHERE name = ?", (name,))
        await self.bump_directory_version()
        return cur.rowcount

    # -- schools ----------------------------------------------------------------------------

    async def upsert_school(self, code: str, name: str, place: str) -> bool:
        """Insert or rename a school; contacts, keys and routes already set are kept."""
        cur = await self.execute(
            "INSERT INTO schools (code, name, place) VALUES (?, ?, ?) ON CONFLICT(code) DO UPDATE"
            " SET name = excluded.name, place = excluded.place"
            " WHERE name != excluded.name OR place != excluded.place", (code, name, place))
        await self.bump_directory_version()
        return cur.rowcount > 0

    async def set_school_route(self, code: str, route: str | None) -> None:
        await self.execute("UPDATE schools SET route = ? WHERE code = ?", (route, code))

    async def set_contact(self, school: str, email: str, fingerprint: str) -> str | None:
        """Add a contact or replace its key; the previous fingerprint, if there was one."""
        row = await self.one("SELECT fingerprint FROM contacts WHERE school = ? AND email = ?",
                             (school, email))
        await self.execute(
            "INSERT INTO contacts (school, email, fingerprint) VALUES (?, ?, ?)"
            " ON CONFLICT(school, email) DO UPDATE SET fingerprint = excluded.fingerprint",
            (school, email, fingerprint))
        await self.bump_directory_version()
        return str(row["fingerprint"]) if row else None

    async def remove_school(self, code: str) -> int:
        cur = await self.execute("DELETE FROM schools WHERE code = ?", (code,))
        await self.bump_directory_version()
        return cur.rowcount

    # -- the pupil register -----------------------------------------------------------------

    async def replace_register(self, rows: Iterable[tuple[str | None, str, str, bytes]]) -> int:
        """Swap the whole register inside this transaction: readers see old or new, never half."""
        await self.execute("DELETE FROM pupils")
        await self.executemany("INSERT INTO pupils (bsn_index, birthdate_index, school, blob)"
                               " VALUES (?, ?, ?, ?)", rows)
        await self.bump_directory_version()
        row = await self.one("SELECT count(*) AS n FROM pupils")
        return int(row["n"]) if row else 0

    async def register_counts(self) -> dict[str, int]:
        """Pupils per vestigingscode: what a register import is compared with (issue 12)."""
        return {str(r["school"]): int(r["n"]) for r in await self.all(
            "SELECT school, count(*) AS n FROM pupils GROUP BY school")}

    # -- gateway keys -----------------------------------------------------------------------

    async def add_gateway_key(self, fingerprint: str, at: dt.datetime,
                              overlap_until: dt.datetime | None = None) -> str | None:
        """Make `fingerprint` the current key; the one it replaces still decrypts until
        `overlap_until`. Returns the replaced key's fingerprint."""
        row = await self.one("SELECT fingerprint FROM gateway_keys WHERE state = 'current'")
        await self.execute("UPDATE gateway_keys SET state = 'previous', decrypt_until = ?"
                           " WHERE state = 'current'",
                           (iso(overlap_until) if overlap_until else iso(at),))
        await self.execute("INSERT INTO gateway_keys (fingerprint, state, created_at)"
                           " VALUES (?, 'current', ?)", (fingerprint, iso(at)))
        await self.bump_directory_version()
        return str(row["fingerprint"]) if row else None

    async def retire_gateway_key(self, fingerprint: str, at: dt.datetime) -> bool:
        cur = await self.execute("UPDATE gateway_keys SET state = 'retired', decrypt_until = ?"
                                 " WHERE fingerprint = ? AND state = 'previous'",
                                 (iso(at), fingerprint))
        await self.bump_directory_version()
        return cur.rowcount == 1

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key)"
                           " DO UPDATE SET value = excluded.value", (key, value))

    # -- signals and children ---------------------------------------------------------------

    async def find_duplicate(self, sender: str, message_id: str | None, digest: str,
                             since: dt.datetime) -> tuple[str, bool] | None:
        """An earlier signal of this sender inside the window with the same signed content
        (`digest`) or the same Message-ID: its reference, and whether its content is the same
        (False: only the Message-ID is). A content match is preferred over a Message-ID one.
        The sender's case reference plays no part: a reused reference is a new signal."""
        # One indexed look-up per way of being the same signal: with both ORed in one WHERE,
        # SQLite walked every signal of the sender on each intake.
        since_text = iso(since)
        row = await self.one(
            "SELECT ref, accepted_at, 1 AS same FROM signals WHERE sender = ?"
            " AND content_digest = ? AND accepted_at >= ? UNION ALL SELECT ref, accepted_at,"
            " content_digest = ? FROM signals WHERE sender = ? AND message_id = ?"
            " AND accepted_at >= ? ORDER BY same DESC, accepted_at LIMIT 1",
            (sender, digest, since_text, digest, sender, message_id, since_text))
        return (str(row["ref"]), bool(row["same"])) if row else None

    async def find_sender_ref(self, sender: str, sender_ref_digest: str) -> str | None:
        """The first signal still stored of this sender that carried the same case reference
        (by its keyed digest), or None."""
        row = await self.one("SELECT ref FROM signals WHERE sender = ? AND sender_ref_digest = ?"
                             " ORDER BY accepted_at LIMIT 1", (sender, sender_ref_digest))
        return str(row["ref"]) if row else None

    async def insert_signal(self, ref: str, sender: str, message_id: str | None,
                            sender_ref: ProtectedRef | None, digest: str, children: int,
                            at: dt.datetime) -> None:
        await self.execute(
            "INSERT INTO signals (ref, sender, message_id, sender_ref_digest, sender_ref_blob,"
            " content_digest, accepted_at, children) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref, sender, message_id, sender_ref.digest if sender_ref else None,
             sender_ref.blob if sender_ref else None, digest, iso(at), children))

    async def mark_reported(self, refs: Sequence[str]) -> None:
        """The status mail of these signals was dealt with (sent, not sent, or not wanted):
        the sealed case reference it would quote is not needed any more either."""
        await self.executemany("UPDATE signals SET reported = 1, sender_ref_blob = NULL"
                               " WHERE ref = ?", [(ref,) for ref in refs])

    async def insert_child(self, ref: str, n: int, state: str, school: str | None,
                           reason: str | None, blob: bytes, pseudonym: str,
                           at: dt.datetime) -> None:
        await self.execute(
            "INSERT INTO children (ref, n, state, school, reason, blob, pseudonym, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (ref, n, state, school, reason, blob, pseudonym, iso(at)))

    async def set_child_state(self, ref: str, n: int, state: str, at: dt.datetime, *,
                              school: str | None = None, reason: str | None = None,
                              erase: bool = False, expect: Sequence[str] = ()) -> bool:
        """Move one child on; with `expect`, only from one of those states (else False)."""
        sql = ("UPDATE children SET state = ?, updated_at = ?, school = coalesce(?, school),"
               " reason = ?")
        if erase:
            sql += ", blob = NULL"
        sql += " WHERE ref = ? AND n = ?"
        params: list[Any] = [state, iso(at), school, reason, ref, n]
        if expect:
            sql += f" AND state IN ({','.join('?' * len(expect))})"
            params += list(expect)
        cur = await self.execute(sql, params)
        return cur.rowcount == 1

    # -- notices ----------------------------------------------------------------------------

    async def insert_notice(self, ref: str, school: str, message_id: str,
                            recipients: Sequence[str], fingerprints: Sequence[str],
                            message: bytes, children: Sequence[int], at: dt.datetime,
                            ack_digest: str | None = None) -> int:
        cur = await self.execute(
            "INSERT INTO notices (ref, school, message_id, recipients, fingerprints, message,"
            " state, next_attempt_at, created_at, ack_digest)"
            " VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
            (ref, school, message_id, json.dumps(list(recipients)),
             json.dumps(list(fingerprints)), message, iso(at), iso(at), ack_digest))
        notice_id = int(cur.lastrowid or 0)
        for n in children:
            cur = await self.execute(
                "UPDATE children SET state = 'sealed', notice_id = ?, updated_at = ?"
                " WHERE ref = ? AND n = ? AND state = 'routed'", (notice_id, iso(at), ref, n))
            if cur.rowcount != 1:
                # Someone else sealed (or an administrator moved) this child meanwhile: the
                # transaction is rolled back so that no child is ever in two notices.
                raise Conflict(f"child {ref}-{n} is no longer waiting to be sealed")
        return notice_id

    async def claim_notice(self, notice_id: int, lease_until: dt.datetime,
                           now: dt.datetime) -> sqlite3.Row | None:
        """Take a lease on a due notice: its whole row as claimed (the attempt counted), or
        None when another worker holds it or it is no longer queued."""
        cur = await self.execute(
            "UPDATE notices SET lease_until = ?, attempts = attempts + 1 WHERE id = ?"
            " AND state = 'queued' AND (lease_until IS NULL OR lease_until < ?)",
            (iso(lease_until), notice_id, iso(now)))
        if cur.rowcount != 1:
            return None
        return await self.one("SELECT * FROM notices WHERE id = ?", (notice_id,))

    async def finish_notice(self, notice_id: int, state: str, reply: str, at: dt.datetime,
                            child_state: str) -> None:
        """A notice delivered or failed: its children follow, their sealed data is erased.

        A delivered notice's ciphertext goes too: the school has it, and a copy kept here would
        only wait for the day its recipients' keys leak."""
        await self.execute("UPDATE notices SET state = ?, last_reply = ?, lease_until = NULL,"
                           " message = CASE WHEN ? THEN X'' ELSE message END WHERE id = ?",
                           (state, reply, state == "delivered", notice_id))
        # Delivered: the school has the data, so the gateway's copy goes. Failed: kept (sealed)
        # so that an administrator can still route the child elsewhere.
        await self.execute(
            "UPDATE children SET state = ?, updated_at = ?,"
            " blob = CASE WHEN ? THEN NULL ELSE blob END WHERE notice_id = ?",
            (child_state, iso(at), child_state == "delivered", notice_id))

    async def acknowledge(self, ack_digest: str, at: dt.datetime) -> sqlite3.Row | None:
        """Record a school's acknowledgement; the token is single-use. The notice, or None."""
        row = await self.one("SELECT id, ref, school FROM notices WHERE ack_digest = ?"
                             " AND acked_at IS NULL", (ack_digest,))
        if row is not None:
            await self.execute("UPDATE notices SET acked_at = ?, ack_digest = NULL WHERE id = ?",
                               (iso(at), row["id"]))
        return row

    async def record_crash(self, notice_id: int, next_at: dt.datetime) -> bool:
        """An attempt ended in a crash (ours, not the school's): count it, release the lease;
        True when the notice has now crashed too often and is parked for a person."""
        await self.execute("UPDATE notices SET crashes = crashes + 1, lease_until = NULL,"
                           " next_attempt_at = ? WHERE id = ?", (iso(next_at), notice_id))
        cur = await self.execute("UPDATE notices SET state = 'parked' WHERE id = ?"
                                 " AND crashes >= ? AND state = 'queued'",
                                 (notice_id, MAX_CRASHES))
        return cur.rowcount == 1

    async def leased_notices(self) -> list[int]:
        return [int(r["id"]) for r in await self.all(
            "SELECT id FROM notices WHERE state = 'queued' AND lease_until IS NOT NULL")]

    async def supersede_notice(self, notice_id: int, reason: str,
                               at: dt.datetime) -> list[int] | None:
        """A queued notice sealed to a contact or key no longer pinned never goes out: it is
        superseded, its ciphertext erased (the keys it was made for are the ones that are not
        to be trusted), and its children go back to `routed` to be sealed again to the current
        keys (their own sealed data stays until delivery). The numbers of those children;
        None when the notice was no longer queued."""
        cur = await self.execute(
            "UPDATE notices SET state = 'superseded', last_reply = ?, lease_until = NULL,"
            " message = X'', ack_digest = NULL WHERE id = ? AND state = 'queued'",
            (reason, notice_id))
        if cur.rowcount != 1:
            return None
        numbers = [int(r["n"]) for r in await self.all(
            "SELECT n FROM children WHERE notice_id = ? AND state = 'sealed' ORDER BY n",
            (notice_id,))]
        await self.execute("UPDATE children SET state = 'routed', notice_id = NULL,"
                           " updated_at = ? WHERE notice_id = ? AND state = 'sealed'",
                           (iso(at), notice_id))
        return numbers

    async def defer_notice(self, notice_id: int, reply: str, next_at: dt.datetime) -> None:
        await self.execute("UPDATE notices SET last_reply = ?, next_attempt_at = ?,"
                           " lease_until = NULL WHERE id = ?", (reply, iso(next_at), notice_id))

    # -- status mails to senders ------------------------------------------------------------
    # One row per mail: `child` 0 for a signal's status mail, n for the follow-up about child
    # n; UNIQUE(ref, child) makes each one exist once, whoever queues it. `message` is the mail
    # as sealed (encrypted to the sender's key, signed), erased once a server took it;
    # `pending` (JSON, on a status mail) lists the children it reported as with leerplicht
    # whose follow-up has yet to be queued.

    async def insert_status_mail(self, ref: str, child: int, sender: str, recipient: str,
                                 fingerprint: str, message_id: str, message: bytes,
                                 at: dt.datetime, pending: Sequence[int] = ()) -> int | None:
        """Queue one status mail, due now; None when it was queued before (nothing changed)."""
        cur = await self.execute(
            "INSERT INTO status_mails (ref, child, sender, recipient, fingerprint, message_id,"
            " message, state, next_attempt_at, created_at, pending)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) ON CONFLICT(ref, child) DO NOTHING",
            (ref, child, sender, recipient, fingerprint, message_id, message, iso(at), iso(at),
             json.dumps(list(pending)) if pending else None))
        return int(cur.lastrowid or 0) if cur.rowcount == 1 else None

    async def claim_status_mail(self, mail_id: int, lease_until: dt.datetime,
                                now: dt.datetime) -> sqlite3.Row | None:
        """As `claim_notice`, for a status mail."""
        cur = await self.execute(
            "UPDATE status_mails SET lease_until = ?, attempts = attempts + 1 WHERE id = ?"
            " AND state = 'queued' AND (lease_until IS NULL OR lease_until < ?)",
            (iso(lease_until), mail_id, iso(now)))
        if cur.rowcount != 1:
            return None
        return await self.one("SELECT * FROM status_mails WHERE id = ?", (mail_id,))

    async def finish_status_mail(self, mail_id: int, state: str, reply: str) -> None:
        """Sent or failed; a sent mail's ciphertext goes (the sender has it)."""
        await self.execute("UPDATE status_mails SET state = ?, last_reply = ?, lease_until = NULL,"
                           " message = CASE WHEN ? THEN X'' ELSE message END WHERE id = ?",
                           (state, reply, state == "sent", mail_id))

    async def defer_status_mail(self, mail_id: int, reply: str, next_at: dt.datetime) -> None:
        await self.execute("UPDATE status_mails SET last_reply = ?, next_attempt_at = ?,"
                           " lease_until = NULL WHERE id = ?", (reply, iso(next_at), mail_id))

    async def settle_pending(self, mail_id: int, numbers: Sequence[int]) -> None:
        """These children of a status mail need no follow-up any more (queued, or not to be)."""
        row = await self.one("SELECT pending FROM status_mails WHERE id = ?", (mail_id,))
        if row is None or row["pending"] is None:
            return
        left = [n for n in json.loads(row["pending"]) if n not in numbers]
        await self.execute("UPDATE status_mails SET pending = ? WHERE id = ?",
                           (json.dumps(left) if left else None, mail_id))

    async def note_reason(self, notice_id: int, reason: str) -> None:
        """The reason key of the attempt just recorded (`status` tells a notice waiting on
        the gateway's own set-up from one waiting on the school)."""
        await self.execute("UPDATE notices SET last_reason = ? WHERE id = ?", (reason, notice_id))

    async def requeue_notice(self, notice_id: int, at: dt.datetime) -> sqlite3.Row | None:
        """`queue retry`: a failed or parked notice is queued again, due at `at`, its attempts
        and crashes counted from zero and its give-up time from `at`; its failed children are
        sealed again (they are in it). A queued one is only made due at `at`. The notice as it
        was before (None when there is none): the caller says why a delivered or superseded
        one is not changed."""
        row = await self.one("SELECT id, ref, school, state, last_reply, length(message) AS size"
                             " FROM notices WHERE id = ?", (notice_id,))
        if row is None or not row["size"]:
            return row
        if row["state"] in ("failed", "parked"):
            await self.execute(
                "UPDATE notices SET state = 'queued', attempts = 0, crashes = 0,"
                " next_attempt_at = ?, lease_until = NULL, requeued_at = ? WHERE id = ?",
                (iso(at), iso(at), notice_id))
            await self.execute("UPDATE children SET state = 'sealed', updated_at = ?"
                               " WHERE notice_id = ? AND state = 'failed'", (iso(at), notice_id))
        elif row["state"] == "queued":
            await self.execute("UPDATE notices SET next_attempt_at = ? WHERE id = ?"
                               " AND state = 'queued'", (iso(at), notice_id))
        return row

    # -- school contacts --------------------------------------------------------------------

    async def rename_contact(self, school: str, email: str, new_email: str) -> bool:
        """A contact's address changes, its pinned key stays."""
        cur = await self.execute("UPDATE contacts SET email = ? WHERE school = ? AND email = ?",
                                 (new_email, school, email))
        await self.bump_directory_version()
        return cur.rowcount == 1

    async def remove_contact(self, school: str, email: str) -> str | None:
        """Remove one contact of a school; the fingerprint it had, or None if there was none."""
        row = await self.one("SELECT fingerprint FROM contacts WHERE school = ? AND email = ?",
                             (school, email))
        if row is None:
            return None
        await self.execute("DELETE FROM contacts WHERE school = ? AND email = ?", (school, email))
        await self.bump_directory_version()
        return str(row["fingerprint"])

    # -- AUTH lockouts, shared by the daemon with the command line ---------------------------

    async def record_lockout(self, scope: str, subject: str, login: str, since: dt.datetime,
                             until: dt.datetime) -> None:
        """The daemon's AUTH throttle refuses `subject` (a client address, or a sender's
        login) until `until`; `login` is the login it refused (or "(unknown)"). Lockouts that
        ended are forgotten at the same time."""
        await self.execute("DELETE FROM auth_lockouts WHERE until <= ?", (iso(since),))
        await self.execute(
            "INSERT INTO auth_lockouts (scope, subject, login, since, until) VALUES (?, ?, ?, ?,"
            " ?) ON CONFLICT (scope, subject, login) DO UPDATE SET since = excluded.since,"
            " until = excluded.until, lifted_at = NULL, lifted_by = NULL",
            (scope, subject, login, iso(since), iso(until)))

    async def lift_lockouts(self, login: str, at: dt.datetime, by: str) -> list[sqlite3.Row]:
        """`senders unlock`: mark every running lockout that refused `login` lifted, with
        the whole of each (an address is unlocked for every login). The (scope, subject,
        until) lifted; the daemon lets them go at its next look (`take_lifted_lockouts`)."""
        rows = await self.all(
            "SELECT DISTINCT scope, subject, until FROM auth_lockouts WHERE login = ?"
            " AND lifted_at IS NULL AND until > ? ORDER BY scope, subject", (login, iso(at)))
        await self.executemany(
            "UPDATE auth_lockouts SET lifted_at = ?, lifted_by = ? WHERE scope = ?"
            " AND subject = ? AND lifted_at IS NULL",
            [(iso(at), by, r["scope"], r["subject"]) for r in rows])
        return rows

    async def take_lifted_lockouts(self) -> list[tuple[str, str]]:
        """The daemon: the (scope, subject) pairs lifted from the command line, now forgotten."""
        rows = await self.all("SELECT DISTINCT scope, subject FROM auth_lockouts"
                              " WHERE lifted_at IS NOT NULL")
        # Rows of the same address or login written after the lift go too: it is lifted whole.
        await self.executemany("DELETE FROM auth_lockouts WHERE scope = ? AND subject = ?",
                               [(r["scope"], r["subject"]) for r in rows])
        return [(str(r["scope"]), str(r["subject"])) for r in rows]

    async def clear_lockouts(self) -> None:
        """At the daemon's start: its throttle starts empty, so no lockout runs."""
        await self.execute("DELETE FROM auth_lockouts")


def _run_to_end(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends, without an event loop (see `Store.write`)."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(T, finished.value)
    coroutine.close()
    raise RuntimeError("a Store.write body awaited something other than its transaction")


class Store:
    """One aiosqlite connection; transactions are serialised by a lock on top of SQLite's."""

    def __init__(self, db: aiosqlite.Connection, path: Path, chain_key: bytes) -> None:
        self.db = db
        self.path = path
        self.chain_key = chain_key
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path, chain_key: bytes) -> Store:
        """Open (creating or upgrading) the database; receipts are linked under `chain_key`
        (`gateway.store.chainkey.open_store` gives the deployment's key)."""
        if len(chain_key) < 32:
            raise ValueError("the receipt key must be at least 32 bytes")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.executescript(SCHEMA)
            await db.execute(APPEND_ONLY_TRIGGER)
            for table, column, definition, backfill in COLUMNS:
                async with db.execute(f"PRAGMA table_info({table})") as cur:
                    present = {row["name"] for row in await cur.fetchall()}
                if column not in present:
                    await db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                    if backfill:
                        await db.execute(backfill)
            await db.executescript(LATE_INDEXES)
            await db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
        except Exception:
            await db.close()
            raise
        await asyncio.to_thread(path.chmod, 0o600)
        return cls(db, path, chain_key)

    async def close(self) -> None:
        await self.db.close()

    async def chain_keyed(self) -> bool:
        """Whether the receipts are linked under the receipt key (see `key_chain`)."""
        return await self.meta("receipt_chain") == CHAIN_SCHEME

    async def key_chain(self) -> list[str]:
        """Once, when a deployment gets its receipt key: re-link the receipts written before
        receipts were keyed (plain SHA-256) under the key, in one transaction. Only an intact
        chain is re-linked: a chain already broken is left as it is, so that `receipts verify`
        goes on showing where (re-linking it would hide the break). Returns the breaks found."""
        async with self.transaction() as tx:
            if await tx.one("SELECT 1 FROM meta WHERE key = 'receipt_chain'") is not None:
                return []  # another process did it first
            rows = [_receipt(row) for row in await tx.all("SELECT * FROM receipts ORDER BY seq")]
            found = await tx.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
            anchor = Anchor(*json.loads(found["value"])) if found else None
            problems = chain_problems(rows, self.chain_key, anchor, link=legacy_receipt_hash)
            if not problems and rows:
                await tx.execute("DROP TRIGGER receipts_append_only")
                prev = anchor.hash if anchor else GENESIS
                for r in rows:
                    digest = receipt_hash(self.chain_key, prev, r.seq, r.at, r.event, r.ref,
                                          r.school, _detail_text(r.detail), r.pseudonym)
                    await tx.execute("UPDATE receipts SET prev = ?, hash = ? WHERE seq = ?",
                                     (prev, digest, r.seq))
                    prev = digest
                await tx.execute(APPEND_ONLY_TRIGGER)
            await tx.set_meta("receipt_chain", CHAIN_SCHEME)
        return problems

    async def protect_sender_refs(self, protect: Callable[[str, str, bool], ProtectedRef]) -> int:
        """Bring a database from before `ProtectedRef` up to date: every case reference kept in
        clear (`signals.sender_ref`) becomes `protect(ref, reference, still_to_report)` (the
        caller holds the vault; the seal is only needed while the status mail is to come), the
        clear column and its index go, and the file is rewritten (VACUUM, then a checkpoint
        that empties the WAL) so that no free page and no old WAL frame still holds a clear
        value. Returns the number of references moved; once done, it only looks."""
        async with self._lock, self.db.execute("PRAGMA table_info(signals)") as cur:
            present = {row["name"] for row in await cur.fetchall()}
        moved: list[tuple[str, ProtectedRef]] = []
        if "sender_ref" in present:
            async with self.transaction() as tx:
                rows = await tx.all("SELECT ref, sender_ref, reported FROM signals"
                                    " WHERE sender_ref IS NOT NULL")
                moved = [(str(r["ref"]), protect(str(r["ref"]), str(r["sender_ref"]),
                                                 not r["reported"])) for r in rows]
                await tx.executemany(
                    "UPDATE signals SET sender_ref_digest = ?, sender_ref_blob = ?,"
                    " sender_ref = NULL WHERE ref = ?",
                    [(p.digest, p.blob, ref) for ref, p in moved])
                await tx.execute("DROP INDEX IF EXISTS signals_sender_ref")
                await tx.execute("ALTER TABLE signals DROP COLUMN sender_ref")
                # Remembered in the same transaction: a rewrite that fails or is held back is
                # done at the next start, not forgotten with the column gone.
                await tx.set_meta("sender_refs_vacuum", "due")
        if await self.meta("sender_refs_vacuum") is not None:
            async with self._lock:
                # Outside any transaction, as VACUUM requires. Not every SQLite build zeroes
                # deleted bytes (SECURE_DELETE); VACUUM rebuilds every page either way, and the
                # TRUNCATE checkpoint copies them over the old ones and empties the WAL.
                # A reader of another process can hold the checkpoint back (it answers busy
                # after `busy_timeout`): then the next start tries again.
                await self.db.execute("VACUUM")
                async with self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                    busy = await cur.fetchone()
                if busy is not None and busy[0] == 0:
                    await self.db.execute("DELETE FROM meta WHERE key = 'sender_refs_vacuum'")
        return len(moved)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """BEGIN IMMEDIATE … COMMIT; rolled back on any exception, which then propagates."""
        async with self._lock:
            await self.db.execute("BEGIN IMMEDIATE")
            tx = Tx(self.db, self.chain_key)
            try:
                yield tx
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def write(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T:
        """`body` as one write transaction run whole inside the database thread: BEGIN
        IMMEDIATE, body, COMMIT; rolled back on any exception, which then propagates.

        `body` gets the same `Tx` as `transaction` gives, but may await nothing except its
        methods, which never suspend there. The whole transaction then costs one hop to the
        database thread instead of one per statement: under load every hop waits its turn on
        the busy event loop, and a transaction held across a dozen hops kept every other one
        waiting behind this lock (`make bench` measured tens of milliseconds per transaction).
        """
        def run() -> T:
            # aiosqlite's own thread and connection (its documented-nowhere `_conn`), so that
            # these transactions and those of `transaction` share one connection and one order.
            conn: sqlite3.Connection = self.db._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = _run_to_end(body(Tx(conn, self.chain_key)))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        async with self._lock:
            done: T = await self.db._execute(run)  # type: ignore[no-untyped-call]
            return done

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self._lock, self.db.execute(sql, params) as cur:
            row: sqlite3.Row | None = await cur.fetchone()
            return row

    async def all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        async with self._lock, self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def meta(self, key: str) -> str | None:
        row = await self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return str(row["value"]) if row else None

    async def chain_anchor(self) -> Anchor | None:
        row = await self.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
        if row is None:
            return None
        seq, digest = json.loads(row["value"])
        return Anchor(int(seq), str(digest))

    async def directory_version(self) -> str:
        row = await self.one("SELECT value FROM meta WHERE key = 'directory_version'")
        return str(row["value"]) if row else "0"

    # -- receipts ---------------------------------------------------------------------------

    async def receipts(self, since: dt.datetime | None = None,
                       ref: str | None = None) -> list[Receipt]:
        sql, params = "SELECT * FROM receipts WHERE 1=1", []
        if since is not None:
            sql += " AND at >= ?"
            params.append(iso(since))
        if ref is not None:
            sql += " AND (ref = ? OR ref LIKE ?)"
            params += [ref, ref + "-%"]
        return [_receipt(row) for row in await self.all(sql + " ORDER BY seq", params)]

    async def receipts_by_pseudonym(self, pseudonym: str) -> list[Receipt]:
        rows = await self.all("SELECT * FROM receipts WHERE pseudonym = ? ORDER BY seq",
                              (pseudonym,))
        return [_receipt(row) for row in rows]

    # -- reads for the pipeline and the command line ----------------------------------------

    async def senders(self) -> list[sqlite3.Row]:
        return await self.all("SELECT name, password_hash, created_at FROM senders ORDER BY name")

    async def sender_keys(self) -> list[sqlite3.Row]:
        return await self.all("SELECT sender, fingerprint, added_at FROM sender_keys"
                              " ORDER BY sender, added_at")

    async def sender_addresses(self) -> list[sqlite3.Row]:
        return await self.all("SELECT sender, address FROM sender_addresses ORDER BY sender")

    async def sender_certs(self) -> list[sqlite3.Row]:
        return await self.all("SELECT sender, sha256 FROM sender_certs ORDER BY sender")

    async def schools(self) -> list[sqlite3.Row]:
        return await self.all("SELECT code, name, place, route FROM schools ORDER BY code")

    async def school(self, code: str) -> sqlite3.Row | None:
        return await self.one("SELECT code, name, place, route FROM schools WHERE code = ?",
                              (code,))

    async def contacts(self, school: str | None = None) -> list[sqlite3.Row]:
        if school is None:
            return await self.all("SELECT school, email, fingerprint FROM contacts"
                                  " ORDER BY school, email")
        return await self.all("SELECT school, email, fingerprint FROM contacts WHERE school = ?"
                              " ORDER BY email", (school,))

    async def pupils_by_index(self, bsn_index: str | None,
                              birthdate_index: str) -> list[sqlite3.Row]:
        return await self.all("SELECT id, bsn_index, birthdate_index, school, blob FROM pupils"
                              " WHERE birthdate_index = ? OR (? IS NOT NULL AND bsn_index = ?)",
                              (birthdate_index, bsn_index, bsn_index))

    async def register_summary(self) -> tuple[int, int]:
        row = await self.one("SELECT count(*) AS n, count(DISTINCT school) AS s FROM pupils")
        return (int(row["n"]), int(row["s"])) if row else (0, 0)

    async def gateway_keys(self) -> list[sqlite3.Row]:
        return await self.all("SELECT fingerprint, state, created_at, decrypt_until"
                              " FROM gateway_keys ORDER BY created_at")

    async def children(self, state: str | None = None,
                       ref: str | None = None) -> list[sqlite3.Row]:
        sql, params = "SELECT * FROM children WHERE 1=1", []
        if state is not None:
            sql += " AND state = ?"
            params.append(state)
        if ref is not None:
            sql += " AND ref = ?"
            params.append(ref)
        return await self.all(sql + " ORDER BY ref, n", params)

    async def children_of(self, refs: Sequence[str]) -> list[sqlite3.Row]:
        """The children of these signals, by signal and number."""
        found: list[sqlite3.Row] = []
        for start in range(0, len(refs), 500):  # well within SQLite's limit on parameters
            chunk = list(refs[start:start + 500])
            # Only placeholders are interpolated; the references travel as parameters.
            sql = f"SELECT * FROM children WHERE ref IN ({','.join('?' * len(chunk))})"  # noqa: S608
            found += await self.all(sql, chunk)
        return sorted(found, key=lambda row: (row["ref"], row["n"]))

    async def finished_unreported(self) -> list[sqlite3.Row]:
        """Signals not yet reported none of whose children is still on its way, with whether
        their sender wants status mail (`status_mail`; a removed sender's signals say 0) and
        their sealed case reference (`sender_ref_blob`, None when the signal had none)."""
        return await self.all(
            "SELECT s.ref, s.sender, s.sender_ref_blob, coalesce(d.status_mail, 0) AS status_mail"
            " FROM signals s LEFT JOIN senders d ON d.name = s.sender WHERE s.reported = 0"
            " AND NOT EXISTS (SELECT 1 FROM children c WHERE c.ref = s.ref AND c.state IN"
            " ('routed', 'sealed')) ORDER BY s.accepted_at")

    async def open_signals(self) -> list[sqlite3.Row]:
        """Signals with a child not yet delivered (routed, sealed or held): what may escalate."""
        return await self.all(
            "SELECT s.ref, s.accepted_at, group_concat(DISTINCT c.state) AS states,"
            " group_concat(DISTINCT c.school) AS schools FROM signals s JOIN children c"
            " ON c.ref = s.ref WHERE c.state IN ('routed', 'held', 'sealed') GROUP BY s.ref")

    async def last_receipt(self, event: str) -> sqlite3.Row | None:
        return await self.one("SELECT at, ref, school FROM receipts WHERE event = ?"
                              " ORDER BY seq DESC LIMIT 1", (event,))

    async def ack_pending(self, ack_digest: str) -> bool:
        """Whether an unacknowledged notice has this ack digest (an index look-up)."""
        row = await self.one("SELECT 1 FROM notices WHERE ack_digest = ? AND acked_at IS NULL",
                             (ack_digest,))
        return row is not None

    async def unacknowledged(self) -> list[sqlite3.Row]:
        """Delivered notices whose school has not confirmed receipt yet."""
        return await self.all(
            "SELECT n.id, n.ref, n.school, s.accepted_at FROM notices n JOIN signals s"
            " ON s.ref = n.ref WHERE n.state = 'delivered' AND n.ack_digest IS NOT NULL"
            " AND n.acked_at IS NULL")

    async def escalations(self) -> dict[str, set[str]]:
        """What has already been escalated ("undelivered", "unacknowledged"), per signal still
        open or unacknowledged: one query, whatever the number of signals waiting."""
        rows = await self.all(
            "SELECT ref, detail FROM receipts WHERE event = 'escalated' AND ref IN ("
            " SELECT ref FROM children WHERE state IN ('routed', 'held', 'sealed')"
            " UNION SELECT ref FROM notices WHERE state = 'delivered'"
            " AND ack_digest IS NOT NULL AND acked_at IS NULL)")
        done: dict[str, set[str]] = {}
        for row in rows:
            done.setdefault(str(row["ref"]), set()).add(str(json.loads(row["detail"])["what"]))
        return done

    async def held_before(self, cutoff: dt.datetime) -> list[sqlite3.Row]:
        return await self.all("SELECT ref, n, school, reason FROM children WHERE state = 'held'"
                              " AND updated_at < ? ORDER BY ref, n", (iso(cutoff),))

    async def count_receipts_before(self, cutoff: dt.datetime) -> int:
        row = await self.one("SELECT count(*) AS n FROM receipts WHERE at < ?", (iso(cutoff),))
        return int(row["n"]) if row else 0

    async def child(self, ref: str, n: int) -> sqlite3.Row | None:
        return await self.one("SELECT * FROM children WHERE ref = ? AND n = ?", (ref, n))

    async def signal(self, ref: str) -> sqlite3.Row | None:
        return await self.one("SELECT * FROM signals WHERE ref = ?", (ref,))

    async def due_notices(self, now: dt.datetime, limit: int = 50) -> list[sqlite3.Row]:
        return await self.all(
            "SELECT id FROM notices WHERE state = 'queued' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at LIMIT ?",
            (iso(now), iso(now), limit))

    async def notice(self, notice_id: int) -> sqlite3.Row | None:
        return await self.one("SELECT * FROM notices WHERE id = ?", (notice_id,))

    async def notices(self, states: Sequence[str] = ()) -> list[sqlite3.Row]:
        sql = ("SELECT id, ref, school, message_id, state, attempts, next_attempt_at,"
               " lease_until, created_at, last_reply FROM notices")
        if states:
            # Only placeholders are interpolated; the values travel as parameters.
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
        return await self.all(sql + " ORDER BY id", list(states))

    async def due_status_mails(self, now: dt.datetime, limit: int = 50) -> list[sqlite3.Row]:
        return await self.all(
            "SELECT id FROM status_mails WHERE state = 'queued' AND next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY next_attempt_at, id LIMIT ?",
            (iso(now), iso(now), limit))

    async def status_mails_pending(self) -> list[sqlite3.Row]:
        """Status mails no longer queued that reported children as with leerplicht whose
        follow-up is still to come, with whether their sender still wants status mail."""
        return await self.all(
            "SELECT m.id, m.ref, m.sender, m.state, m.pending,"
            " coalesce(d.status_mail, 0) AS status_mail FROM status_mails m"
            " LEFT JOIN senders d ON d.name = m.sender"
            " WHERE m.pending IS NOT NULL AND m.state != 'queued' ORDER BY m.id")

    async def status_mails(self, ref: str | None = None) -> list[sqlite3.Row]:
        """Status mails without their message, oldest first (of one signal, with `ref`)."""
        sql = ("SELECT id, ref, child, sender, recipient, fingerprint, message_id, state,"
               " attempts, next_attempt_at, lease_until, created_at, last_reply, pending"
               " FROM status_mails")
        if ref is not None:
            return await self.all(sql + " WHERE ref = ? ORDER BY id", (ref,))
        return await self.all(sql + " ORDER BY id")

    async def oldest_queued(self) -> str | None:
        row = await self.one("SELECT min(created_at) AS t FROM notices WHERE state = 'queued'")
        return str(row["t"]) if row and row["t"] else None

    async def counts(self) -> dict[str, int]:
        """Queue and child counts by state, for `status`."""
        out: dict[str, int] = {}
        for row in await self.all("SELECT 'notice.' || state AS k, count(*) AS n FROM notices"
                                  " GROUP BY state UNION ALL SELECT 'child.' || state, count(*)"
                                  " FROM children GROUP BY state"):
            out[str(row["k"])] = int(row["n"])
        return out

    async def lockouts(self, now: dt.datetime) -> list[sqlite3.Row]:
        """AUTH lockouts running at `now` and not lifted: scope, subject, login, since, until."""
        return await self.all("SELECT scope, subject, login, since, until FROM auth_lockouts"
                              " WHERE lifted_at IS NULL AND until > ? ORDER BY login, scope,"
                              " subject", (iso(now),))

    async def lockouts_lifted(self) -> bool:
        """Whether the command line lifted a lockout the daemon has not let go of yet."""
        return await self.one("SELECT 1 FROM auth_lockouts WHERE lifted_at IS NOT NULL"
                              " LIMIT 1") is not None

    async def queued_for_reasons(self, reasons: Sequence[str]) -> list[int]:
        """Queued notices whose last attempt ended for one of these reasons."""
        # Only placeholders are interpolated; the values travel as parameters.
        sql = ("SELECT id FROM notices WHERE state = 'queued' AND last_reason IN"  # noqa: S608
               f" ({','.join('?' * len(reasons))}) ORDER BY id")
        return [int(r["id"]) for r in await self.all(sql, list(reasons))]

    async def status_mail_senders(self) -> list[str]:
        """The senders that want status mail, by name."""
        return [str(r["name"]) for r in await self.all(
            "SELECT name FROM senders WHERE status_mail = 1 ORDER BY name")]


def _receipt(row: sqlite3.Row) -> Receipt:
    return Receipt(row["seq"], row["at"], row["event"], row["ref"], row["school"],
                   json.loads(row["detail"]), row["pseudonym"], row["prev"], row["hash"])
