"""The delivery channel in the store: contacts and notices name their channel, a notice holds
its channel's opaque parcel, and databases of earlier releases are brought up to that."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from gateway.store.api import Tx
from gateway.store.sqlite.connection import SqliteStore
from gateway.store.sqlite.schema import SCHEMA

T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
KEY = b"k" * 32
FPR = "F" * 40


def _first_release_database(path: Path) -> None:
    """A database as the first release left it: a school, a contact, a queued notice."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(SCHEMA)
        db.execute("INSERT INTO schools (code, name) VALUES ('12AB00', 'De Regenboog')")
        db.execute("INSERT INTO contacts (school, email, fingerprint) VALUES (?, ?, ?)",
                   ("12AB00", "a@school.nl", FPR))
        db.execute("INSERT INTO signals (ref, sender, content_digest, accepted_at, children)"
                   " VALUES ('HWC-1', 'vt', 'd', '2026-03-02T07:00:00Z', 1)")
        db.execute("INSERT INTO notices (ref, school, message_id, recipients, fingerprints,"
                   " message, state, next_attempt_at, created_at) VALUES ('HWC-1', '12AB00',"
                   " '<n@gw>', '[\"a@school.nl\"]', ?, X'7365616c6564', 'queued',"
                   " '2026-03-02T07:00:00Z', '2026-03-02T07:00:00Z')", (f'["{FPR}"]',))


async def test_old_contacts_become_openpgp_contacts(tmp_path: Path) -> None:
    """A contact stored before channels existed comes back as an openpgp contact."""
    path = tmp_path / "old.sqlite3"
    _first_release_database(path)
    store = await SqliteStore.open(path, KEY)
    try:
        [contact] = await store.directory.contacts("12AB00")
        assert (contact.email, contact.fingerprint, contact.channel) == \
            ("a@school.nl", FPR, "openpgp")
    finally:
        await store.close()


async def test_old_notice_message_becomes_its_openpgp_parcel(tmp_path: Path) -> None:
    """A notice queued by an earlier release keeps its sealed bytes, now as the parcel of
    the openpgp channel, and can still be claimed, sent and erased."""
    path = tmp_path / "old.sqlite3"
    _first_release_database(path)
    store = await SqliteStore.open(path, KEY)
    try:
        [notice] = await store.notices.all()
        assert (notice.parcel, notice.channel) == (b"sealed", "openpgp")

        async def finish(tx: Tx) -> None:
            await tx.notices.finish(notice.id, "delivered", "250 ok", T0, "delivered", True)

        await store.write(finish)
        after = await store.notices.get(notice.id)
        assert after is not None and after.parcel == b""
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(notices)")}
    assert "parcel" in columns and "message" not in columns


async def test_a_new_notice_carries_the_channel_it_was_sealed_by(tmp_path: Path) -> None:
    """The store keeps the channel named at insert with the notice, next to its parcel."""
    store = await SqliteStore.open(tmp_path / "new.sqlite3", KEY)
    try:
        async def body(tx: Tx) -> int:
            await tx.signals.insert("HWC-1", "vt", None, None, "d", 1, T0)
            await tx.children.insert("HWC-1", 1, "routed", "12AB00", None, b"b", "p", T0)
            return await tx.notices.insert("HWC-1", "12AB00", "<n@gw>", ["a@school"], [FPR],
                                           b"opaque", [1], T0, channel="pickup")

        notice = await store.notices.get(await store.write(body))
        assert notice is not None and (notice.parcel, notice.channel) == (b"opaque", "pickup")
    finally:
        await store.close()
