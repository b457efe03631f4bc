"""Intake: from a received message to a durably stored signal, or a typed refusal.

Takes the raw message of an authenticated sender; runs open (decrypt + verify), extract (parse +
minimise), the replay check and resolve (per child, against the register and directory); then
stores the signal, its children (their data sealed in the vault) and the receipts in one
transaction. Produces `Accepted` only after that transaction committed: the receive stage says
250 on nothing less (docs/architecture.md invariant 1). Refusals are `Rejection`s for the reply; any
other failure propagates and becomes a 451 there.

The same signal again (same sender and signed content, or same sender and Message-ID, within
30 days) is a duplicate; other signed content under an earlier Message-ID is refused (554 5.6.0);
the sender's case reference never makes a duplicate, and is stored only as a keyed digest and a
vault blob (`protect_sender_ref`), never in clear.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser

from gateway.core.model import Child, Decision, Pupil, RejectClass, Rejection, Routed, Sender
from gateway.core.names import pseudonym_text
from gateway.core.records import ProtectedRef
from gateway.core.resolve import resolve_child
from gateway.crypto.gpg import Gpg
from gateway.crypto.vault import Vault
from gateway.pipeline.directory import Snapshot
from gateway.pipeline.extract import parse_signal
from gateway.pipeline.opener import open_message
from gateway.store.api import Store, Tx

REPLAY_WINDOW = dt.timedelta(days=30)
_REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


@dataclass(frozen=True)
class Accepted:
    ref: str
    duplicate: bool
    children: int = 0
    held: int = 0


def new_reference(now: dt.datetime) -> str:
    """Our own reference: date plus 40 random bits; says nothing about the sender's case."""
    suffix = "".join(secrets.choice(_REF_ALPHABET) for _ in range(8))
    return f"HWC-{now:%Y%m%d}-{suffix}"


def message_id_of(raw: bytes) -> str | None:
    """The outer Message-ID, as a replay key only (it is not signed, so never trusted alone)."""
    # The parser would read the whole body line by line into a payload nobody asks for; the
    # header section ends at the first empty line either way.
    end = re.search(rb"\r?\n\r?\n", raw)
    head = raw[: end.end()] if end else raw
    try:
        value = BytesHeaderParser(policy=policy.compat32).parsebytes(head).get("Message-ID")
    except Exception:
        return None
    text = " ".join(str(value).split()) if value else ""
    return text[:250] or None


def message_id_reused(earlier: str) -> Rejection:
    """The refusal of other signed content under the Message-ID of an earlier signal."""
    return Rejection(RejectClass.INVALID_SIGNAL,
                     f"Message-ID already used for another signal ({earlier}); send this one"
                     " as a new message with a Message-ID of its own")


def protect_sender_ref(vault: Vault, ref: str, reference: str, seal: bool) -> ProtectedRef:
    """The sender's case reference as the store keeps it: never in clear (a Veilig Thuis case
    number points at a family), but as a keyed digest, to recognise it when it comes back, and,
    while the status mail that quotes it is still to come (`seal`), a vault blob bound to the
    signal `ref`."""
    blob = vault.seal({"reference": reference}, sender_ref_aad(ref)) if seal else None
    return ProtectedRef(vault.digest("sender-ref", reference), blob)


def sender_ref_aad(ref: str) -> str:
    """What the sealed case reference is bound to: its own signal, so it cannot be moved."""
    return f"sender-ref:{ref}"


def child_record(child: Child) -> dict[str, str | None]:
    """What the vault keeps of a child until delivery: the fields and the routing aids."""
    return {"name": child.name, "birthdate": child.birthdate.isoformat(), "bsn": child.bsn,
            "school": child.school_hint}


def pupil_from_record(record: dict[str, str | None], school: str) -> Pupil:
    return Pupil(name=str(record["name"]),
                 birthdate=dt.date.fromisoformat(str(record["birthdate"])),
                 school=school, bsn=record.get("bsn"))


