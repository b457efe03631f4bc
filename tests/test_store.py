"""Tests for the SQLite store: durability settings, the receipt chain, transactions and the
queue."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.core.records import ProtectedRef, Receipt, from_iso, iso
from gateway.store.api import Tx
from gateway.store.chain import GENESIS, chain_problems, receipt_hash
from gateway.store.sqlite.connection import SqliteStore as Store

T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
KEY = b"k" * 32  # the receipt key of these tests


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "var" / "hwc.sqlite3", KEY)
    try:
        yield s
    finally:
        await s.close()


async def append_receipts(store: Store, count: int) -> None:
    for i in range(count):
        async def body(tx: Tx, i: int = i) -> None:
            await tx.receipts.append("signal.accepted", at=T0 + dt.timedelta(minutes=i),
                                     ref=f"HWC-{i}", school="12AB00", pseudonym=f"p{i}",
                                     children=i, reply="250 2.0.0 ok", fingerprints=["AB", "CD"])

        await store.write(body)


async def one(store: Store, sql: str) -> sqlite3.Row | None:
    """One row of `sql` on the store's own connection (a PRAGMA, a column the records omit)."""
    row: sqlite3.Row | None = await store.in_thread(lambda conn: conn.execute(sql).fetchone())
    return row


def raw(store: Store) -> sqlite3.Connection:
    """A second, plain sqlite3 connection to the same file, as an intruder or operator has."""
    return sqlite3.connect(store.path, isolation_level=None)


