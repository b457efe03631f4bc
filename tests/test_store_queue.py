"""Tests for the SQLite store's write transactions (`write`: one hop, all or nothing) and its
notice queue: sealing children into notices, leases, finishing and deferring."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
import test_store

from gateway.core.policy import erase_notice
from gateway.core.records import NoticeRecord, iso
from gateway.store.api import Conflict, Tx
from gateway.store.chain import chain_problems
from gateway.store.sqlite.connection import SqliteStore as Store

# The store fixture, the receipt key and the receipts helper are test_store's.
store = test_store.store
KEY, T0, append_receipts = test_store.KEY, test_store.T0, test_store.append_receipts


async def queued_signal(store: Store) -> None:
    async def body(tx: Tx) -> None:
        await tx.signals.insert("HWC-1", "vt", None, None, "d", 3, T0)
        await tx.children.insert("HWC-1", 1, "routed", "12AB00", None, b"b1", "p1", T0)
        await tx.children.insert("HWC-1", 2, "routed", "12AB00", None, b"b2", "p2", T0)
        await tx.children.insert("HWC-1", 3, "held", None, "no match", b"b3", "p3", T0)

    await store.write(body)


async def test_insert_notice_seals_routed_children(store: Store) -> None:
    """A notice for routed children is queued and the children move to sealed, linked to it."""
    await queued_signal(store)

    async def body(tx: Tx) -> int:
        return await tx.notices.insert("HWC-1", "12AB00", "<n@gw>", ["a@school"], ["F" * 40],
                                       b"sealed", [1, 2], T0)

    notice_id = await store.write(body)
    notice = await store.notices.get(notice_id)
    assert notice is not None and notice.state == "queued" and notice.attempts == 0
    assert list(notice.recipients) == ["a@school"]
    states = [(c.n, c.state, c.notice_id) for c in await store.children.all(ref="HWC-1")]
    assert states == [(1, "sealed", notice_id), (2, "sealed", notice_id), (3, "held", None)]


async def test_insert_notice_conflict_commits_nothing(store: Store) -> None:
    """A child no longer 'routed' raises Conflict and the whole transaction is rolled back."""
    await queued_signal(store)
    async def body(tx: Tx) -> None:
        await tx.receipts.append("notice.sealed", at=T0, ref="HWC-1")
        await tx.notices.insert("HWC-1", "12AB00", "<n@gw>", ["a@school"], ["F" * 40],
                                b"sealed", [1, 3], T0)

    with pytest.raises(Conflict):
        await store.write(body)
    assert await store.notices.all() == []
    assert await store.receipts.all() == []
    child = await store.children.get("HWC-1", 1)
    assert child is not None and child.state == "routed" and child.notice_id is None


async def test_insert_notice_twice_for_one_child_conflicts(store: Store) -> None:
    """A child already sealed into one notice cannot be sealed into a second."""
    await queued_signal(store)

    async def body(tx: Tx) -> int:
        return await tx.notices.insert("HWC-1", "12AB00", "<a@gw>", ["a@s"], ["F" * 40], b"m",
                                       [1], T0)

    first = await store.write(body)

    async def second(tx: Tx) -> None:
        await tx.notices.insert("HWC-1", "12AB00", "<b@gw>", ["a@s"], ["F" * 40], b"m",
                                [2, 1], T0)

    with pytest.raises(Conflict):
        await store.write(second)
    assert [n.id for n in await store.notices.all()] == [first]
    child = await store.children.get("HWC-1", 2)
    assert child is not None and child.state == "routed"


async def one_notice(store: Store) -> int:
    await queued_signal(store)

    async def body(tx: Tx) -> int:
        return await tx.notices.insert("HWC-1", "12AB00", "<n@gw>", ["a@school"], ["F" * 40],
                                       b"sealed", [1], T0)

    return await store.write(body)


async def claim(store: Store, notice_id: int, now: dt.datetime,
                seconds: int = 60) -> NoticeRecord | None:
    async def body(tx: Tx) -> NoticeRecord | None:
        return await tx.notices.claim(notice_id, now + dt.timedelta(seconds=seconds), now)

    return await store.write(body)


async def test_claim_notice_lease(store: Store) -> None:
    """A second claim fails while the lease holds and succeeds once it has run out."""
    notice_id = await one_notice(store)
    assert await claim(store, notice_id, T0)
    assert not await claim(store, notice_id, T0 + dt.timedelta(seconds=30))
    assert await store.notices.due(T0 + dt.timedelta(seconds=30)) == []
    later = T0 + dt.timedelta(seconds=61)
    assert await store.notices.due(later) == [notice_id]
    assert await claim(store, notice_id, later)
    notice = await store.notices.get(notice_id)
    assert notice is not None and notice.attempts == 2
    assert notice.lease_until == iso(later + dt.timedelta(seconds=60))


async def test_claim_after_finish_fails(store: Store) -> None:
    """A delivered notice cannot be claimed again; its children are delivered and erased."""
    notice_id = await one_notice(store)
    assert await claim(store, notice_id, T0)

    async def body(tx: Tx) -> None:
        await tx.notices.finish(notice_id, "delivered", "250 ok", T0, "delivered",
                                erase=erase_notice("delivered"))

    await store.write(body)
    assert not await claim(store, notice_id, T0 + dt.timedelta(hours=1))
    child = await store.children.get("HWC-1", 1)
    assert child is not None and child.state == "delivered" and child.blob is None


async def test_defer_notice_releases_the_lease(store: Store) -> None:
    """A deferred notice is due again at its next attempt time and can be claimed then."""
    notice_id = await one_notice(store)
    assert await claim(store, notice_id, T0)
    next_at = T0 + dt.timedelta(minutes=2)

    async def body(tx: Tx) -> None:
        await tx.notices.defer(notice_id, "451 later", next_at)

    await store.write(body)
    assert await store.notices.due(T0 + dt.timedelta(minutes=1)) == []
    assert await store.notices.due(next_at) == [notice_id]
    assert await claim(store, notice_id, next_at)


async def test_write_runs_a_whole_transaction_and_returns_its_result(store: Store) -> None:
    """`Store.write` commits every statement of its body at once and returns what it returned;
    its receipts chain onto those of ordinary transactions."""
    await append_receipts(store, 1)

    async def body(tx: Tx) -> int:
        await tx.signals.insert("HWC-W", "vt", None, None, "digest-w", 1, T0)
        return (await tx.receipts.append("accepted", at=T0, ref="HWC-W")).seq

    assert await store.write(body) == 2
    assert (await store.signals.get("HWC-W")) is not None
    await append_receipts(store, 1)
    assert chain_problems(await store.receipts.all(), KEY) == []


async def test_write_rolls_back_on_an_exception(store: Store) -> None:
    """An exception in a `Store.write` body undoes every statement of it and propagates."""
    async def body(tx: Tx) -> None:
        await tx.signals.insert("HWC-R", "vt", None, None, "digest-r", 1, T0)
        await tx.receipts.append("accepted", at=T0, ref="HWC-R")
        raise Conflict("changed meanwhile")

    with pytest.raises(Conflict):
        await store.write(body)
    assert await store.signals.get("HWC-R") is None
    assert await store.receipts.all() == []


async def test_write_refuses_a_body_that_waits_on_anything_else(store: Store) -> None:
    """A `Store.write` body may await only its transaction: one that waits on anything else
    (and so would hold the database across the event loop) is refused and rolled back."""

    async def body(tx: Tx) -> None:
        await tx.signals.insert("HWC-S", "vt", None, None, "digest-s", 1, T0)
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        await store.write(body)
    assert await store.signals.get("HWC-S") is None
