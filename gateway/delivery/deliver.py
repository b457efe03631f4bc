"""The deliver stage: hand one sealed notice to a school's mail server.

Takes the sealed message bytes, the envelope and the destination; produces an `Outcome`:
delivered (with the server's reply), temporary (4xx, a refused or dropped connection, a time-out,
a TLS failure) or permanent (5xx), each with a fixed `reason` key for logs. A 5xx that says the
gateway itself is set up wrong (its EHLO name refused, relaying denied, authentication wanted
before MAIL) is not the school refusing the notice: it is temporary, and its reason names what
the administrator must fix (`FIXES`). STARTTLS is required and the server's certificate is verified
against the configured CA bundle or the system store; a server that offers no STARTTLS, or a
certificate that does not verify, is a temporary failure and is never answered by sending in
plaintext (aiosmtplib's `start_tls=None` would silently do that: docs/libraries.md §4).
It trusts nothing the server says beyond the reply code.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import aiosmtplib

from gateway.core.validate import HostPort


class Result(Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Outcome:
    result: Result
    reply: str  # "250 2.0.0 Ok: queued as ..." or a short description of the failure
    # A fixed key saying why (logs, alerts): one of REASONS. Never text from the server.
    reason: str = "delivered"


# Replies that say the gateway is set up wrong, not that the school refuses the notice: fixing
# them is the administrator's job, and the notice waits (temporary) until it is fixed.
FIXES = {
    "ehlo_rejected": "the school's server refused the name the gateway gives in EHLO: set "
                     "[smtp] hostname to this host's fully qualified name, one that resolves "
                     "in DNS (then restart the gateway)",
    "relay_denied": "the server does not take mail for this school from the gateway (relaying "
                    "denied): check the school's route (`hwc-gateway schools list`) and "
                    "[delivery] relay",
    "auth_required": "the server wants authentication before it takes mail: the route points "
                     "at a submission server or at a relay that does not know the gateway; use "
                     "the school's MX on port 25, or a relay that accepts the gateway",
}
REASONS = ("delivered", "temporary", "refused", "not_smtp", *FIXES, "connection", "tls",
           "timeout", "no_starttls", "smtp_error", "no_route", "address_refused")

# Postfix: "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
# given at RCPT by default (smtpd_delay_reject), so the command alone does not tell.
_HELO = re.compile(r"\b(?:helo|ehlo)\b", re.IGNORECASE)
# Postfix "554 5.7.1 <x>: Relay access denied", Exchange "550 5.7.1 Unable to relay",
# Sendmail "550 5.7.1 Relaying denied", "... relay not permitted".
_RELAY = re.compile(r"\brelay(?:ing)?\b.*\b(?:denied|not permitted|not allowed|prohibited|"
                    r"refused)\b|\bunable to relay\b", re.IGNORECASE)
# RFC 4954 §6 "530 5.7.0 Authentication required"; Exchange "530 5.7.57 Client was not
# authenticated to send anonymous mail during MAIL FROM".
_AUTH = re.compile(r"\bauthenticat", re.IGNORECASE)
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def our_problem(code: int, text: str, command: str = "") -> str | None:
    """Pure: the reason key of FIXES when a 5xx reply to `command` (EHLO, HELO, MAIL, RCPT,
    DATA, or "" when unknown) says the gateway is set up wrong; None when it is the server's
    answer about the notice itself."""
    if not 500 <= code < 600:
        return None
    if command.upper() in ("EHLO", "HELO") or _HELO.search(text):
        return "ehlo_rejected"
    if _RELAY.search(text):
        return "relay_denied"
    enhanced = _ENHANCED.match(text)
    status = ".".join(enhanced.groups()) if enhanced else ""
    if command.upper() == "MAIL" and (code == 530 or (
            status in ("5.7.0", "5.7.1", "5.7.57") and _AUTH.search(text))):
        return "auth_required"
    return None


def classify_reply(code: int, text: str, command: str = "") -> Outcome:
    """RFC 5321 §4.2.1: 2yz done, 4yz try again later, 5yz do not repeat as is; except a 5yz
    that says the gateway is set up wrong (`our_problem`): that is retried, since the notice
    goes out once the administrator fixed it (a school MX refused our EHLO name `localhost`
    with 504 5.5.2, and the notice had failed for good)."""
    reply = f"{code} {_one_line(text)}".strip()
    if 200 <= code < 300:
        return Outcome(Result.DELIVERED, reply, "delivered")
    if 400 <= code < 500:
        return Outcome(Result.TEMPORARY, reply, "temporary")
    if 500 <= code < 600:
        ours = our_problem(code, text, command)
        if ours is not None:
            return Outcome(Result.TEMPORARY, reply, ours)
        return Outcome(Result.PERMANENT, reply, "refused")
    # Anything else is not SMTP: the message may or may not have arrived; retry (same Message-ID).
    return Outcome(Result.TEMPORARY, reply, "not_smtp")


def failure_reason(exc: BaseException) -> str:
    """Pure: the reason key for an attempt that ended without an SMTP reply."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "tls"
    if isinstance(exc, aiosmtplib.SMTPException) and "STARTTLS" in str(exc):
        return "no_starttls"
    if isinstance(exc, OSError):
        return "connection"
    return "smtp_error"


