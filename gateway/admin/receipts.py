"""What the `receipts` verbs do: check the hash chain, and list or find receipts.

Takes the store (`receipts_verify`) or a `Context`; produces the count and the chain's problems,
or receipt rows (a child's found by its keyed pseudonym, never by its name). Reads only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from gateway.core.names import pseudonym_text
from gateway.pipeline.context import Context
from gateway.store.api import Store
from gateway.store.chain import chain_problems


async def receipts_verify(store: Store) -> tuple[int, list[str]]:
    rows = await store.receipts.all()
    anchor = await store.receipts.anchor()
    problems = chain_problems(rows, store.chain_key, anchor)
    # The anchor itself is vouched for by the newest purge receipt, which is inside the chain.
    purges = [r for r in rows if r.event == "purged" and r.detail.get("anchor")]
    if anchor is not None and (not purges or purges[-1].detail["anchor"] != [anchor.seq,
                                                                               anchor.hash]):
        problems.insert(0, "the chain's starting point does not match the last purge receipt")
    return len(rows), problems


async def receipts_find(ctx: Context, name: str, birthdate: dt.date) -> list[dict[str, Any]]:
    pseudonym = ctx.vault.pseudonym(pseudonym_text(name), birthdate.isoformat())
    return [_receipt_row(r) for r in await ctx.store.receipts.by_pseudonym(pseudonym)]


def _receipt_row(r: Any) -> dict[str, Any]:
    return {"seq": r.seq, "at": r.at, "event": r.event, "ref": r.ref, "school": r.school,
            **r.detail}


async def receipts_list(ctx: Context, since: dt.datetime | None) -> list[dict[str, Any]]:
    return [_receipt_row(r) for r in await ctx.store.receipts.all(since=since)]
