"""What the `held` verbs do: children the gateway could not route, waiting for a person.

Takes a `Context` and a child's id (`REF-N`); lists the held children, shows one decrypted (the
look is a receipt), routes one to a school by hand or drops it (its data erased). Produces rows
or a line for the administrator; fails with `Refused` and a one-line reason.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.admin.common import Refused, school_code, signal_deadline
from gateway.core.model import Child
from gateway.core.names import names_match
from gateway.core.records import from_iso, iso
from gateway.core.schedule import time_left
from gateway.observe.operator import current_operator
from gateway.pipeline.context import Context
from gateway.pipeline.intake import register_candidates
from gateway.store.api import Tx


def split_child_id(child_id: str) -> tuple[str, int]:
    ref, _, n = child_id.rpartition("-")
    if not ref or not n.isdigit():
        raise Refused("ID must be a child reference such as HWC-20261128-ABCD1234-1")
    return ref, int(n)


async def held_list(ctx: Context) -> list[dict[str, Any]]:
    now = ctx.clock()
    rows = await ctx.store.children.all(state="held")
    out = []
    for r in rows:
        signal = await ctx.store.signals.get(r.ref)
        accepted = signal.accepted_at if signal else r.updated_at
        age = now - from_iso(accepted)
        due = signal_deadline(ctx, accepted)
        out.append({"id": f"{r.ref}-{r.n}", "signal": r.ref, "reason": r.reason,
                    "school": r.school, "accepted": accepted,
                    "age_minutes": int(age.total_seconds() // 60),
                    "deadline": iso(due), "time_left": time_left(due, now)})
    return out


async def held_show(ctx: Context, child_id: str) -> dict[str, Any]:
    """Decrypt one held child for the administrator; the look itself is a receipt."""
    ref, n = split_child_id(child_id)
    row = await ctx.store.children.get(ref, n)
    if row is None or row.state != "held" or row.blob is None:
        raise Refused(f"{child_id} is not a held child")
    record = ctx.vault.open(row.blob, child_id)
    name, birthdate = str(record["name"]), str(record["birthdate"])
    candidates = []
    child = Child(name, dt.date.fromisoformat(birthdate), record.get("bsn"), record.get("school"))
    by_bsn, same_birthdate = await register_candidates(ctx.store, ctx.vault, child)
    for pupil in ([by_bsn] if by_bsn else []) + same_birthdate:
        if pupil is by_bsn or names_match(name, pupil.name):
            school = ctx.snapshot.schools.get(pupil.school)
            candidates.append({"name": pupil.name, "birthdate": pupil.birthdate.isoformat(),
                               "school": pupil.school, "school_name": school.name if school
                               else "(not in the directory)",
                               "why": "same BSN" if pupil is by_bsn else "name and birth date"})
    now = ctx.clock()

    async def shown(tx: Tx) -> None:
        await tx.receipts.append("held.shown", at=now, ref=child_id, operator=current_operator())

    await ctx.store.write(shown)
    return {"id": child_id, "reason": row.reason, "name": name, "birthdate": birthdate,
            "bsn": record.get("bsn"), "school_hint": record.get("school"),
            "candidates": candidates}


async def held_route(ctx: Context, child_id: str, school: str) -> str:
    ref, n = split_child_id(child_id)
    code = school_code(school)
    snapshot = await ctx.refresh()
    if code not in snapshot.schools:
        raise Refused(f"school {code} is not in the directory")
    if not snapshot.contacts.get(code):
        raise Refused(f"school {code} has no contact with a usable key: add one with "
                      "`schools add` first")
    now = ctx.clock()

    async def route(tx: Tx) -> None:
        if not await tx.children.set_state(ref, n, "routed", now, school=code, expect=("held",)):
            raise Refused(f"{child_id} is not a held child")
        await tx.receipts.append("routed_by_hand", at=now, ref=child_id, school=code,
                                 operator=current_operator())

    await ctx.store.write(route)
    return f"{child_id} routed to {code}; the running daemon seals and delivers it"


async def held_drop(ctx: Context, child_id: str, reason: str) -> str:
    ref, n = split_child_id(child_id)
    if not reason.strip():
        raise Refused("--reason must say why (it goes into the receipt)")
    now = ctx.clock()

    async def drop(tx: Tx) -> None:
        if not await tx.children.set_state(ref, n, "dropped", now, reason=reason[:200], erase=True,
                                           expect=("held",)):
            raise Refused(f"{child_id} is not a held child")
        await tx.receipts.append("dropped", at=now, ref=child_id, reason=reason[:200],
                                 operator=current_operator())

    await ctx.store.write(drop)
    return f"{child_id} dropped; its data is erased"
