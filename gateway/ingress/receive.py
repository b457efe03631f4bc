"""The receive stage: the SMTP listener senders submit signals to.

Takes SMTP sessions on the daemon's own event loop (aiosmtpd, not its threaded Controller);
produces stored signals via `intake.accept` and exactly the replies of SPEC §2. STARTTLS is
required before AUTH and MAIL (unless the config says otherwise); AUTH PLAIN/LOGIN checks a
registered sender's scrypt hash off the event loop; RCPT takes only the gateway's address;
MAIL FROM is checked against the sender's allowed addresses. Every reply is decided before the
reply to the final dot, and 250 only after the signal's transaction committed.
Any failure of our own is `451 4.3.0` with nothing internal in it (`handle_exception`).

Limits of our own where aiosmtpd has none (LIBRARIES.md): one line without CRLF is buffered
only up to the message size, the rest is discarded and the message answered 552; sessions are
capped in total and per client address (421 4.7.0); an idle client is told 421 before it is
cut off, and so is a session past its whole lifetime (`max_session_seconds`) or one that has not
authenticated and sends command after command that gets it nowhere (`max_stalling_commands`);
a client address cut off or naming unknown acknowledgement addresses too often is refused new
sessions for a while (421 4.7.0 at connect, `throttle.ClientRefusals`); AUTH failures slow and
then refuse their address and login (454 4.7.0), a lockout that is shared through the store
for `status` and lifted by `senders unlock` (`IntakeHandler.share_lockouts`); a password
that succeeded is not put through scrypt again for 10 minutes while the sender's stored hash is
unchanged (`passwords.VerifiedCache`). A sender registered with a client certificate is
recognised by it in MAIL, RCPT and DATA (with TLS 1.3 the certificate can arrive after the
handshake has been reported, so STARTTLS alone is not the place to check).

Acknowledgements come without AUTH, to the `ack+TOKEN@` address that only the decrypted notice
shows (`seal.py`). A null sender or an automatic reply (RFC 3834 `Auto-Submitted` other than
`no`, `Precedence: auto_reply/bulk/junk/list`, `X-Autoreply`, `X-Autorespond`) is refused
with `550 5.7.1` and records nothing: an out-of-office must not stop an escalation. At most
`MAX_ACK_RECIPIENTS` distinct addresses per transaction (452 4.5.3); the same one twice is one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.core.model import RejectClass, Rejection
from gateway.core.records import NoticeRecord
from gateway.crypto.gpg import GpgError
from gateway.crypto.passwords import VerifiedCache, check_password, hash_password
from gateway.ingress.throttle import (
    AuthThrottle,
    ClientRefusals,
    Lockout,
    SessionLimits,
    StallCounter,
)
from gateway.observe import metrics
from gateway.observe.logs import get_logger, safe_exception
from gateway.pipeline.context import Context
from gateway.pipeline.intake import Accepted, accept
from gateway.store.api import Tx

log = get_logger("receive")

REPLY_FOR: dict[RejectClass, str] = {
    RejectClass.NOT_ENCRYPTED: "554 5.7.5",
    RejectClass.BAD_SIGNATURE: "554 5.7.7",
    RejectClass.INVALID_SIGNAL: "554 5.6.0",
    RejectClass.TOO_LARGE: "552 5.3.4",
}

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure in the gateway, please try again later"
AUTOMATIC_REPLY = "550 5.7.1 An automatic reply is not an acknowledgement"
UNKNOWN_ACK = "550 5.1.1 Unknown or already used acknowledgement address"
# A reply goes to one notice's address; a few in one transaction are allowed (a contact
# answering several notices at once), hundreds would be a cheap way to make us look them up.
MAX_ACK_RECIPIENTS = 5
# Recipients other than the intake address an authenticated session may name before it is
# closed: a sender's MTA names one; a mistyped address now and then is no flood.
MAX_FOREIGN_RECIPIENTS = 10
# What an attempted login that names no sender is logged and shared as.
UNKNOWN_LOGIN = "(unknown)"
MAX_SHARED = 10_000  # lockouts remembered as written down, before the ended ones are dropped

# aiosmtpd's own wording lacks the enhanced status codes SPEC §2 promises senders' MTAs.
_REWRITE = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": "552 5.3.4 Message too large",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message too large",
    "500 Line too long (see RFC5321 4.5.3.1.6)":
        "552 5.3.4 Line too long (RFC 5321 section 4.5.3.1.6)",
}

# scrypt needs 16 MiB per check, and glibc keeps an arena of that size for every thread that
# ran one: one thread for all checks keeps the daemon's memory flat (measured by `make bench`:
# 232 MB after 8 concurrent logins on the shared pool, 73 MB on this one).
_SCRYPT = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scrypt")

# Checked when the login is unknown, so that the time taken does not reveal which senders exist.
_DUMMY_HASH = hash_password("not a sender")


def rejection_reply(rejection: Rejection) -> str:
    """The SMTP reply for a refusal: the class's code and the value-free detail."""
    detail = " ".join(rejection.detail.split())[:200]
    return f"{REPLY_FOR[rejection.kind]} {detail}"


