"""The store's interface to the outbox: mails that are not notices (status mails, alerts).

Takes plain values; produces `gateway.core.records.OutboxRecord`s. Each item has a `kind`
("status": a sender's status mail or follow-up, by signal and child; "alert": a mail to
`[alerts] address`, with no signal; "enrol": the enrolment mail of a pickup contact, `topic`
its school, `recipient` the contact, the message sealed with the vault because it holds the
link), is claimed with a lease that carries the node id, as a
notice, and is finished, deferred or parked by the caller's decision (the fate policy is
`gateway.core.policy`'s, never the store's). Reads of status mails (`all`, `due`,
`pending_follow_ups`) see only kind "status", as the `status` and receipts output did when
the table held status mails only. Every method that changes an item does so only while it is
queued, and says whether it did.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from gateway.core.records import OutboxRecord, PendingFollowUp


class OutboxReads(Protocol):
    async def due(self, now: dt.datetime, limit: int = 50, kind: str = "status") -> list[int]:
        """Queued items of `kind` due at `now` and not leased, the longest waiting first."""

    async def pending_follow_ups(self) -> list[PendingFollowUp]: ...

    async def all(self, ref: str | None = None) -> list[OutboxRecord]:
        """Status mails, oldest first (of one signal, with `ref`)."""

    async def alerts(self) -> list[OutboxRecord]:
        """Alerts, oldest first."""

    async def leased(self, kind: str, node: str) -> list[OutboxRecord]:
        """Queued items of `kind` whose lease `node` holds."""


class Outbox(OutboxReads, Protocol):
    async def insert(self, ref: str, child: int, sender: str, recipient: str, fingerprint: str,
                     message_id: str, message: bytes, at: dt.datetime,
                     pending: Sequence[int] = ()) -> int | None:
        """Queue one status mail, due now; None when it was queued before (nothing changed)."""

    async def insert_alert(self, topic: str, recipient: str, fingerprint: str, message_id: str,
                           message: bytes, at: dt.datetime) -> int:
        """Queue one alert (`topic`: its kind, for the log), due now."""

    async def insert_enrolment(self, school: str, recipient: str, message_id: str,
                               message: bytes, at: dt.datetime) -> int:
        """Queue one enrolment mail (`message` as the vault sealed it), due now."""

    async def supersede_enrolments(self, school: str, recipient: str | None, reply: str) -> int:
        """The queued enrolment mails of a contact (of every contact of the school with
        `recipient` None) will not go: state "superseded", the message erased; how many."""

    async def claim(self, mail_id: int, lease_until: dt.datetime,
                    now: dt.datetime) -> OutboxRecord | None:
        """Lease a queued item to this node, counting the attempt: the item as claimed, or
        None when another holds a live lease or it is no longer queued."""

    async def finish(self, mail_id: int, state: str, reply: str, erase: bool) -> bool:
        """Sent or failed, the lease released (with `erase`, the message goes)."""

    async def defer(self, mail_id: int, reply: str, next_at: dt.datetime) -> bool: ...

    async def record_crash(self, mail_id: int, next_at: dt.datetime, park: bool) -> bool:
        """Count a crash, release the lease, due at `next_at`; with `park`, parked."""

    async def settle_pending(self, mail_id: int, numbers: Sequence[int]) -> None:
        """These children of a status mail need no follow-up any more."""
