"""Status to the sender: what became of each child of a signal, without a name.

Takes a `Context`. For each signal of a sender that wants status mail (the default) whose
children are all delivered or held (or dropped or failed), `report_finished` seals one mail,
signed and encrypted to the sender's pinned key, for the sender's first allowed address, and
queues it in the outbox (gateway.notify.outbox, the ciphertext only) in the same transaction that
marks the signal reported: queued once, whoever runs the round. It carries the sender's own
reference (opened from the vault for this mail only), the gateway's reference, and per child
one of three outcomes and its time in `[schedule] timezone` with its offset: delivered to the
school, with leerplicht, or closed by leerplicht without a school. Never a school code or why a
child is held: "BSN and name disagree" against "not in the register" would tell a sender probing
with made-up names which BSNs are in the register; the precise reason stays with leerplicht
(`held list`, alerts).

A child the mail reported as with leerplicht that is later delivered (routed by hand, or
released) or dropped gets a short follow-up of its own, queued the same way once the first mail
is no longer queued (so it never arrives first). It quotes the gateway's reference only: the
case reference is not kept after the first mail.

The queue is the outbox (gateway.notify.outbox, table `outbox`, kind "status"), which delivers
the mails with the notices' discipline: what is particular to status mails there (the receipts,
log events and alerts of each outcome, the check that the sender and its key are still pinned)
is `gateway.notify.statusmail`'s.

The status round (`report_finished`) runs on one node only (`SINGLE_NODE`): two nodes would
each seal a mail for the same signal; the queue's UNIQUE (ref, child) keeps one, but the other
node's gpg work and its lock (`ctx.reporting`) guard only their own process.
"""

from __future__ import annotations

import asyncio
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.fields import format_date_nl
from gateway.core.inert import inert
from gateway.core.keyinfo import key_info
from gateway.core.records import from_iso
from gateway.crypto.gpg import GpgError
from gateway.crypto.vault import VaultError
from gateway.notify.outbox import compose
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.pipeline.intake import sender_ref_aad
from gateway.store.api import Tx

log = get_logger("report")

SINGLE_NODE = True  # the status round runs on one node only: see the module docstring
SIGNAL = 0  # the outbox's `child` of a signal's own status mail; n is the follow-up for child n

# Written for a colleague at Veilig Thuis. A child not (yet) at a school reads the same
# whatever the reason, so that the mail tells nothing about the register (see above).
WITH_LEERPLICHT = "in behandeling bij leerplicht"
DELIVERED_NL = "afgeleverd bij de school"
DROPPED_NL = "afgehandeld door leerplicht, niet doorgestuurd naar een school"
OUTCOME_NL = {"delivered": DELIVERED_NL,
              "held": WITH_LEERPLICHT,
              "failed": WITH_LEERPLICHT,
              "dropped": DROPPED_NL}
# States a status mail reports as with leerplicht, whose later end gets a follow-up.
OPEN_STATES = ("held", "failed")
FINAL_STATES = ("delivered", "dropped")
# Only what the gateway itself will do: it does not know whether anyone at leerplicht has
# looked yet, so it never says so (an alert may not have gone out: no [alerts] address).
OPEN_NL = ["Een kind dat in behandeling is bij leerplicht, is (nog) niet bij een school",
           "afgeleverd. Wordt het alsnog afgeleverd, of handelt leerplicht het af zonder",
           "school, dan krijgt u daarover een kort vervolgbericht."]
QUESTIONS_NL = ["Hebt u vragen, neem dan contact op met leerplicht en noem de referentie.", "",
                "Namen en geboortedata staan bewust niet in dit bericht."]
EARLIER_NL = ["Dit bericht volgt op ons eerdere statusbericht over dit signaal, waarin dit",
              "kind in behandeling was bij leerplicht."]


@dataclass(frozen=True)
class ChildOutcome:
    """What the status mail may know of a child: its number, state and time. Not its school,
    not why it is held."""

    n: int
    state: str
    at: str


