"""The values every delivery channel speaks in: a contact, its reachability, a sealed parcel.

Takes nothing; produces plain frozen records shared by `gateway.delivery.channel` (the
interface and the registry) and each channel module (`gateway.delivery.openpgp`). They live
apart from the registry so that a channel module can use them without importing the registry
that imports it. Nothing here fails, except `SealError`, which a channel raises.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

DEFAULT_CHANNEL = "openpgp"


@dataclass(frozen=True)
class ContactEntry:
    """A school contact as pinned: its address, the key its channel binds it to (openpgp:
    the primary fingerprint) and the channel's name."""

    school: str
    email: str
    key: str
    channel: str = DEFAULT_CHANNEL


@dataclass(frozen=True)
class Reachability:
    """Whether a contact can receive a notice now; when not, a fixed reason text (one of
    resolve's HELD_* texts: it goes into receipts, so never an address or a name)."""

    ok: bool
    reason: str | None = None


REACHABLE = Reachability(True)


@dataclass(frozen=True)
class PickupBox:
    """What a pickup notice keeps beside its parcel until its link expires: the keyed digest
    of the link's token, the notice sealed under the link's key, and the expiry."""

    token_digest: str = field(repr=False)
    sealed: bytes = field(repr=False)
    expires_at: dt.datetime


@dataclass(frozen=True)
class Parcel:
    """One sealed notice as its channel made it: the recipients and keys it is bound to (in
    the same order), its Message-ID, its bytes (opaque to all but its channel), the keyed
    digest of its acknowledgement token, the key that signed it ("" when none did), and for
    a pickup notice its box (stored with the notice, in the same transaction)."""

    channel: str
    recipients: tuple[str, ...]
    keys: tuple[str, ...]
    message_id: str
    body: bytes
    ack_digest: str
    signed_by: str = ""
    pickup: PickupBox | None = None

    def __repr__(self) -> str:
        return f"Parcel({self.channel}, {self.message_id}, {len(self.body)} bytes)"


class SealError(Exception):
    """A channel could not seal a notice now (a key refused, no signing key): the seal stage
    counts it as a crash, retries it with backoff and parks it after too many. The message
    is a fixed text, safe for logs and receipts."""
