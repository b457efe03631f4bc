"""The runner: owns the loop that moves stored children through seal and deliver.

Takes a `Context`; each `step` seals every routed child (one notice per school per signal)
and makes one delivery attempt for every notice that is due, then returns how much it did.
`run` repeats `step` until stopped, sleeping until the next retry is due or something wakes it
(a new signal, a `held route` from the command line, a directory change).

Before each attempt the notice's recipients and fingerprints are checked against the directory
as it is then: a notice sealed to a contact or key no longer pinned and usable (removed,
replaced, revoked, expired) never goes out; it is superseded and its children are sealed again.

State lives only in the store: a notice is claimed with a lease naming this node, so after a
crash a dead lease is taken back (`recover_leases`, the rule in `gateway.store.api`) or simply
expires, and the notice is tried again, with the same bytes and the same Message-ID
(docs/architecture.md invariant 2). Nothing is deleted on error; one failing notice never stops
the others. What becomes of a notice after an
attempt (parked after too many crashes, erased once delivered) is decided here with
`gateway.core.queuepolicy`; the store only records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections import defaultdict
from dataclasses import dataclass

from gateway.core.config import Config, HostPort
from gateway.core.faults import crash_point
from gateway.core.inert import inert
from gateway.core.queuepolicy import erase_notice, lease_is_dead, parked_after
from gateway.core.records import ChildRecord, NoticeRecord, from_iso, iso
from gateway.core.resolve import HELD_NO_USABLE_KEY, HELD_NOT_IN_DIRECTORY
from gateway.crypto.gpg import GpgError
from gateway.delivery import deliver
from gateway.delivery.deliver import Result
from gateway.delivery.seal import (
    NoticeChild,
    ack_address,
    make_message_id,
    new_ack_token,
    seal_notice,
)
from gateway.notify import outbox
from gateway.notify.alerts import ALERTS, send_alert
from gateway.notify.report import report_finished
from gateway.notify.statusmail import STATUS_MAILS
from gateway.observe import metrics
from gateway.observe.logs import get_logger, safe_exception
from gateway.observe.sdnotify import notify, watchdog_interval
from gateway.pipeline.context import Context
from gateway.pipeline.directory import Snapshot, stale_reason, unpinned
from gateway.service.watch import Watch
from gateway.store.api import Conflict, Tx

log = get_logger("runner")

LEASE = dt.timedelta(minutes=10)
PER_DESTINATION = 4  # sessions at once to one school server or relay
SEALING_AT_ONCE = 4  # notices sealed concurrently (gpg's own limit still bounds the processes)
POLL_SECONDS = 1.0  # how quickly a change made by the command line is noticed
# A loop busy this long without finishing a piece of work is stuck (observe.pulse), unless the
# configured timeouts allow a piece to take longer (see `stuck_after`).
STUCK_SECONDS = 600.0


@dataclass
class StepReport:
    sealed: int = 0
    attempted: int = 0
    held: int = 0

    @property
    def idle(self) -> bool:
        return not (self.sealed or self.attempted or self.held)


# Holds that only wait for the school to become reachable: the routing itself was decided.
RELEASABLE = (HELD_NO_USABLE_KEY, HELD_NOT_IN_DIRECTORY)


async def release_reachable(ctx: Context) -> int:
    """Children held only because their school could not be reached go on once it can."""
    snapshot = await ctx.refresh()
    released = 0
    for row in await ctx.store.children.all(state="held"):
        school = row.school
        if row.reason not in RELEASABLE or not school or not snapshot.contacts.get(school):
            continue
        now = ctx.clock()

        async def release(tx: Tx, row: ChildRecord = row, school: str = school,
                          now: dt.datetime = now) -> bool:
            if not await tx.children.set_state(row.ref, row.n, "routed", now, expect=("held",)):
                return False
            await tx.receipts.append("released", at=now, ref=f"{row.ref}-{row.n}",
                                     school=school, reason=row.reason)
            return True

        if await ctx.store.write(release):
            released += 1
            log.info("child.released", ref=row.ref, school=school)
    return released


async def seal_routed(ctx: Context) -> StepReport:
    """Seal every routed child; a school without a usable key gets its children held.

    Notices are sealed a few at a time: each waits mostly on its gpg process, and one at a
    time left the machine idle while signals queued up behind the sealing."""
    report = StepReport()
    snapshot = await ctx.refresh()
    groups: dict[tuple[str, str], list[ChildRecord]] = defaultdict(list)
    for row in await ctx.store.children.all(state="routed"):
        groups[(row.ref, row.school or "")].append(row)
    limit = asyncio.Semaphore(SEALING_AT_ONCE)

    async def one(ref: str, school: str, rows: list[ChildRecord]) -> tuple[int, int]:
        async with limit:
            outcome = await _seal_group(ctx, snapshot, ref, school, rows)
            ctx.pulse.beat()
            return outcome

    for sealed, held in await asyncio.gather(*(one(ref, school, rows)
                                               for (ref, school), rows in groups.items())):
        report.sealed += sealed
        report.held += held
    return report


async def _seal_group(ctx: Context, snapshot: Snapshot, ref: str, school: str,
                      rows: list[ChildRecord]) -> tuple[int, int]:
    """One notice for the children of one signal at one school: (sealed, held)."""
    crash_point("before-seal")
    now = ctx.clock()
    numbers = [row.n for row in rows]
    contacts = snapshot.contacts.get(school, ())
    signer = snapshot.signing_key
    if not contacts or signer is None:
        reason = HELD_NO_USABLE_KEY if not contacts else "the gateway has no signing key"

        async def hold(tx: Tx) -> None:
            for n in numbers:
                await tx.children.set_state(ref, n, "held", now, reason=reason, expect=("routed",))
                await tx.receipts.append("held", at=now, ref=f"{ref}-{n}", school=school,
                                         reason=reason)

        await ctx.store.write(hold)
        log.warning("child.held", ref=ref, school=school, reason=reason, count=len(numbers))
        metrics.HELD.inc(len(numbers))
        return 0, len(numbers)
    children = []
    for row in rows:
        if row.blob is None:
            continue
        record = ctx.vault.open(row.blob, f"{ref}-{row.n}")
        children.append(NoticeChild(str(record["name"]),
                                    dt.date.fromisoformat(str(record["birthdate"])),
                                    f"{ref}-{row.n}"))
    if not children:
        return 0, 0
    recipients = [c.email for c in contacts]
    fingerprints = [c.fingerprint for c in contacts]
    message_id = make_message_id(ctx.config.gateway.address.rpartition("@")[2])
    token = new_ack_token()
    try:
        message = await seal_notice(
            ctx.gpg, children, sender=ctx.config.gateway.address, recipients=recipients,
            fingerprints=fingerprints, signer=signer, message_id=message_id,
            teacher_text=ctx.config.gateway.teacher_text, now=now,
            ack_to=ack_address(token, ctx.config.gateway.address))
    except GpgError as exc:
        # A key became unusable between the snapshot and now: retry with a fresh one.
        log.error("notice.seal_failed", ref=ref, school=school, **safe_exception(exc))
        await ctx.refresh(force=True)
        return 0, 0
    ack_digest = ctx.vault.digest("ack", token)

    async def keep(tx: Tx) -> int:
        notice_id = await tx.notices.insert(ref, school, message_id, recipients, fingerprints,
                                            message, numbers, now, ack_digest)
        await tx.receipts.append("sealed", at=now, ref=ref, school=school, notice=notice_id,
                                 children=[f"{ref}-{n}" for n in numbers],
                                 fingerprints=fingerprints, signer=signer)
        return notice_id

    try:
        notice_id = await ctx.store.write(keep)
    except Conflict:
        log.info("notice.seal_skipped", ref=ref, school=school)
        return 0, 0
    log.info("notice.sealed", ref=ref, school=school, notice=notice_id, children=len(numbers))
    ctx.sealed.set()
    crash_point("after-seal")
    return 1, 0


class Sessions:
    """SMTP sessions kept open between steps, per destination, as Postfix's connection cache
    does: while notices keep coming, each school server sees a few long sessions instead of a
    handshake per step. A session unused for IDLE_SECONDS is closed, long before any server
    would time it out."""

    IDLE_SECONDS = 2.0

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._idle: dict[HostPort, list[tuple[float, deliver.Connection]]] = defaultdict(list)

    def take(self, destination: HostPort) -> deliver.Connection:
        idle = self._idle[destination]
        if idle:
            return idle.pop()[1]
        delivery = self._ctx.config.delivery
        return deliver.Connection(destination, context=deliver.tls_context(delivery.ca_file),
                                  timeout=delivery.timeout_seconds,
                                  local_hostname=self._ctx.config.smtp.hostname)

    def give_back(self, connection: deliver.Connection) -> None:
        if connection.is_connected:
            self._idle[connection.destination].append((time.monotonic(), connection))

    async def close_idle(self, seconds: float = IDLE_SECONDS) -> None:
        """Close the sessions unused for `seconds` (every one with 0)."""
        cutoff = time.monotonic() - seconds
        for idle in self._idle.values():
            stale = [connection for t, connection in idle if t <= cutoff]
            idle[:] = [(t, connection) for t, connection in idle if t > cutoff]
            for connection in stale:
                await connection.close()


async def deliver_due(ctx: Context, sessions: Sessions) -> StepReport:
    """One attempt for each due notice, concurrently; returns how many were attempted."""
    report = StepReport()
    now = ctx.clock()
    rows = await ctx.store.notices.due(now)

    async def claim(tx: Tx) -> list[NoticeRecord]:
        claimed = [await tx.notices.claim(notice_id, now + LEASE, now) for notice_id in rows]
        return [notice for notice in claimed if notice is not None]

    claimed = await ctx.store.write(claim) if rows else []
    if claimed:
        # The directory as it is now, once per round of at most 50 notices (a second or so of
        # sending): each attempt checks its keys against it (`deliver_one`). Once per notice
        # cost a database hop each, a third more of the daemon's CPU per delivery (make bench).
        await ctx.refresh()
    # Per destination, a few connections each carry several notices: a school server that
    # comes back after hours gets its backlog without a handshake per notice, and is never
    # hit by more than PER_DESTINATION sessions at once.
    queues: dict[HostPort | None, list[NoticeRecord]] = defaultdict(list)
    for notice in claimed:
        route = ctx.snapshot.routes.get(notice.school) or ctx.config.delivery.relay
        queues[route].append(notice)
    workers = [_destination_worker(ctx, sessions, destination, pending)
               for destination, pending in queues.items()
               for _ in range(min(PER_DESTINATION, len(pending)))]
    await asyncio.gather(*workers)
    report.attempted = len(claimed)
    return report


async def _destination_worker(ctx: Context, sessions: Sessions, destination: HostPort | None,
                              pending: list[NoticeRecord]) -> None:
    """Take notices for one destination off the shared list and send them over one session."""
    connection = None if destination is None else sessions.take(destination)
    try:
        while pending:
            notice = pending.pop(0)
            try:
                await deliver_one(ctx, notice, connection)
            except Exception as exc:
                # Tried again after a backoff; never dropped on our error, parked if it recurs.
                log.error("notice.attempt_crashed", notice=notice.id, **safe_exception(exc))
                await crashed(ctx, notice.id, "the delivery stage failed")
            ctx.pulse.beat()
    finally:
        if connection is not None:
            sessions.give_back(connection)


async def crashed(ctx: Context, notice_id: int, why: str) -> None:
    """Count a crashed attempt; park the notice for a person when it keeps crashing."""
    now = ctx.clock()
    row = await ctx.store.notices.get(notice_id)
    if row is None:
        return
    next_at = deliver.next_attempt_at(row.crashes + 1, now,
                                      ctx.config.delivery.retry_min_seconds,
                                      ctx.config.delivery.retry_max_seconds)

    async def record(tx: Tx) -> bool:
        # The store counts; whether that is too many is decided here (`parked_after`).
        crashes = await tx.notices.record_crash(notice_id, next_at)
        if not parked_after(crashes) or not await tx.notices.park(notice_id):
            return False
        await tx.receipts.append("parked", at=now, ref=row.ref, school=row.school,
                                 notice=notice_id, why=why)
        return True

    if await ctx.store.write(record):
        log.error("notice.parked", ref=row.ref, school=row.school, notice=notice_id)
        await send_alert(ctx, "notice.parked", f"notice {row.ref} for {row.school} parked",
                         [f"Notice {notice_id} of signal {row.ref} for school {row.school}"
                          f" crashed the gateway {row.crashes + 1} times and is parked.",
                          "It is kept; look at the logs (notice.attempt_crashed) and tell the"
                          " maintainers."])


async def recover_leases(ctx: Context) -> int:
    """At start-up: a lease that is dead (expired, or held by a process of this host that
    ended, `lease_is_dead`) belongs to an attempt that died with its process. A live lease of
    another node is that node's."""
    now, node = iso(ctx.clock()), ctx.store.node
    leased = [lease.id for lease in await ctx.store.notices.leased()
              if lease_is_dead(lease.owner, lease.until, now, node)]
    for notice_id in leased:
        log.warning("notice.lease_recovered", notice=notice_id)
        await crashed(ctx, notice_id, "the process ended during an attempt")
    return len(leased)


