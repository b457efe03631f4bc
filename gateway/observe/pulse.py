"""Whether the daemon's loops are alive: what systemd's watchdog is fed on.

Each loop (the sealing, the delivery) beats when it starts a round and after every piece of
work in it (a notice sealed, a delivery attempt, a status mail), and rests when it goes to
sleep. A loop that has been busy for `after` seconds without a beat is stuck. The watchdog is
fed only while no loop is stuck, so a hang in either loop, or in the event loop itself, ends in
a restart, while a long round that keeps making progress (a backlog of thousands) never does.

The loop a piece of work belongs to is a context variable set by the loop's task: tasks it
starts inherit it, so the stages beat without knowing which loop runs them, and code run
outside the loops (`runner.step` in tests and the demo) beats nothing.
"""

from __future__ import annotations

import contextvars
import time

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("hwc_loop", default=None)


class Pulse:
    def __init__(self) -> None:
        self._busy_since: dict[str, float | None] = {}

    def enter(self, loop: str) -> None:
        """Called once by a loop's own task: what it and the tasks it starts beat for."""
        _current.set(loop)
        self._busy_since[loop] = None

    def beat(self) -> None:
        """The current loop made progress (nothing outside the loops)."""
        loop = _current.get()
        if loop is not None:
            self._busy_since[loop] = time.monotonic()

    def rest(self) -> None:
        """The current loop goes to sleep: sleeping is not being stuck."""
        loop = _current.get()
        if loop is not None:
            self._busy_since[loop] = None

    def stuck(self, now: float, after: float) -> list[str]:
        """The loops busy for more than `after` seconds without a beat."""
        return sorted(loop for loop, since in self._busy_since.items()
                      if since is not None and now - since > after)
