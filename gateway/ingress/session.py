"""The SMTP session: aiosmtpd's protocol object on the daemon's own event loop (not its
threaded Controller), with the limits aiosmtpd does not have and the reply wording of
docs/protocol.md §5.

Takes a client's connection and the listener's `IntakeHandler` (the policy of MAIL, RCPT and
DATA, and the state shared by all sessions); produces the session's replies, the events
`session.cut` and `session.refused`, and the counts of open sessions per client address. AUTH
is `auth.AuthenticatingSMTP`'s; STARTTLS is required before AUTH and MAIL unless the config
says otherwise.

Limits of our own where aiosmtpd has none: one line without CRLF is buffered only up to the
message size, the rest is discarded and the message answered 552 (`wire.BoundedReader`);
sessions are capped in total and per client address (421 4.7.0 at connect); an idle client is
told 421 before it is cut off, and so is a session past its whole lifetime
(`max_session_seconds`) or one that has not authenticated and sends command after command that
gets it nowhere (`max_stalling_commands`), or an answer to an AUTH challenge longer than a line
may be; a client address cut off or naming unknown acknowledgement addresses too often is
refused new sessions for a while (421 4.7.0 at connect, `throttle.ClientRefusals`); while the
daemon stops, new sessions are told 421 4.3.2 and, after the grace, so are the open ones
(`shut`). A session fails only as a reply: any error of our own while carrying out a command
is answered by the handler's `handle_exception` (451 4.3.0, nothing internal in it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, Envelope

from gateway.ingress.acks import AckEnvelope
from gateway.ingress.auth import AuthenticatingSMTP
from gateway.ingress.replies import REWRITE
from gateway.ingress.throttle import StallCounter
from gateway.ingress.wire import BoundedReader, peer_host, plain_path
from gateway.observe.logs import get_logger

if TYPE_CHECKING:
    from gateway.ingress.handler import IntakeHandler

log = get_logger("ingress")


class GatewaySMTP(AuthenticatingSMTP):
    """aiosmtpd with asynchronous password checks, limits, and the reply wording of
    docs/protocol.md §5."""

    _intake: IntakeHandler

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
            elif self._intake.refusals.blocked(peer_host(self.session), time.monotonic()):
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
        peer = peer_host(self.session)
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
        reader.__class__ = BoundedReader  # same object, bounded reads (see BoundedReader)
        assert isinstance(reader, BoundedReader)
        reader.line_cap = max(self.data_size_limit or 0, 64 * 1024)
        super()._cb_client_connected(reader, writer)

    async def _handle_client(self) -> None:
        peer = peer_host(self.session)
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
            self._intake.sessions.close(peer_host(self.session))
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        self._cut("idle", "421 4.7.0 Idle timeout, closing connection")
        super()._timeout_cb()  # type: ignore[no-untyped-call]

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

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = REWRITE.get(status, status)
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

