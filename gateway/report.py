"""Status to the sender: what became of each child of a signal, without a name.

Takes a `Context`; for each signal of a sender that wants status mail (the default) whose
children are all delivered or held (or dropped or failed), sends one signed mail, encrypted to
the sender's pinned key, to the sender's first allowed address, through `[delivery] relay`. It
carries the sender's own reference, the gateway's reference, and per child the outcome, school
code and time. One attempt; the outcome is a receipt either way, so nothing is sent twice.
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
from gateway.keyinfo import key_info
from gateway.logs import get_logger
from gateway.seal import make_message_id, seal_text
from gateway.store import Tx

log = get_logger("report")

OUTCOME_NL = {"delivered": "afgeleverd bij school {school}",
              "held": "wacht op een medewerker van leerplicht ({reason})",
              "dropped": "niet doorgestuurd ({reason})",
              "failed": "niet af te leveren bij school {school}; leerplicht is gewaarschuwd"}


@dataclass(frozen=True)
class ChildOutcome:
    n: int
    state: str
    school: str | None
    reason: str | None
    at: str


def status_body(ref: str, sender_ref: str | None, children: Sequence[ChildOutcome]) -> str:
    """Pure: the text of the status mail. References, codes, states and times only."""
    lines = [f"Status van uw signaal {sender_ref or '(zonder eigen referentie)'}",
             f"Referentie bij leerplicht: {ref}", ""]
    for child in children:
        outcome = OUTCOME_NL.get(child.state, child.state).format(
            school=child.school or "?", reason=child.reason or "")
        when = f"{child.at[:10]} {child.at[11:16]} UTC"
        lines.append(f"Kind {child.n}: {outcome}, {when} (referentie {ref}-{child.n})")
    lines += ["", "Namen en geboortedata staan bewust niet in dit bericht."]
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
        children[c["ref"]].append(ChildOutcome(c["n"], c["state"], c["school"], c["reason"],
                                               c["updated_at"]))
    for row in wanted:
        problem = await _send(ctx, row["ref"], row["sender"], row["sender_ref"],
                              children[row["ref"]])
        now = ctx.clock()
        await ctx.store.write(partial(_record, row["ref"], row["sender"], problem, now))
        (log.info if problem is None else log.warning)(
            "signal.reported" if problem is None else "signal.report_failed",
            ref=row["ref"], sender=row["sender"], reason=problem)
        ctx.pulse.beat()


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