async def deliver_one(ctx: Context, row: NoticeRecord,
                      connection: deliver.Connection | None) -> None:
    """One attempt for one claimed notice (its row as claimed), and its receipt; a notice
    sealed to a contact or key that is no longer pinned and usable is superseded instead."""
    notice_id = row.id
    recipients = list(row.recipients)
    attempt = row.attempts
    # The directory as it was at the start of this round (`deliver_due`), not as it was at
    # sealing: a revocation taken in while the notice waited on the school's 451 must stop it
    # (issue 11).
    stale = unpinned(recipients, list(row.fingerprints), ctx.snapshot, row.school,
                     ctx.clock())
    if stale:
        await supersede(ctx, row, stale)
        return
    if connection is None:
        outcome = deliver.Outcome(Result.TEMPORARY, "no route: the school has no route and no"
                                  " relay is configured", "no_route")
    else:
        outcome = await connection.send(row.message, mail_from=ctx.config.gateway.address,
                                        recipients=recipients)
    if outcome.result is Result.DELIVERED:
        crash_point("after-remote-250")
    now = ctx.clock()
    ref, school = row.ref, row.school
    code = outcome.reply[:3] if outcome.reply[:3].isdigit() else None
    # Counted from `queue retry` when the administrator queued it again after a failure.
    give_up = from_iso(row.requeued_at or row.created_at) + dt.timedelta(
        hours=ctx.config.delivery.give_up_after_hours)

    async def record(tx: Tx) -> str:
        await tx.notices.note_reason(notice_id, outcome.reason)
        if outcome.result is Result.DELIVERED:
            await tx.notices.finish(notice_id, "delivered", outcome.reply, now, "delivered",
                                    erase=erase_notice("delivered"))
            await tx.receipts.append("delivered", at=now, ref=ref, school=school,
                                     notice=notice_id, attempt=attempt, reply=outcome.reply,
                                     message_id=row.message_id)
            return "notice.delivered"
        if outcome.result is Result.PERMANENT or now >= give_up:
            await tx.notices.finish(notice_id, "failed", outcome.reply, now, "failed",
                                    erase=erase_notice("failed"))
            await tx.receipts.append("failed", at=now, ref=ref, school=school, notice=notice_id,
                                     attempt=attempt, reply=outcome.reply)
            return "notice.failed"
        next_at = deliver.next_attempt_at(attempt, now, ctx.config.delivery.retry_min_seconds,
                                          ctx.config.delivery.retry_max_seconds)
        await tx.notices.defer(notice_id, outcome.reply, next_at)
        await tx.receipts.append("deferred", at=now, ref=ref, school=school, notice=notice_id,
                                 attempt=attempt, reply=outcome.reply,
                                 next_attempt_at=next_at.isoformat())
        return "notice.deferred"

    event = await ctx.store.write(record)
    failed = event == "notice.failed"
    log_fn = log.info if event == "notice.delivered" else log.warning
    # The reply is from outside: inert, so that it cannot forge a console line.
    log_fn(event, ref=ref, school=school, notice=notice_id, attempt=attempt, smtp_code=code,
           reason=outcome.reason, reply=inert(outcome.reply))
    metrics.NOTICES.labels(event.removeprefix("notice.")).inc()
    if failed:
        await send_alert(ctx, "notice.failed", f"notice {ref} for {school} failed", [
            f"The notice of signal {ref} for school {school} could not be delivered.",
            f"The school's server answered: {outcome.reply}",
            *([f"What to fix: {deliver.FIXES[outcome.reason]}."]
              if outcome.reason in deliver.FIXES else []),
            "The notice and its children are kept. Once the cause is fixed (or the school's"
            f" mail works again), queue it again: `hwc-gateway queue retry {notice_id}`.",
        ])
    elif outcome.reason in deliver.FIXES and row.last_reply != outcome.reply:
        # Once per notice and reply, not at every retry: the gateway is set up wrong.
        await send_alert(ctx, "notice.misconfigured",
                         f"notice {ref} for {school} waits on the gateway's set-up", [
            f"The notice of signal {ref} for school {school} was not taken: the server"
            f" answered: {outcome.reply}",
            f"What to fix: {deliver.FIXES[outcome.reason]}.",
            "The notice is retried with backoff until then; `hwc-gateway queue retry"
            f" {notice_id}` tries it at once.",
        ])


