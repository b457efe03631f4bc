"""The runner discipline (pipeline.stage) over a small in-memory implementation of its Queue."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.core.policy import (
    MAX_CRASHES,
    Counters,
    Done,
    Failed,
    Fate,
    Outcome,
    Parked,
    Retry,
    RetryRules,
    Superseded,
    Verdict,
)
from gateway.pipeline.stage import CRASHED, DIED, Queue, Stage

START = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
RULES = RetryRules(give_up_hours=48, retry_min_seconds=60, retry_max_seconds=3600)
NODE = "node-a"


@dataclass
class Job:
    """A queued item as a repository row would hold it."""

    id: int
    created_at: dt.datetime
    next_at: dt.datetime
    state: str = "queued"
    attempts: int = 0
    crashes: int = 0
    message: bytes = b"sealed"
    lease: tuple[str, dt.datetime] | None = None

    @property
    def counters(self) -> Counters:
        return Counters(self.attempts, self.crashes, self.created_at)

    def log_fields(self) -> Mapping[str, object]:
        return {"job": self.id}


STATES = {Done: "done", Failed: "failed", Superseded: "superseded"}


@dataclass
class MemoryQueue:
    """A real implementation of the Queue protocol, held in a dict (one 'transaction' per
    method, as a repository would do it)."""

    jobs: dict[int, Job] = field(default_factory=dict)
    receipts: list[tuple[str, int, str]] = field(default_factory=list)

    async def claim_due(self, now: dt.datetime, node: str,
                        lease_until: dt.datetime) -> list[Job]:
        claimed = []
        for job in self.jobs.values():
            free = job.lease is None or job.lease[1] < now
            if job.state == "queued" and job.next_at <= now and free:
                job.attempts += 1
                job.lease = (node, lease_until)
                claimed.append(dataclasses.replace(job))  # the row as claimed
        return claimed

    async def record(self, item: Job, fate: Fate, verdict: Verdict, now: dt.datetime) -> bool:
        job = self.jobs[item.id]
        if job.state != "queued":
            return False
        job.lease = None
        if isinstance(fate, Retry):
            job.next_at = fate.next_at
        else:
            job.state = STATES.get(type(fate), "held")
        if fate.erase:
            job.message = b""
        self.receipts.append((type(fate).__name__.lower(), job.id, verdict.reply))
        return True

    async def record_crash(self, item: Job, fate: Retry | Parked, why: str,
                           now: dt.datetime) -> bool:
        job = self.jobs[item.id]
        if job.state != "queued":
            return False
        job.crashes += 1
        job.lease = None
        job.next_at = fate.next_at
        if isinstance(fate, Parked):
            job.state = "parked"
            self.receipts.append(("parked", job.id, why))
        return True

    async def leased(self, node: str) -> list[Job]:
        return [dataclasses.replace(job) for job in self.jobs.values()
                if job.state == "queued" and job.lease is not None and job.lease[0] == node]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


@dataclass
class World:
    queue: MemoryQueue
    clock: Clock
    stage: Stage[Job]
    verdicts: dict[int, Verdict | Exception]
    alerts: list[tuple[int, int]]


@pytest.fixture
def world() -> World:
    """A stage over three jobs due now; each job's verdict set by the test."""
    queue = MemoryQueue({n: Job(n, START, START) for n in (1, 2, 3)})
    clock = Clock()
    verdicts: dict[int, Verdict | Exception] = {}
    alerts: list[tuple[int, int]] = []

    async def function(job: Job) -> Verdict:
        verdict = verdicts.get(job.id, Verdict(Outcome.DELIVERED, "250 ok"))
        if isinstance(verdict, Exception):
            raise verdict
        return verdict

    async def on_parked(job: Job, crashes: int) -> None:
        alerts.append((job.id, crashes))

    queue_: Queue[Job] = queue  # the in-memory queue satisfies the protocol
    stage = Stage("job", queue_, function, RULES, NODE, clock, on_parked)
    return World(queue, clock, stage, verdicts, alerts)


def events(logs: Sequence[Mapping[str, Any]]) -> list[tuple[str, object]]:
    return [(entry["event"], entry.get("job")) for entry in logs]


async def test_delivered_items_are_done_erased_and_receipted(world: World) -> None:
    """Each claimed item's verdict is recorded with its receipt; done erases the message."""
    fates = await world.stage.run_once()
    assert fates == [Done(), Done(), Done()]
    assert all(j.state == "done" and j.message == b"" and j.lease is None
               for j in world.queue.jobs.values())
    assert world.queue.receipts == [("done", n, "250 ok") for n in (1, 2, 3)]
    assert await world.stage.run_once() == [], "nothing is claimed twice"


