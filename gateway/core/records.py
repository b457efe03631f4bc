"""What the store keeps, as values: one frozen dataclass per kind of stored record.

Takes nothing and does no I/O: the store (`gateway.store.api`) produces these and its callers
read them by attribute, whatever database is behind it. Times are UTC ISO strings of fixed width
(`iso`), so that text order is time order in any database; `from_iso` reads them back.

Fields that can carry a vault blob, a sealed message or a password hash are left out of `repr`
(`field(repr=False)`): blobs are ciphertext, but a repr may end up in a log or a traceback.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gateway.core.policy import Counters


def iso(t: dt.datetime) -> str:
    """Times are stored as UTC ISO strings of fixed width, so text order is time order."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class Receipt:
    """One link of the receipt chain (`gateway.store.chain`)."""

    seq: int
    at: str
    event: str
    ref: str | None
    school: str | None
    detail: dict[str, Any]
    pseudonym: str | None
    prev: str
    hash: str


@dataclass(frozen=True)
class Anchor:
    """Where the chain starts after old receipts were purged: the last purged receipt."""

    seq: int
    hash: str


@dataclass(frozen=True)
class ProtectedRef:
    """A sender's case reference as stored: its keyed digest (to see it come back) and its
    vault blob bound to the signal (for the status mail). Never the reference itself."""

    digest: str
    blob: bytes | None = field(repr=False)


@dataclass(frozen=True)
class SignalRecord:
    ref: str
    sender: str
    message_id: str | None
    content_digest: str
    accepted_at: str
    children: int
    reported: bool
    sender_ref_digest: str | None
    sender_ref_blob: bytes | None = field(repr=False)


@dataclass(frozen=True)
class ChildRecord:
    """One child of a signal as stored: its personal data only as the vault blob."""

    ref: str
    n: int
    state: str
    school: str | None
    reason: str | None
    blob: bytes | None = field(repr=False)
    pseudonym: str | None = field(repr=False)
    notice_id: int | None
    updated_at: str


@dataclass(frozen=True)
class NoticeRecord:
    """A sealed notice in the delivery queue, with its lease (`lease_owner`: the node)."""

    id: int
    ref: str
    school: str
    message_id: str
    recipients: tuple[str, ...]
    fingerprints: tuple[str, ...]  # the keys the parcel is bound to (openpgp: fingerprints)
    parcel: bytes = field(repr=False)  # sealed by its channel, opaque to everyone else
    state: str
    attempts: int
    next_attempt_at: str
    lease_until: str | None
    lease_owner: str | None
    created_at: str
    last_reply: str | None
    crashes: int
    ack_digest: str | None = field(repr=False)
    acked_at: str | None
    requeued_at: str | None
    last_reason: str | None
    channel: str = "openpgp"  # the delivery channel that sealed it and delivers it


@dataclass(frozen=True)
class SealAttempt:
    """Sealing the notice of one signal for one school, while it is under way or has failed:
    how often it failed, when it is due again, and its lease (`owner`: the node)."""

    ref: str
    school: str
    failures: int
    next_attempt_at: str
    until: str | None
    owner: str | None


@dataclass(frozen=True)
class OutboxRecord:
    """A sealed mail in the outbox: `kind` "status" (to a sender: `child` 0 the signal's, n the
    follow-up about child n; `pending` lists the children whose follow-up has yet to be
    queued), "alert" (to `[alerts] address`: no ref, child or sender; `topic` the alert's
    kind; `fingerprint` "" when it went unencrypted, no [alerts] key being set) or "enrol" (to
    a pickup contact: `topic` its school, `message` sealed with the vault, gateway.notify.
    enrolment)."""

    id: int
    kind: str
    topic: str | None
    ref: str | None
    child: int | None
    sender: str | None
    recipient: str
    fingerprint: str
    message_id: str
    message: bytes = field(repr=False)
    state: str
    attempts: int
    crashes: int
    next_attempt_at: str
    lease_until: str | None
    lease_owner: str | None
    created_at: str
    last_reply: str | None
    pending: tuple[int, ...] | None

    @property
    def counters(self) -> Counters:
        """As claimed, for the fate policy (`gateway.core.policy`)."""
        return Counters(self.attempts, self.crashes, from_iso(self.created_at))

    @property
    def about(self) -> str:
        """What a status mail's receipts name: the signal, or the child it follows up."""
        return str(self.ref) if not self.child else f"{self.ref}-{self.child}"

    def log_fields(self) -> dict[str, object]:
        """References only: a status mail's signal, child and sender; an alert's kind; an
        enrolment mail's school (never the contact's address)."""
        if self.kind == "alert":
            return {"alert": self.id, "kind": self.topic}
        if self.kind == "enrol":
            return {"school": self.topic, "enrolment_mail": self.id}
        return {"ref": self.ref, "child": self.child, "sender": self.sender,
                "status_mail": self.id}


