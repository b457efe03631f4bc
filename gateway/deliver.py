"""The deliver stage: hand one sealed notice to a school's mail server.

Takes the sealed message bytes, the envelope and the destination; produces an `Outcome`:
delivered (with the server's reply), temporary (4xx, a refused or dropped connection, a time-out,
a TLS failure) or permanent (5xx). STARTTLS is required and the server's certificate is verified
against the configured CA bundle or the system store; a server that offers no STARTTLS, or a
certificate that does not verify, is a temporary failure and is never answered by sending in
plaintext (aiosmtplib's `start_tls=None` would silently do that: LIBRARIES.md).
It trusts nothing the server says beyond the reply code.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import aiosmtplib

from gateway.config import HostPort


class Result(Enum):
    DELIVERED = "delivered"
    TEMPORARY = "temporary"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Outcome:
    result: Result
    reply: str  # "250 2.0.0 Ok: queued as ..." or a short description of the failure


def classify_reply(code: int, text: str) -> Outcome:
    """RFC 5321 §4.2.1: 2yz done, 4yz try again later, 5yz do not repeat as is."""
    reply = f"{code} {_one_line(text)}".strip()
    if 200 <= code < 300:
        return Outcome(Result.DELIVERED, reply)
    if 400 <= code < 500:
        return Outcome(Result.TEMPORARY, reply)
    if 500 <= code < 600:
        return Outcome(Result.PERMANENT, reply)
    # Anything else is not SMTP: the message may or may not have arrived; retry (same Message-ID).
    return Outcome(Result.TEMPORARY, reply)


def next_attempt_at(attempts: int, now: dt.datetime, minimum: int, maximum: int) -> dt.datetime:
    """Exponential backoff: minimum after the first failure, doubling, capped at maximum."""
    delay = min(maximum, minimum * 2 ** max(0, min(attempts - 1, 30)))
    return now + dt.timedelta(seconds=delay)


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
                                                   for r in exc.recipients))
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code == 421 or not client.is_connected:
                await self.close()  # the server is closing: the next message reconnects
            return classify_reply(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, TimeoutError) as exc:
            # Connection refused, reset, timed out, no STARTTLS offered, certificate not
            # trusted: the school may be back soon; never fall back to plaintext. (This clause
            # comes before ValueError: ssl.SSLCertVerificationError is a ValueError too.)
            await self.close()
            return Outcome(Result.TEMPORARY, f"{type(exc).__name__}: {_one_line(str(exc))}")
        except ValueError as exc:
            # aiosmtplib refuses an address it cannot send safely: retrying will not change it.
            return Outcome(Result.PERMANENT,
                           f"address refused before sending: {_one_line(str(exc))}")
        # aiosmtplib returns only the text of the final 250 reply to DATA.
        outcome = Outcome(Result.DELIVERED, f"250 {_one_line(response)}")
        if errors:
            refused = "; ".join(f"{rcpt}: {r.code} {r.message}" for rcpt, r in errors.items())
            return Outcome(outcome.result, f"{outcome.reply} (refused: {_one_line(refused)})")
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
