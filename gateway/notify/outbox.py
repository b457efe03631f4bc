"""The outbox: every mail that is not a notice (a sender's status mail, an alert), composed
once, stored, and delivered under the one runner discipline (`gateway.pipeline.stage`).

Takes a `Context`, the text of a mail and whom it is for. `compose` makes the mail once: signed
by the gateway and encrypted to the recipient's key (RFC 3156, gateway.delivery.seal), or in
plain text only where the caller says there is no key to encrypt to (an alert with no
[alerts] key set), with a Message-ID from `gateway.delivery.seal.make_message_id`. The caller
stores it (`gateway.store.outbox`) in the transaction of the state change it stands for.

`deliver` is the one send path: per kind of item (a `Kind`: status mails, alerts, enrolment
mails, whose kind opens the mail as stored only to send it: `Kind.message`) a `Stage`
claims the due items with a lease carrying the node id, sends each through `[delivery] relay`
over the delivery loop's SMTP session, and has its fate (`gateway.core.policy`: sent, retried
with backoff, failed at a permanent answer or past `give_up_after_hours`) recorded with the
kind's receipt in one transaction; a crash is counted and parks the item at the
`MAX_CRASHES`-th, with the kind's receipt, a `<event>.parked` log event and its `on_parked`
(the status mail's alert; an alert's own parking is only logged: never an alert about an
alert). `deliver_now` makes one attempt at once for one item (an alert) over its own
connection; what it does not deliver the delivery loop retries.
Fails: `compose` raises GpgError; the rest as `gateway.pipeline.stage` (never for one item).
"""

from __future__ import annotations

import datetime as dt
import email.utils
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.core.policy import (
    Done,
    Fate,
    Outcome,
    Parked,
    Retry,
    RetryRules,
    Verdict,
)
from gateway.core.records import OutboxRecord
from gateway.core.validate import HostPort
from gateway.crypto.gpg import GpgError
from gateway.delivery import deliver
from gateway.delivery.seal import make_message_id, seal_text
from gateway.pipeline.context import Context
from gateway.pipeline.stage import Stage
from gateway.store.api import Tx

NO_ROUTE = "no route: no [delivery] relay is configured"


@dataclass(frozen=True)
class Composed:
    message: bytes
    message_id: str


def plain_message(body: str, *, subject: str, sender: str, recipient: str, message_id: str,
                  date: str) -> bytes:
    """Pure: a text/plain mail (an alert when no [alerts] key is set), CRLF line ends."""
    headers = [("From", sender), ("To", recipient), ("Subject", subject), ("Date", date),
               ("Message-ID", message_id), ("MIME-Version", "1.0"),
               ("Content-Type", 'text/plain; charset="utf-8"'),
               ("Content-Transfer-Encoding", "8bit")]
    head = "".join(f"{k}: {v}\r\n" for k, v in headers)
    return (head + "\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")).encode("utf-8")


async def compose(ctx: Context, body: str, *, subject: str, recipient: str,
                  fingerprint: str | None, signer: str | None, now: dt.datetime) -> Composed:
    """The mail from the gateway to `recipient`: sealed to `fingerprint` and signed by
    `signer`, or plain when `fingerprint` is None; dated `now` (in the zone it is in)."""
    sender = ctx.config.gateway.address
    message_id = make_message_id(sender.rpartition("@")[2])
    if fingerprint is None:
        return Composed(plain_message(body, subject=subject, sender=sender, recipient=recipient,
                                      message_id=message_id,
                                      date=email.utils.format_datetime(now)), message_id)
    if signer is None:
        raise GpgError("the gateway has no signing key")
    message = await seal_text(ctx.gpg, body, subject=subject, sender=sender,
                              recipients=[recipient], fingerprints=[fingerprint], signer=signer,
                              message_id=message_id, now=now)
    return Composed(message, message_id)