async def supersede(ctx: Context, row: NoticeRecord, stale: list[tuple[str, str]]) -> None:
    """Never send a notice whose keys no longer hold: supersede it, with a receipt naming why
    and the fingerprints it was sealed to, and put its children back to be sealed again to
    the keys pinned now (or held, when the school has none usable: `_seal_group`)."""
    notice_id, ref, school = row.id, row.ref, row.school
    pinned = {c.email: c.fingerprint for c in await ctx.store.directory.contacts(school)}
    reason = stale_reason(stale, pinned)
    now = ctx.clock()

    async def record(tx: Tx) -> list[int] | None:
        numbers = await tx.notices.supersede(notice_id, reason, now)
        if numbers is not None:
            await tx.receipts.append("superseded", at=now, ref=ref, school=school, notice=notice_id,
                                     reason=reason, fingerprints=list(row.fingerprints),
                                     children=[f"{ref}-{n}" for n in numbers])
        return numbers

    numbers = await ctx.store.write(record)
    if numbers is not None:  # else another attempt finished it meanwhile: nothing changed
        log.warning("notice.superseded", ref=ref, school=school, notice=notice_id,
                    reason=reason, children=len(numbers))
        ctx.wake.set()  # the sealing loop seals them again now, not at its next poll


async def prepare(ctx: Context) -> StepReport:
    """Release and seal: the sealing loop's share of a step."""
    await release_reachable(ctx)
    return await seal_routed(ctx)