def local_time(at: str, zone: zoneinfo.ZoneInfo) -> str:
    """Pure: a stored UTC time where the sender is, with its offset: `01-12-2026 16:59 +01:00`
    (the offset says which of winter or summer time it is)."""
    local = from_iso(at).astimezone(zone)
    offset = local.strftime("%z")  # "+0100": Python 3.11 has no %:z
    return f"{format_date_nl(local.date())} {local:%H:%M} {offset[:3]}:{offset[3:]}"


def _child_line(ref: str, child: ChildOutcome, zone: zoneinfo.ZoneInfo) -> str:
    outcome = OUTCOME_NL.get(child.state, WITH_LEERPLICHT)
    return f"Kind {child.n}: {outcome}, {local_time(child.at, zone)} (referentie {ref}-{child.n})"


def status_body(ref: str, sender_ref: str | None, children: Sequence[ChildOutcome],
                zone: zoneinfo.ZoneInfo) -> str:
    """Pure: the text of the status mail. References, outcomes and times only."""
    # The reference was checked at intake; inert all the same, as everything from outside.
    lines = [f"Status van uw signaal {inert(sender_ref or '(zonder eigen referentie)')}",
             f"Referentie bij leerplicht: {ref}", ""]
    lines += [_child_line(ref, child, zone) for child in children]
    lines.append("")
    if any(OUTCOME_NL.get(c.state, WITH_LEERPLICHT) == WITH_LEERPLICHT for c in children):
        lines += [*OPEN_NL, ""]
    lines += QUESTIONS_NL
    return "\n".join(lines) + "\n"


def follow_up_body(ref: str, child: ChildOutcome, zone: zoneinfo.ZoneInfo,
                   earlier_sent: bool) -> str:
    """Pure: the follow-up about one child once it is delivered or dropped. `earlier_sent`:
    a server took the first status mail, so the sender has read it was with leerplicht."""
    lines = ["Vervolg op de status van uw signaal", f"Referentie bij leerplicht: {ref}", "",
             _child_line(ref, child, zone), ""]
    if earlier_sent:
        lines += [*EARLIER_NL, ""]
    lines += QUESTIONS_NL
    return "\n".join(lines) + "\n"


async def report_finished(ctx: Context) -> None:
    """Queue the status mails and follow-ups that are due (sending is the outbox's)."""
    async with ctx.reporting:
        await _queue_status_mails(ctx)
        await _queue_follow_ups(ctx)


def _zone(ctx: Context) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(ctx.config.schedule.timezone)


async def _queue_status_mails(ctx: Context) -> None:
    rows = await ctx.store.signals.finished_unreported()
    unwanted = [row.ref for row in rows if not row.status_mail]
    if unwanted:
        await ctx.store.write(lambda tx: tx.signals.mark_reported(unwanted))
    wanted = [row for row in rows if row.status_mail]
    children: dict[str, list[ChildOutcome]] = {row.ref: [] for row in wanted}
    for c in await ctx.store.children.of([row.ref for row in wanted]):
        children[c.ref].append(ChildOutcome(c.n, c.state, c.updated_at))
    for row in wanted:
        ref, sender = str(row.ref), str(row.sender)
        try:
            sender_ref = _sender_ref(ctx, ref, row.sender_ref_blob)
        except VaultError:
            built: Sealed | str = "the sealed case reference does not open with this vault key"
        else:
            built = await _seal(ctx, sender, f"Status signaal {sender_ref or ref}",
                                status_body(ref, sender_ref, children[ref], _zone(ctx)))
        pending = [c.n for c in children[ref] if c.state in OPEN_STATES]
        await _keep(ctx, ref, SIGNAL, sender, built, pending)
        ctx.pulse.beat()


