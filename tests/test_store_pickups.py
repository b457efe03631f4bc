"""The pickup channel's store: keyless contacts (also in databases of earlier releases),
invitations used once, app codes taken once, wrong codes locking, boxes kept and erased."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.store.api import Tx
from gateway.store.sqlite.connection import SqliteStore

T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
KEY = b"k" * 32
FPR = "F" * 40
SCHOOL = "12AB00"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "gw.sqlite3", KEY)
    await store.write(lambda tx: tx.directory.upsert_school(SCHOOL, "De Regenboog", "Delft"))
    yield store
    await store.close()


async def test_contacts_of_an_older_release_may_become_keyless(tmp_path: Path) -> None:
    """A database whose contacts table says `fingerprint NOT NULL` (every release before the
    pickup page) is rebuilt at open: its contacts stay as they were, and a pickup contact
    without a key can be added."""
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path, isolation_level=None) as db:
        db.executescript(
            "CREATE TABLE schools (code TEXT PRIMARY KEY, name TEXT NOT NULL, place TEXT NOT"
            " NULL DEFAULT '', route TEXT);"
            "CREATE TABLE contacts (school TEXT NOT NULL REFERENCES schools(code) ON DELETE"
            " CASCADE, email TEXT NOT NULL, fingerprint TEXT NOT NULL,"
            " channel TEXT NOT NULL DEFAULT 'openpgp', PRIMARY KEY (school, email));")
        db.execute("INSERT INTO schools (code, name) VALUES (?, 'De Regenboog')", (SCHOOL,))
        db.execute("INSERT INTO contacts (school, email, fingerprint) VALUES (?, ?, ?)",
                   (SCHOOL, "a@school.nl", FPR))
    store = await SqliteStore.open(path, KEY)
    try:
        await store.write(lambda tx: tx.directory.set_contact(SCHOOL, "b@school.nl", None,
                                                              "pickup"))
        contacts = await store.directory.contacts(SCHOOL)
        assert [(c.email, c.fingerprint, c.channel) for c in contacts] == [
            ("a@school.nl", FPR, "openpgp"), ("b@school.nl", None, "pickup")]
    finally:
        await store.close()


async def test_an_invitation_is_used_once(store: SqliteStore) -> None:
    """Two requests racing for one invitation: only the first uses it; a new invitation
    (re-enrolment) replaces the old one, whose link then finds nothing."""
    async def invite(tx: Tx, digest: str) -> None:
        await tx.directory.set_contact(SCHOOL, "b@school.nl", None, "pickup")
        await tx.pickups.invite(SCHOOL, "b@school.nl", digest, "code", T0,
                                T0 + dt.timedelta(hours=72))

    await store.write(lambda tx: invite(tx, "old"))
    assert await store.write(lambda tx: tx.pickups.use_enrolment("old", T0)) is True
    assert await store.write(lambda tx: tx.pickups.use_enrolment("old", T0)) is False
    await store.write(lambda tx: invite(tx, "new"))
    assert await store.pickups.enrolment("old") is None
    fresh = await store.pickups.enrolment("new")
    assert fresh is not None and fresh.used_at is None


async def test_an_app_code_is_taken_once(store: SqliteStore) -> None:
    """An authenticator-app code counts only for a time step later than the last one taken:
    the same code again (a replay, or a second tab) is refused."""
    async def add(tx: Tx) -> int:
        await tx.directory.set_contact(SCHOOL, "b@school.nl", None, "pickup")
        return await tx.pickups.add_credential(SCHOOL, "b@school.nl", "totp", T0,
                                               secret=b"sealed")

    cred = await store.write(add)
    assert await store.write(lambda tx: tx.pickups.use_credential(cred, T0, step=100))
    assert not await store.write(lambda tx: tx.pickups.use_credential(cred, T0, step=100))
    assert not await store.write(lambda tx: tx.pickups.use_credential(cred, T0, step=99))
    assert await store.write(lambda tx: tx.pickups.use_credential(cred, T0, step=101))


async def test_wrong_codes_lock_at_the_limit(store: SqliteStore) -> None:
    """Wrong codes count up to the limit, which locks the subject until the given time and
    starts the count again; clearing forgets them."""
    until = T0 + dt.timedelta(minutes=15)
    for n in (1, 2):
        found = await store.write(lambda tx: tx.pickups.fail("link", "d", T0, 3, until))
        assert (found.failures, found.locked_until) == (n, None)
    locked = await store.write(lambda tx: tx.pickups.fail("link", "d", T0, 3, until))
    assert locked.locked_until == "2026-03-02T07:15:00Z"
    assert await store.pickups.throttle("link", "other") is None
    await store.write(lambda tx: tx.pickups.clear("link", "d"))
    assert await store.pickups.throttle("link", "d") is None


async def test_a_box_waits_until_read_and_is_erased_past_its_expiry(
        store: SqliteStore) -> None:
    """A pickup notice whose mail was delivered waits to be read; read once (by whom and
    when kept); past its expiry its box is listed and erased, and then kept no more."""
    async def seal(tx: Tx) -> int:
        await tx.directory.set_contact(SCHOOL, "b@school.nl", None, "pickup")
        await tx.signals.insert("HWC-1", "vt", None, None, "d", 1, T0)
        notice = await tx.notices.insert("HWC-1", SCHOOL, "<m@gw>", ["b@school.nl"], [],
                                         b"mail", [], T0, "ack", channel="pickup")
        await tx.pickups.put(notice, "tok", b"box", T0 + dt.timedelta(hours=30))
        await tx.notices.finish(notice, "delivered", "250", T0, "delivered", True)
        return notice

    notice = await store.write(seal)
    [waiting] = await store.pickups.waiting()
    assert (waiting.notice_id, waiting.sealed, waiting.recipients) == \
        (notice, b"box", ("b@school.nl",))
    await store.write(lambda tx: tx.pickups.opened(notice, T0))
    assert await store.write(lambda tx: tx.pickups.read(notice, "b@school.nl", T0))
    assert not await store.write(lambda tx: tx.pickups.read(notice, "x@school.nl", T0))
    assert await store.pickups.waiting() == []
    later = T0 + dt.timedelta(hours=31)
    assert [p.notice_id for p in await store.pickups.expired(later)] == [notice]
    assert await store.write(lambda tx: tx.pickups.erase(notice))
    found = await store.pickups.get("tok")
    assert found is not None and found.sealed is None and found.read_by == "b@school.nl"
    assert await store.pickups.expired(later) == []
