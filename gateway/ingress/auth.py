"""AUTH: who a session is, by password (AUTH PLAIN/LOGIN) or by a pinned client certificate.

Takes the credentials aiosmtpd decoded from AUTH, or the TLS session's client certificate, and
the senders of the current snapshot (re-read for each attempt, so a sender added or removed a
moment ago counts now); produces an authenticated session whose `auth_data` is the sender's
name, the events `sender.authenticated`, `sender.auth_failed`, `sender.auth_refused`,
`sender.locked_out` and `sender.unlocked`, and the lockouts written to the store. A registered
sender's scrypt hash is checked off the event loop on one thread of its own; an unknown login
is checked against a dummy hash, so the time taken does not reveal which senders exist. A
password that succeeded is not put through scrypt again for 10 minutes while the sender's
stored hash is unchanged (`passwords.VerifiedCache`). A sender registered with a client
certificate is recognised by it in MAIL, RCPT and DATA (with TLS 1.3 the certificate can arrive
after the handshake has been reported, so STARTTLS alone is not the place to check).

Fails as SMTP replies, never as exceptions to the client: a wrong password or unknown login is
aiosmtpd's `535 5.7.8` after the throttle's delay; failures slow and then refuse their address
and login (`454 4.7.0`, `throttle.AuthThrottle`), a lockout that is shared through the store for
`status` and lifted by `senders unlock` (`LoginGuard.share_lockouts`, `take_unlocks`). A
failing store raises to aiosmtpd, which answers `451 4.3.0` (`IntakeHandler.handle_exception`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.crypto.passwords import VerifiedCache, check_password, hash_password
from gateway.ingress.acks import ack_token
from gateway.ingress.throttle import AuthThrottle, Lockout
from gateway.ingress.wire import peer_host
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("ingress")

# What an attempted login that names no sender is logged and shared as.
UNKNOWN_LOGIN = "(unknown)"
MAX_SHARED = 10_000  # lockouts remembered as written down, before the ended ones are dropped

# scrypt needs 16 MiB per check, and glibc keeps an arena of that size for every thread that
# ran one: one thread for all checks keeps the daemon's memory flat (measured by `make bench`:
# 232 MB after 8 concurrent logins on the shared pool, 73 MB on this one).
_SCRYPT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrypt")

# Checked when the login is unknown, so that the time taken does not reveal which senders exist.
_DUMMY_HASH = hash_password("not a sender")


class LoginGuard:
    """The listener's memory of logins, shared by its sessions: the AUTH throttle, the cache of
    verified passwords, and the lockouts already written to the store."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.throttle = AuthThrottle()
        self.verified = VerifiedCache()
        # The scrypt check, run on `_SCRYPT`; replaceable so a test can count the real calls.
        self.check_password: Callable[[str, str], bool] = check_password
        # Lockouts written to the store: (scope, subject, login) -> monotonic end.
        self.shared: dict[tuple[str, str, str], float] = {}

    async def share_lockouts(self, lockouts: list[Lockout], login: str) -> None:
        """Write down the lockouts refusing `login` that are not written yet: the command
        line's `status` shows them and `senders unlock` lifts them (issue 12: a sender was
        locked out and `status` said nothing). A login lockout of a login that names no
        sender is not written (it locks nobody out, and its text may be a mistyped password);
        an address is written with the login it refused. One write per lockout and login."""
        now, clock = time.monotonic(), self.ctx.clock()
        for lockout in lockouts:
            if lockout.scope == "login" and login == UNKNOWN_LOGIN:
                continue
            key = (lockout.scope, lockout.subject, login)
            if self.shared.get(key, 0.0) > now:
                continue
            if len(self.shared) > MAX_SHARED:
                self.shared = {k: t for k, t in self.shared.items() if t > now}
            self.shared[key] = now + lockout.seconds_left
            until = clock + dt.timedelta(seconds=math.ceil(lockout.seconds_left))
            await self.ctx.store.write(functools.partial(
                _record_lockout, lockout.scope, lockout.subject, login, clock, until))
            log.warning("sender.locked_out", scope=lockout.scope, subject=lockout.subject,
                        login=login, until=until.isoformat())

    async def take_unlocks(self) -> bool:
        """Let go of the lockouts `senders unlock` lifted; True when there were any. Asked only
        while refusing, so a login that is not locked out costs no look-up."""
        if not await self.ctx.store.lockouts.any_lifted():
            return False
        lifted = await self.ctx.store.write(_take_lifted)
        for scope, subject in lifted:
            self.throttle.lift(scope, subject)
            self.shared = {k: t for k, t in self.shared.items() if k[:2] != (scope, subject)}
            log.info("sender.unlocked", scope=scope, subject=subject)
        return bool(lifted)

    async def sender_by_certificate(self, session: Session) -> str | None:
        """The sender whose pinned client certificate this TLS session presented, if any."""
        ssl_object = (session.ssl or {}).get("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return None
        digest = hashlib.sha256(der).hexdigest().upper()
        for sender in (await self.ctx.refresh()).senders.values():
            if digest in sender.client_certs:
                return sender.name
        return None


async def _record_lockout(scope: str, subject: str, login: str, since: dt.datetime,
                          until: dt.datetime, tx: Tx) -> None:
    await tx.lockouts.record(scope, subject, login, since, until)


async def _take_lifted(tx: Tx) -> list[tuple[str, str]]:
    return await tx.lockouts.take_lifted()


class AuthenticatingSMTP(SMTP):
    """aiosmtpd's session with AUTH PLAIN/LOGIN checked asynchronously against the senders'
    hashes, and a sender's pinned client certificate taken as its login."""

    _intake: LoginGuard

    async def check_auth_needed(self, caller_method: str) -> bool:
        """Whether `caller_method` must wait for AUTH; a pinned client certificate, once the
        session presents one, authenticates it here."""
        session = self.session
        if session is not None and not session.authenticated:
            name = await self._intake.sender_by_certificate(session)
            if name is not None:
                session.authenticated = True
                session.auth_data = name  # type: ignore[assignment]
                log.info("sender.authenticated", sender=name, method="client_certificate")
        # A school's acknowledgement comes without AUTH: MAIL and RCPT are decided by the
        # handler (RCPT takes only a live ack address from an unauthenticated client), and DATA
        # is allowed for an envelope of acknowledgement addresses alone.
        if caller_method in ("MAIL", "RCPT"):
            return False
        if caller_method == "DATA" and self.envelope is not None and self.envelope.rcpt_tos \
                and all(ack_token(a) for a in self.envelope.rcpt_tos):
            return False
        needed: bool = await super().check_auth_needed(caller_method)
        return needed

    @staticmethod
    def _defer_authentication(server: SMTP, session: Session, envelope: Envelope,
                              mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd's authenticator is synchronous; scrypt is slow by design. Hand the
        # credentials back to our async auth_* overrides, which verify them in a thread.
        return AuthResult(success=True, handled=False, auth_data=auth_data)

    async def _verify(self, result: AuthResult) -> AuthResult:
        if not result.success or not isinstance(result.auth_data, LoginPassword):
            return result
        name = result.auth_data.login.decode("utf-8", "replace")
        password = result.auth_data.password.decode("utf-8", "replace")
        peer = peer_host(self.session)
        throttle = self._intake.throttle
        # A sender added or removed a moment ago counts now, not at the next runner step.
        sender = (await self._intake.ctx.refresh()).senders.get(name)
        # The attempted login is logged only when it names a sender: an unknown one may be a
        # password typed into the wrong field.
        login = name if sender is not None else UNKNOWN_LOGIN
        refusing = throttle.lockouts(peer, name, time.monotonic())
        if refusing and await self._intake.take_unlocks():
            refusing = throttle.lockouts(peer, name, time.monotonic())
        if refusing:
            await self._intake.share_lockouts(refusing, login)
            log.warning("sender.auth_refused", peer=peer, login=login)
            return AuthResult(success=False, handled=False,
                              message="454 4.7.0 Too many failed attempts, try again later")
        stored = sender.password_hash if sender else _DUMMY_HASH
        # A sender's MTA opening a session for every few signals would pay scrypt's ~75 ms of
        # CPU on each; a success is remembered against this exact stored hash (see passwords).
        # Unknown logins and wrong passwords always pay the full check: a quick answer only
        # ever follows the right password, so timing tells a guesser nothing new.
        ok = sender is not None and self._intake.verified.verified(name, password, stored)
        if not ok:
            ok = await asyncio.get_running_loop().run_in_executor(
                _SCRYPT, self._intake.check_password, password, stored)
            if ok and sender is not None:
                self._intake.verified.remember(name, password, stored)
        if ok and sender is not None:
            throttle.record_success(peer, name)
            log.info("sender.authenticated", sender=name, method="password")
            return AuthResult(success=True, auth_data=name)
        delay = throttle.record_failure(peer, name, time.monotonic())
        log.warning("sender.auth_failed", peer=peer, login=login, delay_seconds=delay)
        await self._intake.share_lockouts(throttle.lockouts(peer, name, time.monotonic()), login)
        if delay:
            await asyncio.sleep(delay)
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

