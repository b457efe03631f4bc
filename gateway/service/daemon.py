"""The daemon: start, run, shut down (what `hwc-gateway serve` and systemd run).

Takes a `Context`; runs the SMTP listener and the runner on one event loop until `stop` is set,
and with `[web] listen` the pickup pages (`gateway.web.app`, HTTPS with `[web] tls_cert`) too.
SIGTERM or SIGINT: `gateway.stopping` is logged at once, new sessions are answered 421 4.3.2,
the sessions already open get `[smtp] shutdown_grace_seconds` to finish (those still open then
are told 421 4.3.2 and closed), the runner ends its step, the store is closed, the gpg-agent of
the gateway's GnuPG home is stopped, and the process exits 0. SIGHUP re-reads the config file
and applies what can change while running (saying what needs a restart), and re-reads the
directory and keys. systemd is told READY, STOPPING and, while the runner's loops make progress,
WATCHDOG (sd_notify). Notices left waiting by a crash are picked up on start (docs/architecture.md
invariant 1). A listener that cannot bind (port in use, a port below 1024 without the capability) is
a `StartError`: one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import ssl
from typing import TYPE_CHECKING, Any

from gateway.core.config import Config, ConfigError, load_config
from gateway.core.validate import HostPort
from gateway.crypto.keyadmin import stop_agent
from gateway.ingress.handler import IntakeHandler
from gateway.ingress.listener import start_listener
from gateway.observe import metrics
from gateway.observe.logs import get_logger
from gateway.observe.sdnotify import notify
from gateway.pipeline.context import Context
from gateway.service import runner
from gateway.service.preflight import listen_error

if TYPE_CHECKING:
    from gateway.web.app import WebServer

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


class StartError(Exception):
    """The daemon cannot start (a listener cannot bind, the TLS pair does not load); one line."""


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
        self.web: WebServer | None = None  # only with [web] listen

    @property
    def bound_port(self) -> int:
        assert self.server is not None and self.server.sockets
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        # One daemon per state is the state lock's work (`service.statelock`, taken by `serve`
        # before the store is opened), not the port's: another port would not stop a second.
        self.server, self.handler = await self._listen()
        if self.ctx.config.metrics.listen is not None:
            try:
                self._metrics = metrics.serve(self.ctx.config.metrics.listen)
            except OSError as exc:
                self.server.close()
                raise StartError(listen_error(self.ctx.config.metrics.listen,
                                              "[metrics] listen", exc)) from None
            log.info("metrics.started", listen=str(self.ctx.config.metrics.listen))
        if self.ctx.config.web.listen is not None:
            await self._start_web(self.ctx.config.web.listen)
        await runner.recover_leases(self.ctx)
        if self.background:
            self._runner = asyncio.create_task(runner.run(self.ctx, self.stop))
        snapshot = self.ctx.snapshot
        listen = f"{self.host or self.ctx.config.smtp.listen.host}:{self.bound_port}"
        log.info("gateway.started", listen=listen, signing_key=snapshot.signing_key,
                 senders=len(snapshot.senders), schools=len(snapshot.schools))
        if snapshot.signing_key is None:
            log.warning("gateway.no_signing_key", hint="run `hwc-gateway keys init`")
        notify(f"READY=1\nSTATUS=listening on {listen}")

    async def _start_web(self, listen: HostPort) -> None:
        web_config = self.ctx.config.web
        # Imported only here: aiohttp, Jinja2 and webauthn add some 17 MB to the daemon's
        # resident memory (make bench: 51 MB after start without them, 68 MB with them), which
        # a gateway without the page ([web] listen = "") need not carry.
        from gateway.web.app import WebServer

        server = WebServer(self.ctx, listen)
        try:
            await server.start()
        except (ssl.SSLError, OSError) as exc:
            await self._close_listeners()
            if isinstance(exc, ssl.SSLError):
                raise StartError(f"cannot load the TLS pair {web_config.tls_cert}, "
                                 f"{web_config.tls_key}: {exc.reason or exc}") from None
            raise StartError(listen_error(listen, "[web] listen", exc)) from None
        self.web = server
        log.info("web.started", listen=f"{server.host}:{server.bound_port}",
                 public_url=web_config.public_url, tls=server.scheme == "https")

    async def _close_listeners(self) -> None:
        """A start that fails half-way: what was already listening stops again."""
        if self.server is not None:
            self.server.close()
        if self._metrics is not None:
            self._metrics.shutdown()
            self._metrics = None

    async def _listen(self) -> tuple[asyncio.Server, IntakeHandler]:
        smtp = self.ctx.config.smtp
        try:
            return await start_listener(self.ctx, self.host, self.port)
        except ssl.SSLError as exc:
            raise StartError(f"cannot load the TLS pair {smtp.tls_cert}, {smtp.tls_key}: "
                             f"{exc.reason or exc}") from None
        except OSError as exc:
            address = HostPort(self.host or smtp.listen.host,
                               smtp.listen.port if self.port is None else self.port)
            raise StartError(listen_error(address, "[smtp] listen", exc)) from None

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
                handler.shut_open_sessions()
                with contextlib.suppress(TimeoutError):  # their 421 written, their tasks ended
                    await asyncio.wait_for(handler.sessions.idle.wait(), 5)
        self.stop.set()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self.web is not None:
            await self.web.stop()
            self.web = None
            log.info("web.stopped")
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
    """Run until SIGTERM/SIGINT; SIGHUP reloads. Raises `StartError` when it cannot start."""
    daemon = Daemon(ctx)
    loop = asyncio.get_running_loop()
    finished = asyncio.Event()

    def stopping(sig: signal.Signals) -> None:
        # Said when the signal arrives, not after the grace: an operator watching the journal
        # sees at once that the stop was heard (issue 12).
        if not finished.is_set():
            log.info("gateway.stopping", signal=sig.name,
                     grace_seconds=ctx.config.smtp.shutdown_grace_seconds)
        finished.set()

    loop.add_signal_handler(signal.SIGTERM, stopping, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, stopping, signal.SIGINT)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(daemon.reload()))
    try:
        await daemon.start()
        try:
            await finished.wait()
        finally:
            await daemon.shutdown()
    finally:
        # gpg starts an agent for the gateway's home on first use; it would outlive the
        # daemon, holding the unlocked key, unless stopped with it.
        await asyncio.to_thread(stop_agent, ctx.config.gnupg_home)
