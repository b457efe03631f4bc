"""Bringing a database of an earlier release up to date, at open.

Takes the open connection (in the store's database thread); makes the tables, adds the columns
and indexes added since the first release (`COLUMNS`, `LATE_INDEXES`), renames columns
(`RENAMES`), moves case references
kept in clear (`protect_sender_refs`) and re-links a chain of unkeyed receipts under the
receipt key (`key_chain`). Each step only looks once it is done; a failing step raises and the
database is left as the last committed step left it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from gateway.core.records import Anchor, ProtectedRef
from gateway.store.chain import (
    CHAIN_SCHEME,
    GENESIS,
    chain_problems,
    detail_text,
    legacy_receipt_hash,
    receipt_hash,
)
from gateway.store.sqlite.base import Session
from gateway.store.sqlite.receipts import receipt_of
from gateway.store.sqlite.schema import APPEND_ONLY_TRIGGER, SCHEMA, SCHEMA_VERSION

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
    # Older databases had it in clear in `sender_ref`: `protect_sender_refs` moves it.
    ("signals", "sender_ref_digest", "TEXT", ""),
    ("signals", "sender_ref_blob", "BLOB", ""),
    # When `queue retry` queued a failed notice again: its give-up time counts from there.
    ("notices", "requeued_at", "TEXT", ""),
    # The fixed reason key of the last attempt's outcome (gateway.delivery.deliver.REASONS).
    ("notices", "last_reason", "TEXT", ""),
    # The node holding a lease (`gateway.store.api.node_id`): at start-up only dead leases are
    # released. NULL on leases written before: those were all of one node.
    ("notices", "lease_owner", "TEXT", ""),
    ("outbox", "lease_owner", "TEXT", ""),
    # The delivery channel of a contact and of a notice (gateway.delivery.channel.CHANNELS):
    # every contact and notice before channels existed was OpenPGP/MIME by SMTP.
    ("contacts", "channel", "TEXT NOT NULL DEFAULT 'openpgp'", ""),
    ("notices", "channel", "TEXT NOT NULL DEFAULT 'openpgp'", ""),
]
# Columns renamed since the first release: (table, old name, new name). A notice holds its
# channel's sealed parcel, opaque to all but that channel (for openpgp the RFC 3156 message
# it always held), so `message` became `parcel`.
RENAMES = [("notices", "message", "parcel")]
# The outbox (status mails and alerts) was the table `status_mails` (status mails only, with
# `ref`, `child` and `sender` NOT NULL): its rows move over as they are, of kind "status".
OUTBOX_COLUMNS = ("id, ref, child, sender, recipient, fingerprint, message_id, message, state,"
                  " attempts, next_attempt_at, lease_until, lease_owner, created_at, last_reply,"
                  " pending")
# Indexes on columns of COLUMNS: made after those exist; and tables added since.
LATE_INDEXES = """
CREATE TABLE IF NOT EXISTS seal_attempts (
    ref TEXT NOT NULL, school TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL, lease_until TEXT, lease_owner TEXT,
    PRIMARY KEY (ref, school));
CREATE INDEX IF NOT EXISTS signals_unreported ON signals(accepted_at) WHERE reported = 0;
CREATE INDEX IF NOT EXISTS signals_sender_ref_digest ON signals(sender, sender_ref_digest);
CREATE INDEX IF NOT EXISTS notices_ack ON notices(ack_digest) WHERE ack_digest IS NOT NULL;
CREATE TABLE IF NOT EXISTS enrolments (
    school TEXT NOT NULL, email TEXT NOT NULL, token_digest TEXT NOT NULL UNIQUE,
    code_digest TEXT NOT NULL, created_at TEXT NOT NULL, expires_at TEXT NOT NULL,
    used_at TEXT, PRIMARY KEY (school, email),
    FOREIGN KEY (school, email) REFERENCES contacts(school, email)
        ON DELETE CASCADE ON UPDATE CASCADE);