def accepted_reply(accepted: Accepted) -> str:
    if accepted.duplicate:
        return f"250 2.0.0 Signal already accepted as {accepted.ref}"
    return f"250 2.0.0 Signal accepted as {accepted.ref}"


class _BoundedReader(asyncio.StreamReader):
    """aiosmtpd keeps the fragments of an over-long line until its CRLF arrives, without bound
    (200 MiB sent grew memory by 200 MB). Past a cap, the rest of such a line is consumed and
    thrown away: aiosmtpd has marked the line too long already and answers after the final dot,
    as RFC 5321 §4.2.5 wants, instead of a reset the client could not read a reply from."""

    line_cap: int = 1 << 20
    _line_bytes: int = 0

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        line = await super().readuntil(separator)
        self._line_bytes = 0
        return line

    async def read(self, n: int = -1) -> bytes:
        data = await super().read(n)
        self._line_bytes += len(data)
        return b"" if self._line_bytes > self.line_cap else data


# A path as senders' MTAs write it, `<local@domain>` with a dot-atom local part and a host name:
# for these, aiosmtpd's `_getaddr` answer is the text between the brackets.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>")


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, parameters) exactly as aiosmtpd's `_getaddr` has the email header parser find
    them, for a plain `<local@domain>` path; None for anything else (quoted strings, comments,
    source routes, non-ASCII, no brackets), which is left to that parser.

    The parser takes white space after the `>` (and a comment after it: not plain) as part of
    the path, so the parameters start after it.
    """
    match = _PLAIN_PATH.match(arg)
    if match is None:
        return None
    rest = arg[match.end():]
    if rest[:1] in (" ", "\t"):
        rest = rest.lstrip()
    if rest.startswith("("):
        return None
    return match.group(1), rest


class AckEnvelope(Envelope):
    """aiosmtpd's envelope (one per transaction), and the ack tokens looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.ack_tried: set[str] = set()


