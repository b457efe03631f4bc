"""Retention: receipts, held children and finished signals are forgotten on time, provably."""

from __future__ import annotations

from conftest import EVA_BIRTH, SANNE_BIRTH, Harness, raw_sql

from gateway.admin.held import held_list
from gateway.admin.receipts import receipts_verify
from gateway.devkit.demokit import json_payload
from gateway.service import retention


async def _one_delivered_and_one_held(harness: Harness) -> tuple[str, str]:
    delivered = await harness.send(harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))
    held = await harness.send(harness.signal(json_payload(
        [{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}])))
    await harness.drain()
    return delivered.text.rsplit(" ", 1)[1], held.text.rsplit(" ", 1)[1]


async def test_delivered_notice_keeps_no_ciphertext(harness: Harness) -> None:
    """Once delivered, the notice's ciphertext is deleted from the database."""
    ref, _ = await _one_delivered_and_one_held(harness)
    [row] = raw_sql(harness.ctx.config.storage.path,
                    "SELECT parcel, state FROM notices WHERE ref = ?", (ref,))
    assert row["state"] == "delivered" and row["parcel"] == b""


async def test_dry_run_changes_nothing(harness: Harness) -> None:
    """`purge --dry-run` reports what would go and leaves every row and receipt in place."""
    await _one_delivered_and_one_held(harness)
    harness.clock.advance(days=800)
    before = len(await harness.receipts())
    report = await retention.purge(harness.ctx, harness.clock(), dry_run=True)
    # The held child expires first, so both signals are finished and would be forgotten.
    assert report.receipts == before and len(report.expired) == 1 and report.signals == 2
    assert len(await harness.receipts()) == before
    assert len(await held_list(harness.ctx)) == 1


async def test_held_child_expires_after_held_days(harness: Harness) -> None:
    """A child held longer than held_days is dropped, its data erased, with a receipt."""
    _, held_ref = await _one_delivered_and_one_held(harness)
    harness.clock.advance(days=13)
    assert (await retention.purge(harness.ctx, harness.clock())).expired == []
    harness.clock.advance(days=2)
    report = await retention.purge(harness.ctx, harness.clock())
    assert report.expired == [f"{held_ref}-1"]
    row = await harness.ctx.store.children.get(held_ref, 1)
    assert row is not None and row.state == "dropped" and row.blob is None
    assert "expired" in [r.event for r in await harness.receipts()]


async def test_old_receipts_are_purged_and_the_chain_still_verifies(harness: Harness) -> None:
    """After purging old receipts the chain verifies from its anchor; tampering still shows."""
    await _one_delivered_and_one_held(harness)
    harness.clock.advance(days=731)
    report = await retention.purge(harness.ctx, harness.clock())
    assert report.receipts > 5 and report.signals == 2
    assert [r.event for r in await harness.receipts()] == ["expired", "purged"]
    count, problems = await receipts_verify(harness.ctx.store)
    assert problems == [] and count == 2
    # A second purge later chains on from the first one's anchor.
    harness.clock.advance(days=731)
    await retention.purge(harness.ctx, harness.clock())
    count, problems = await receipts_verify(harness.ctx.store)
    assert problems == [] and count == 1
    raw_sql(harness.ctx.config.storage.path, "DELETE FROM receipts")
    _, problems = await receipts_verify(harness.ctx.store)
    assert problems == ["the chain's starting point does not match the last purge receipt"]


async def test_the_daemon_purges_at_start(harness: Harness) -> None:
    """The watch purges when it first runs, and then not again within the day."""
    from gateway.service.watch import Watch
    await _one_delivered_and_one_held(harness)
    harness.clock.advance(days=15)
    watch = Watch()
    await watch.tick(harness.ctx)
    assert await held_list(harness.ctx) == []
    assert watch.next_daily is not None and watch.next_daily > harness.clock()
