"""The delivery channel seam: how a school is reached, whichever way that is.

Takes the directory `Snapshot` and a school code; produces which of the school's contacts are
reachable now (`reachable_contacts`, the one rule resolve, release, seal and the check before
each send share), why a school cannot be sealed for (`hold_reason`), and the `Channel` that
seals and delivers for each contact (`CHANNELS`, by the channel name stored on the contact and
on the notice). A `Channel`:
- `reachable(contact, snapshot, now)`: pure; whether that contact can receive now, and why not;
- `ready(snapshot)`: pure; None when it can seal now, else the fixed hold reason;
- `still_valid(recipients, keys, snapshot, school, now)`: pure; the (address, key) pairs a
  sealed parcel is bound to that no longer hold ([] when it may go out);
- `stale_reason(stale, pinned)`: pure; the fixed text a supersession is recorded with;
- `seal(ctx, school, contacts, children, now)`: a `Parcel`, or `SealError`;
- `deliver(ctx, parcel, connection)`: one attempt's `deliver.Outcome`.
Adding a channel: its module in gateway/delivery/ and one line in `CHANNELS`. Registered:
"openpgp" (`gateway.delivery.openpgp`) and "pickup" (`gateway.delivery.pickup`, the pickup
page for contacts without a key). A school's contacts share one channel (the admin verbs keep
it so).
Fails: `channel_of` raises KeyError for a channel name no module registered (a stored row
naming a channel this build does not have: never guessed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Protocol

from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.delivery import deliver
from gateway.delivery.openpgp import OpenPgpChannel
from gateway.delivery.parcel import (
    DEFAULT_CHANNEL,
    REACHABLE,
    ContactEntry,
    Parcel,
    Reachability,
    SealError,
)
from gateway.delivery.pickup import PickupChannel
from gateway.delivery.seal import NoticeChild
from gateway.pipeline.context import Context
from gateway.pipeline.directory import Snapshot

__all__ = [
    "CHANNELS",
    "DEFAULT_CHANNEL",
    "REACHABLE",
    "Channel",
    "ContactEntry",
    "Parcel",
    "Reachability",
    "SealError",
    "channel_of",
    "contacts_of",
    "hold_reason",
    "reachable_by_channel",
    "reachable_contacts",
]


class Channel(Protocol):
    """One way to reach a school contact (module docstring: what each member does)."""

    name: str

    def reachable(self, contact: ContactEntry, snapshot: Snapshot,
                  now: dt.datetime) -> Reachability: ...

    def ready(self, snapshot: Snapshot) -> str | None: ...

    def still_valid(self, recipients: Sequence[str], keys: Sequence[str], snapshot: Snapshot,
                    school: str, now: dt.datetime) -> list[tuple[str, str]]: ...

    def stale_reason(self, stale: Sequence[tuple[str, str]],
                     pinned: Mapping[str, str]) -> str: ...

    async def seal(self, ctx: Context, school: str, contacts: Sequence[ContactEntry],
                   children: Sequence[NoticeChild], now: dt.datetime) -> Parcel: ...

    async def deliver(self, ctx: Context, parcel: Parcel,
                      connection: deliver.Connection | None) -> deliver.Outcome: ...


CHANNELS: dict[str, Channel] = {
    DEFAULT_CHANNEL: OpenPgpChannel(),
    "pickup": PickupChannel(),
}


def channel_of(name: str) -> Channel:
    """The registered channel called `name`; KeyError when none is."""
    return CHANNELS[name]


def contacts_of(school: str, snapshot: Snapshot) -> tuple[ContactEntry, ...]:
    """The school's contacts as the snapshot holds them, each with its stored channel."""
    return tuple(ContactEntry(school, c.email, c.fingerprint, c.channel)
                 for c in snapshot.contacts.get(school, ()))


def reachable_contacts(school: str, snapshot: Snapshot,
                       now: dt.datetime) -> tuple[ContactEntry, ...]:
    """Pure: the school's contacts reachable now, each by its own channel; a contact of a
    channel this build does not have is not reachable. A school is reachable when this is
    not empty."""
    return tuple(c for c in contacts_of(school, snapshot)
                 if c.channel in CHANNELS and CHANNELS[c.channel].reachable(c, snapshot, now).ok)


def reachable_by_channel(school: str, snapshot: Snapshot,
                         now: dt.datetime) -> dict[str, tuple[ContactEntry, ...]]:
    """Pure: `reachable_contacts` grouped by channel name, in contact order: one parcel is
    sealed per channel."""
    groups: dict[str, list[ContactEntry]] = {}
    for contact in reachable_contacts(school, snapshot, now):
        groups.setdefault(contact.channel, []).append(contact)
    return {name: tuple(contacts) for name, contacts in groups.items()}


def hold_reason(school: str, snapshot: Snapshot, now: dt.datetime) -> str | None:
    """Pure: None when a notice can be sealed for the school now; else why its children are
    held: no reachable contact (resolve.HELD_NO_USABLE_KEY), or the first reason a channel
    of its reachable contacts gives for not being ready (no signing key)."""
    groups = reachable_by_channel(school, snapshot, now)
    if not groups:
        return HELD_NO_USABLE_KEY
    for name in groups:
        reason = CHANNELS[name].ready(snapshot)
        if reason is not None:
            return reason
    return None