StatusMailRecord = OutboxRecord  # a status mail is an outbox item of kind "status"


@dataclass(frozen=True)
class Lease:
    """A lease found held: whose (`owner`, None when written before leases had owners)."""

    id: int
    owner: str | None
    until: str


@dataclass(frozen=True)
class SenderRecord:
    name: str
    password_hash: str = field(repr=False)
    created_at: str
    status_mail: bool


@dataclass(frozen=True)
class SenderKeyRecord:
    sender: str
    fingerprint: str
    added_at: str


@dataclass(frozen=True)
class SenderAddressRecord:
    sender: str
    address: str


@dataclass(frozen=True)
class SenderCertRecord:
    sender: str
    sha256: str


@dataclass(frozen=True)
class SchoolRecord:
    code: str
    name: str
    place: str
    route: str | None


@dataclass(frozen=True)
class ContactRecord:
    """A school contact as pinned; `channel` names the delivery channel that reaches it;
    `fingerprint` is None for a contact of a keyless channel (pickup)."""

    school: str
    email: str
    fingerprint: str | None
    channel: str = "openpgp"


@dataclass(frozen=True)
class EnrolmentRecord:
    """The open invitation of a pickup contact: the digests of its link token and phone code,
    until when it holds, and when it was used (then it opens nothing more)."""

    school: str
    email: str
    token_digest: str = field(repr=False)
    code_digest: str = field(repr=False)
    created_at: str
    expires_at: str
    used_at: str | None


@dataclass(frozen=True)
class CredentialRecord:
    """A pickup contact's second factor: a passkey (`credential_id`, COSE `public_key`,
    `sign_count`) or an authenticator app (`secret`, vault-sealed; `last_step`: the last time
    step a code was taken for, so a code works once)."""

    id: int
    school: str
    email: str
    kind: str  # "passkey" or "totp"
    credential_id: str | None
    public_key: bytes | None = field(repr=False)
    sign_count: int
    secret: bytes | None = field(repr=False)
    last_step: int | None
    created_at: str
    last_used_at: str | None


@dataclass(frozen=True)
class PickupRecord:
    """A pickup notice: its box (sealed under the link's key; None once erased), when its link
    expires, how often and when it was opened and read, and its notice's ref, school,
    recipients, state and acknowledgement."""

    notice_id: int
    ref: str
    school: str
    recipients: tuple[str, ...]
    state: str
    sealed: bytes | None = field(repr=False)
    expires_at: str
    opened: int
    first_opened_at: str | None
    read_at: str | None
    read_by: str | None
    acked_at: str | None
    created_at: str


@dataclass(frozen=True)
class Throttle:
    """Wrong codes counted against one subject (a link, a contact, an invitation)."""

    failures: int
    locked_until: str | None


@dataclass(frozen=True)
class GatewayKeyRecord:
    fingerprint: str
    state: str
    created_at: str
    decrypt_until: str | None


@dataclass(frozen=True)
class PupilRow:
    """A pupil of the register as stored: keyed digests and the vault blob."""

    bsn_index: str | None = field(repr=False)
    birthdate_index: str = field(repr=False)
    school: str
    blob: bytes = field(repr=False)


@dataclass(frozen=True)
class LockoutRecord:
    scope: str
    subject: str
    login: str
    since: str
    until: str


@dataclass(frozen=True)
class UnreportedSignal:
    """A finished signal whose status mail is still to be dealt with."""

    ref: str
    sender: str
    sender_ref_blob: bytes | None = field(repr=False)
    status_mail: bool  # whether its sender wants status mail (a removed sender: False)


@dataclass(frozen=True)
class OpenSignal:
    """A signal with a child not yet delivered: its states and schools (comma-joined)."""

    ref: str
    accepted_at: str
    states: str
    schools: str | None


@dataclass(frozen=True)
class Unacknowledged:
    """A delivered notice whose school has not confirmed receipt yet."""

    id: int
    ref: str
    school: str
    accepted_at: str


@dataclass(frozen=True)
class PendingFollowUp:
    """A status mail no longer queued with children whose follow-up is still to come."""

    id: int
    ref: str
    sender: str
    state: str
    pending: tuple[int, ...]
    status_mail: bool
