"""Parking: an item a stage keeps failing on is set aside for a person, kept, receipted and
alerted, and the others still flow (in-process, with the `harness`)."""

from __future__ import annotations

import subprocess

from conftest import SCHOOL_A, SCHOOL_B, Harness, raw_sql
from crash_gateway import DAAN, SANNE, child_refs
from structlog.testing import capture_logs

from gateway.admin.receipts import receipts_verify
from gateway.core.policy import HELD_SEAL_PARKED, MAX_CRASHES
from gateway.devkit.demokit import (
    json_payload,
)
from gateway.service import runner


def remove_signing_secret(harness: Harness) -> str:
    """Take the gateway's secret signing key out of its gpg home (after the signal was
    accepted: it also opens signals): the directory still names it current, so every seal
    is refused by gpg itself (a real GpgError, every time)."""
    signer = harness.ctx.snapshot.signing_key
    assert signer is not None
    subprocess.run(["gpg", "--homedir", str(harness.ctx.config.gnupg_home), "--batch", "--yes",
                    "--delete-secret-keys", signer], check=True, capture_output=True)
    return signer


async def test_notice_that_keeps_crashing_is_parked_and_kept(harness: Harness) -> None:
    """A notice whose delivery stage keeps raising is parked after MAX_CRASHES, kept whole."""
    store = harness.ctx.store
    reply = await harness.send(harness.signal(json_payload([SANNE], reference="VT-PARK-1")))
    assert reply.code == 250
    ref = reply.text.rsplit(" ", 1)[-1]
    await runner.prepare(harness.ctx)  # sealed and queued, not yet tried
    # A notice naming a channel this build does not have (as a newer gateway's database can
    # hold): the deliver stage never guesses one, so every attempt crashes it for real. (A
    # port-99999 route did this before the one host:port parser refused such a route.)
    raw_sql(harness.ctx.config.storage.path, "UPDATE notices SET channel = 'fax'")

    await harness.drain()
    [first] = await store.notices.all()
    crashed_once = await store.notices.get(first.id)
    assert crashed_once is not None and crashed_once.crashes == 1, \
        "an unknown channel no longer crashes the delivery stage: this test needs another trigger"
    for _ in range(MAX_CRASHES - 1):
        harness.clock.advance(seconds=700)  # past the longest backoff (retry_max 600 s)
        await harness.drain()
    [notice] = await store.notices.all()
    assert notice.ref == ref and notice.state == "parked"
    assert notice.attempts == MAX_CRASHES and notice.lease_until is None
    row = await store.notices.get(notice.id)
    assert row is not None and row.crashes == MAX_CRASHES
    parked = [r for r in await store.receipts.all(ref=ref) if r.event == "parked"]
    assert len(parked) == 1 and parked[0].detail["notice"] == notice.id
    assert parked[0].school == SCHOOL_A

    # Parked means left alone: the runner claims it no more, however much time passes.
    harness.clock.advance(seconds=7200)
    assert await store.notices.due(harness.ctx.clock()) == []
    await harness.drain()
    row = await store.notices.get(notice.id)
    assert row is not None and (row.state, row.attempts) == ("parked", MAX_CRASHES)

    # Other notices still flow.
    other = await harness.send(harness.signal(json_payload([DAAN], reference="VT-PARK-2")))
    assert other.code == 250
    other_ref = other.text.rsplit(" ", 1)[-1]
    await harness.drain()
    [(text, result, _)] = harness.notices(SCHOOL_B)
    assert result.valid and child_refs(text) == [f"{other_ref}-1"]
    assert harness.inboxes[SCHOOL_A].received == []

    # Nothing was deleted: the parked notice keeps its sealed bytes, its child its vault blob.
    assert row.parcel and row.message_id and row.recipients
    [child] = await store.children.all(ref=ref)
    assert (child.state, child.notice_id) == ("sealed", notice.id)
    assert child.blob is not None
    assert await store.signals.get(ref) is not None
    assert (await receipts_verify(store))[1] == []


async def test_seal_that_keeps_failing_is_counted_and_parked(harness: Harness) -> None:
    """A notice gpg keeps refusing to seal is retried with backoff, its failures counted in
    the store, and at MAX_CRASHES its children are held with a fixed reason, a `parked`
    receipt, the `seal.parked` event and an alert; nothing is sealed or sent meanwhile."""
    store = harness.ctx.store
    reply = await harness.send(harness.signal(json_payload([SANNE], reference="VT-SEAL-1")))
    assert reply.code == 250
    ref = reply.text.rsplit(" ", 1)[-1]
    remove_signing_secret(harness)
    with capture_logs() as logs:
        await harness.drain()
        [child] = await store.children.all(ref=ref)
        assert child.state == "routed"
        await harness.drain()  # not due yet: the backoff holds it back
        for _ in range(MAX_CRASHES - 1):
            harness.clock.advance(seconds=700)  # past the longest backoff (retry_max 600 s)
            await harness.drain()
    events = [entry["event"] for entry in logs]
    assert events.count("notice.seal_failed") == MAX_CRASHES
    assert events.count("seal.parked") == 1 and "seal.attempt_crashed" not in events
    [child] = await store.children.all(ref=ref)
    assert (child.state, child.reason) == ("held", HELD_SEAL_PARKED)
    assert child.blob is not None, "the child's data is kept for a person"
    receipts = [r for r in await store.receipts.all(ref=ref) if r.event in ("parked", "held")]
    assert [(r.event, r.ref) for r in receipts] == [("held", f"{ref}-1"), ("parked", ref)]
    assert receipts[1].detail["children"] == [f"{ref}-1"] and receipts[1].school == SCHOOL_A
    assert any(e.get("kind") == "seal.parked" for e in logs if e["event"] == "alert.raised")
    assert await store.notices.all() == [] and harness.inboxes[SCHOOL_A].received == []

    # Parked means left alone: held children are not sealed again by themselves.
    harness.clock.advance(seconds=7200)
    await harness.drain()
    [child] = await store.children.all(ref=ref)
    assert child.state == "held"


async def test_seal_failures_are_counted_per_signal_and_school(harness: Harness) -> None:
    """Each failed seal is one more failure of that (signal, school) in the database, due
    again after the backoff: the count is durable, not a variable of the round."""
    reply = await harness.send(harness.signal(json_payload([SANNE], reference="VT-SEAL-2")))
    ref = reply.text.rsplit(" ", 1)[-1]
    remove_signing_secret(harness)
    path = harness.ctx.config.storage.path
    await harness.drain()
    harness.clock.advance(seconds=700)
    await harness.drain()
    rows = raw_sql(path, "SELECT ref, school, failures, lease_until FROM seal_attempts")
    assert [tuple(row) for row in rows] == [(ref, SCHOOL_A, 2, None)]
