"""The daemon: start, run, shut down (what `hwc-gateway serve` and systemd run).

Takes a `Context`; runs the SMTP listener and the runner on one event loop until `stop` is set
(SIGTERM or SIGINT), then stops accepting, lets the runner finish its step and closes the store.
SIGHUP re-reads the directory and keys at once. Notices left waiting by a crash are picked up
by the runner on start: their leases have run out or run out soon (DESIGN invariant 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from gateway import runner
from gateway.context import Context
from gateway.logs import get_logger
from gateway.receive import IntakeHandler, start_listener

log = get_logger("daemon")


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

    @property
    def bound_port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        # The bound port is the one-instance lock: a second `serve` on the same state fails
        # here, before it could take over leases of attempts the first one still has open.
        self.server, self.handler = await start_listener(self.ctx, self.host, self.port)
        await runner.recover_leases(self.ctx)
        if self.background:
            self._runner = asyncio.create_task(runner.run(self.ctx, self.stop))
        snapshot = self.ctx.snapshot
        log.info("gateway.started", listen=f"{self.host or self.ctx.config.smtp.listen.host}:"
                 f"{self.bound_port}", signing_key=snapshot.signing_key,
                 senders=len(snapshot.senders), schools=len(snapshot.schools))
        if snapshot.signing_key is None:
            log.warning("gateway.no_signing_key", hint="run `hwc-gateway keys init`")

    async def shutdown(self) -> None:
        self.stop.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        log.info("gateway.stopped")

    async def reload(self) -> None:
        await self.ctx.refresh(force=True)
        self.ctx.wake.set()
        log.info("gateway.reloaded", version=self.ctx.snapshot.version)


async def serve(ctx: Context) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP reloads."""
    daemon = Daemon(ctx)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, daemon.stop.set)
    loop.add_signal_handler(signal.SIGINT, daemon.stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload()))
    await daemon.start()
    try:
        await daemon.stop.wait()
    finally:
        await daemon.shutdown()
