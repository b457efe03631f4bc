"""The SQLite tables as the first release made them, and the receipts' append-only trigger.

Columns and indexes added since are in `gateway.store.sqlite.migrate`, which brings a database
of any earlier release (and a new one) to the same shape at open.
"""

from __future__ import annotations

SCHEMA_VERSION = 1

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
    email TEXT NOT NULL, fingerprint TEXT, PRIMARY KEY (school, email));
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
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, topic TEXT, ref TEXT, child INTEGER,
    sender TEXT, recipient TEXT NOT NULL, fingerprint TEXT NOT NULL, message_id TEXT NOT NULL,
    message BLOB NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    crashes INTEGER NOT NULL DEFAULT 0, next_attempt_at TEXT NOT NULL, lease_until TEXT,
    lease_owner TEXT, created_at TEXT NOT NULL, last_reply TEXT, pending TEXT,
    UNIQUE (ref, child));
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(kind, state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(id) WHERE pending IS NOT NULL;
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