CREATE TABLE IF NOT EXISTS credentials (
    id INTEGER PRIMARY KEY, school TEXT NOT NULL, email TEXT NOT NULL, kind TEXT NOT NULL,
    credential_id TEXT UNIQUE, public_key BLOB, sign_count INTEGER NOT NULL DEFAULT 0,
    secret BLOB, last_step INTEGER, created_at TEXT NOT NULL, last_used_at TEXT,
    FOREIGN KEY (school, email) REFERENCES contacts(school, email)
        ON DELETE CASCADE ON UPDATE CASCADE);
CREATE INDEX IF NOT EXISTS credentials_contact ON credentials(school, email);
CREATE TABLE IF NOT EXISTS pickups (
    notice_id INTEGER PRIMARY KEY REFERENCES notices(id), token_digest TEXT NOT NULL UNIQUE,
    sealed BLOB, expires_at TEXT NOT NULL, opened INTEGER NOT NULL DEFAULT 0,
    first_opened_at TEXT, read_at TEXT, read_by TEXT);
CREATE INDEX IF NOT EXISTS pickups_sealed ON pickups(expires_at) WHERE sealed IS NOT NULL;
CREATE TABLE IF NOT EXISTS web_failures (
    scope TEXT NOT NULL, subject TEXT NOT NULL, failures INTEGER NOT NULL DEFAULT 0,
    since TEXT NOT NULL, locked_until TEXT, PRIMARY KEY (scope, subject));
"""
# notices_ack: anyone may name an ack address without AUTH; without the index each unknown one
# scanned every notice (62 ms at 30,000 notices, issue 11). Partial: a used token is NULL.
# enrolments, credentials, pickups, web_failures: the pickup channel (gateway.delivery.pickup)
# and its page (gateway.web): invitations, passkeys and app secrets, the boxes only a link
# opens, and wrong codes counted per link, contact and invitation.


def upgrade(conn: sqlite3.Connection) -> None:
    """Make the tables, then add what is missing (with its backfill)."""
    conn.executescript(SCHEMA)
    conn.execute(APPEND_ONLY_TRIGGER)
    move_status_mails(conn)
    for table, old, new in RENAMES:
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if old in present and new not in present:
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
    for table, column, definition, backfill in COLUMNS:
        present = {row["name"] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if backfill:
                conn.execute(backfill)
    keyless_contacts(conn)
    conn.executescript(LATE_INDEXES)
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                 (str(SCHEMA_VERSION),))


def keyless_contacts(conn: sqlite3.Connection) -> None:
    """Let `contacts.fingerprint` be NULL (a pickup contact has no key): SQLite cannot drop a
    NOT NULL, so the table is made anew with its rows, in one transaction."""
    columns = {row["name"]: row["notnull"] for row in conn.execute("PRAGMA table_info(contacts)")}
    if not columns.get("fingerprint"):
        return
    conn.executescript(
        "BEGIN IMMEDIATE;"
        " CREATE TABLE contacts_keyless (school TEXT NOT NULL REFERENCES schools(code)"
        " ON DELETE CASCADE, email TEXT NOT NULL, fingerprint TEXT,"
        " channel TEXT NOT NULL DEFAULT 'openpgp', PRIMARY KEY (school, email));"
        " INSERT INTO contacts_keyless (school, email, fingerprint, channel)"
        " SELECT school, email, fingerprint, channel FROM contacts;"
        " DROP TABLE contacts; ALTER TABLE contacts_keyless RENAME TO contacts; COMMIT;")


def move_status_mails(conn: sqlite3.Connection) -> None:
    """Move the rows of a `status_mails` table (before the outbox) into `outbox`, ids, states,
    leases and pending follow-ups kept, in one transaction; the old table goes."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                    " AND name = 'status_mails'").fetchone() is None:
        return
    present = {row["name"] for row in conn.execute("PRAGMA table_info(status_mails)")}
    selected = ", ".join(name if name in present else "NULL"
                         for name in OUTBOX_COLUMNS.split(", "))
    # Column names from OUTBOX_COLUMNS and PRAGMA table_info only: no value is spliced in.
    move = f"INSERT INTO outbox (kind, {OUTBOX_COLUMNS}) SELECT 'status', {selected}"
    conn.executescript(f"BEGIN IMMEDIATE; {move} FROM status_mails;"
                       " DROP TABLE status_mails; COMMIT;")


