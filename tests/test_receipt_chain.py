"""The receipt chain is keyed: rewriting it needs the receipt key, not just the database."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import stat
from pathlib import Path

import pytest
from conftest import Template, copy_gateway_state

from gateway.admin.cli import main
from gateway.store.api import Store, Tx
from gateway.store.chain import (
    GENESIS,
    chain_problems,
    legacy_receipt_hash,
    receipt_hash,
)
from gateway.store.chainkey import RECEIPTS_KEY, ChainKeyError, open_store

T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)


async def fill(store: Store, count: int) -> None:
    async def body(tx: Tx) -> None:
        for i in range(count):
            await tx.receipts.append("delivered", at=T0, ref=f"HWC-{i}", school="12AB00",
                                     reply="250 2.0.0 ok", attempt=1)

    await store.write(body)


def relink(db_path: Path, link: object, start_seq: int = 1) -> None:
    """What an intruder with write access to the database alone can do: drop the trigger and
    recompute every link from `start_seq` on with a function of their choosing."""
    with sqlite3.connect(db_path, isolation_level=None) as db:
        db.execute("DROP TRIGGER IF EXISTS receipts_append_only")
        rows = db.execute("SELECT seq, at, event, ref, school, detail, pseudonym, prev, hash"
                          " FROM receipts ORDER BY seq").fetchall()
        prev = GENESIS
        for seq, at, event, ref, school, detail, pseudonym, _prev, old_hash in rows:
            if seq < start_seq:
                prev = old_hash
                continue
            digest = link(prev, seq, at, event, ref, school, detail, pseudonym)  # type: ignore[operator]
            db.execute("UPDATE receipts SET prev = ?, hash = ? WHERE seq = ?",
                       (prev, digest, seq))
            prev = digest


def edit_detail(db_path: Path, seq: int) -> None:
    with sqlite3.connect(db_path, isolation_level=None) as db:
        db.execute("DROP TRIGGER IF EXISTS receipts_append_only")
        db.execute("UPDATE receipts SET detail = ? WHERE seq = ?",
                   (json.dumps({"attempt": 1, "reply": "550 5.1.1 no such user"},
                               sort_keys=True, separators=(",", ":")), seq))


async def problems_of(db_path: Path, secrets_dir: Path) -> list[str]:
    store = await open_store(db_path, secrets_dir)
    try:
        anchor = await store.receipts.anchor()
        return chain_problems(await store.receipts.all(), store.chain_key, anchor)
    finally:
        await store.close()


async def test_receipt_rewritten_and_chain_rehashed_with_sha256_is_named(tmp_path: Path) -> None:
    """Receipt 8 of 204 changed and every later link recomputed with plain SHA-256 (the attack
    review's rewrite): verification names receipt 8 as the first break."""
    db, secrets_dir = tmp_path / "hwc.sqlite3", tmp_path / "secrets"
    store = await open_store(db, secrets_dir)
    await fill(store, 204)
    await store.close()
    edit_detail(db, 8)
    relink(db, legacy_receipt_hash, start_seq=8)
    problems = await problems_of(db, secrets_dir)
    assert problems[0] == "receipt 8: content does not match its hash"
    assert len(problems) == 204 - 7  # every rewritten link fails, none before it


async def test_chain_rebuilt_under_another_key_is_not_intact(tmp_path: Path) -> None:
    """A chain rebuilt whole under any key but the deployment's does not verify."""
    db, secrets_dir = tmp_path / "hwc.sqlite3", tmp_path / "secrets"
    store = await open_store(db, secrets_dir)
    await fill(store, 20)
    await store.close()
    edit_detail(db, 3)

    def guessed(*fields: object) -> str:
        return receipt_hash(b"\0" * 32, *fields)  # type: ignore[arg-type]

    relink(db, guessed)
    assert (await problems_of(db, secrets_dir))[0] == "receipt 1: content does not match its hash"


async def test_receipt_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    """A new deployment gets a 32-byte receipt key, 0600, used again at the next start."""
    db, secrets_dir = tmp_path / "hwc.sqlite3", tmp_path / "secrets"
    store = await open_store(db, secrets_dir)
    await fill(store, 3)
    first = store.chain_key
    await store.close()
    key_file = secrets_dir / RECEIPTS_KEY
    assert key_file.read_bytes() == first and len(first) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (secrets_dir / (RECEIPTS_KEY + ".new")).exists()
    assert await problems_of(db, secrets_dir) == []


def legacy_database(db_path: Path, count: int) -> None:
    """A database as a gateway before keyed receipts left it: SHA-256 links, no marker."""
    with sqlite3.connect(db_path, isolation_level=None) as db:
        db.execute("DELETE FROM meta WHERE key = 'receipt_chain'")
    relink(db_path, legacy_receipt_hash)
    assert count > 0


async def test_chain_from_before_the_key_is_relinked_once(tmp_path: Path) -> None:
    """An intact chain written before receipts were keyed is re-linked under the new key at the
    first start, and verifies; receipts written after it follow on."""
    db, scratch = tmp_path / "hwc.sqlite3", tmp_path / "scratch"
    store = await open_store(db, scratch)
    await fill(store, 10)
    await store.close()
    legacy_database(db, 10)
    secrets_dir = tmp_path / "secrets"  # the deployment as it was: no receipt key yet
    store = await open_store(db, secrets_dir)
    try:
        await fill(store, 2)
        assert chain_problems(await store.receipts.all(), store.chain_key) == []
    finally:
        await store.close()
    with sqlite3.connect(db) as raw, pytest.raises(sqlite3.IntegrityError,
                                                   match="append-only"):  # the trigger is back
        raw.execute("UPDATE receipts SET event = 'x' WHERE seq = 1")


async def test_broken_chain_from_before_the_key_is_not_laundered(tmp_path: Path) -> None:
    """A chain already broken before the upgrade is not re-linked: the break stays visible."""
    db, scratch = tmp_path / "hwc.sqlite3", tmp_path / "scratch"
    store = await open_store(db, scratch)
    await fill(store, 10)
    await store.close()
    legacy_database(db, 10)
    edit_detail(db, 4)
    assert "receipt 4: content does not match its hash" in \
        await problems_of(db, tmp_path / "secrets")


async def test_deleting_the_marker_does_not_get_a_rewritten_chain_relinked(
        tmp_path: Path) -> None:
    """Whether to re-link is decided by the key file, never by the database: a rewritten chain
    made to look like one from before the key stays broken."""
    db, secrets_dir = tmp_path / "hwc.sqlite3", tmp_path / "secrets"
    store = await open_store(db, secrets_dir)
    await fill(store, 10)
    await store.close()
    edit_detail(db, 5)
    legacy_database(db, 10)  # rewritten with SHA-256 links and the marker deleted
    problems = await problems_of(db, secrets_dir)
    assert problems[0] == "receipt 1: content does not match its hash"


async def test_upgrade_interrupted_before_the_rename_finishes_with_the_same_key(
        tmp_path: Path) -> None:
    """A start that died after re-linking but before renaming the key file finishes the
    upgrade next time with that same key: the chain verifies."""
    db, secrets_dir = tmp_path / "hwc.sqlite3", tmp_path / "secrets"
    store = await open_store(db, secrets_dir)
    await fill(store, 5)
    await store.close()
    (secrets_dir / RECEIPTS_KEY).rename(secrets_dir / (RECEIPTS_KEY + ".new"))
    assert await problems_of(db, secrets_dir) == []
    assert (secrets_dir / RECEIPTS_KEY).exists()


async def test_unreadable_receipt_key_is_one_line(tmp_path: Path) -> None:
    """A receipt key of the wrong size is refused with its path, not used."""
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / RECEIPTS_KEY).write_bytes(b"short")
    with pytest.raises(ChainKeyError, match=r"receipts\.key is not 32 bytes"):
        await open_store(tmp_path / "hwc.sqlite3", secrets_dir)


def test_receipts_verify_names_the_rewritten_receipt(capsys: pytest.CaptureFixture[str],
                                                     template: Template,
                                                     tmp_path: Path) -> None:
    """`receipts verify` on a chain rewritten with SHA-256 says which receipt breaks, exit 1."""
    config = copy_gateway_state(template, tmp_path)
    edit_detail(config.storage.path, 1)
    relink(config.storage.path, legacy_receipt_hash)
    code = main(["--config", str(config.path), "receipts", "verify"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0] == "receipt 1: content does not match its hash"
    assert "receipt chain BROKEN" in out
