"""What the `queue` verbs do: notices not yet delivered, and queueing one again.

Takes a `Context`; produces rows (with each signal's deadline and time left) or a line for the
administrator; fails with `Refused` and a one-line reason. Besides the notices not yet
delivered, `queue list` shows the pickup notices delivered and waiting to be read on the pickup
page (`pickup_list`), in a section of their own.
"""

from __future__ import annotations

from typing import Any

from gateway.admin.common import Refused, signal_deadline
from gateway.core.records import NoticeRecord, iso
from gateway.core.schedule import time_left
from gateway.observe.logs import get_logger
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("admin")


async def queue_list(ctx: Context, states: tuple[str, ...] = ("queued",)
                     ) -> list[dict[str, Any]]:
    now = ctx.clock()
    out = []
    for r in await ctx.store.notices.all(states=states):
        signal = await ctx.store.signals.get(r.ref)
        due = signal_deadline(ctx, signal.accepted_at if signal else r.created_at)
        out.append({"notice": r.id, "ref": r.ref, "school": r.school,
                    "state": r.state, "attempts": r.attempts,
                    "next_attempt": r.next_attempt_at, "last_reply": r.last_reply,
                    "deadline": iso(due), "time_left": time_left(due, now)})
    return out


PICKUP_SECTION = "waiting to be read on the pickup page"
PICKUP_COLUMNS = ("notice", "ref", "school", "delivered", "deadline", "time_left", "expires",
                  "opened")


async def pickup_list(ctx: Context) -> list[dict[str, Any]]:
    """Pickup notices whose mail was delivered and that nobody has read yet, oldest first:
    when the mail went out, the signal's deadline, when the link expires, how often the notice
    was shown. Their state is "waiting_to_be_read" (in `--json`, after the queued ones)."""
    now = ctx.clock()
    out = []
    for p in await ctx.store.pickups.waiting():
        signal = await ctx.store.signals.get(p.ref)
        due = signal_deadline(ctx, signal.accepted_at if signal else p.created_at)
        delivered = [r.at for r in await ctx.store.receipts.all(ref=p.ref)
                     if r.event == "delivered" and r.detail.get("notice") == p.notice_id]
        out.append({"notice": p.notice_id, "ref": p.ref, "school": p.school,
                    "state": "waiting_to_be_read",
                    "delivered": delivered[-1] if delivered else None,
                    "deadline": iso(due), "time_left": time_left(due, now),
                    "expires": p.expires_at, "opened": p.opened})
    return out


async def queue_retry(ctx: Context, notice: str) -> str:
    """Queue a failed or parked notice again once its cause is fixed, as `postsuper -r` does:
    due now, attempts from zero, its children sealed again; a queued one is made due now
    (`postqueue -i`). Before the attempt the notice is checked against the directory as it
    is then, and superseded when its contacts or keys changed meanwhile (`runner`)."""
    if not notice.isdigit():
        raise Refused("ID must be a notice number as `queue list` shows it")
    notice_id = int(notice)
    now = ctx.clock()

    async def requeue(tx: Tx) -> tuple[NoticeRecord, str]:
        row = await tx.notices.requeue(notice_id, now)
        if row is None:
            raise Refused(f"there is no notice {notice_id}")
        state = str(row.state)
        if state == "delivered":
            raise Refused(f"notice {notice_id} was delivered: there is nothing to retry")
        if state == "superseded":
            raise Refused(f"notice {notice_id} was superseded ({row.last_reply}): its "
                          "children went into a newer notice")
        if not row.parcel:
            raise Refused(f"notice {notice_id} has no sealed message left to send")
        await tx.receipts.append("requeued", at=now, ref=row.ref, school=row.school,
                                 notice=notice_id, previous=state, operator=current_operator())
        return row, state

    row, state = await ctx.store.write(requeue)
    log.info("notice.requeued", ref=row.ref, school=row.school, notice=notice_id,
             previous=state)
    was = f"was {state}" + (f": {row.last_reply}" if row.last_reply else "")
    return (f"notice {notice_id} ({row.ref} for {row.school}) queued again ({was}); "
            "the running daemon tries it now")