class GatewaySMTP(SMTP):
    """aiosmtpd with asynchronous password checks, limits, and SPEC's reply wording."""

    def __init__(self, handler: IntakeHandler, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=self._defer_authentication, **kwargs)
        self._intake = handler
        self._counted = False
        self._stalls = StallCounter(handler.ctx.config.smtp.max_stalling_commands)
        self._last_reply = ""  # the last line pushed: the reply a command got
        self._busy = False  # a command is being carried out
        self._expired = False  # past max_session_seconds while busy: cut after the reply
        self._lifetime: asyncio.TimerHandle | None = None
        self._closing = False  # see close_after_reply
        self.foreign_recipients = 0  # RCPTs refused as not the intake address
        self._smtp_methods = {command: self._guarded(command, method)
                              for command, method in self._smtp_methods.items()}

    def _guarded(self, command: str, method: Callable[[str | None], Awaitable[None]],
                 ) -> Callable[[str | None], Awaitable[None]]:
        """`method` behind the session limits: a session that has not authenticated and stalled
        `max_stalling_commands` times gets 421 instead of its next command; a session past its
        lifetime, or of a client blocked meanwhile, is closed after the command's reply."""

        async def guarded(arg: str | None) -> None:
            if self._closing:
                return  # pipelined after a reply that closes the session: not answered
            session = self.session
            unauthenticated = session is not None and not session.authenticated
            if command != "QUIT" and unauthenticated and self._stalls.exhausted():
                self._cut("stalling",
                          "421 4.7.0 Too many commands without progress, closing connection")
                return
            self._busy = True
            try:
                await method(arg)
            finally:
                self._busy = False
            if unauthenticated:
                self._stalls.record(command, self._last_reply)
            if self._expired:
                self._cut("lifetime", "421 4.7.0 Session lasted too long, closing connection")
            elif self._intake.refusals.blocked(_peer_host(self.session), time.monotonic()):
                self._cut("blocked", "421 4.7.0 Too many refusals for your address, closing"
                                     " connection", count=False)

        # HELP lists and explains the commands by what their methods carry (aiosmtpd `syntax`).
        for attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
            if hasattr(method, attr):
                setattr(guarded, attr, getattr(method, attr))
        return guarded

    def _cut(self, reason: str, reply: str, count: bool = True) -> None:
        """RFC 5321 §3.8: a server closing on its own says 421 first. The client address is
        charged with the cut unless `count` is false."""
        if self.transport is None or self.transport.is_closing():
            return
        peer = _peer_host(self.session)
        log.warning("session.cut", peer=peer, reason=reason)
        self._writer.write(reply.encode() + b"\r\n")
        self.transport.close()  # flushes the reply first
        if count:
            self._intake.refused(peer)

    def shut(self, reply: str) -> None:
        """The daemon stops: say `reply` (421, RFC 5321 §3.8) and close, whatever the session
        was doing. Not charged to the client address."""
        if self.transport is not None and not self.transport.is_closing():
            self._writer.write(reply.encode() + b"\r\n")
            self.transport.close()  # flushes the reply first

    def close_after_reply(self) -> None:
        """Close the connection once the reply being given is written; later commands
        already pipelined are not answered."""
        self._closing = True
        self.loop.call_soon(self._close_transport)

    def _lifetime_cb(self) -> None:
        if self._busy:
            self._expired = True  # a DATA being answered gets its answer, then the 421
        else:
            self._cut("lifetime", "421 4.7.0 Session lasted too long, closing connection")

    def _create_envelope(self) -> Envelope:
        return AckEnvelope()

    def _cb_client_connected(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        reader.__class__ = _BoundedReader  # same object, bounded reads (see _BoundedReader)
        assert isinstance(reader, _BoundedReader)
        reader.line_cap = max(self.data_size_limit or 0, 64 * 1024)
        super()._cb_client_connected(reader, writer)

    async def _handle_client(self) -> None:
        peer = _peer_host(self.session)
        if self._intake.draining:
            self._writer.write(b"421 4.3.2 Service shutting down, try again later\r\n")
            self.loop.call_soon(self._close_transport)
            return
        if self._intake.refusals.blocked(peer, time.monotonic()):
            # Logged once, as client.blocked, when the block began.
            self._writer.write(b"421 4.7.0 Too many refusals for your address, try again later"
                               b"\r\n")
            self.loop.call_soon(self._close_transport)
            return
        if not self._intake.sessions.try_open(peer):
            log.warning("session.refused", peer=peer, open=self._intake.sessions.total)
            self._writer.write(b"421 4.7.0 Too many connections, try again later\r\n")
            self.loop.call_soon(self._close_transport)
            return
        self._counted = True
        self._intake.open.add(self)
        self._lifetime = self.loop.call_later(self._intake.ctx.config.smtp.max_session_seconds,
                                              self._lifetime_cb)
        await super()._handle_client()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        # aiosmtpd's own builds a typing.Protocol class and a full header parse tree for every
        # MAIL and RCPT: about 7% of the daemon's CPU under load (py-spy), for `<a@b>`.
        plain = plain_path(arg)
        if plain is None:
            return super()._getaddr(arg)
        address, rest = plain
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, error: Exception | None) -> None:
        if self._lifetime is not None:
            self._lifetime.cancel()
        self._intake.open.discard(self)
        if self._counted:
            self._counted = False
            self._intake.sessions.close(_peer_host(self.session))
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        self._cut("idle", "421 4.7.0 Idle timeout, closing connection")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    async def check_auth_needed(self, caller_method: str) -> bool:
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
        peer = _peer_host(self.session)
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

    async def challenge_auth(self, challenge: str | bytes, encode_to_b64: bool = True,
                             log_client_response: bool = False) -> Any:
        """aiosmtpd's, except that an answer to a 334 longer than the reader's line limit ends
        the session with 421 instead of escaping as asyncio's ValueError: that became a 451
        "failure in the gateway" and an error log line that anyone could make without a login
        (attack review). The rest of such a line would be read as commands, so no resync."""
        try:
            return await super().challenge_auth(challenge, encode_to_b64, log_client_response)
        except ValueError:
            self._cut("auth_line", "421 4.7.0 Authentication line too long, closing connection")
            return MISSING

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REWRITE.get(status, status)
            self._last_reply = status
            if self._refused_before_dispatch(status):
                # aiosmtpd answers these itself (530 before STARTTLS, 500 for an unknown
                # command) without calling a command method: they stall like NOOP does, or a
                # client could repeat them for the whole session (attack review re-run).
                if self._stalls.exhausted():
                    self._cut("stalling",
                              "421 4.7.0 Too many commands without progress, closing connection")
                    return
                self._stalls.record("", status)
        await super().push(status)

    def _refused_before_dispatch(self, status: str) -> bool:
        session = self.session
        return (not self._busy and status[:1] in ("4", "5") and not status.startswith("421")
                and session is not None and not session.authenticated)


