"""Sender passwords: stored only as a salted scrypt hash, compared in constant time.

Takes a password and (for checking) a stored hash string `scrypt$n$r$p$salt$hash`; produces a
new hash string or a bool. scrypt is in the standard library and memory-hard; the parameters
travel with the hash so that they can be raised later without breaking existing senders.
`VerifiedCache` remembers successful checks for a while (no I/O, clock injected); it never
holds a password or an unkeyed hash of one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

_N, _R, _P = 2**14, 8, 1

# scrypt is slow and memory-hard by design (~75 ms of CPU and 16 MiB per check), and a sender's
# MTA that opens a session for every few signals paid it on each one: in `make bench` that was a
# large share of the gateway's CPU per signal. As Dovecot's auth cache does, a success is
# remembered, so the cost is one check per sender per TTL; a failure is never remembered and
# always pays the full check.
CACHE_TTL_SECONDS = 10 * 60
CACHE_MAX_ENTRIES = 1024


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$".join(["scrypt", str(_N), str(_R), str(_P),
                     base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n),
                                r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@dataclass(frozen=True)
class _Verified:
    mac: bytes  # HMAC-SHA256 of the password that matched, under the cache's key
    stored: str  # the exact hash string it matched
    at: float  # when, on the cache's clock


class VerifiedCache:
    """Successful password checks per login, each good for `ttl` seconds from the check.

    A hit needs the same login, the same keyed HMAC of the password (compared in constant time)
    and a stored hash identical to the one the password was checked against: a sender removed,
    or added again with a new password, misses at once. The HMAC key is random and lives only in
    this process, so what the cache holds is useless elsewhere and is never an unkeyed hash
    that could be tested against a list of guesses. One entry per login: a sender has one
    password at a time, and only a success adds or replaces an entry, so failed guesses can
    neither fill the cache nor push a sender's entry out. Past `max_entries` the oldest goes.
    """

    def __init__(self, ttl: float = CACHE_TTL_SECONDS, max_entries: int = CACHE_MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[str, _Verified] = OrderedDict()  # oldest check first

    def _mac(self, password: str) -> bytes:
        return hmac.new(self._key, password.encode(), hashlib.sha256).digest()

    def _expire(self, now: float) -> None:
        # Entries are in the order they were checked, so the expired ones are at the front.
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.at < self.ttl:
                break
            self._entries.popitem(last=False)

    def verified(self, login: str, password: str, stored: str) -> bool:
        """True when this password was checked against exactly `stored` within the TTL."""
        self._expire(self._clock())
        entry = self._entries.get(login)
        if entry is None:
            return False
        same_hash = hmac.compare_digest(entry.stored.encode(), stored.encode())
        same_password = hmac.compare_digest(entry.mac, self._mac(password))
        return same_hash and same_password

    def remember(self, login: str, password: str, stored: str) -> None:
        """Record that `password` matched `stored` for `login` (call only after a success)."""
        now = self._clock()
        self._expire(now)
        self._entries.pop(login, None)
        self._entries[login] = _Verified(self._mac(password), stored, now)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
