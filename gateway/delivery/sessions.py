"""The SMTP session cache: sessions kept open between delivery rounds, per destination.

Takes the context (the delivery settings) and destinations; produces `deliver.Connection`s,
taken and given back by the delivery stage and the status-mail round. Closing an idle session
never raises (`deliver.Connection.close`).
"""

from __future__ import annotations

import time
from collections import defaultdict

from gateway.core.validate import HostPort
from gateway.delivery import deliver
from gateway.pipeline.context import Context


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