def key_chain(s: Session) -> list[str]:
    """Inside a write transaction: re-link receipts written before receipts were keyed (plain
    SHA-256) under the key. Only an intact chain is re-linked: a chain already broken is left
    as it is, so that `receipts verify` goes on showing where (re-linking it would hide the
    break). Returns the breaks found."""
    if s.one("SELECT 1 FROM meta WHERE key = 'receipt_chain'") is not None:
        return []  # another process did it first
    rows = [receipt_of(row) for row in s.all("SELECT * FROM receipts ORDER BY seq")]
    found = s.one("SELECT value FROM meta WHERE key = 'chain_anchor'")
    anchor = Anchor(*json.loads(found["value"])) if found else None
    problems = chain_problems(rows, s.chain_key, anchor, link=legacy_receipt_hash)
    if not problems and rows:
        s.run("DROP TRIGGER receipts_append_only")
        prev = anchor.hash if anchor else GENESIS
        for r in rows:
            digest = receipt_hash(s.chain_key, prev, r.seq, r.at, r.event, r.ref,
                                  r.school, detail_text(r.detail), r.pseudonym)
            s.run("UPDATE receipts SET prev = ?, hash = ? WHERE seq = ?", (prev, digest, r.seq))
            prev = digest
        s.run(APPEND_ONLY_TRIGGER)
    s.set_meta("receipt_chain", CHAIN_SCHEME)
    return problems


def has_clear_sender_refs(conn: sqlite3.Connection) -> bool:
    return "sender_ref" in {row["name"] for row in conn.execute("PRAGMA table_info(signals)")}


def protect_sender_refs(s: Session, protect: Callable[[str, str, bool], ProtectedRef]) -> int:
    """Inside a write transaction: every case reference kept in clear (`signals.sender_ref`)
    becomes `protect(ref, reference, still_to_report)` (the caller holds the vault; the seal
    is only needed while the status mail is to come), and the clear column and its index go.
    Returns the number moved; `wipe_free_pages` must follow, outside the transaction."""
    rows = s.all("SELECT ref, sender_ref, reported FROM signals WHERE sender_ref IS NOT NULL")
    moved = [(str(r["ref"]), protect(str(r["ref"]), str(r["sender_ref"]), not r["reported"]))
             for r in rows]
    s.many("UPDATE signals SET sender_ref_digest = ?, sender_ref_blob = ?, sender_ref = NULL"
           " WHERE ref = ?", [(p.digest, p.blob, ref) for ref, p in moved])
    s.run("DROP INDEX IF EXISTS signals_sender_ref")
    s.run("ALTER TABLE signals DROP COLUMN sender_ref")
    # Remembered in the same transaction: a rewrite that fails or is held back is done at the
    # next start, not forgotten with the column gone.
    s.set_meta("sender_refs_vacuum", "due")
    return len(moved)


def wipe_free_pages(conn: sqlite3.Connection) -> None:
    """Rewrite the file (VACUUM, then a checkpoint that empties the WAL) when an upgrade left
    clear values in free pages, so that no free page and no old WAL frame still holds one."""
    if conn.execute("SELECT 1 FROM meta WHERE key = 'sender_refs_vacuum'").fetchone() is None:
        return
    # Outside any transaction, as VACUUM requires. Not every SQLite build zeroes deleted bytes
    # (SECURE_DELETE); VACUUM rebuilds every page either way, and the TRUNCATE checkpoint
    # copies them over the old ones and empties the WAL. A reader of another process can hold
    # the checkpoint back (it answers busy after `busy_timeout`): then the next start tries again.
    conn.execute("VACUUM")
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    if busy is not None and busy[0] == 0:
        conn.execute("DELETE FROM meta WHERE key = 'sender_refs_vacuum'")
