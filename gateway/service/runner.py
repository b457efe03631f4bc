"""The runner: the loops that move stored children through the seal and the deliver stage.

Takes a `Context`; each `step` releases the children whose school became reachable, seals every
routed child (`gateway.service.sealing`: one notice per school per signal), makes one delivery
attempt for every notice that is due (`gateway.service.delivering`) and reports the signals
that are finished, then returns how much it did. `run` keeps two loops going (one seals, one
delivers) and feeds systemd's watchdog while both make progress; each loop sleeps until the
next retry is due or something wakes it (a new signal, a `held route` from the command line,
a directory change, a sealed notice).

Both stages run under one discipline (`gateway.pipeline.stage`): claim with a lease naming
this node, a stage function that decides one item's fate, bounded retries, parking with a
receipt and an alert. State lives only in the store: after a crash the leases that died with
the process are taken back at start-up (`recover_leases`). The SMTP sessions live in
`gateway.delivery.sessions`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from gateway.core.config import Config
from gateway.delivery.sessions import Sessions
from gateway.notify import outbox
from gateway.notify.alerts import ALERTS
from gateway.notify.enrolment import ENROLMENTS
from gateway.notify.report import report_finished
from gateway.notify.statusmail import STATUS_MAILS
from gateway.observe.logs import get_logger, safe_exception
from gateway.observe.sdnotify import notify, watchdog_interval
from gateway.pipeline.context import Context
from gateway.service.delivering import deliver_due, recover_notice_leases
from gateway.service.sealing import recover_seal_leases, release_reachable, seal_routed
from gateway.service.watch import Watch

log = get_logger("runner")

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


async def recover_leases(ctx: Context) -> int:
    """At start-up: the leases of seal attempts, notices and outbox items that died with their
    process are taken back, each counted as a crash (`Stage.recover`); how many."""
    return (await recover_seal_leases(ctx) + await recover_notice_leases(ctx)
            + await outbox.recover(ctx, (STATUS_MAILS, ALERTS, ENROLMENTS)))


async def prepare(ctx: Context) -> StepReport:
    """Release and seal: the sealing loop's share of a step."""
    await release_reachable(ctx)
    sealed, held = await seal_routed(ctx)
    return StepReport(sealed=sealed, held=held)


async def deliver_and_report(ctx: Context, sessions: Sessions) -> StepReport:
    """Deliver what is due, then report the signals that are finished: the delivery loop's
    share (a delivery is what finishes most signals; the sealing waits for neither)."""
    delivered = StepReport(attempted=await deliver_due(ctx, sessions))
    await report_finished(ctx)
    delivered.attempted += await deliver_status_mails(ctx, sessions)
    return delivered


async def deliver_status_mails(ctx: Context, sessions: Sessions) -> int:
    """The outbox (status mails, alerts, enrolment mails: gateway.notify.outbox) over one
    session to the relay taken from the notices' sessions; returns how many were attempted."""
    return await outbox.deliver_due(ctx, sessions, (STATUS_MAILS, ALERTS, ENROLMENTS))


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
