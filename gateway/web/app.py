"""The web side's application and its server on the daemon's event loop.

Takes the gateway's `Context` (its `[web]` section); produces the aiohttp `Application` with
every page of the pickup channel (`make_app`) and `WebServer`, which listens on `[web] listen`,
serving HTTPS itself when `[web] tls_cert`/`tls_key` are set (otherwise plain HTTP on loopback
behind a reverse proxy). Fails: a listener that cannot bind raises `OSError`, a TLS pair that
does not load `ssl.SSLError`; the daemon turns both into its one-line start error.
The access log is off: every path holds a link's token (docs/architecture.md invariant 4).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web

from gateway.core.validate import HostPort
from gateway.ingress.listener import server_tls_context
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.web import confirm, enrol, pickup, reading
from gateway.web.guard import MAX_BODY, add_headers, guard
from gateway.web.site import SITE, STATIC, Site

log = get_logger("web")

# A link's token: 43 base64url characters for a pickup or an enrolment link, 26 base32 ones
# for a PGP notice's acknowledgement; anything else is no route (404) before a handler runs.
TOKEN = "{token:[A-Za-z0-9_-]{20,64}}"  # noqa: S105 - a route pattern, not a secret
KEEPALIVE = 15.0  # seconds an idle connection is kept open between two requests
_STATIC_TYPES = {"style.css": "text/css", "passkey.js": "text/javascript",
                 "fresh.js": "text/javascript"}


class _ServerLog(logging.Handler):
    """aiohttp's own log of a request it could not even parse (a stray byte in the request
    line or a header): its record quotes the offending line, which can hold a link's token or
    a cookie, with a traceback in plain text. Kept as one JSON event with the error's type
    only (docs/libraries.md §9); its debug chatter is dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            return
        error = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        log.warning("web.bad_request", error=error or "unknown")


def server_logger() -> logging.Logger:
    """The logger given to aiohttp's request handler instead of its `aiohttp.server`."""
    logger = logging.Logger("gateway.web.server", logging.DEBUG)  # not in the global tree
    logger.propagate = False
    logger.addHandler(_ServerLog())
    return logger


def _static(name: str, body: bytes) -> web.RouteDef:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=_STATIC_TYPES[name], charset="utf-8")

    return web.get(f"/static/{name}", handler, name=f"static_{name.replace('.', '_')}")


def make_app(ctx: Context) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[SITE] = Site(ctx)
    app.on_response_prepare.append(add_headers)
    app.add_routes([_static(name, (STATIC / name).read_bytes()) for name in _STATIC_TYPES])
    app.add_routes(enrol.routes(TOKEN))
    app.add_routes(pickup.routes(TOKEN))
    app.add_routes(reading.routes(TOKEN))
    app.add_routes(confirm.routes(TOKEN))
    return app


def tls_context(cert: Path | None, key: Path | None) -> ssl.SSLContext | None:
    if cert is None or key is None:
        return None
    return server_tls_context(str(cert), str(key))


class WebServer:
    """The pages on `[web] listen`, started and stopped with the daemon."""

    def __init__(self, ctx: Context, listen: HostPort) -> None:
        self.ctx = ctx
        self.host, self.port = listen.host, listen.port
        self.runner: web.AppRunner | None = None

    @property
    def bound_port(self) -> int:
        assert self.runner is not None and self.runner.addresses
        return int(self.runner.addresses[0][1])

    @property
    def scheme(self) -> str:
        return "https" if self.ctx.config.web.tls_cert is not None else "http"

    async def start(self) -> None:
        web_config = self.ctx.config.web
        context = tls_context(web_config.tls_cert, web_config.tls_key)
        # An idle keep-alive connection is closed after KEEPALIVE seconds (aiohttp's own
        # default through AppRunner is an hour: docs/libraries.md §9).
        runner = web.AppRunner(make_app(self.ctx), access_log=None, handle_signals=False,
                               shutdown_timeout=5, keepalive_timeout=KEEPALIVE,
                               logger=server_logger())
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port, ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
