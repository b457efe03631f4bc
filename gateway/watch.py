"""Periodic work of the daemon: what must happen on a clock rather than on a message.

Takes a `Context`; `Watch.tick` is called by the runner's loop and does whatever is due (now:
the retention purge, at start-up and then daily). Each job catches its own failure, so one
broken job never stops the runner or the others.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from gateway import retention
from gateway.context import Context
from gateway.logs import get_logger, safe_exception

log = get_logger("watch")

PURGE_EVERY = dt.timedelta(days=1)


@dataclass
class Watch:
    next_purge: dt.datetime | None = None

    async def tick(self, ctx: Context) -> None:
        now = ctx.clock()
        if self.next_purge is None or now >= self.next_purge:
            self.next_purge = now + PURGE_EVERY
            try:
                await retention.purge(ctx, now)
            except Exception as exc:
                log.error("retention.failed", **safe_exception(exc))