class IntakeHandler:
    """aiosmtpd hooks: envelope policy and the DATA decision."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.address = ctx.config.gateway.address.lower()
        self.throttle = AuthThrottle()
        self.verified = VerifiedCache()
        # The scrypt check, run on `_SCRYPT`; replaceable so a test can count the real calls.
        self.check_password: Callable[[str, str], bool] = check_password
        self.draining = False  # set on SIGTERM: new sessions are turned away with 421 4.3.2
        self.open: set[GatewaySMTP] = set()  # the sessions open now, told 421 at shutdown
        self.sessions = SessionLimits(ctx.config.smtp.max_sessions,
                                      ctx.config.smtp.max_sessions_per_client)
        self.refusals = ClientRefusals(ctx.config.smtp.max_refusals_per_client,
                                       ctx.config.smtp.refusal_block_seconds)
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

    def shut_open_sessions(self) -> int:
        """The shutdown grace is over: every session still open is told 421 4.3.2 and closed
        (before, the process ended under them and they saw the connection drop unexplained).
        Returns how many."""
        sessions = list(self.open)
        for session in sessions:
            session.shut("421 4.3.2 Service shutting down, closing connection")
        return len(sessions)

    def refused(self, peer: str) -> None:
        """Charge a client address with a cut-off session or an unknown ack address."""
        if self.refusals.record(peer, time.monotonic()):
            log.warning("client.blocked", peer=peer, seconds=self.refusals.block_seconds)

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

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        sender = self.ctx.snapshot.senders.get(str(session.auth_data)) \
            if session.authenticated else None
        if sender is None:
            # Unauthenticated: only acknowledgement addresses will be accepted at RCPT.
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
            return "250 2.1.0 OK"
        if sender.allowed_from and address.lower() not in sender.allowed_from:
            log.warning("envelope.refused", sender=sender.name, reason="mail_from")
            return "550 5.7.1 Envelope sender not allowed for this account"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        token = ack_token(address) if self._ack_domain(address) else None
        kinds = {bool(ack_token(a)) for a in envelope.rcpt_tos}
        if kinds and kinds != {token is not None}:
            return "503 5.5.1 An acknowledgement is sent on its own, not with a signal"
        if token is not None:
            return await self._ack_recipient(session, envelope, address, token)
        if not session.authenticated:
            return "530 5.7.0 Authentication required"
        if address.lower() != self.address:
            return self._foreign_recipient(server, session)
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    def _foreign_recipient(self, server: SMTP, session: Session) -> str:
        """550 for a recipient other than the intake address; a session that keeps naming
        them (1,000 RCPTs made 500 log lines in 0.1 s in the attack review) is closed."""
        if not isinstance(server, GatewaySMTP):
            raise TypeError("the intake handler serves GatewaySMTP sessions only")
        server.foreign_recipients += 1
        if server.foreign_recipients > MAX_FOREIGN_RECIPIENTS:
            peer = _peer_host(session)
            log.warning("session.cut", peer=peer, reason="recipients")
            self.refused(peer)
            server.close_after_reply()  # the 421 is this RCPT's reply, then the close
            return "421 4.7.0 Too many refused recipients, closing connection"
        log.warning("envelope.refused", sender=str(session.auth_data), reason="rcpt_to")
        return "550 5.1.1 Recipient not accepted: this gateway takes signals only for its" \
               " intake address"

    async def _ack_recipient(self, session: Session, envelope: Envelope, address: str,
                             token: str) -> str:
        peer = _peer_host(session)
        if null_sender(envelope.mail_from):
            # RFC 3834 §2: automatic responses go to the null path. Nobody read the notice.
            log.warning("acknowledgement.refused", peer=peer, reason="null_sender")
            return AUTOMATIC_REPLY
        # The same address again is the same answer without a second look-up; at most
        # MAX_ACK_RECIPIENTS distinct ones are looked up per transaction.
        tried = envelope.ack_tried if isinstance(envelope, AckEnvelope) else set()
        if token in tried:
            return "250 2.1.5 OK" if token in {ack_token(a) for a in envelope.rcpt_tos} \
                else UNKNOWN_ACK
        if len(tried) >= MAX_ACK_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        tried.add(token)
        if not await self.ctx.store.notices.ack_pending(self.ctx.vault.digest("ack", token)):
            self.refused(peer)  # guessing tokens costs the guesser its address for a while
            return UNKNOWN_ACK
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if envelope.rcpt_tos and all(ack_token(a) for a in envelope.rcpt_tos):
            return await self._acknowledge(session, envelope)
        sender = self.ctx.snapshot.senders.get(str(session.auth_data))
        if sender is None:
            return "530 5.7.0 Authentication required"
        raw = envelope.original_content or b""
        try:
            outcome = await accept(raw, sender, store=self.ctx.store, gpg=self.ctx.gpg,
                                   vault=self.ctx.vault, snapshot=self.ctx.snapshot,
                                   now=self.ctx.clock(), today=self.ctx.today())
        except GpgError as exc:
            log.error("signal.deferred", sender=sender.name, **safe_exception(exc))
            metrics.SIGNALS.labels("deferred").inc()
            return TEMPORARY_FAILURE
        if isinstance(outcome, Rejection):
            log.warning("signal.rejected", sender=sender.name, reason=outcome.kind.value,
                        detail=outcome.detail)
            metrics.SIGNALS.labels(outcome.kind.value).inc()
            return rejection_reply(outcome)
        if outcome.duplicate:
            log.info("signal.duplicate", ref=outcome.ref, sender=sender.name)
            metrics.SIGNALS.labels("duplicate").inc()
        else:
            log.info("signal.accepted", ref=outcome.ref, sender=sender.name,
                     children=outcome.children, held=outcome.held)
            metrics.SIGNALS.labels("accepted").inc()
            metrics.HELD.inc(outcome.held)
            self.ctx.wake.set()
        return accepted_reply(outcome)

    def _ack_domain(self, address: str) -> bool:
        return address.lower().rpartition("@")[2] == self.address.rpartition("@")[2]

    async def _acknowledge(self, session: Session, envelope: Envelope) -> str:
        """Record each acknowledgement; the reply's content is discarded unread, except for the
        header fields that say a machine wrote it: those record nothing."""
        marker = automatic_reply(envelope.original_content or b"")
        if marker is not None:
            log.warning("acknowledgement.refused", peer=_peer_host(session), reason=marker)
            return AUTOMATIC_REPLY
        now = self.ctx.clock()
        for address in envelope.rcpt_tos:
            token = ack_token(address)
            if token is None:
                continue
            notice = await self.ctx.store.write(functools.partial(
                _record_acknowledgement, self.ctx.vault.digest("ack", token), now))
            if notice is not None:
                log.info("notice.acknowledged", ref=notice.ref, school=notice.school,
                         notice=notice.id)
        return "250 2.0.0 Acknowledgement recorded, thank you"

    async def handle_exception(self, error: Exception) -> str:
        # Always a string: returning None leaves the client without a reply (LIBRARIES.md).
        log.error("session.failed", **safe_exception(error))
        return TEMPORARY_FAILURE


async def _record_lockout(scope: str, subject: str, login: str, since: dt.datetime,
                          until: dt.datetime, tx: Tx) -> None:
    await tx.lockouts.record(scope, subject, login, since, until)


async def _record_acknowledgement(ack_digest: str, now: dt.datetime,
                                  tx: Tx) -> NoticeRecord | None:
    notice = await tx.notices.acknowledge(ack_digest, now)
    if notice is not None:
        await tx.receipts.append("acknowledged", at=now, ref=notice.ref, school=notice.school,
                                 notice=notice.id)
    return notice


async def _take_lifted(tx: Tx) -> list[tuple[str, str]]:
    return await tx.lockouts.take_lifted()


def ack_token(address: str) -> str | None:
    """The token of an `ack+TOKEN@domain` address (26 base32 characters, either case), or None.

    ASCII only: `str.lower` folds some other characters into ASCII letters (the Kelvin sign
    into `k`), and a token is exactly what `seal.new_ack_token` wrote, nothing that lowers to it.
    """
    local = address.rpartition("@")[0]
    if not local.isascii():
        return None
    prefix, plus, token = local.lower().partition("+")
    if prefix != "ack" or not plus or len(token) != 26:
        return None
    return token if all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in token) else None


def null_sender(mail_from: str | None) -> bool:
    """`MAIL FROM:<>` (aiosmtpd gives the path as "<>")."""
    return (mail_from or "").strip() in ("", "<>")


_COMMENT = re.compile(r"\([^()]*\)")
_BLANK_LINE = re.compile(rb"(?:\A|\n)\r?\n")  # the end of the header section (RFC 5322 §2.1)
# Precedence values that list managers and vacation programs set (RFC 3834 §3.1.8, RFC 2076).
_BULK = frozenset({"auto_reply", "bulk", "junk", "list"})


def automatic_reply(message: bytes) -> str | None:
    """Why a reply was written by a machine, from its header section alone; None for a person.

    "auto_submitted" for RFC 3834 `Auto-Submitted` with any value but `no` (comments and
    parameters aside; an empty value is not `no` either), "precedence" for
    `Precedence: auto_reply/bulk/junk/list`, "x_autoreply" / "x_autorespond" for those fields
    (vacation, Exchange and many ticket systems set them). Reads only up to the first empty
    line; any bytes at all are taken (as Latin-1, which cannot fail).
    """
    blank = _BLANK_LINE.search(message)
    end = blank.start() if blank is not None else len(message)
    fields: list[str] = []
    for line in message[:end].decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += line  # RFC 5322 §2.2.3: folded
        else:
            fields.append(line)
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        value = _COMMENT.sub(" ", value).strip().lower()
        if name == "auto-submitted" and value.split(";")[0].strip() != "no":
            return "auto_submitted"
        if name == "precedence" and value in _BULK:
            return "precedence"
        if name in ("x-autoreply", "x-autorespond"):
            return name.replace("-", "_")
    return None


def _peer_host(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


async def _clear_lockouts(tx: Tx) -> None:
    await tx.lockouts.clear()


def server_tls_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
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
