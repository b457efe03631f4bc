"""Counting for the listener: AUTH failures and open sessions.

Takes keys (a client address, a login) and monotonic times; produces decisions: how long to
slow an answer, whether to refuse, whether a new session may open. No I/O: the receive stage
sleeps, answers and logs. State is in memory on purpose: a restart forgets failures, which costs
an attacker nothing they could not get by waiting, and needs no disk writes on a hot path.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

WINDOW_SECONDS = 15 * 60  # failures older than this are forgotten
SLOW_AFTER = 3  # from the 4th failure on, each answer is delayed
MAX_DELAY_SECONDS = 8.0
REFUSE_AFTER_PER_ADDRESS = 10  # then 454 4.7.0 for the rest of the window
REFUSE_AFTER_PER_LOGIN = 20  # a login tried from many addresses
MAX_KEYS = 10_000


@dataclass
class AuthThrottle:
    """Failures per client address and per login within a sliding window."""

    failures: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    max_delay: float = MAX_DELAY_SECONDS

    def _recent(self, key: str, now: float) -> list[float]:
        times = [t for t in self.failures.get(key, []) if now - t < WINDOW_SECONDS]
        if times:
            self.failures[key] = times
        else:
            self.failures.pop(key, None)
        return times

    def refused(self, address: str, login: str, now: float) -> bool:
        """True while this address or this login has failed too often: answer 454 4.7.0."""
        return (len(self._recent(f"addr:{address}", now)) >= REFUSE_AFTER_PER_ADDRESS
                or len(self._recent(f"login:{login}", now)) >= REFUSE_AFTER_PER_LOGIN)

    def record_failure(self, address: str, login: str, now: float) -> float:
        """Count a failure; return how many seconds to wait before answering it."""
        if len(self.failures) > MAX_KEYS:
            # Many addresses each failing once must not grow memory without bound.
            for key in list(self.failures):
                self._recent(key, now)
        counts = []
        for key in (f"addr:{address}", f"login:{login}"):
            self.failures[key] = [*self._recent(key, now), now]
            counts.append(len(self.failures[key]))
        excess = max(counts) - SLOW_AFTER
        return 0.0 if excess <= 0 else min(self.max_delay, 0.5 * 2 ** (excess - 1))

    def record_success(self, address: str, login: str) -> None:
        self.failures.pop(f"addr:{address}", None)
        self.failures.pop(f"login:{login}", None)

    def __len__(self) -> int:
        return len(self.failures)


@dataclass
class SessionLimits:
    """Open sessions, in total and per client address."""

    max_total: int
    max_per_address: int
    open: dict[str, int] = field(default_factory=dict)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set while no session is open

    def __post_init__(self) -> None:
        self.idle.set()

    def try_open(self, address: str) -> bool:
        if (sum(self.open.values()) >= self.max_total
                or self.open.get(address, 0) >= self.max_per_address):
            return False
        self.open[address] = self.open.get(address, 0) + 1
        self.idle.clear()
        return True

    def close(self, address: str) -> None:
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)
        if not self.open:
            self.idle.set()

    @property
    def total(self) -> int:
        return sum(self.open.values())
