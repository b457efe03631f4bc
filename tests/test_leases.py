"""Queue policy and leases: what the runner decides, what the store records, which lease a
starting node may take back."""

from __future__ import annotations

import datetime as dt
import os
import socket
import sqlite3
from pathlib import Path

import pytest
from conftest import SANNE_BIRTH, Harness

from gateway.core.policy import (
    MAX_CRASHES,
    erase_notice,
    lease_is_dead,
    parked_after,
)
from gateway.core.records import iso
from gateway.devkit.demokit import json_payload
from gateway.pipeline.stage import LEASE
from gateway.service import runner
from gateway.store.api import Tx, node_id
from gateway.store.sqlite.connection import SqliteStore

T0 = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
KEY = b"k" * 32
HOST = socket.gethostname()


def test_parked_only_after_max_crashes() -> None:
    """A notice is parked for a person at its MAX_CRASHES-th crash, not before."""
    assert [parked_after(n) for n in range(1, MAX_CRASHES + 2)] == \
        [False] * (MAX_CRASHES - 1) + [True, True]


def test_only_what_reached_its_recipient_is_erased() -> None:
    """A delivered notice loses its ciphertext; a failed one keeps it."""
    assert (erase_notice("delivered"), erase_notice("failed")) == (True, False)


@pytest.mark.parametrize(
    ("owner", "until", "dead"),
    [
        (None, "2026-03-02T08:00:00Z", True),  # written before leases had owners
        ("elsewhere:42", "2026-03-02T06:59:59Z", True),  # expired
        ("elsewhere:42", iso(T0), False),  # runs out this very moment: not expired yet
        ("elsewhere:42", "2026-03-02T08:00:00Z", False),  # another node's live attempt
        (f"{HOST}:42", "2026-03-02T08:00:00Z", True),  # this host, a process that ended
        (f"{HOST}:7", "2026-03-02T08:00:00Z", False),  # this very process
    ],
)
def test_lease_is_dead(owner: str | None, until: str, dead: bool) -> None:
    """At start-up only expired, ownerless or this host's ended processes' leases are dead."""
    assert lease_is_dead(owner, until, iso(T0), f"{HOST}:7") is dead


def test_a_node_is_its_host_up_to_the_last_colon() -> None:
    """The process is what follows the last colon of a node id, so a host name with colons in
    it (an IPv6 address, a named node) is compared whole: a live lease of another such host is
    left alone, and one of an ended process of this host is released."""
    later = "2026-03-02T08:00:00Z"
    assert lease_is_dead("fd00::a:1", later, iso(T0), "fd00::b:2") is False
    assert lease_is_dead("fd00::a:1", later, iso(T0), "fd00::a:2") is True


def test_node_id_is_host_and_process() -> None:
    """A lease owner names the host and the process, made once per process."""
    assert node_id() == f"{HOST}:{os.getpid()}" and node_id() is node_id()


async def _queued_notice(store: SqliteStore) -> int:
    async def body(tx: Tx) -> int:
        await tx.signals.insert("HWC-1", "vt", None, None, "d", 1, T0)
        await tx.children.insert("HWC-1", 1, "routed", "12AB00", None, b"b", "p", T0)
        return await tx.notices.insert("HWC-1", "12AB00", "<n@gw>", ["a@school"], ["F" * 40],
                                       b"sealed", [1], T0)
    return await store.write(body)


async def test_claim_records_the_node_that_holds_the_lease(tmp_path: Path) -> None:
    """A claimed notice and status mail carry the claiming node; a release clears it."""
    store = await SqliteStore.open(tmp_path / "hwc.sqlite3", KEY, node="node-a:1")
    try:
        notice_id = await _queued_notice(store)

        async def claim(tx: Tx) -> str | None:
            await tx.notices.claim(notice_id, T0 + dt.timedelta(minutes=10), T0)
            mail = await tx.status_mails.insert("HWC-1", 0, "vt", "a@vt", "F" * 40, "<s@gw>",
                                                b"sealed", T0)
            assert mail is not None
            claimed = await tx.status_mails.claim(mail, T0 + dt.timedelta(minutes=10), T0)
            return claimed.lease_owner if claimed else None

        assert await store.write(claim) == "node-a:1"
        [lease] = await store.notices.leased()
        assert (lease.id, lease.owner, lease.until) == \
            (notice_id, "node-a:1", iso(T0 + dt.timedelta(minutes=10)))

        async def defer(tx: Tx) -> None:
            await tx.notices.defer(notice_id, "451 later", T0 + dt.timedelta(minutes=5))

        await store.write(defer)
        notice = await store.notices.get(notice_id)
        assert notice is not None and (notice.lease_until, notice.lease_owner) == (None, None)
    finally:
        await store.close()


async def test_upgrade_adds_lease_owner_to_an_older_database(tmp_path: Path) -> None:
    """A database from before leases had owners gets the column at open; its leases have
    no owner (and are taken back at start-up, as before)."""
    path = tmp_path / "old.sqlite3"
    store = await SqliteStore.open(path, KEY)
    notice_id = await _queued_notice(store)
    await store.close()
    with sqlite3.connect(path, isolation_level=None) as db:  # as an older gateway left it
        db.execute("ALTER TABLE notices DROP COLUMN lease_owner")
        db.execute("ALTER TABLE outbox DROP COLUMN lease_owner")
        db.execute("UPDATE notices SET lease_until = '2026-03-02T08:00:00Z'")
    store = await SqliteStore.open(path, KEY)
    try:
        [lease] = await store.notices.leased()
        assert (lease.id, lease.owner) == (notice_id, None)
        assert lease_is_dead(lease.owner, lease.until, iso(T0), store.node)
    finally:
        await store.close()


async def test_start_up_releases_dead_leases_only(harness: Harness, tmp_path: Path) -> None:
    """`recover_leases` leaves another node's live lease alone and takes back this host's
    ended process's lease, and any lease once it expired."""
    reply = await harness.send(harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))
    assert reply.code == 250
    await runner.prepare(harness.ctx)  # sealed and queued, not delivered
    [notice_id] = await harness.ctx.store.notices.due(harness.clock())
    now = harness.clock()

    async def claim_as(node: str) -> None:
        other = await SqliteStore.open(harness.ctx.config.storage.path,
                                       harness.ctx.store.chain_key, node=node)
        try:
            async def claim(tx: Tx) -> None:
                assert await tx.notices.claim(notice_id, now + LEASE, now) is not None
            await other.write(claim)
        finally:
            await other.close()

    async def crashes() -> int:
        notice = await harness.ctx.store.notices.get(notice_id)
        assert notice is not None
        return notice.crashes

    await claim_as("node-b:42")
    assert await runner.recover_leases(harness.ctx) == 0
    assert await crashes() == 0, "another node's live attempt was taken over"
    harness.clock.advance(minutes=11)
    assert await runner.recover_leases(harness.ctx) == 1
    assert await crashes() == 1
    now = harness.clock()
    await claim_as(f"{HOST}:1")  # pid 1 is never this gateway: a process of this host, ended
    assert await runner.recover_leases(harness.ctx) == 1
    assert await crashes() == 2