async def test_temporary_is_retried_after_the_backoff(world: World) -> None:
    """A temporary failure waits min, then twice min; after give-up it fails."""
    world.verdicts[1] = Verdict(Outcome.TEMPORARY, "451 later")
    await world.stage.run_once()
    job = world.queue.jobs[1]
    assert job.state == "queued" and job.next_at == START + dt.timedelta(seconds=60)
    world.clock.now += dt.timedelta(seconds=59)
    assert await world.stage.run_once() == []
    world.clock.now += dt.timedelta(seconds=1)
    assert await world.stage.run_once() == [Retry(world.clock.now + dt.timedelta(seconds=120))]
    world.clock.now = START + dt.timedelta(hours=48)
    assert await world.stage.run_once() == [Failed()]
    assert job.state == "failed" and job.message == b"sealed" and job.attempts == 3


async def test_a_crash_is_counted_and_does_not_stop_the_others(world: World) -> None:
    """An exception of the stage function is logged as <kind>.attempt_crashed, counted and
    retried after the crash backoff; the other items are handled as usual."""
    world.verdicts[2] = KeyError("Sanne de Vries")
    with capture_logs() as logs:
        fates = await world.stage.run_once()
    assert fates == [Done(), Retry(START + dt.timedelta(seconds=60)), Done()]
    assert events(logs) == [("job.attempt_crashed", 2)]
    assert "Sanne" not in repr(logs), "the exception's message is never logged"
    job = world.queue.jobs[2]
    assert job.crashes == 1 and job.state == "queued" and job.lease is None


async def test_parked_after_max_crashes_with_receipt_log_and_alert(world: World) -> None:
    """The MAX_CRASHES-th crash parks the item: a parked receipt, <kind>.parked, one alert;
    a parked item is never claimed again."""
    world.verdicts[1] = RuntimeError("boom")
    with capture_logs() as logs:
        for _ in range(MAX_CRASHES):
            await world.stage.run_once()
            world.clock.now += dt.timedelta(hours=1)
    job = world.queue.jobs[1]
    assert job.state == "parked" and job.crashes == MAX_CRASHES
    assert [e for e in events(logs) if e[0] == "job.parked"] == [("job.parked", 1)]
    assert events(logs).count(("job.attempt_crashed", 1)) == MAX_CRASHES
    assert world.alerts == [(1, MAX_CRASHES)]
    assert ("parked", 1, CRASHED) in world.queue.receipts
    world.clock.now += dt.timedelta(days=1)
    assert await world.stage.run_once() == []


async def test_a_crash_verdict_parks_without_an_exception(world: World) -> None:
    """A verdict of Outcome.CRASH (a seal failure) takes the crash path, with its reason in
    the parked receipt, and no attempt_crashed event."""
    world.verdicts[3] = Verdict(Outcome.CRASH, reason="gpg refused a key while sealing")
    with capture_logs() as logs:
        for _ in range(MAX_CRASHES):
            await world.stage.run_once()
            world.clock.now += dt.timedelta(hours=1)
    assert world.queue.jobs[3].state == "parked"
    assert events(logs) == [("job.parked", 3)]
    assert ("parked", 3, "gpg refused a key while sealing") in world.queue.receipts


async def test_leases_of_this_node_are_recovered_as_crashes(world: World) -> None:
    """At start, this node's leases are taken back (lease_recovered, a crash counted);
    another node's lease is left to expire."""
    await world.queue.claim_due(START, NODE, START + dt.timedelta(minutes=10))
    world.queue.jobs[3].lease = ("node-b", START + dt.timedelta(minutes=10))
    world.queue.jobs[1].crashes = MAX_CRASHES - 1
    with capture_logs() as logs:
        assert await world.stage.recover() == 2
    assert events(logs) == [("job.lease_recovered", 1), ("job.parked", 1),
                            ("job.lease_recovered", 2)]
    assert world.queue.jobs[2].lease is None and world.queue.jobs[2].crashes == 1
    assert world.queue.jobs[3].lease == ("node-b", START + dt.timedelta(minutes=10))
    assert ("parked", 1, DIED) in world.queue.receipts and world.alerts == [(1, MAX_CRASHES)]


async def test_an_item_finished_meanwhile_is_left_alone(world: World) -> None:
    """When the queue reports the item changed meanwhile, a crash neither parks nor alerts."""
    world.verdicts[1] = RuntimeError("boom")
    [claimed, *_] = await world.stage.claim()
    world.queue.jobs[1].state = "done"
    claimed.crashes = MAX_CRASHES - 1
    assert isinstance(await world.stage.handle(claimed), Parked)
    assert world.alerts == [] and world.queue.jobs[1].state == "done"