def test_iso_round_trip_is_utc_and_fixed_width() -> None:
    """Stored times are UTC, second precision, and text order is time order."""
    local = dt.datetime(2026, 3, 2, 8, 0, 0, 999, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert iso(local) == "2026-03-02T07:00:00Z"
    assert from_iso(iso(local)) == T0
    assert iso(T0) < iso(T0 + dt.timedelta(seconds=1)) < iso(T0 + dt.timedelta(days=400))


async def test_open_sets_wal_and_full_sync(store: Store) -> None:
    """The database is in WAL mode with synchronous=FULL, foreign keys on, file mode 0600."""
    journal = await one(store, "PRAGMA journal_mode")
    sync = await one(store, "PRAGMA synchronous")
    fks = await one(store, "PRAGMA foreign_keys")
    assert journal is not None and journal[0] == "wal"
    assert sync is not None and sync[0] == 2  # FULL
    assert fks is not None and fks[0] == 1
    with raw(store) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700


async def test_open_twice_keeps_data(tmp_path: Path) -> None:
    """Opening an existing database keeps its rows and schema version."""
    path = tmp_path / "db.sqlite3"
    first = await Store.open(path, KEY)
    await append_receipts(first, 2)
    await first.close()
    second = await Store.open(path, KEY)
    try:
        assert len(await second.receipts.all()) == 2
        row = await one(second, "SELECT value FROM meta WHERE key = 'schema_version'")
        assert row is not None and row[0] == "1"
    finally:
        await second.close()


async def test_receipt_chain_of_appended_receipts_is_intact(store: Store) -> None:
    """Receipts appended in separate transactions form an unbroken chain from the genesis hash."""
    await append_receipts(store, 5)
    rows = await store.receipts.all()
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
    assert rows[0].prev == GENESIS
    assert all(b.prev == a.hash for a, b in itertools.pairwise(rows))
    assert rows[2].detail == {"children": 2, "reply": "250 2.0.0 ok",
                              "fingerprints": ["AB", "CD"]}
    assert chain_problems(rows, KEY) == []


async def test_receipts_filter_by_ref_and_since(store: Store) -> None:
    """receipts(ref=) finds the signal and its children; since= drops older entries."""
    async def body(tx: Tx) -> None:
        await tx.receipts.append("signal.accepted", at=T0, ref="HWC-7")
        await tx.receipts.append("child.held", at=T0, ref="HWC-7-1")
        await tx.receipts.append("signal.accepted", at=T0, ref="HWC-70")
        await tx.receipts.append("purge", at=T0 + dt.timedelta(hours=1))

    await store.write(body)
    assert [r.ref for r in await store.receipts.all(ref="HWC-7")] == ["HWC-7", "HWC-7-1"]
    assert [r.event for r in await store.receipts.all(since=T0 + dt.timedelta(minutes=1))] == \
        ["purge"]


async def test_receipts_cannot_be_updated(store: Store) -> None:
    """UPDATE on receipts is refused by the append-only trigger, from any connection."""
    await append_receipts(store, 3)
    with raw(store) as db, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE receipts SET detail = '{}' WHERE seq = 2")
    assert chain_problems(await store.receipts.all(), KEY) == []


async def test_edited_receipt_is_reported(store: Store) -> None:
    """With the trigger dropped and one detail edited, the chain names that receipt."""
    await append_receipts(store, 4)
    with raw(store) as db:
        db.execute("DROP TRIGGER receipts_append_only")
        db.execute("UPDATE receipts SET detail = ? WHERE seq = 2",
                   (json.dumps({"children": 9, "fingerprints": ["AB", "CD"],
                                "reply": "250 2.0.0 ok"}, sort_keys=True,
                               separators=(",", ":")),))
    problems = chain_problems(await store.receipts.all(), KEY)
    assert problems == ["receipt 2: content does not match its hash"]


async def test_edited_and_rehashed_receipt_is_reported_by_its_successor(store: Store) -> None:
    """Re-hashing an edited receipt does not help: the next receipt no longer follows it."""
    await append_receipts(store, 4)
    rows = await store.receipts.all()
    r = rows[1]
    detail = json.dumps({"children": 9}, sort_keys=True, separators=(",", ":"))
    forged = receipt_hash(KEY, r.prev, r.seq, r.at, r.event, r.ref, r.school, detail, r.pseudonym)
    with raw(store) as db:
        db.execute("DROP TRIGGER receipts_append_only")
        db.execute("UPDATE receipts SET detail = ?, hash = ? WHERE seq = 2", (detail, forged))
    assert chain_problems(await store.receipts.all(), KEY) == \
        ["receipt 3: does not follow the previous receipt"]


async def test_deleted_receipt_is_reported_missing(store: Store) -> None:
    """Deleting a receipt in the middle is reported as missing."""
    await append_receipts(store, 5)
    with raw(store) as db:
        db.execute("DELETE FROM receipts WHERE seq = 3")
    problems = chain_problems(await store.receipts.all(), KEY)
    assert "receipt 3: missing (next is 4)" in problems
    assert "receipt 4: does not follow the previous receipt" in problems


async def test_deleted_first_receipt_is_reported(store: Store) -> None:
    """Deleting the first receipt breaks the link to the genesis hash."""
    await append_receipts(store, 3)
    with raw(store) as db:
        db.execute("DELETE FROM receipts WHERE seq = 1")
    assert chain_problems(await store.receipts.all(), KEY) == \
        ["receipt 2: does not follow the previous receipt"]


async def test_inserted_forged_receipt_is_reported(store: Store) -> None:
    """A row slipped in with made-up content is reported, whether its hash is faked or computed."""
    await append_receipts(store, 3)
    with raw(store) as db:
        # A forged row appended with an invented hash.
        db.execute("INSERT INTO receipts (seq, at, event, ref, school, detail, pseudonym, prev,"
                   " hash) VALUES (4, ?, 'notice.delivered', 'HWC-9', '12AB00', '{}', NULL,"
                   " ?, ?)", (iso(T0), "0" * 64, "f" * 64))
    problems = chain_problems(await store.receipts.all(), KEY)
    assert problems == ["receipt 4: does not follow the previous receipt",
                        "receipt 4: content does not match its hash"]


async def test_replaced_receipt_with_valid_hash_is_reported(store: Store) -> None:
    """A receipt replaced by a self-consistent forgery is caught by the one after it."""
    await append_receipts(store, 4)
    rows = await store.receipts.all()
    prev = rows[1].hash
    forged = receipt_hash(KEY, prev, 3, iso(T0), "notice.delivered", "HWC-9", "12AB00", "{}", None)
    with raw(store) as db:
        db.execute("DELETE FROM receipts WHERE seq = 3")
        db.execute("INSERT INTO receipts (seq, at, event, ref, school, detail, pseudonym, prev,"
                   " hash) VALUES (3, ?, 'notice.delivered', 'HWC-9', '12AB00', '{}', NULL,"
                   " ?, ?)", (iso(T0), prev, forged))
    assert chain_problems(await store.receipts.all(), KEY) == \
        ["receipt 4: does not follow the previous receipt"]


async def test_transaction_rolls_back_on_exception(store: Store) -> None:
    """An exception inside a transaction leaves no signal, child or receipt behind."""
    async def body(tx: Tx) -> None:
        await tx.signals.insert("HWC-1", "vt", "<m@x>", ProtectedRef("r1", b"sealed"), "d1",
                                1, T0)
        await tx.children.insert("HWC-1", 1, "routed", "12AB00", None, b"blob", "p", T0)
        await tx.receipts.append("signal.accepted", at=T0, ref="HWC-1")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.write(body)
    assert await store.signals.get("HWC-1") is None
    assert await store.children.all() == []
    assert await store.receipts.all() == []
    with raw(store) as db:
        assert db.execute("SELECT count(*) FROM receipts").fetchone()[0] == 0
    # The store is usable afterwards.
    await append_receipts(store, 1)
    assert len(await store.receipts.all()) == 1


async def test_committed_transaction_is_visible_to_another_connection(store: Store) -> None:
    """Once the transaction block ends, another connection sees the rows (committed)."""
    async def body(tx: Tx) -> None:
        await tx.signals.insert("HWC-1", "vt", None, None, "d1", 1, T0)
        await tx.receipts.append("signal.accepted", at=T0, ref="HWC-1")

    await store.write(body)
    with raw(store) as db:
        assert db.execute("SELECT ref FROM signals").fetchall() == [("HWC-1",)]
        assert db.execute("SELECT count(*) FROM receipts").fetchone()[0] == 1


async def add_signal(store: Store, ref: str, sender: str, message_id: str | None,
                     sender_ref: ProtectedRef | None, digest: str, at: dt.datetime) -> None:
    async def body(tx: Tx) -> None:
        await tx.signals.insert(ref, sender, message_id, sender_ref, digest, 1, at)

    await store.write(body)


@pytest.fixture
async def signals(store: Store) -> Store:
    await add_signal(store, "HWC-1", "vt", "<m1@vt>", ProtectedRef("ref-digest-1", b"x"),
                     "digest-1", T0)
    await add_signal(store, "HWC-2", "vt", None, None, "digest-2", T0 + dt.timedelta(days=1))
    return store


@pytest.mark.parametrize(
    ("sender", "message_id", "digest", "expected"),
    [
        ("vt", "<m1@vt>", "digest-1", ("HWC-1", True)),
        ("vt", "<m1@vt>", "other", ("HWC-1", False)),
        ("vt", "<new@vt>", "digest-1", ("HWC-1", True)),
        ("vt", None, "digest-2", ("HWC-2", True)),
        ("vt", "<m1@vt>", "digest-2", ("HWC-2", True)),
        ("vt", "<new@vt>", "other", None),
        ("vt", None, "other", None),
        ("politie", "<m1@vt>", "digest-1", None),
    ],
)
async def test_find_duplicate(signals: Store, sender: str, message_id: str | None, digest: str,
                              expected: tuple[str, bool] | None) -> None:
    """Same sender and content digest, or same sender and Message-ID, finds the earlier
    signal, and says whether its content is the same; a content match comes first."""

    async def body(tx: Tx) -> tuple[str, bool] | None:
        return await tx.signals.find_duplicate(sender, message_id, digest,
                                               T0 - dt.timedelta(days=30))

    assert await signals.write(body) == expected


async def test_find_duplicate_ignores_signals_outside_the_window(signals: Store) -> None:
    """A signal accepted before the window start is not a duplicate any more."""
    async def body(tx: Tx) -> None:
        assert await tx.signals.find_duplicate("vt", "<m1@vt>", "digest-1",
                                               T0 + dt.timedelta(seconds=1)) is None
        assert await tx.signals.find_duplicate("vt", "<m1@vt>", "x", T0) == ("HWC-1", False)

    await signals.write(body)


async def test_find_duplicate_does_not_match_null_message_ids(signals: Store) -> None:
    """A stored signal without Message-ID is not matched by another one without Message-ID."""
    async def body(tx: Tx) -> None:
        assert await tx.signals.find_duplicate("vt", None, "x",
                                               T0 - dt.timedelta(days=1)) is None

    await signals.write(body)


async def test_find_sender_ref_finds_the_same_senders_case_only(signals: Store) -> None:
    """A case reference seen before is found by its digest, for the same sender only."""
    async def body(tx: Tx) -> None:
        assert await tx.signals.find_sender_ref("vt", "ref-digest-1") == "HWC-1"
        assert await tx.signals.find_sender_ref("politie", "ref-digest-1") is None
        assert await tx.signals.find_sender_ref("vt", "ref-digest-2") is None

    await signals.write(body)


async def test_reported_signal_keeps_no_sealed_case_reference(signals: Store) -> None:
    """Once the status mail is dealt with, the sealed case reference goes; its digest stays."""
    async def body(tx: Tx) -> None:
        await tx.signals.mark_reported(["HWC-1"])

    await signals.write(body)
    row = await signals.signals.get("HWC-1")
    assert row is not None and row.sender_ref_blob is None
    assert row.sender_ref_digest == "ref-digest-1"


async def test_upgrade_marks_signals_already_reported(tmp_path: Path) -> None:
    """A database from before the `reported` column gets it at start-up, set for exactly the
    signals whose status mail was already dealt with, so none is reported twice."""
    path = tmp_path / "old.sqlite3"
    s = await Store.open(path, KEY)

    async def body(tx: Tx) -> None:
        for ref in ("HWC-A", "HWC-B"):
            await tx.signals.insert(ref, "vt", None, None, f"digest-{ref}", 0, T0)
        await tx.receipts.append("status_sent", at=T0, ref="HWC-A", sender="vt")

    await s.write(body)
    await s.close()
    with sqlite3.connect(path, isolation_level=None) as db:  # as an older gateway left it
        db.execute("DROP INDEX signals_unreported")
        db.execute("ALTER TABLE signals DROP COLUMN reported")
    s = await Store.open(path, KEY)
    try:
        rows = [await s.signals.get(ref) for ref in ("HWC-A", "HWC-B")]
        assert [(r.ref, r.reported) for r in rows if r] == [("HWC-A", True), ("HWC-B", False)]
        assert [r.ref for r in await s.signals.finished_unreported()] == ["HWC-B"]
    finally:
        await s.close()


async def test_receipts_of_one_transaction_follow_each_other(store: Store) -> None:
    """Several receipts in one transaction chain onto each other and onto the one before."""
    await append_receipts(store, 1)

    async def body(tx: Tx) -> tuple[Receipt, Receipt]:
        first = await tx.receipts.append("a", at=T0, ref="HWC-X")
        second = await tx.receipts.append("b", at=T0, ref="HWC-X")
        return first, second

    first, second = await store.write(body)
    before = (await store.receipts.all())[0]
    assert (first.seq, first.prev) == (before.seq + 1, before.hash)
    assert (second.seq, second.prev) == (first.seq + 1, first.hash)
    assert chain_problems(await store.receipts.all(), KEY) == []


async def test_rewrite_held_back_by_a_reader_is_finished_at_the_next_start(
        tmp_path: Path) -> None:
    """Moving clear case references out of an old database whose rewrite another process's
    reader holds back is finished at the next start: then no byte of the file or WAL has one."""
    path = tmp_path / "old.sqlite3"
    await (await Store.open(path, KEY)).close()
    db = sqlite3.connect(path, isolation_level=None)  # as an older gateway left it
    db.execute("ALTER TABLE signals ADD COLUMN sender_ref TEXT")
    db.execute("INSERT INTO signals (ref, sender, sender_ref, content_digest, accepted_at,"
               " children) VALUES ('HWC-1', 'vt', 'VT-SECRET-1', 'd', ?, 1)", (iso(T0),))
    db.close()

    def protect(ref: str, value: str, seal: bool) -> ProtectedRef:
        return ProtectedRef(f"digest-of-{value[3:]}", b"sealed" if seal else None)

    def stored() -> bytes:
        return b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("old"))

    s = await Store.open(path, KEY)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        await s.in_thread(lambda conn: conn.execute("PRAGMA busy_timeout=100"))
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM signals").fetchone()
        assert await s.protect_sender_refs(protect) == 1
        assert await s.meta.get("sender_refs_vacuum") == "due"
    finally:
        reader.close()
        await s.close()
    s = await Store.open(path, KEY)
    try:
        assert await s.protect_sender_refs(protect) == 0
        assert await s.meta.get("sender_refs_vacuum") is None
        assert b"VT-SECRET" not in stored()
        row = await s.signals.get("HWC-1")
        assert row is not None and row.sender_ref_digest == "digest-of-SECRET-1"
    finally:
        await s.close()