async def deliver_and_report(ctx: Context, sessions: Sessions) -> StepReport:
    """Deliver what is due, then report the signals that are finished: the delivery loop's
    share (a delivery is what finishes most signals; the sealing waits for neither)."""
    delivered = await deliver_due(ctx, sessions)
    await report_finished(ctx)
    delivered.attempted += await deliver_status_mails(ctx, sessions)
    return delivered


async def deliver_status_mails(ctx: Context, sessions: Sessions) -> int:
    """The outbox (status mails, then alerts: gateway.notify.outbox) over one session to the
    relay taken from the notices' sessions; returns how many were attempted."""
    return await outbox.deliver_due(ctx, sessions, (STATUS_MAILS, ALERTS))


async def step(ctx: Context) -> StepReport:
    """Release, seal, deliver, report, once (tests, the demo); SMTP sessions last one step."""
    sessions = Sessions(ctx)
    try:
        sealed = await prepare(ctx)
        delivered = await deliver_and_report(ctx, sessions)
    finally:
        await sessions.close_idle(0)
    return StepReport(sealed.sealed, delivered.attempted, sealed.held)


async def drain(ctx: Context, max_steps: int = 100) -> None:
    """Run steps until nothing is left to do right now (tests, the demo); never beside `run`."""
    for _ in range(max_steps):
        if (await step(ctx)).idle:
            return