async def _queue_follow_ups(ctx: Context) -> None:
    parents = await ctx.store.outbox.pending_follow_ups()
    if not parents:
        return
    states = {(c.ref, c.n): c for c in
              await ctx.store.children.of(sorted({str(p.ref) for p in parents}))}
    for parent in parents:
        ref, sender = str(parent.ref), str(parent.sender)
        for n in parent.pending:
            child = states.get((ref, n))
            if child is None or child.state not in FINAL_STATES:
                continue
            if not parent.status_mail:
                built: Sealed | str | None = None  # the sender left: nothing to tell
            else:
                outcome = ChildOutcome(n, child.state, child.updated_at)
                built = await _seal(ctx, sender, f"Vervolg status signaal {ref}",
                                    follow_up_body(ref, outcome, _zone(ctx),
                                                   parent.state == "sent"))
            await _keep(ctx, ref, n, sender, built, (), settles=(int(parent.id), n))
            ctx.pulse.beat()


@dataclass(frozen=True)
class Sealed:
    """A status mail ready to queue: the sealed bytes and their envelope."""

    message: bytes
    recipient: str
    fingerprint: str
    message_id: str


def _sender_ref(ctx: Context, ref: str, blob: bytes | None) -> str | None:
    """The sender's case reference, opened from the vault for this one mail."""
    if blob is None:
        return None
    return str(ctx.vault.open(blob, sender_ref_aad(ref))["reference"])


async def _seal(ctx: Context, sender_name: str, subject: str, body: str) -> Sealed | str:
    """The mail sealed for the sender, or why it cannot be made (then it is never sent)."""
    sender = ctx.snapshot.senders.get(sender_name)
    if sender is None:
        return "the sender is no longer registered"
    if not sender.allowed_from:
        return "the sender has no address to write to (senders add --allow-from)"
    if ctx.snapshot.signing_key is None:
        return "the gateway has no signing key"
    now = ctx.clock()
    listed = await asyncio.to_thread(ctx.gpg.list_keys, False, sorted(sender.fingerprints))
    encrypt_to = [i.fingerprint for i in map(key_info, listed)
                  if i.unusable_reason("encrypt", now) is None]
    if not encrypt_to:
        return "none of the sender's pinned keys can encrypt"
    address = sorted(sender.allowed_from)[0]
    try:
        # Dated where the sender is, as the times in the text are.
        mail = await compose(ctx, body, subject=subject, recipient=address,
                             fingerprint=encrypt_to[0], signer=ctx.snapshot.signing_key,
                             now=now.astimezone(_zone(ctx)))
    except GpgError:
        return "gpg could not seal the status mail"
    return Sealed(mail.message, address, encrypt_to[0], mail.message_id)


async def _keep(ctx: Context, ref: str, child: int, sender: str, built: Sealed | str | None,
                pending: Sequence[int], settles: tuple[int, int] | None = None) -> None:
    """Queue a sealed mail (or record why there is none), with the state change it stands
    for (the signal reported, or the parent's follow-up settled), in one transaction."""
    now = ctx.clock()
    about = ref if child == SIGNAL else f"{ref}-{child}"

    async def record(tx: Tx) -> int | None:
        mail_id = None
        if isinstance(built, Sealed):
            mail_id = await tx.outbox.insert(ref, child, sender, built.recipient,
                                                   built.fingerprint, built.message_id,
                                                   built.message, now, pending)
            if mail_id is not None:
                await tx.receipts.append("status_queued", at=now, ref=about, sender=sender,
                                         status_mail=mail_id, message_id=built.message_id,
                                         fingerprint=built.fingerprint)
        elif built is not None:
            await tx.receipts.append("status_not_sent", at=now, ref=about, sender=sender, why=built)
        if child == SIGNAL:
            await tx.signals.mark_reported([ref])
        if settles is not None:
            await tx.outbox.settle_pending(settles[0], [settles[1]])
        return mail_id

    mail_id = await ctx.store.write(record)
    if isinstance(built, Sealed) and mail_id is not None:
        log.info("status_mail.queued", ref=ref, child=child, sender=sender, status_mail=mail_id)
    elif isinstance(built, str):
        log.warning("status_mail.not_queued", ref=ref, child=child, sender=sender, reason=built)