def _command_of(exc: aiosmtplib.SMTPResponseException) -> str:
    """Which command a refusal answered, as far as aiosmtplib's exception tells."""
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return "EHLO"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "MAIL"
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return "DATA"
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return "CONNECT"
    return ""


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A verifying client context: hostname checked, TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Connection:
    """One SMTP session to one destination, reused for several messages (a backlog drains over
    a few connections instead of one handshake per notice). Connects on first use and again
    after any failure; STARTTLS is required and verified on every connection."""

    def __init__(self, destination: HostPort, *, context: ssl.SSLContext, timeout: float,
                 local_hostname: str | None = None) -> None:
        self.destination = destination
        self._client = aiosmtplib.SMTP(hostname=destination.host, port=destination.port,
                                       start_tls=True, tls_context=context, timeout=timeout,
                                       local_hostname=local_hostname)

    @property
    def is_connected(self) -> bool:
        return bool(self._client.is_connected)

    async def send(self, message: bytes, *, mail_from: str,
                   recipients: Sequence[str]) -> Outcome:
        client = self._client
        try:
            if not client.is_connected:
                await client.connect()
            errors, response = await client.sendmail(mail_from, list(recipients), message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Every contact refused: retry while any refusal was temporary (that contact may
            # come back); only when all are permanent does the notice fail.
            codes = [r.code for r in exc.recipients]
            best = min(codes) if codes else 451
            return classify_reply(best, "; ".join(f"{r.recipient}: {r.code} {r.message}"
                                                   for r in exc.recipients), "RCPT")
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or not client.is_connected:
                await self.close()  # the server is closing: the next message reconnects
            if isinstance(exc, aiosmtplib.SMTPHeloError):
                # Refused at EHLO (and HELO): this session is of no use; the next reconnects.
                await self.close()
            return classify_reply(exc.code, exc.message, _command_of(exc))
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            # Connection refused, reset, timed out, no STARTTLS offered, certificate not
            # trusted: the school may be back soon; never fall back to plaintext. (This clause
            # comes before ValueError: ssl.SSLCertVerificationError is a ValueError too.)
            await self.close()
            return Outcome(Result.TEMPORARY, f"{type(exc).__name__}: {_one_line(str(exc))}",
                           failure_reason(exc))
        except ValueError as exc:
            # aiosmtplib refuses an address it cannot send safely: retrying will not change it.
            return Outcome(Result.PERMANENT,
                           f"address refused before sending: {_one_line(str(exc))}",
                           "address_refused")
        # aiosmtplib returns only the text of the final 250 reply to DATA.
        outcome = Outcome(Result.DELIVERED, f"250 {_one_line(response)}")
        if errors:
            refused = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in errors.items())
            return Outcome(outcome.result, f"{outcome.reply} (refused: {_one_line(refused)})",
                           outcome.reason)
        return outcome

    async def close(self) -> None:
        client = self._client
        if client.is_connected:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()


async def send(message: bytes, *, mail_from: str, recipients: Sequence[str],
               destination: HostPort, context: ssl.SSLContext, timeout: float,  # noqa: ASYNC109
               local_hostname: str | None = None) -> Outcome:
    """One delivery attempt over a fresh connection (alerts, status mails)."""
    connection = Connection(destination, context=context, timeout=timeout,
                            local_hostname=local_hostname)
    try:
        return await connection.send(message, mail_from=mail_from, recipients=recipients)
    finally:
        await connection.close()