@dataclass(frozen=True)
class Kind:
    """What differs between the outbox's kinds of item; the rest is the outbox's.

    `check`: why the item may not go now (sent nowhere: failed), or None. `receipt`: inside
    the transaction that applies a fate. `after`: the log events (and alerts) once applied.
    `crashed`: inside the transaction of a crash (`Retry` or `Parked`). `on_parked`: once
    parked (after the stage's `<event>.parked` log event). `message`: the mail to send, from
    the item as stored (as it is, unless the kind stores it sealed). `erase_failed`: a failed
    item's mail goes too (it is never sent again: an enrolment mail's link is renewed by a new
    invitation, not by a retry)."""

    name: str
    event: str
    check: Callable[[Context, OutboxRecord], Awaitable[str | None]]
    receipt: Callable[[Tx, OutboxRecord, Fate, Verdict, dt.datetime], Awaitable[None]]
    after: Callable[[Context, OutboxRecord, Fate, Verdict], Awaitable[None]]
    crashed: Callable[[Tx, OutboxRecord, Retry | Parked, str, dt.datetime], Awaitable[None]]
    on_parked: Callable[[Context, OutboxRecord, int], Awaitable[None]]
    message: Callable[[Context, OutboxRecord], bytes] = lambda ctx, item: item.message
    erase_failed: bool = False
    destination: Callable[[Context, OutboxRecord], HostPort | None] = \
        lambda ctx, item: ctx.config.delivery.relay


class Sessions(Protocol):
    """The delivery loop's SMTP sessions (gateway.service.runner.Sessions)."""

    def take(self, destination: HostPort) -> deliver.Connection: ...

    def give_back(self, connection: deliver.Connection) -> None: ...


@dataclass
class OutboxQueue:
    """The outbox's items of one kind as a `gateway.pipeline.stage.Queue`."""

    ctx: Context
    kind: Kind

    async def claim_due(self, now: dt.datetime, node: str,
                        lease_until: dt.datetime) -> list[OutboxRecord]:
        due = await self.ctx.store.outbox.due(now, kind=self.kind.name)
        if not due:
            return []

        async def claim(tx: Tx) -> list[OutboxRecord]:
            claimed = [await tx.outbox.claim(mail_id, lease_until, now) for mail_id in due]
            return [item for item in claimed if item is not None]

        return await self.ctx.store.write(claim)

    async def record(self, item: OutboxRecord, fate: Fate, verdict: Verdict,
                     now: dt.datetime) -> bool:
        reply = verdict.reply

        async def body(tx: Tx) -> bool:
            if isinstance(fate, Retry):
                applied = await tx.outbox.defer(item.id, reply, fate.next_at)
            else:
                state = "sent" if isinstance(fate, Done) else "failed"
                applied = await tx.outbox.finish(item.id, state, reply,
                                                 erase=fate.erase or self.kind.erase_failed)
            if applied:
                await self.kind.receipt(tx, item, fate, verdict, now)
            return applied

        applied = await self.ctx.store.write(body)
        if applied:
            await self.kind.after(self.ctx, item, fate, verdict)
        return applied

    async def record_crash(self, item: OutboxRecord, fate: Retry | Parked, why: str,
                           now: dt.datetime) -> bool:
        async def body(tx: Tx) -> bool:
            applied = await tx.outbox.record_crash(item.id, fate.next_at,
                                                   park=isinstance(fate, Parked))
            if applied:
                await self.kind.crashed(tx, item, fate, why, now)
            return applied

        return await self.ctx.store.write(body)

    async def leased(self, node: str) -> list[OutboxRecord]:
        return await self.ctx.store.outbox.leased(self.kind.name, node)


def fate_word(fate: Fate) -> str:
    """How an attempt's fate is named in an outbox kind's receipts and log events."""
    if isinstance(fate, Done):
        return "sent"
    return "deferred" if isinstance(fate, Retry) else "failed"


def attempt_detail(item: OutboxRecord, fate: Fate, verdict: Verdict,
                   **ids: Any) -> dict[str, Any]:
    """The detail of an attempt's receipt: `ids` (whom and which mail), the attempt and the
    reply, and the Message-ID once sent or the next attempt's time when deferred."""
    detail: dict[str, Any] = {**ids, "attempt": item.attempts, "reply": verdict.reply}
    if isinstance(fate, Done):
        detail["message_id"] = item.message_id
    elif isinstance(fate, Retry):
        detail["next_attempt_at"] = fate.next_at.isoformat()
    return detail