async def register_candidates(store: Store, vault: Vault,
                              child: Child) -> tuple[Pupil | None, list[Pupil]]:
    """The register pupils that could be this child: by BSN, and by birth date."""
    bsn_index = vault.digest("register-bsn", child.bsn) if child.bsn else None
    birth_index = vault.digest("register-birthdate", child.birthdate.isoformat())
    by_bsn, same_birthdate = None, []
    for row in await store.register.by_index(bsn_index, birth_index):
        pupil = pupil_from_record(vault.open(row.blob, f"pupil:{row.school}"), row.school)
        if bsn_index is not None and row.bsn_index == bsn_index:
            by_bsn = pupil
        if row.birthdate_index == birth_index:
            same_birthdate.append(pupil)
    return by_bsn, same_birthdate


async def decide(store: Store, vault: Vault, snapshot: Snapshot, child: Child) -> Decision:
    by_bsn, same_birthdate = await register_candidates(store, vault, child)
    return resolve_child(child, by_bsn=by_bsn, same_birthdate=same_birthdate,
                         directory=snapshot.schools)


async def accept(raw: bytes, sender: Sender, *, store: Store, gpg: Gpg, vault: Vault,
                 snapshot: Snapshot, now: dt.datetime, today: dt.date) -> Accepted | Rejection:
    opened = await open_message(raw, gpg, sender.fingerprints, snapshot.decrypt_keys)
    if isinstance(opened, Rejection):
        return opened
    signal = await asyncio.to_thread(parse_signal, opened.entity, today=today)
    if isinstance(signal, Rejection):
        return signal
    # Replay is recognised on the signed content, not only on headers an attacker can change.
    digest = vault.digest("signal", opened.entity)
    message_id = message_id_of(raw)
    decisions = [await decide(store, vault, snapshot, child) for child in signal.children]

    # Sealed before the transaction, so that it holds the database only for the writes.
    ref = new_reference(now)
    sealed = [(vault.pseudonym(pseudonym_text(child.name), child.birthdate.isoformat()),
               vault.seal(child_record(child), f"{ref}-{n}"))
              for n, child in enumerate(signal.children, 1)]
    sender_ref = (protect_sender_ref(vault, ref, signal.reference, seal=True)
                  if signal.reference else None)

    async def record(tx: Tx) -> Accepted | Rejection:
        earlier = await tx.signals.find_duplicate(sender.name, message_id, digest,
                                                  now - REPLAY_WINDOW)
        if earlier is not None:
            earlier_ref, same_content = earlier
            if not same_content:
                # A client reusing Message-IDs: taking it for the earlier signal would swallow
                # whatever child it adds, guessing it a new one would deliver a re-composed
                # resend twice. The sender is told precisely, and sends it again as new mail.
                return message_id_reused(earlier_ref)
            await tx.receipts.append("duplicate", at=now, ref=earlier_ref, sender=sender.name)
            return Accepted(earlier_ref, duplicate=True)
        # The same case reference with other content is another signal (a sibling forgotten
        # the first time, a new incident in the same case): accepted and delivered, with our
        # reference of the first one it shares the case with in its receipt.
        reused = (await tx.signals.find_sender_ref(sender.name, sender_ref.digest)
                  if sender_ref else None)
        await tx.signals.insert(ref, sender.name, message_id, sender_ref, digest,
                                len(signal.children), now)
        await tx.receipts.append("accepted", at=now, ref=ref, sender=sender.name,
                                 signer=opened.signer, children=len(signal.children),
                                 **({"reference_reused": reused} if reused else {}))
        held = 0
        for n, (decision, (pseudonym, blob)) in enumerate(zip(decisions, sealed, strict=True), 1):
            child_ref = f"{ref}-{n}"
            if isinstance(decision, Routed):
                await tx.children.insert(ref, n, "routed", decision.school, None, blob,
                                         pseudonym, now)
                await tx.receipts.append("resolved", at=now, ref=child_ref, school=decision.school,
                                         pseudonym=pseudonym, rule=decision.rule)
            else:
                held += 1
                await tx.children.insert(ref, n, "held", decision.school, decision.reason, blob,
                                         pseudonym, now)
                await tx.receipts.append("held", at=now, ref=child_ref, school=decision.school,
                                         pseudonym=pseudonym, reason=decision.reason)
        return Accepted(ref, duplicate=False, children=len(signal.children), held=held)

    return await store.write(record)
