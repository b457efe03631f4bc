"""The pickup channel: a neutral mail with a link; the notice itself waits on the pickup page.

Takes a school's pickup contacts (address, no key), the directory `Snapshot` (its `enrolled`
contacts and `pickup_url`), the children of one signal for that school, and an SMTP
`deliver.Connection`; produces `Reachability` per contact, a sealed `Parcel` and a
`deliver.Outcome` per attempt. Rules, decided here once:
- a contact is reachable when it is a pickup contact of the school with a second factor the
  page accepts (`snapshot.enrolled`) and the page is configured (`snapshot.pickup_url`);
- a sealed notice may still go out only while every address it was made for is still such an
  enrolled pickup contact of its school (`still_valid`); else it is superseded (`stale_reason`).
Sealing makes one link token per notice. The notice (names, birth dates, references, the
teacher text) goes into a box only that token opens (`gateway.crypto.pickupbox`), kept beside
the notice until the link expires (the signal's deadline plus `[web] link_hours_after_deadline`);
the parcel is the notification mail (`gateway.delivery.pickupmail`), sealed under the gateway's
vault because it holds the token: the database alone opens neither. Delivered, the parcel is
erased like every delivered notice's, and with it the last copy of the token on our side.
No gpg and no signing key are involved. Fails: `seal` raises ValueError for contacts not of this
channel and school (a caller bug); `deliver` never raises for the remote side's sake.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence

from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.core.schedule import deadline
from gateway.crypto import pickupbox
from gateway.delivery import deliver
from gateway.delivery.parcel import REACHABLE, ContactEntry, Parcel, PickupBox, Reachability
from gateway.delivery.pickupmail import compose_notification
from gateway.delivery.seal import NoticeChild, make_message_id
from gateway.pipeline.context import Context
from gateway.pipeline.directory import Snapshot

PICKUP = "pickup"

# Why children wait instead of being sealed (receipts, `held list`): a fixed text.
HELD_NO_PAGE = "the pickup page is not configured"

# Why a sealed pickup notice may no longer go out (receipts, `queue`): fixed texts.
STALE_REMOVED = "a contact it was made for was removed"
STALE_CHANNEL = "a contact it was made for is no longer reached through the pickup page"
STALE_NOT_ENROLLED = "a contact it was made for has no passkey or app any more"

NO_ROUTE = "no route: the school has no route and no relay is configured"

UNREACHABLE = Reachability(False, HELD_NO_USABLE_KEY)


def mail_aad(message_id: str) -> str:
    """What the vault binds a queued notification mail to: its notice."""
    return f"pickup-mail:{message_id}"


def box_aad(message_id: str) -> str:
    """What the link's box is bound to: its notice (the web page opens it with the same)."""
    return f"pickup:{message_id}"


def _enrolled_contact(school: str, email: str, snapshot: Snapshot) -> bool:
    """Pure: `email` is a pickup contact of `school` with a second factor the page accepts."""
    return (school, email) in snapshot.enrolled and any(
        c.email == email and c.channel == PICKUP for c in snapshot.contacts.get(school, ()))


class PickupChannel:
    """The pickup page: for school contacts without an OpenPGP key (issue 15)."""

    name: str = PICKUP

    def reachable(self, contact: ContactEntry, snapshot: Snapshot,
                  now: dt.datetime) -> Reachability:
        """Pure: an enrolled pickup contact of its school, and the page is configured."""
        if snapshot.pickup_url and _enrolled_contact(contact.school, contact.email, snapshot):
            return REACHABLE
        return UNREACHABLE

    def ready(self, snapshot: Snapshot) -> str | None:
        """Pure: None while the page is configured (`[web]` on); else why children wait."""
        return None if snapshot.pickup_url else HELD_NO_PAGE

    def still_valid(self, recipients: Sequence[str], keys: Sequence[str], snapshot: Snapshot,
                    school: str, now: dt.datetime) -> list[tuple[str, str]]:
        """Pure: the recipients that are no longer enrolled pickup contacts of the school, as
        (address, "") pairs: [] when the notice may still go out. The parcel binds no key
        (`keys` is empty): a contact removed, moved to another channel or re-enrolled without
        a second factor yet is what stops it. A page switched off meanwhile does not: the box
        is kept, and the link works again once the page is back."""
        if not recipients:
            return [("", "")]  # a notice that does not say whom it was for is not sent
        return [(email, "") for email in recipients
                if not _enrolled_contact(school, email, snapshot)]

    def stale_reason(self, stale: Sequence[tuple[str, str]], pinned: Mapping[str, str]) -> str:
        """Pure: why the `stale` recipients fail, against the school's contacts as stored now
        (address -> fingerprint, "" for a contact without a key)."""
        if any(email not in pinned for email, _ in stale):
            return STALE_REMOVED
        if any(pinned[email] for email, _ in stale):
            return STALE_CHANNEL
        return STALE_NOT_ENROLLED

    async def seal(self, ctx: Context, school: str, contacts: Sequence[ContactEntry],
                   children: Sequence[NoticeChild], now: dt.datetime) -> Parcel:
        """The box of one notice for `children` under a fresh link token, and the notification
        mail with that link, sealed under the vault. Raises ValueError when a contact is not
        of this channel and school (a caller bug)."""
        if not contacts or any(c.channel != self.name or c.school != school for c in contacts):
            raise ValueError("contacts must be this channel's contacts of this school")
        config = ctx.config
        recipients = tuple(c.email for c in contacts)
        message_id = make_message_id(config.gateway.address.rpartition("@")[2])
        token = pickupbox.new_token()
        box = pickupbox.seal(token, {
            "children": [{"name": c.name, "birthdate": c.birthdate.isoformat(),
                          "ref": c.child_ref} for c in children],
            "teacher_text": config.gateway.teacher_text,
        }, aad=box_aad(message_id))
        expires_at = deadline(now, config.schedule) + dt.timedelta(
            hours=config.web.link_hours_after_deadline)
        base = ctx.snapshot.pickup_url or config.web.public_url
        mail = compose_notification(
            sender=config.gateway.address, recipients=recipients, message_id=message_id,
            now=now, link=f"{base}/bericht/{token}", expires_at=expires_at,
            zone=config.schedule.timezone, helpdesk=config.web.helpdesk,
            allow_app=config.web.allow_totp)
        sealed_mail = ctx.vault.seal({"mail": base64.b64encode(mail).decode("ascii")},
                                     mail_aad(message_id))
        return Parcel(self.name, recipients, (), message_id, sealed_mail,
                      pickupbox.ack_digest(ctx.vault, token),
                      pickup=PickupBox(pickupbox.token_digest(ctx.vault, token), box,
                                       expires_at))

    async def deliver(self, ctx: Context, parcel: Parcel,
                      connection: deliver.Connection | None) -> deliver.Outcome:
        """One SMTP attempt for the notification mail over `connection` (verified TLS, as for
        every notice); None: the school has no route and no relay is set, temporary."""
        if connection is None:
            return deliver.Outcome(deliver.Result.TEMPORARY, NO_ROUTE, "no_route")
        mail = base64.b64decode(ctx.vault.open(parcel.body, mail_aad(parcel.message_id))["mail"])
        return await connection.send(mail, mail_from=ctx.config.gateway.address,
                                     recipients=parcel.recipients)
