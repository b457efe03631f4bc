"""Counting for the listener: AUTH failures, open sessions, stalling commands, refused clients.

Takes keys (a client address, a login), SMTP commands with the replies they got, and monotonic
times; produces decisions: how long to slow an answer, whether to refuse, whether a new session
may open, whether a session has stalled too long, whether a client address is blocked. No I/O:
the receive stage sleeps, answers, closes and logs. State is in memory on purpose: a restart
forgets failures, which costs an attacker nothing they could not get by waiting, and needs no
disk writes on a hot path. Only a running lockout is written down, by the receive stage, so that
`status` can show it and `senders unlock` can lift it (`Lockout`, `AuthThrottle.lift`).
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


@dataclass(frozen=True)
class Lockout:
    """A running refusal: "address" (a client address) or "login" (a login name), and for how
    many more seconds (the refused are not counted, so it ends exactly then)."""

    scope: str
    subject: str
    seconds_left: float


_PREFIX = {"address": "addr", "login": "login"}


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

    def lockouts(self, address: str, login: str, now: float) -> list[Lockout]:
        """The lockouts refusing this address or login now (`refused` is true when there are
        any), each ending when the failure that made it reach its limit leaves the window."""
        found = []
        for scope, subject, limit in (("address", address, REFUSE_AFTER_PER_ADDRESS),
                                      ("login", login, REFUSE_AFTER_PER_LOGIN)):
            times = self._recent(f"{_PREFIX[scope]}:{subject}", now)
            if len(times) >= limit:
                found.append(Lockout(scope, subject, times[-limit] + WINDOW_SECONDS - now))
        return found

    def lift(self, scope: str, subject: str) -> None:
        """Forget the failures of one address or login: `senders unlock` lifted its lockout."""
        self.failures.pop(f"{_PREFIX.get(scope, scope)}:{subject}", None)

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
        """Forget this login's failures, and only those: the address keeps its count. (Issue
        11: with one valid credential, a success after every few guesses at *other* logins
        reset the address's count, and 24 wrong passwords from one address were never
        refused.)"""
        del address  # on purpose: one good login says nothing about the other guesses
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


# What moves a session that has not authenticated forward: (command, reply code). Everything
# else it sends (NOOP, RSET, HELP, VRFY, EHLO again, MAIL, a refused RCPT or DATA, a failed
# AUTH) leaves it where it was. A MAIL is not progress on its own, or MAIL/RSET would loop for
# ever. (Issue 11: ten plaintext sessions sending NOOP every 2 s outlived the per-command
# timeout and held every session slot.)
PROGRESS = frozenset({("STARTTLS", "220"), ("AUTH", "235"), ("RCPT", "250"), ("DATA", "250")})


def progressed(command: str, reply: str) -> bool:
    """Whether `command`, answered with `reply`, moved an unauthenticated session forward."""
    return (command.upper(), reply[:3]) in PROGRESS


@dataclass
class StallCounter:
    """Commands in a row that moved an unauthenticated session nowhere."""

    limit: int
    count: int = 0

    def exhausted(self) -> bool:
        """True once `limit` commands went nowhere: the next one is answered 421 4.7.0."""
        return self.count >= self.limit

    def record(self, command: str, reply: str) -> None:
        self.count = 0 if progressed(command, reply) else self.count + 1


@dataclass
class ClientRefusals:
    """Sessions cut off and unknown acknowledgement addresses, per client address.

    `limit` of them within `block_seconds` block the address for `block_seconds`: its new
    sessions are refused at connect and its open ones end after their current command. Being
    refused while blocked does not count, so a client that stops is let in again on time.
    """

    limit: int
    block_seconds: float
    recent: dict[str, list[float]] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)

    def blocked(self, address: str, now: float) -> bool:
        until = self.blocked_until.get(address)
        if until is not None and now >= until:
            del self.blocked_until[address]
            until = None
        return until is not None

    def record(self, address: str, now: float) -> bool:
        """Count one refusal; True when it is the one that blocks the address."""
        if self.blocked(address, now):
            return False
        if len(self.recent) > MAX_KEYS:
            # Many addresses refused once each must not grow memory without bound.
            for key in list(self.recent):
                self._prune(key, now)
            for key in [k for k, until in self.blocked_until.items() if now >= until]:
                del self.blocked_until[key]
        times = [*self._prune(address, now), now]
        if len(times) >= self.limit:
            self.recent.pop(address, None)
            self.blocked_until[address] = now + self.block_seconds
            return True
        self.recent[address] = times
        return False

    def _prune(self, address: str, now: float) -> list[float]:
        times = [t for t in self.recent.get(address, []) if now - t < self.block_seconds]
        if times:
            self.recent[address] = times
        else:
            self.recent.pop(address, None)
        return times
