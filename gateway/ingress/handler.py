"""The intake handler: aiosmtpd's hooks for MAIL, RCPT and DATA, where a signal is taken in
through `pipeline.intake.accept` and answered.

Takes the envelope and content of each transaction of a `session.GatewaySMTP`, the sender
authenticated on it (`auth`), and the context (store, gpg, vault, snapshot, clock); produces
stored signals via `intake.accept`, the replies of docs/protocol.md §5, the events
`envelope.refused`, `signal.accepted/duplicate/rejected/deferred`, `client.blocked` and
`session.failed`, and the signal metrics. RCPT takes only the gateway's intake address from a
sender (550 5.1.1 otherwise; a session naming more than `MAX_FOREIGN_RECIPIENTS` others is
closed with 421 4.7.0) and only acknowledgement addresses without AUTH (`acks`); MAIL FROM is
checked against the sender's allowed addresses (550 5.7.1). Every reply is decided before the
reply to the final dot, and 250 only after the signal's transaction committed.

Fails as replies: a refused signal is its class's reply (`replies.rejection_reply`); gpg not
answering is `451 4.3.0` (`signal.deferred`), and so is any other failure of our own, with
nothing internal in it (`handle_exception`, `session.failed`).
"""

from __future__ import annotations

import time

from aiosmtpd.smtp import SMTP, Envelope, Session

from gateway.core.model import Rejection
from gateway.crypto.gpg import GpgError
from gateway.ingress.acks import Acknowledgements, ack_token
from gateway.ingress.auth import LoginGuard
from gateway.ingress.replies import TEMPORARY_FAILURE, accepted_reply, rejection_reply
from gateway.ingress.session import GatewaySMTP
from gateway.ingress.throttle import ClientRefusals, SessionLimits
from gateway.ingress.wire import peer_host
from gateway.observe import metrics
from gateway.observe.logs import get_logger, safe_exception
from gateway.pipeline.context import Context
from gateway.pipeline.intake import accept

log = get_logger("ingress")

# Recipients other than the intake address an authenticated session may name before it is
# closed: a sender's MTA names one; a mistyped address now and then is no flood.
MAX_FOREIGN_RECIPIENTS = 10


class IntakeHandler(LoginGuard):
    """aiosmtpd hooks: envelope policy and the DATA decision; the state the listener's
    sessions share (their limits, the logins of `LoginGuard`, the acknowledgements)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.address = ctx.config.gateway.address.lower()
        self.draining = False  # set on SIGTERM: new sessions are turned away with 421 4.3.2
        self.open: set[GatewaySMTP] = set()  # the sessions open now, told 421 at shutdown
        self.sessions = SessionLimits(ctx.config.smtp.max_sessions,
                                      ctx.config.smtp.max_sessions_per_client)
        self.refusals = ClientRefusals(ctx.config.smtp.max_refusals_per_client,
                                       ctx.config.smtp.refusal_block_seconds)
        self.acks = Acknowledgements(ctx, self.address, self.refused)

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
        token = ack_token(address) if self.acks.ack_domain(address) else None
        kinds = {bool(ack_token(a)) for a in envelope.rcpt_tos}
        if kinds and kinds != {token is not None}:
            return "503 5.5.1 An acknowledgement is sent on its own, not with a signal"
        if token is not None:
            return await self.acks.ack_recipient(session, envelope, address, token)
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
            peer = peer_host(session)
            log.warning("session.cut", peer=peer, reason="recipients")
            self.refused(peer)
            server.close_after_reply()  # the 421 is this RCPT's reply, then the close
            return "421 4.7.0 Too many refused recipients, closing connection"
        log.warning("envelope.refused", sender=str(session.auth_data), reason="rcpt_to")
        return "550 5.1.1 Recipient not accepted: this gateway takes signals only for its" \
               " intake address"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if envelope.rcpt_tos and all(ack_token(a) for a in envelope.rcpt_tos):
            return await self.acks.acknowledge(session, envelope)
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

    async def handle_exception(self, error: Exception) -> str:
        # Always a string: returning None leaves the client without a reply
        # (docs/libraries.md §3).
        log.error("session.failed", **safe_exception(error))
        return TEMPORARY_FAILURE

