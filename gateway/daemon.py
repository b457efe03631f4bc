"""The daemon: start, run, shut down (what `hwc-gateway serve` and systemd run).

Takes a `Context`; runs the SMTP listener and the runner on one event loop until `stop` is set.
SIGTERM or SIGINT: new sessions are answered 421 4.3.2, the sessions already open get
`[smtp] shutdown_grace_seconds` to finish, the runner ends its step, the store is closed, and
the process exits 0. SIGHUP re-reads the config file and applies what can change while running
(saying what needs a restart), and re-reads the directory and keys. systemd is told READY,
STOPPING and, while the runner's loops make progress, WATCHDOG (sd_notify). Notices left
waiting by a crash are picked up on start (DESIGN invariant 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from typing import Any

from gateway import metrics, runner
from gateway.config import Config, ConfigError, load_config
from gateway.context import Context
from gateway.logs import get_logger
from gateway.receive import IntakeHandler, start_listener
from gateway.sdnotify import notify

log = get_logger("daemon")

# What a running daemon can take from a changed config file; everything else needs a restart.
RELOADABLE = ("delivery", "schedule", "alerts", "retention")


def reloaded_config(old: Config, new: Config) -> tuple[Config, list[str], list[str]]:
    """Pure: the config to run with after SIGHUP, the sections applied, those needing a restart."""
    applied = [name for name in RELOADABLE if getattr(old, name) != getattr(new, name)]
    config = dataclasses.replace(old, **{name: getattr(new, name) for name in RELOADABLE})
    if old.gateway.teacher_text != new.gateway.teacher_text:
        config = dataclasses.replace(config, gateway=dataclasses.replace(
            config.gateway, teacher_text=new.gateway.teacher_text))
        applied.append("gateway.teacher_text")
    restart = [field.name for field in dataclasses.fields(Config)
               if field.name not in (*RELOADABLE, "path", "gateway")
               and getattr(old, field.name) != getattr(new, field.name)]
    if old.gateway.address != new.gateway.address:
        restart.append("gateway.address")
    return config, applied, restart


class Daemon:
    def __init__(self, ctx: Context, *, host: str | None = None, port: int | None = None,
                 background: bool = True) -> None:
        self.ctx = ctx
        self.background = background  # False: the caller drives the runner (tests)
        self.host, self.port = host, port
        self.stop = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.handler: IntakeHandler | None = None
        self._runner: asyncio.Task[None] | None = None
        self._metrics: Any = None

    @property
    def bound_port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        # The bound port is the one-instance lock: a second `serve` on the same state fails
        # here, before it could take over leases of attempts the first one still has open.
        self.server, self.handler = await start_listener(self.ctx, self.host, self.port)
        await runner.recover_leases(self.ctx)
        if self.ctx.config.metrics.listen is not None:
            self._metrics = metrics.serve(self.ctx.config.metrics.listen)
            log.info("metrics.started", listen=str(self.ctx.config.metrics.listen))
        if self.background:
            self._runner = asyncio.create_task(runner.run(self.ctx, self.stop))
        snapshot = self.ctx.snapshot
        listen = f"{self.host or self.ctx.config.smtp.listen.host}:{self.bound_port}"
        log.info("gateway.started", listen=listen, signing_key=snapshot.signing_key,
                 senders=len(snapshot.senders), schools=len(snapshot.schools))
        if snapshot.signing_key is None:
            log.warning("gateway.no_signing_key", hint="run `hwc-gateway keys init`")
        notify(f"READY=1\nSTATUS=listening on {listen}")

    async def shutdown(self) -> None:
        notify("STOPPING=1\nSTATUS=finishing the sessions in progress")
        handler = self.handler
        if handler is not None:
            handler.draining = True
            grace = self.ctx.config.smtp.shutdown_grace_seconds
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handler.sessions.idle.wait(), grace)
            if handler.sessions.total:
                log.warning("gateway.sessions_cut", open=handler.sessions.total,
                            grace_seconds=grace)
        self.stop.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        if self._metrics is not None:
            self._metrics.shutdown()
        log.info("gateway.stopped")

    async def reload(self) -> None:
        """SIGHUP: take in the config file and the directory without a restart."""
        try:
            new = load_config(self.ctx.config.path)
        except ConfigError as exc:
            log.error("gateway.reload_failed", problems=exc.problems)
            return
        self.ctx.config, applied, restart = reloaded_config(self.ctx.config, new)
        await self.ctx.refresh(force=True)
        self.ctx.wake.set()
        log.info("gateway.reloaded", version=self.ctx.snapshot.version, applied=applied,
                 needs_restart=restart)


async def serve(ctx: Context) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    daemon = Daemon(ctx)
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, finished.set)
    loop.add_signal_handler(signal.SIGINT, finished.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload()))
    await daemon.start()
    try:
        await finished.wait()
    finally:
        await daemon.shutdown()