def crash_detail(item: OutboxRecord, fate: Retry | Parked, why: str,
                 **ids: Any) -> tuple[str, dict[str, Any]]:
    """The receipt of an attempt that crashed inside the gateway: `parked` with why, or
    `deferred` with the reply it stands for and the next attempt's time; `ids` as for
    `attempt_detail`."""
    if isinstance(fate, Parked):
        return "parked", {**ids, "attempt": item.attempts, "why": why}
    return "deferred", {**ids, "attempt": item.attempts,
                        "reply": f"the attempt failed inside the gateway: {why}",
                        "next_attempt_at": fate.next_at.isoformat()}


def rules(ctx: Context) -> RetryRules:
    """The outbox retries as notices do (`[delivery]`)."""
    d = ctx.config.delivery
    return RetryRules(d.give_up_after_hours, d.retry_min_seconds, d.retry_max_seconds)


def stage(ctx: Context, kind: Kind,
          connect: Callable[[HostPort | None], deliver.Connection | None]) -> Stage[OutboxRecord]:
    """The outbox stage of one kind, sending each item over the connection `connect` gives
    for the kind's destination of it (None: no route and no relay configured)."""

    async def send(item: OutboxRecord) -> Verdict:
        why = await kind.check(ctx, item)
        if why is not None:
            return Verdict(Outcome.PERMANENT, why)
        connection = connect(kind.destination(ctx, item))
        if connection is None:
            return Verdict(Outcome.TEMPORARY, NO_ROUTE)
        outcome = await connection.send(kind.message(ctx, item),
                                        mail_from=ctx.config.gateway.address,
                                        recipients=[item.recipient])
        return Verdict(Outcome(outcome.result.value), outcome.reply, outcome.reason)

    async def parked(item: OutboxRecord, crashes: int) -> None:
        await kind.on_parked(ctx, item, crashes)

    return Stage(kind.event, OutboxQueue(ctx, kind), send, rules(ctx), ctx.store.node,
                 ctx.clock, parked, beat=ctx.pulse.beat)


async def deliver_due(ctx: Context, sessions: Sessions, kinds: Sequence[Kind]) -> int:
    """One attempt for each due item of each kind, over one session per destination (the
    relay, or a school's route) taken from the delivery loop's sessions only when there is
    something to send there; how many."""
    taken: dict[HostPort, deliver.Connection] = {}

    def connect(destination: HostPort | None) -> deliver.Connection | None:
        if destination is None:
            return None
        if destination not in taken:
            taken[destination] = sessions.take(destination)
        return taken[destination]

    attempted = 0
    try:
        for kind in kinds:
            attempted += len(await stage(ctx, kind, connect).run_once())
    finally:
        for connection in taken.values():
            sessions.give_back(connection)
    return attempted


async def recover(ctx: Context, kinds: Sequence[Kind]) -> int:
    """At start: the leases this node still holds on outbox items, each counted as a crash."""
    return sum([await stage(ctx, kind, lambda _: None).recover() for kind in kinds])


async def deliver_now(ctx: Context, kind: Kind, mail_id: int) -> Fate | None:
    """One attempt at once for one queued item, over a connection of its own; its fate, or
    None when it was not to be claimed (another attempt holds it)."""
    config = ctx.config
    opened: list[deliver.Connection] = []

    def connect(destination: HostPort | None) -> deliver.Connection | None:
        if destination is None:
            return None
        opened.append(deliver.Connection(
            destination, context=deliver.tls_context(config.delivery.ca_file),
            timeout=config.delivery.timeout_seconds, local_hostname=config.smtp.hostname))
        return opened[-1]

    one = stage(ctx, kind, connect)
    now = ctx.clock()
    item = await ctx.store.write(lambda tx: tx.outbox.claim(mail_id, now + one.lease, now))
    if item is None:
        return None
    try:
        return await one.handle(item)
    finally:
        for connection in opened:
            await connection.close()
