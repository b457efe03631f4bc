"""Short-lived state the web side keeps in memory: sessions and WebAuthn challenges.

Takes keys, values and the gateway's clock; produces the value while it is fresh, None after.
Nothing here survives a restart, on purpose: a session lasts minutes and a challenge one
ceremony, and neither belongs in the database. A cap bounds what a flood of requests can make
us hold: the oldest entries go first.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")


def new_id() -> str:
    """256 random bits, base64url: a session id or a challenge nobody guesses."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    until: dt.datetime


class Expiring(Generic[V]):
    """A dict whose entries lapse `ttl` after they were put, holding at most `cap` of them."""

    def __init__(self, clock: Callable[[], dt.datetime], ttl: dt.timedelta, cap: int) -> None:
        self.clock, self.ttl, self.cap = clock, ttl, cap
        self._items: dict[str, _Entry[V]] = {}

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, value: V) -> dt.datetime:
        """Keep `value` under `key`; returns when it lapses."""
        now = self.clock()
        for stale in [k for k, e in self._items.items() if e.until <= now]:
            del self._items[stale]
        while len(self._items) >= self.cap:
            del self._items[next(iter(self._items))]
        until = now + self.ttl
        self._items[key] = _Entry(value, until)
        return until

    def get(self, key: str) -> V | None:
        entry = self._items.get(key)
        if entry is None:
            return None
        if entry.until <= self.clock():
            del self._items[key]
            return None
        return entry.value

    def pop(self, key: str) -> V | None:
        """The value once: a challenge answered is gone, right or wrong."""
        value = self.get(key)
        self._items.pop(key, None)
        return value

    def drop(self, predicate: Callable[[V], bool]) -> int:
        """Forget every entry whose value matches; how many."""
        gone = [k for k, e in self._items.items() if predicate(e.value)]
        for key in gone:
            del self._items[key]
        return len(gone)
