"""The OpenPGP/MIME channel: notices signed and encrypted to pinned keys, sent by SMTP.

Takes a school's pinned contacts (address + primary fingerprint), the directory `Snapshot`, the
children of one signal for that school, and an SMTP `deliver.Connection`; produces
`Reachability` per contact, a sealed `Parcel` (RFC 3156, built by `gateway.delivery.seal`), and
a `deliver.Outcome` per attempt. Key rules, decided here once:
- a key may be used for encryption now when gpg lists it, valid (not expired, revoked,
  invalid or disabled), able to encrypt, and its expiry is after `now` (`key_usable`, over
  `gateway.core.keyinfo`); the directory leaves every other contact out of the snapshot;
- a contact is reachable when the snapshot has it with that key and the key has not expired
  since the snapshot was loaded (`reachable`);
- a sealed notice may still go out only while every (address, key) it was made for is such
  a reachable contact of its school (`still_valid`), else it is superseded (`stale_reason`).
Fails: `seal` raises `SealError` when there is no signing key or gpg refuses a key; `deliver`
never raises for the remote side's sake (deliver.Connection.send classifies every failure).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from gateway.core.keyinfo import KeyInfo, key_usable
from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.crypto.gpg import GpgError
from gateway.crypto.pickupbox import ack_digest
from gateway.delivery import deliver
from gateway.delivery.parcel import REACHABLE, ContactEntry, Parcel, Reachability, SealError
from gateway.delivery.seal import (
    NoticeChild,
    ack_address,
    ack_link,
    make_message_id,
    new_ack_token,
    seal_notice,
)
from gateway.pipeline.context import Context
from gateway.pipeline.directory import Snapshot

OPENPGP = "openpgp"

# Why children wait instead of being sealed (receipts, `held list`): fixed texts.
HELD_NO_SIGNING_KEY = "the gateway has no signing key"
SEAL_REFUSED = "gpg refused a key while sealing"

# Why a sealed notice may no longer go out (receipts, `queue`): fixed texts, no addresses.
STALE_REMOVED = "a contact it was sealed to was removed"
STALE_REPLACED = "the key of a contact it was sealed to was replaced"
STALE_UNUSABLE = "a key it was sealed to is revoked, expired or no longer usable"

NO_ROUTE = "no route: the school has no route and no relay is configured"

UNREACHABLE = Reachability(False, HELD_NO_USABLE_KEY)


def key_reachability(info: KeyInfo | None, now: dt.datetime) -> Reachability:
    """A contact key as the directory loads it: reachable when usable for encryption now."""
    return REACHABLE if key_usable(info, "encrypt", now) else UNREACHABLE


class OpenPgpChannel:
    """OpenPGP/MIME over SMTP with STARTTLS: the gateway's first delivery channel."""

    name: str = OPENPGP

    def reachable(self, contact: ContactEntry, snapshot: Snapshot,
                  now: dt.datetime) -> Reachability:
        """Pure: the contact with that key is in the snapshot (which holds only contacts whose
        key was usable when it was loaded) and the key has not expired since."""
        pinned = any(c.email == contact.email and c.fingerprint == contact.key
                     for c in snapshot.contacts.get(contact.school, ()))
        until = snapshot.key_expires.get(contact.key)
        if pinned and (until is None or until > now):
            return REACHABLE
        return UNREACHABLE

    def ready(self, snapshot: Snapshot) -> str | None:
        """Pure: None when notices can be sealed now; else why children must wait."""
        return None if snapshot.signing_key is not None else HELD_NO_SIGNING_KEY

    def still_valid(self, recipients: Sequence[str], keys: Sequence[str], snapshot: Snapshot,
                    school: str, now: dt.datetime) -> list[tuple[str, str]]:
        """Pure: the (address, fingerprint) pairs a sealed notice was made for that are not,
        now, a reachable contact of its school with that key: [] when it may still go out.
        Issue 11: a notice deferred by the school was delivered after its key's revocation
        was taken in."""
        pairs = list(zip(recipients, keys, strict=False))
        if len(recipients) != len(keys) or not pairs:
            return pairs or [("", "")]  # a notice that does not say whom it was for is not sent
        return [(email, key) for email, key in pairs
                if not self.reachable(ContactEntry(school, email, key, self.name),
                                      snapshot, now).ok]

    def stale_reason(self, stale: Sequence[tuple[str, str]], pinned: Mapping[str, str]) -> str:
        """Pure: why the `stale` pairs of `still_valid` fail, against the school's contacts as
        pinned now (address -> fingerprint, usable or not)."""
        if any(email not in pinned for email, _ in stale):
            return STALE_REMOVED
        if any(pinned[email] != key for email, key in stale):
            return STALE_REPLACED
        return STALE_UNUSABLE

    async def seal(self, ctx: Context, school: str, contacts: Sequence[ContactEntry],
                   children: Sequence[NoticeChild], now: dt.datetime) -> Parcel:
        """One notice for `children` at `school`, signed by the gateway's current key and
        encrypted to every contact's key, with a fresh Message-ID and acknowledgement token
        (a link on the pickup site when `[web]` is on, else the reply address).
        Raises SealError when there is no signing key or gpg refuses a key (the directory is
        then reloaded, so that the retry sees the key as gpg does), ValueError when a contact
        is not of this channel and school (a caller bug)."""
        if not contacts or any(c.channel != self.name or c.school != school for c in contacts):
            raise ValueError("contacts must be this channel's contacts of this school")
        signer = ctx.snapshot.signing_key
        if signer is None:
            raise SealError(HELD_NO_SIGNING_KEY)
        gateway = ctx.config.gateway
        recipients = tuple(c.email for c in contacts)
        fingerprints = tuple(c.key for c in contacts)
        message_id = make_message_id(gateway.address.rpartition("@")[2])
        token = new_ack_token()
        # With the pickup page on, the acknowledgement is a link inside the encryption instead
        # of the reply address (issue 15); the token and its digest ("ack") are the same kind,
        # so replies to notices sent before keep working (gateway.ingress.acks).
        web = ctx.config.web
        public_url = ctx.snapshot.pickup_url or (web.public_url if web.enabled else "")
        link = ack_link(token, public_url) if public_url else None
        try:
            message = await seal_notice(
                ctx.gpg, children, sender=gateway.address, recipients=recipients,
                fingerprints=fingerprints, signer=signer, message_id=message_id,
                teacher_text=gateway.teacher_text, now=now,
                ack_to=None if link else ack_address(token, gateway.address), ack_link=link)
        except GpgError as exc:
            # A key became unusable between the snapshot and now: retry with a fresh one.
            await ctx.refresh(force=True)
            raise SealError(SEAL_REFUSED) from exc
        return Parcel(self.name, recipients, fingerprints, message_id, message,
                      ack_digest(ctx.vault, token), signed_by=signer)

    async def deliver(self, ctx: Context, parcel: Parcel,
                      connection: deliver.Connection | None) -> deliver.Outcome:
        """One SMTP attempt for the parcel over `connection` (None: the school has no route
        and no relay is set, a temporary outcome); never raises for the server's sake."""
        if connection is None:
            return deliver.Outcome(deliver.Result.TEMPORARY, NO_ROUTE, "no_route")
        return await connection.send(parcel.body, mail_from=ctx.config.gateway.address,
                                     recipients=parcel.recipients)
