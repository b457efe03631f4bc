"""The store's interfaces: one repository per kind of data, one way to run a transaction.

Takes plain values (strings, ints, bytes: personal data only ever as vault blobs or keyed
digests); produces the records of `gateway.core.records`, never a database row. Callers see
only these protocols; `gateway.store.sqlite` is the implementation (one SQLite file), and
another database can follow by implementing them, without touching a caller.

Transactions: `await store.write(body)` runs `body(tx)` as one serialisable write transaction
and returns what it returned; rolled back on any exception, which then propagates. The body may
await only the methods of `tx` (an implementation may run it whole where the database is, in one
hop: see `gateway.store.sqlite.connection`), never the network, gpg or a clock. A committed
transaction is durable: the receive stage answers 250 only once `write` returned. Reads outside
a transaction go through the store's read views (`store.notices.get(...)`), each on its own.

Receipts are appended in the same transaction as the state change they record, chained by a
keyed hash (`gateway.store.chain`); they are never changed, only purged from the oldest on.

Leases: `claim` on a queue (notices, seal attempts; the outbox, `gateway.store.outbox`) takes a
lease until a time, naming the node that holds it (`node_id()`: host and process); a lease held
is not claimed again until it expires. At start-up a node takes back only dead leases (expired,
ownerless, or of a gone process of this host); a live lease of another node is that node's.
Policy is not the store's: which lease is dead, parking after crashes, erasing a finished item's
ciphertext are decided by the caller (`gateway.core.policy`) and passed in.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Protocol, TypeVar

from gateway.core.records import (
    Anchor,
    ChildRecord,
    ContactRecord,
    GatewayKeyRecord,
    Lease,
    LockoutRecord,
    NoticeRecord,
    OpenSignal,
    ProtectedRef,
    PupilRow,
    Receipt,
    SchoolRecord,
    SealAttempt,
    SenderAddressRecord,
    SenderCertRecord,
    SenderKeyRecord,
    SenderRecord,
    SignalRecord,
    Unacknowledged,
    UnreportedSignal,
)
from gateway.store.outbox import Outbox, OutboxReads
from gateway.store.pickups import PickupReads, Pickups

T = TypeVar("T")
_NODE: tuple[int, str] | None = None


def node_id() -> str:
    """This process as a lease owner: `host:pid`, made once per process."""
    global _NODE
    if _NODE is None or _NODE[0] != os.getpid():
        _NODE = (os.getpid(), f"{socket.gethostname()}:{os.getpid()}")
    return _NODE[1]


class Conflict(Exception):
    """A row changed under a transaction; it was rolled back and may be retried."""


class StoreError(Exception):
    """The database failed (damaged, not a database, locked too long); its message says how."""


class SignalReads(Protocol):
    async def get(self, ref: str) -> SignalRecord | None: ...

    async def finished_unreported(self) -> list[UnreportedSignal]:
        """Signals not yet reported none of whose children is still on its way, oldest first."""

    async def open(self) -> list[OpenSignal]:
        """Signals with a child not yet delivered (routed, held or sealed): what may escalate."""


class Signals(SignalReads, Protocol):
    async def find_duplicate(self, sender: str, message_id: str | None, digest: str,
                             since: dt.datetime) -> tuple[str, bool] | None:
        """An earlier signal of this sender since `since` with the same signed content (preferred)
        or Message-ID: its reference, and whether the content is the same. Never by case ref."""

    async def find_sender_ref(self, sender: str, sender_ref_digest: str) -> str | None:
        """The first signal still stored of this sender with the same case reference digest."""

    async def insert(self, ref: str, sender: str, message_id: str | None,
                     sender_ref: ProtectedRef | None, digest: str, children: int,
                     at: dt.datetime) -> None: ...

    async def mark_reported(self, refs: Sequence[str]) -> None:
        """The status mail of these signals was dealt with: their sealed case reference goes."""

    async def purge_finished_before(self, cutoff: dt.datetime) -> int:
        """Forget signals older than `cutoff` with nothing waiting (and their rows); how many."""


class ChildReads(Protocol):
    async def all(self, state: str | None = None,
                   ref: str | None = None) -> list[ChildRecord]: ...

    async def of(self, refs: Sequence[str]) -> list[ChildRecord]:
        """The children of these signals, by signal and number."""

    async def get(self, ref: str, n: int) -> ChildRecord | None: ...

    async def held_before(self, cutoff: dt.datetime) -> list[ChildRecord]: ...

    async def count_by_state(self) -> dict[str, int]: ...

    async def seal_leases(self) -> list[SealAttempt]: ...  # with a lease held


class Children(ChildReads, Protocol):
    async def insert(self, ref: str, n: int, state: str, school: str | None,
                     reason: str | None, blob: bytes, pseudonym: str,
                     at: dt.datetime) -> None: ...

    async def set_state(self, ref: str, n: int, state: str, at: dt.datetime, *,
                        school: str | None = None, reason: str | None = None,
                        erase: bool = False, expect: Sequence[str] = ()) -> bool:
        """Move one child on (its blob erased with `erase`); with `expect`, only from those."""

    # Sealing (ref, school): leased to this node when due and free (else None); a failure
    # counted (the count), its lease released until `next_at`; forgotten once done or held.
    async def claim_seal(self, ref: str, school: str, lease_until: dt.datetime,
                         now: dt.datetime) -> SealAttempt | None: ...

    async def seal_failed(self, ref: str, school: str, next_at: dt.datetime) -> int: ...

    async def seal_finished(self, ref: str, school: str) -> None: ...


class NoticeReads(Protocol):
    async def get(self, notice_id: int) -> NoticeRecord | None: ...

    async def all(self, states: Sequence[str] = ()) -> list[NoticeRecord]: ...

    async def due(self, now: dt.datetime, limit: int = 50) -> list[int]:
        """Queued notices due at `now` and not leased, the longest waiting first."""

    async def ack_pending(self, ack_digest: str) -> bool:
        """Whether an unacknowledged notice has this ack digest (an index look-up)."""

    async def unacknowledged(self) -> list[Unacknowledged]: ...

    async def oldest_queued(self) -> str | None: ...

    async def count_by_state(self) -> dict[str, int]: ...

    async def queued_for_reasons(self, reasons: Sequence[str]) -> list[int]:
        """Queued notices whose last attempt ended for one of these reason keys."""

    async def leased(self) -> list[Lease]:
        """Queued notices with a lease held."""


class Notices(NoticeReads, Protocol):
    async def insert(self, ref: str, school: str, message_id: str, recipients: Sequence[str],
                     fingerprints: Sequence[str], parcel: bytes, children: Sequence[int],
                     at: dt.datetime, ack_digest: str | None = None,
                     channel: str = "openpgp") -> int:
        """Queue a notice (its `channel`'s parcel) due at `at`, sealing these routed children."""

    async def claim(self, notice_id: int, lease_until: dt.datetime,
                    now: dt.datetime) -> NoticeRecord | None:
        """Lease a queued notice to this node, counting the attempt: as claimed, or None."""

    async def finish(self, notice_id: int, state: str, reply: str, at: dt.datetime,
                     child_state: str, erase: bool) -> None:
        """Delivered or failed, its children too; `erase`: ciphertext and sealed data go."""

    async def acknowledge(self, ack_digest: str, at: dt.datetime) -> NoticeRecord | None:
        """Record a school's acknowledgement (the token is single-use): the notice, or None."""

    async def record_crash(self, notice_id: int, next_at: dt.datetime) -> int:
        """An attempt crashed: count it, release the lease, due at `next_at`. The crashes."""

    async def park(self, notice_id: int) -> bool:
        """Park a queued notice for a person; False when it was no longer queued."""

    async def supersede(self, notice_id: int, reason: str, at: dt.datetime) -> list[int] | None:
        """Superseded, ciphertext erased, children back to routed (their numbers, or None)."""

    async def defer(self, notice_id: int, reply: str, next_at: dt.datetime) -> None: ...
    async def note_reason(self, notice_id: int, reason: str) -> None: ...

    async def requeue(self, notice_id: int, at: dt.datetime) -> NoticeRecord | None:
        """A failed or parked notice (with its ciphertext) is queued again, due at `at`, its
        attempts and crashes from zero, its failed children sealed again; a queued one is only
        made due at `at`. The notice as it was before, or None when there is none."""


class ReceiptReads(Protocol):
    async def all(self, since: dt.datetime | None = None,
                   ref: str | None = None) -> list[Receipt]:
        """The chain in order (since a time; of a signal and its children, with `ref`)."""

    async def by_pseudonym(self, pseudonym: str) -> list[Receipt]: ...

    async def last(self, event: str) -> Receipt | None: ...

    async def count_before(self, cutoff: dt.datetime) -> int: ...

    async def anchor(self) -> Anchor | None:
        """Where the chain starts after a purge, or None."""

    async def escalations(self) -> dict[str, set[str]]:
        """What was already escalated, per signal still open or unacknowledged."""


class Receipts(ReceiptReads, Protocol):
    async def append(self, event: str, *, at: dt.datetime, ref: str | None = None,
                     school: str | None = None, pseudonym: str | None = None,
                     **detail: Any) -> Receipt: ...

    async def purge_before(self, cutoff: dt.datetime) -> tuple[int, Anchor | None]:
        """Delete receipts older than `cutoff`; the chain then starts at the anchor returned."""


class DirectoryReads(Protocol):
    async def version(self) -> str:
        """Changes whenever senders, schools, keys or the register change."""

    async def senders(self) -> list[SenderRecord]: ...

    async def sender_keys(self) -> list[SenderKeyRecord]: ...
    async def sender_addresses(self) -> list[SenderAddressRecord]: ...
    async def sender_certs(self) -> list[SenderCertRecord]: ...

    async def status_mail_senders(self) -> list[str]: ...

    async def schools(self) -> list[SchoolRecord]: ...

    async def school(self, code: str) -> SchoolRecord | None: ...

    async def contacts(self, school: str | None = None) -> list[ContactRecord]: ...

    async def gateway_keys(self) -> list[GatewayKeyRecord]: ...


class Directory(DirectoryReads, Protocol):
    """Every change also changes `version`, so that a running daemon reloads."""

    async def bump_version(self) -> None: ...
    async def add_sender(self, name: str, password_hash: str, fingerprint: str,
                         allow_from: Sequence[str], client_certs: Sequence[str],
                         at: dt.datetime, status_mail: bool = True) -> None: ...

    async def add_sender_key(self, name: str, fingerprint: str, at: dt.datetime) -> None: ...
    async def remove_sender_key(self, name: str, fingerprint: str) -> int: ...
    async def remove_sender(self, name: str) -> int: ...

    async def upsert_school(self, code: str, name: str, place: str) -> bool:
        """Insert or rename a school (True when something changed); the rest is kept."""

    async def set_school_route(self, code: str, route: str | None) -> None: ...

    async def remove_school(self, code: str) -> int: ...

    async def set_contact(self, school: str, email: str, fingerprint: str | None,
                          channel: str = "openpgp") -> str | None:
        """Add a contact (of `channel`; a keyless channel's has no fingerprint) or replace its
        key; the previous fingerprint, if there was one."""

    async def rename_contact(self, school: str, email: str, new_email: str) -> bool: ...

    async def remove_contact(self, school: str, email: str) -> str | None:
        """The fingerprint the removed contact had ("" for a contact without a key), or None
        when there was no such contact."""

    async def add_gateway_key(self, fingerprint: str, at: dt.datetime,
                              overlap_until: dt.datetime | None = None) -> str | None:
        """Make `fingerprint` current; the replaced one (returned) decrypts until overlap."""

    async def retire_gateway_key(self, fingerprint: str, at: dt.datetime) -> bool: ...


class RegisterReads(Protocol):
    async def by_index(self, bsn_index: str | None, birthdate_index: str) -> list[PupilRow]:
        """Pupils with this birth date digest, or with this BSN digest."""

    async def summary(self) -> tuple[int, int]:
        """Pupils and schools in the register."""

    async def counts(self) -> dict[str, int]:
        """Pupils per vestigingscode."""


class Register(RegisterReads, Protocol):
    async def replace(self, pupils: Iterable[PupilRow]) -> int:
        """Swap the whole register: readers see old or new, never half. How many now."""


class LockoutReads(Protocol):
    async def running(self, now: dt.datetime) -> list[LockoutRecord]:
        """AUTH lockouts running at `now` and not lifted."""

    async def any_lifted(self) -> bool:
        """Whether the command line lifted a lockout the daemon has not let go of yet."""


class Lockouts(LockoutReads, Protocol):
    async def record(self, scope: str, subject: str, login: str, since: dt.datetime,
                     until: dt.datetime) -> None:
        """The AUTH throttle refuses `subject` until `until`; ended lockouts are forgotten."""

    async def lift(self, login: str, at: dt.datetime, by: str) -> list[LockoutRecord]:
        """Mark every running lockout that refused `login` lifted, each whole; those lifted."""

    async def take_lifted(self) -> list[tuple[str, str]]:
        """The (scope, subject) pairs lifted from the command line, now forgotten."""

    async def clear(self) -> None: ...


class MetaReads(Protocol):
    async def get(self, key: str) -> str | None: ...


class Meta(MetaReads, Protocol):
    async def set(self, key: str, value: str) -> None: ...


class Tx(Protocol):
    """One write transaction: every repository, sharing it."""

    signals: Signals
    children: Children
    notices: Notices
    outbox: Outbox
    status_mails: Outbox  # the outbox, by the name it had when it held status mails only
    receipts: Receipts
    directory: Directory
    register: Register
    lockouts: Lockouts
    meta: Meta
    pickups: Pickups


class Store(Protocol):
    """The one way to write (`write`), and read views that each read on their own."""

    chain_key: bytes
    node: str
    signals: SignalReads
    children: ChildReads
    notices: NoticeReads
    outbox: OutboxReads
    status_mails: OutboxReads  # as in `Tx`
    receipts: ReceiptReads
    directory: DirectoryReads
    register: RegisterReads
    lockouts: LockoutReads
    meta: MetaReads
    pickups: PickupReads

    async def write(self, body: Callable[[Tx], Coroutine[Any, Any, T]]) -> T: ...

    async def close(self) -> None: ...

    async def chain_keyed(self) -> bool:
        """Whether the receipts are linked under the receipt key."""

    async def key_chain(self) -> list[str]:
        """Once: re-link an intact chain of unkeyed receipts under the key; the breaks found."""

    async def protect_sender_refs(self, protect: Callable[[str, str, bool], ProtectedRef]) -> int:
        """Upgrade: clear case references become `protect(...)`, then wiped. How many."""
