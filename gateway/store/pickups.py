"""The store's interface to the pickup channel: invitations, second factors, boxes, wrong codes.

Takes plain values and digests (never a token or a code: `gateway.crypto.pickupbox` turns those
into digests first); produces `gateway.core.records` `EnrolmentRecord`, `CredentialRecord`,
`PickupRecord` and `Throttle`. The decisions (is an invitation still open, is a code right, is a
subject locked) are the caller's; the store only keeps the facts, and each change says whether
it took place, so that two requests racing for one invitation or one code cannot both win.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from gateway.core.records import CredentialRecord, EnrolmentRecord, PickupRecord, Throttle


class PickupReads(Protocol):
    async def enrolment(self, token_digest: str) -> EnrolmentRecord | None:
        """The invitation whose link token has this digest (used or not, expired or not)."""

    async def enrolment_of(self, school: str, email: str) -> EnrolmentRecord | None:
        """The contact's invitation, if one was made since its last (re-)enrolment."""

    async def enrolments(self) -> list[EnrolmentRecord]: ...

    async def credentials(self, school: str | None = None,
                          email: str | None = None) -> list[CredentialRecord]:
        """Second factors, of one school (and contact), oldest first."""

    async def credential(self, credential_id: str) -> CredentialRecord | None:
        """The passkey with this credential id (base64url)."""

    async def get(self, token_digest: str) -> PickupRecord | None:
        """The pickup notice whose link token has this digest."""

    async def of_notice(self, notice_id: int) -> PickupRecord | None: ...

    async def waiting(self) -> list[PickupRecord]:
        """Pickup notices whose mail was delivered and that nobody has read yet, whose box is
        still kept: what `status`, `queue list` and the metrics show, oldest first."""

    async def expired(self, now: dt.datetime) -> list[PickupRecord]:
        """Pickup notices whose link expired before `now` and whose box is still kept."""

    async def throttle(self, scope: str, subject: str) -> Throttle | None: ...


class Pickups(PickupReads, Protocol):
    async def invite(self, school: str, email: str, token_digest: str, code_digest: str,
                     at: dt.datetime, expires_at: dt.datetime) -> None:
        """A new invitation for the contact, replacing any earlier one."""

    async def use_enrolment(self, token_digest: str, at: dt.datetime) -> bool:
        """Mark the invitation used (once: False when it already was or does not exist)."""

    async def add_credential(self, school: str, email: str, kind: str, at: dt.datetime, *,
                             credential_id: str | None = None, public_key: bytes | None = None,
                             sign_count: int = 0, secret: bytes | None = None) -> int:
        """Store a second factor for the contact; its id."""

    async def drop_credentials(self, school: str, email: str) -> int:
        """Remove every second factor of the contact (re-enrolment): how many."""

    async def use_credential(self, credential: int, at: dt.datetime, *,
                             sign_count: int | None = None, step: int | None = None) -> bool:
        """Record a use of a second factor: a passkey's new sign count, or an app code's time
        step, which must be later than the last one taken (False: a code used again)."""

    async def put(self, notice_id: int, token_digest: str, sealed: bytes,
                  expires_at: dt.datetime) -> None:
        """Keep the box of a pickup notice (in the seal stage's transaction)."""

    async def opened(self, notice_id: int, at: dt.datetime) -> None:
        """Count one showing of the notice (the first one's time is kept)."""

    async def read(self, notice_id: int, by: str, at: dt.datetime) -> bool:
        """Mark the notice read by the contact `by` (once: False when it already was)."""

    async def erase(self, notice_id: int) -> bool:
        """Drop the box (past its expiry): whether there was one."""

    async def fail(self, scope: str, subject: str, at: dt.datetime, max_failures: int,
                   lock_until: dt.datetime) -> Throttle:
        """Count a wrong code against the subject; at `max_failures` it is locked until
        `lock_until` and the count starts again."""

    async def clear(self, scope: str, subject: str) -> None:
        """Forget the subject's wrong codes (after a right one)."""
