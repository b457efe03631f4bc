"""Status to the sender: what became of each child of a signal, without a name.

Takes a `Context`; for each signal of a sender that wants status mail (the default) whose
children are all delivered or held (or dropped or failed), sends one signed mail, encrypted to
the sender's pinned key, to the sender's first allowed address, through `[delivery] relay`. It
carries the sender's own reference (opened from the vault for this mail only), the gateway's
reference, and per child one of three outcomes and its time: delivered to the school, with
leerplicht, or closed by leerplicht without a school. Never a school code or why a child is
held: "BSN and name disagree" against "not in the register" would tell a sender probing with
made-up names which BSNs are in the register; the precise reason stays with leerplicht
(`held list`, alerts). One attempt; the outcome is a receipt either way, so nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from gateway import deliver
from gateway.context import Context
from gateway.gpg import GpgError
from gateway.inert import inert
from gateway.intake import sender_ref_aad
from gateway.keyinfo import key_info
from gateway.logs import get_logger
from gateway.seal import make_message_id, seal_text
from gateway.store import Tx
from gateway.vault import VaultError

log = get_logger("report")

# Written for a colleague at Veilig Thuis. A child not (yet) at a school reads the same
# whatever the reason, so that the mail tells nothing about the register (see above).
WITH_LEERPLICHT = "in behandeling bij leerplicht"
OUTCOME_NL = {"delivered": "afgeleverd bij de school",
              "held": WITH_LEERPLICHT,
              "failed": WITH_LEERPLICHT,
              "dropped": "afgehandeld door leerplicht, niet doorgestuurd naar een school"}
FOOTER_NL = ["Een kind dat in behandeling is bij leerplicht, wordt door een medewerker van",
             "leerplicht verder uitgezocht; u hoeft daarvoor niets te doen. Hebt u vragen, neem",
             "dan contact op met leerplicht en noem de referentie.", "",
             "Namen en geboortedata staan bewust niet in dit bericht."]


@dataclass(frozen=True)
class ChildOutcome:
    """What the status mail may know of a child: its number, state and time. Not its school,
    not why it is held."""

    n: int
    state: str
    at: str


def status_body(ref: str, sender_ref: str | None, children: Sequence[ChildOutcome]) -> str:
    """Pure: the text of the status mail. References, outcomes and times only."""
    # The reference was checked at intake; inert all the same, as everything from outside.
    lines = [f"Status van uw signaal {inert(sender_ref or '(zonder eigen referentie)')}",
             f"Referentie bij leerplicht: {ref}", ""]
    for child in children:
        outcome = OUTCOME_NL.get(child.state, WITH_LEERPLICHT)
        when = f"{child.at[:10]} {child.at[11:16]} UTC"
        lines.append(f"Kind {child.n}: {outcome}, {when} (referentie {ref}-{child.n})")
    lines += ["", *FOOTER_NL]
    return "\n".join(lines) + "\n"


async def report_finished(ctx: Context) -> None:
    """Send the status mails that are due."""
    async with ctx.reporting:
        await _report_finished(ctx)


async def _report_finished(ctx: Context) -> None:
    rows = await ctx.store.finished_unreported()
    unwanted = [row["ref"] for row in rows if not row["status_mail"]]
    if unwanted:
        await ctx.store.write(lambda tx: tx.mark_reported(unwanted))
    wanted = [row for row in rows if row["status_mail"]]
    children: dict[str, list[ChildOutcome]] = {row["ref"]: [] for row in wanted}
    for c in await ctx.store.children_of([row["ref"] for row in wanted]):
        children[c["ref"]].append(ChildOutcome(c["n"], c["state"], c["updated_at"]))
    for row in wanted:
        try:
            sender_ref = _sender_ref(ctx, row["ref"], row["sender_ref_blob"])
        except VaultError:
            problem: str | None = "the sealed case reference does not open with this vault key"
        else:
            problem = await _send(ctx, row["ref"], row["sender"], sender_ref,
                                  children[row["ref"]])
        now = ctx.clock()
        await ctx.store.write(partial(_record, row["ref"], row["sender"], problem, now))
        (log.info if problem is None else log.warning)(
            "signal.reported" if problem is None else "signal.report_failed",
            ref=row["ref"], sender=row["sender"], reason=problem)
        ctx.pulse.beat()


def _sender_ref(ctx: Context, ref: str, blob: bytes | None) -> str | None:
    """The sender's case reference, opened from the vault for this one mail."""
    if blob is None:
        return None
    return str(ctx.vault.open(blob, sender_ref_aad(ref))["reference"])


async def _record(ref: str, sender: str, problem: str | None, now: dt.datetime,
                  tx: Tx) -> None:
    if problem is None:
        await tx.receipt("status_sent", at=now, ref=ref, sender=sender)
    else:
        await tx.receipt("status_not_sent", at=now, ref=ref, sender=sender, why=problem)
    await tx.mark_reported([ref])


async def _send(ctx: Context, ref: str, sender_name: str, sender_ref: str | None,
                children: Sequence[ChildOutcome]) -> str | None:
    """None when a server accepted the status mail, else why not."""
    config = ctx.config
    sender = ctx.snapshot.senders.get(sender_name)
    if sender is None:
        return "the sender is no longer registered"
    if not sender.allowed_from:
        return "the sender has no address to write to (senders add --allow-from)"
    if config.delivery.relay is None:
        return "no [delivery] relay to send through"
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
        message = await seal_text(
            ctx.gpg, status_body(ref, sender_ref, children),
            subject=f"Status signaal {sender_ref or ref}", sender=config.gateway.address,
            recipients=[address], fingerprints=encrypt_to[:1], signer=ctx.snapshot.signing_key,
            message_id=make_message_id(config.gateway.address.rpartition("@")[2]), now=now)
    except GpgError:
        return "gpg could not seal the status mail"
    outcome = await deliver.send(message, mail_from=config.gateway.address, recipients=[address],
                                 destination=config.delivery.relay,
                                 context=deliver.tls_context(config.delivery.ca_file),
                                 timeout=config.delivery.timeout_seconds,
                                 local_hostname=config.smtp.hostname)
    return None if outcome.result is deliver.Result.DELIVERED else outcome.reply