async def run(ctx: Context, stop: asyncio.Event) -> None:
    """The daemon's two loops: one seals (and releases), one delivers (and reports), so that a
    notice goes out while the next ones are sealed. Each sleeps when it has nothing to do, until
    woken (a new signal, a sealed notice), stopped, or a poll tick (the next due retry, a change
    made by the command line)."""
    sessions = Sessions(ctx)
    loops = [_sealing_loop(ctx, stop), _delivery_loop(ctx, stop, sessions)]
    interval = watchdog_interval()
    if interval is not None:
        loops.append(_watchdog(ctx, stop, interval))
    try:
        await asyncio.gather(*loops)
    finally:
        await sessions.close_idle(0)


async def _watchdog(ctx: Context, stop: asyncio.Event, interval: float) -> None:
    """Feed systemd's watchdog while both loops are alive (observe.pulse); when one is stuck,
    say so once and stop feeding it: systemd restarts the service (Restart=on-failure), and
    the restarted daemon takes up the notices the stuck one held (`recover_leases`)."""
    told = False
    while not stop.is_set():
        after = stuck_after(ctx.config)
        stuck = ctx.pulse.stuck(time.monotonic(), after)
        if not stuck:
            notify("WATCHDOG=1")
            told = False
        elif not told:
            log.error("runner.stuck", loops=stuck, seconds=after)
            told = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def stuck_after(config: Config) -> float:
    """Seconds without progress after which a busy loop is stuck: STUCK_SECONDS, or more when
    the timeouts are set so high that one piece of work could rightly take longer (a delivery
    attempt is about ten SMTP steps, each with its own timeout)."""
    return max(STUCK_SECONDS,
               10.0 * max(config.delivery.timeout_seconds, config.keys.gpg_timeout_seconds))


