"""The cache of successful AUTH checks: pure tests of `VerifiedCache`, then real loopback SMTP
sessions against a running gateway, counting the scrypt checks through the handler's
`check_password` hook (a spy that calls the real check)."""

from __future__ import annotations

import hashlib

from conftest import PASSWORD, SENDER, SENDER_ADDRESS, Harness
from hostile import RawSMTP

from gateway.admin.senders import senders_add, senders_remove
from gateway.crypto.passwords import (
    CACHE_MAX_ENTRIES,
    CACHE_TTL_SECONDS,
    VerifiedCache,
    check_password,
    hash_password,
)

# Two hashes of the same password, as a sender removed and added again would have.
STORED = hash_password(PASSWORD)
STORED_AGAIN = hash_password(PASSWORD)


class Clock:
    """A monotonic clock the test moves on by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_success_is_a_hit() -> None:
    """A password remembered after a success is a hit for the same login and stored hash."""
    cache = VerifiedCache()
    assert not cache.verified(SENDER, PASSWORD, STORED)
    cache.remember(SENDER, PASSWORD, STORED)
    assert cache.verified(SENDER, PASSWORD, STORED)


def test_wrong_password_is_never_a_hit() -> None:
    """Another password for a login with a remembered success is a miss."""
    cache = VerifiedCache()
    cache.remember(SENDER, PASSWORD, STORED)
    for attempt in ("", PASSWORD + " ", PASSWORD.upper(), PASSWORD[:-1], "wrong password"):
        assert not cache.verified(SENDER, attempt, STORED)
    assert cache.verified(SENDER, PASSWORD, STORED), "a miss does not drop the entry"


def test_other_login_is_not_a_hit() -> None:
    """A success remembered for one login is no hit for another with the same password."""
    cache = VerifiedCache()
    cache.remember(SENDER, PASSWORD, STORED)
    assert not cache.verified("politie", PASSWORD, STORED)


def test_changed_stored_hash_is_a_miss() -> None:
    """When the sender's stored hash is no longer the one checked against, it is a miss."""
    cache = VerifiedCache()
    cache.remember(SENDER, PASSWORD, STORED)
    assert not cache.verified(SENDER, PASSWORD, STORED_AGAIN)
    assert not cache.verified(SENDER, PASSWORD, "!")


def test_entry_expires_after_the_ttl() -> None:
    """An entry is a hit until CACHE_TTL_SECONDS after the check, and a miss from then on."""
    clock = Clock()
    cache = VerifiedCache(clock=clock)
    cache.remember(SENDER, PASSWORD, STORED)
    clock.now += CACHE_TTL_SECONDS - 1
    assert cache.verified(SENDER, PASSWORD, STORED)
    clock.now += 1
    assert not cache.verified(SENDER, PASSWORD, STORED)
    assert len(cache) == 0


def test_hits_do_not_extend_the_ttl() -> None:
    """A sender logging in all the time is still put through scrypt once per TTL."""
    clock = Clock()
    cache = VerifiedCache(ttl=60, clock=clock)
    cache.remember(SENDER, PASSWORD, STORED)
    for _ in range(5):
        clock.now += 11
        assert cache.verified(SENDER, PASSWORD, STORED)
    clock.now += 5
    assert not cache.verified(SENDER, PASSWORD, STORED)


def test_size_is_bounded_dropping_the_oldest() -> None:
    """Past max_entries the oldest success is forgotten; the default bound is 1024."""
    assert CACHE_MAX_ENTRIES == 1024
    clock = Clock()
    cache = VerifiedCache(max_entries=3, clock=clock)
    for name in ("a", "b", "c", "d"):
        clock.now += 1
        cache.remember(name, PASSWORD, STORED)
    assert len(cache) == 3
    assert not cache.verified("a", PASSWORD, STORED)
    assert all(cache.verified(name, PASSWORD, STORED) for name in ("b", "c", "d"))


def test_holds_neither_the_password_nor_an_unkeyed_hash() -> None:
    """What the cache keeps is a keyed HMAC: not the password, not its plain SHA-256."""
    cache = VerifiedCache()
    cache.remember(SENDER, PASSWORD, STORED)
    held = repr(vars(cache)) + repr(list(vars(cache)["_entries"].values()))
    plain = hashlib.sha256(PASSWORD.encode())
    for secret in (PASSWORD, repr(PASSWORD.encode()), plain.hexdigest(), repr(plain.digest())):
        assert secret not in held


# -- over real loopback SMTP sessions ----------------------------------------------------------


def count_checks(h: Harness) -> list[str]:
    """Route the handler's scrypt checks through a spy; the stored hashes checked against."""
    assert h.daemon.handler is not None
    checked: list[str] = []

    def spy(password: str, stored: str) -> bool:
        checked.append(stored)
        return check_password(password, stored)

    h.daemon.handler.check_password = spy
    return checked


async def login(h: Harness, password: str = PASSWORD) -> int:
    """One new session: EHLO, STARTTLS, EHLO, AUTH PLAIN; the AUTH reply's code."""
    client = await RawSMTP.connect("127.0.0.1", h.port)
    try:
        assert (await client.command("EHLO sender.example")).code == 250
        await client.starttls(h.ctx.config.smtp.tls_cert.parent / "ca.pem")
        assert (await client.command("EHLO sender.example")).code == 250
        code = (await client.login(SENDER, password)).code
        if code == 235:
            assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
        return code
    finally:
        await client.close()


async def test_second_session_logs_in_without_scrypt(harness: Harness) -> None:
    """A second session with the same password gets 235 without another scrypt check."""
    checked = count_checks(harness)
    assert await login(harness) == 235
    assert await login(harness) == 235
    assert len(checked) == 1


async def test_wrong_password_after_a_success_pays_scrypt_and_gets_535(
        harness: Harness) -> None:
    """After a remembered success, a wrong password still runs scrypt and gets 535."""
    checked = count_checks(harness)
    assert await login(harness) == 235
    assert await login(harness, password=PASSWORD + "!") == 535
    assert await login(harness, password=PASSWORD + "!") == 535
    assert len(checked) == 3


async def test_removed_sender_is_refused_at_once(harness: Harness) -> None:
    """A sender removed after a remembered success gets 535; added again, scrypt runs again."""
    checked = count_checks(harness)
    assert await login(harness) == 235
    await senders_remove(harness.ctx, SENDER)
    assert await login(harness) == 535
    ids = harness.ids
    await senders_add(harness.ctx, SENDER, ids.sender.public_key(),
                      ids.sender.fingerprint, PASSWORD, [SENDER_ADDRESS])
    assert await login(harness) == 235
    assert await login(harness) == 235
    # The first login, the removed sender (the dummy hash), and once for the new hash.
    assert len(checked) == 3 and len(set(checked)) == 3
