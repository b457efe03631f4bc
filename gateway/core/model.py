"""Values that travel between the stages.

Frozen dataclasses only: no I/O, no behaviour beyond small derived properties. A `Child` holds
personal data and must never be logged, put in a receipt or written to disk unencrypted; its
`repr` is redacted so that a stray `log.info(child=child)` or a traceback cannot leak it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import Enum

CODEWORD = "Handle with Care"


@dataclass(frozen=True)
class Child:
    """One child named in a signal: the only personal data that survives extraction."""

    name: str
    birthdate: dt.date
    bsn: str | None = None
    school_hint: str | None = None  # a 6-character vestigingscode, or a 4-character BRIN

    def __repr__(self) -> str:
        return "Child(<redacted>)"

    __str__ = __repr__


@dataclass(frozen=True)
class Signal:
    """A validated signal: codeword checked, every child complete and well-formed."""

    children: tuple[Child, ...]
    reference: str | None = None  # the sender's own case reference; never sent to a school

    def __repr__(self) -> str:
        # The case reference points at a family (issue 11): a repr may end up in a log.
        has_reference = "<redacted>" if self.reference is not None else None
        return f"Signal(children={len(self.children)}, reference={has_reference})"


class RejectClass(Enum):
    """Why a message was refused; each maps to exactly one SMTP reply (docs/protocol.md §5)."""

    NOT_ENCRYPTED = "not_encrypted"  # 554 5.7.5
    BAD_SIGNATURE = "bad_signature"  # 554 5.7.7
    INVALID_SIGNAL = "invalid_signal"  # 554 5.6.0
    TOO_LARGE = "too_large"  # 552 5.3.4


@dataclass(frozen=True)
class Rejection:
    """A typed refusal. `detail` is safe to show the sender: it names a field and a child
    number, never a value taken from the message."""

    kind: RejectClass
    detail: str


@dataclass(frozen=True)
class Pupil:
    """A row of the pupil register (decrypted in memory only)."""

    name: str
    birthdate: dt.date
    school: str
    bsn: str | None = None

    def __repr__(self) -> str:
        return f"Pupil(<redacted>, school={self.school!r})"

    __str__ = __repr__


@dataclass(frozen=True)
class Routed:
    """The child goes to this school; `rule` says which rule of docs/protocol.md §7 decided it."""

    school: str
    rule: str


@dataclass(frozen=True)
class Held:
    """The child waits for an administrator; `reason` is fixed text, never personal data."""

    reason: str
    school: str | None = None  # set when the school is known but cannot be reached yet


Decision = Routed | Held


@dataclass(frozen=True)
class School:
    """A directory entry with what resolve needs to know about its contacts."""

    code: str
    name: str
    usable_contacts: int = 0


@dataclass(frozen=True)
class Contact:
    """A pinned contact whose channel can reach it (the channel's rule: the directory)."""

    email: str
    fingerprint: str
    channel: str = "openpgp"


@dataclass(frozen=True)
class Sender:
    """A registered sender organisation as the receive stage needs it."""

    name: str
    password_hash: str
    fingerprints: frozenset[str]
    allowed_from: frozenset[str] = field(default_factory=frozenset)
    client_certs: frozenset[str] = field(default_factory=frozenset)  # SHA-256 of DER, upper hex