async def _sealing_loop(ctx: Context, stop: asyncio.Event) -> None:
    ctx.pulse.enter("sealing")
    watch = Watch()
    while not stop.is_set():
        ctx.pulse.beat()
        await watch.tick(ctx)
        # Cleared before the work, so a signal accepted during it still wakes the next round.
        ctx.wake.clear()
        try:
            report = await prepare(ctx)
        except Exception as exc:
            log.error("runner.step_failed", **safe_exception(exc))
            report = StepReport()
        if report.idle:
            ctx.pulse.rest()
            await _sleep(ctx.wake, stop)


async def _delivery_loop(ctx: Context, stop: asyncio.Event, sessions: Sessions) -> None:
    ctx.pulse.enter("delivery")
    while not stop.is_set():
        ctx.pulse.beat()
        ctx.sealed.clear()
        try:
            report = await deliver_and_report(ctx, sessions)
        except Exception as exc:
            log.error("runner.step_failed", **safe_exception(exc))
            report = StepReport()
        await sessions.close_idle()
        if report.idle:
            ctx.pulse.rest()
            await _sleep(ctx.sealed, stop)


async def _sleep(wake: asyncio.Event, stop: asyncio.Event) -> None:
    """Until `wake` or `stop` is set, or POLL_SECONDS passed."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await w
