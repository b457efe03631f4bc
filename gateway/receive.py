"""The receive stage: the SMTP listener senders submit signals to.

Takes SMTP sessions on the daemon's own event loop (aiosmtpd, not its threaded Controller);
produces stored signals via `intake.accept` and exactly the replies of SPEC §2. STARTTLS is
required before AUTH and MAIL (unless the config says otherwise); AUTH PLAIN/LOGIN checks a
registered sender's scrypt hash off the event loop; RCPT takes only the gateway's address;
MAIL FROM is checked against the sender's allowed addresses. Every reply is decided before the
reply to the final dot, and 250 only after the signal's transaction committed.
Any failure of our own is `451 4.3.0` with nothing internal in it (`handle_exception`).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from gateway.context import Context
from gateway.gpg import GpgError
from gateway.intake import Accepted, accept
from gateway.logs import get_logger, safe_exception
from gateway.model import RejectClass, Rejection
from gateway.passwords import check_password, hash_password

log = get_logger("receive")

REPLY_FOR: dict[RejectClass, str] = {
    RejectClass.NOT_ENCRYPTED: "554 5.7.5",
    RejectClass.BAD_SIGNATURE: "554 5.7.7",
    RejectClass.INVALID_SIGNAL: "554 5.6.0",
    RejectClass.TOO_LARGE: "552 5.3.4",
}

TEMPORARY_FAILURE = "451 4.3.0 Temporary failure in the gateway, please try again later"

# aiosmtpd's own wording lacks the enhanced status codes SPEC §2 promises senders' MTAs.
_REWRITE = {
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "552 Error: Too much mail data": "552 5.3.4 Message too large",
    "552 Error: message size exceeds fixed maximum message size": "552 5.3.4 Message too large",
}

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


class GatewaySMTP(SMTP):
    """aiosmtpd with asynchronous password checks and SPEC's reply wording."""

    def __init__(self, handler: IntakeHandler, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=self._defer_authentication, **kwargs)
        self._intake = handler

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
        # A sender added or removed a moment ago counts now, not at the next runner step.
        sender = (await self._intake.ctx.refresh()).senders.get(name)
        ok = await asyncio.to_thread(check_password, password,
                                     sender.password_hash if sender else _DUMMY_HASH)
        if ok and sender is not None:
            log.info("sender.authenticated", sender=name)
            return AuthResult(success=True, auth_data=name)
        # The attempted login may be a mistyped secret: it is never logged.
        log.warning("sender.auth_failed", peer=_peer_host(self.session))
        return AuthResult(success=False, handled=False)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._verify(await super().auth_LOGIN(_, args))

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _REWRITE.get(status, status)
        await super().push(status)


class IntakeHandler:
    """aiosmtpd hooks: envelope policy and the DATA decision."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.address = ctx.config.gateway.address.lower()

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        sender = self.ctx.snapshot.senders.get(str(session.auth_data))
        if sender is None:
            return "530 5.7.0 Authentication required"
        if sender.allowed_from and address.lower() not in sender.allowed_from:
            log.warning("envelope.refused", sender=sender.name, reason="mail_from")
            return "550 5.7.1 Envelope sender not allowed for this account"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.lower() != self.address:
            log.warning("envelope.refused", sender=str(session.auth_data), reason="rcpt_to")
            return "550 5.1.1 Recipient not accepted: this gateway takes signals only for its" \
                   " intake address"
        if address not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
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
            return TEMPORARY_FAILURE
        if isinstance(outcome, Rejection):
            log.warning("signal.rejected", sender=sender.name, reason=outcome.kind.value,
                        detail=outcome.detail)
            return rejection_reply(outcome)
        if outcome.duplicate:
            log.info("signal.duplicate", ref=outcome.ref, sender=sender.name)
        else:
            log.info("signal.accepted", ref=outcome.ref, sender=sender.name,
                     children=outcome.children, held=outcome.held)
            self.ctx.wake.set()
        return accepted_reply(outcome)

    async def handle_exception(self, error: Exception) -> str:
        # Always a string: returning None leaves the client without a reply (LIBRARIES.md).
        log.error("session.failed", **safe_exception(error))
        return TEMPORARY_FAILURE


def _peer_host(session: Session | None) -> str:
    peer = session.peer if session is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


async def start_listener(ctx: Context, host: str | None = None,
                         port: int | None = None) -> asyncio.Server:
    """Listen for senders on the daemon's loop; port 0 picks a free port (tests)."""
    smtp = ctx.config.smtp
    tls = server_tls_context(str(smtp.tls_cert), str(smtp.tls_key))
    handler = IntakeHandler(ctx)
    loop = asyncio.get_running_loop()

    def factory() -> GatewaySMTP:
        return GatewaySMTP(handler, hostname=smtp.hostname, tls_context=tls,
                           require_starttls=smtp.require_tls, auth_required=True,
                           auth_require_tls=smtp.require_tls,
                           data_size_limit=smtp.max_message_bytes,
                           timeout=smtp.timeout_seconds, ident="hwc-gateway")

    return await loop.create_server(factory, host or smtp.listen.host,
                                    smtp.listen.port if port is None else port)
