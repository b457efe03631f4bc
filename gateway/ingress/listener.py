"""The listener: where the ingress stage starts, on the daemon's own event loop.

Takes the context (its `[smtp]` config: listen address, TLS pair, optional client CA, limits);
produces a listening `asyncio.Server` whose connections are `session.GatewaySMTP` sessions
sharing one `handler.IntakeHandler`, and that handler (the daemon drains and shuts its sessions
through it). Lockouts written down by an earlier run are cleared first: the throttle starts
empty. Fails before listening: a TLS pair or client CA that cannot be loaded is
`ssl.SSLError` or `OSError`, an address that cannot be bound is
`OSError`; the daemon turns each into one line (`service.daemon.StartError`).
"""

from __future__ import annotations

import asyncio
import ssl

from gateway.ingress.handler import IntakeHandler
from gateway.ingress.session import GatewaySMTP
from gateway.pipeline.context import Context
from gateway.store.api import Tx


async def _clear_lockouts(tx: Tx) -> None:
    await tx.lockouts.clear()


def server_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """TLS 1.2 or later with the gateway's pair; a client certificate is asked for, not
    required, when `client_ca` names the CAs that sign senders' certificates."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca:
        # Optional: a sender without a certificate still authenticates with a password.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        ctx.load_verify_locations(cafile=client_ca)
    return ctx


async def start_listener(ctx: Context, host: str | None = None,
                         port: int | None = None) -> tuple[asyncio.Server, IntakeHandler]:
    """Listen for senders on the daemon's loop; port 0 picks a free port (tests)."""
    smtp = ctx.config.smtp
    tls = server_tls_context(str(smtp.tls_cert), str(smtp.tls_key),
                             str(smtp.client_ca_file) if smtp.client_ca_file else None)
    handler = IntakeHandler(ctx)
    # The throttle starts empty: a lockout written down by an earlier run is over.
    await ctx.store.write(_clear_lockouts)
    loop = asyncio.get_running_loop()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(handler, hostname=smtp.hostname, tls_context=tls,
                           require_starttls=smtp.require_tls, auth_required=True,
                           auth_require_tls=smtp.require_tls,
                           data_size_limit=smtp.max_message_bytes,
                           timeout=smtp.timeout_seconds, ident="hwc-gateway")

    server = await loop.create_server(factory, host or smtp.listen.host,
                                      smtp.listen.port if port is None else port)
    return server, handler
