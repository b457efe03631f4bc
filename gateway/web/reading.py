"""Reading a pickup notice: `/bericht/{token}/lezen`, "Gelezen", and the thank-you page.

Takes a link with a session bound to it (`gateway.web.pickup`); opens the notice's box with the
token from the path (`gateway.crypto.pickupbox.open_box`: only the link opens it) and shows what
an OpenPGP notice shows, in Dutch: "Handle with Care", per child name, birth date and
reference, then the teacher text. Each showing is a receipt `pickup_opened` (the contact and
the client's address); "Gelezen" (POST) marks the notice read and acknowledged, with a receipt
`acknowledged` (via "pickup", the contact), in one transaction, which stops the escalation as an
acknowledged mail does. Without a session each page sends the browser back to the landing.

The box holds `{"children": [{"name", "birthdate" (ISO date), "ref"}], "teacher_text"}`, sealed
with the associated data of its notice (`gateway.delivery.pickup.box_aad`, as that channel
seals it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.core.fields import format_date_nl
from gateway.core.model import CODEWORD
from gateway.core.records import PickupRecord, from_iso
from gateway.crypto.pickupbox import BoxError, ack_digest, open_box
from gateway.delivery.pickup import box_aad
from gateway.observe.logs import get_logger
from gateway.store.api import Tx
from gateway.web.links import Link, pickup_link
from gateway.web.site import Session, client_address, message, page, see_other, session_of, site_of

log = get_logger("web")


def paragraphs(text: str) -> list[str]:
    """Pure: the teacher text as the page's paragraphs. It is written for a mail (lines broken
    at about 90 characters, `[gateway] teacher_text`); on a screen of any width a line break
    within a paragraph would cut a sentence, so only a blank line separates paragraphs."""
    return [" ".join(block.split()) for block in re.split(r"\n\s*\n", text) if block.strip()]


@dataclass(frozen=True)
class ChildView:
    name: str
    birthdate: str
    reference: str


def children_of(box: dict[str, Any]) -> list[ChildView]:
    """Pure: the children of an opened box as the page shows them (dates as DD-MM-YYYY)."""
    shown = []
    for child in box.get("children", []):
        born = str(child.get("birthdate", ""))
        with contextlib.suppress(ValueError):  # otherwise shown as sealed
            born = format_date_nl(dt.date.fromisoformat(born))
        shown.append(ChildView(str(child.get("name", "")), born,
                               str(child.get("ref", ""))))
    return shown


async def _reader(request: web.Request) -> tuple[Link, Session] | web.Response:
    found = await pickup_link(request)
    if not isinstance(found, Link):
        return found
    session = session_of(request, "pickup", found.digest)
    if session is None:
        return see_other(f"/bericht/{found.token}")
    return found, session


async def _opened(record: PickupRecord, contact: str, client: str, now: dt.datetime,
                  tx: Tx) -> None:
    await tx.pickups.opened(record.notice_id, now)
    await tx.receipts.append("pickup_opened", at=now, ref=record.ref, school=record.school,
                             notice=record.notice_id, contact=contact, client=client)


async def show(request: web.Request) -> web.Response:
    found = await _reader(request)
    if not isinstance(found, tuple):
        return found
    link, session = found
    ctx = site_of(request).ctx
    notice = await ctx.store.notices.get(link.record.notice_id)
    try:
        if notice is None:
            raise BoxError("no notice")
        box = open_box(link.token, link.sealed, box_aad(notice.message_id))
    except BoxError:
        log.error("web.box_unreadable", notice=link.record.notice_id, school=link.record.school)
        return message(request, 500, "Er ging iets mis",
                       "Dit bericht kan op dit moment niet worden getoond.")
    now = ctx.clock()
    await ctx.store.write(functools.partial(_opened, link.record, session.email,
                                            client_address(request), now))
    log.info("pickup.opened", ref=link.record.ref, school=link.record.school,
             notice=link.record.notice_id)
    read_at = link.record.read_at or link.record.acked_at
    return page(request, "notice.html", title=CODEWORD, token=link.token,
                children=children_of(box),
                teacher_text=paragraphs(str(box.get("teacher_text", ""))),
                read_at=from_iso(read_at) if read_at else None,
                expires_at=from_iso(link.record.expires_at), fresh=True)


async def _acknowledge(record: PickupRecord, digest: str, contact: str, now: dt.datetime,
                       tx: Tx) -> bool:
    """Read and acknowledged, once; False when it already was."""
    first = await tx.pickups.read(record.notice_id, contact, now)
    notice = await tx.notices.acknowledge(digest, now)
    if notice is not None:
        await tx.receipts.append("acknowledged", at=now, ref=notice.ref, school=notice.school,
                                 notice=notice.id, via="pickup", contact=contact)
    return first or notice is not None


async def acknowledge(request: web.Request) -> web.Response:
    found = await _reader(request)
    if not isinstance(found, tuple):
        return found
    link, session = found
    ctx = site_of(request).ctx
    if await ctx.store.write(functools.partial(
            _acknowledge, link.record, ack_digest(ctx.vault, link.token), session.email,
            ctx.clock())):
        log.info("notice.acknowledged", ref=link.record.ref, school=link.record.school,
                 notice=link.record.notice_id, via="pickup")
    return see_other(f"/bericht/{link.token}/bedankt")


async def thanks(request: web.Request) -> web.Response:
    found = await _reader(request)
    if not isinstance(found, tuple):
        return found
    link = found[0]
    read_at = link.record.read_at or link.record.acked_at
    if read_at is None:
        return see_other(f"/bericht/{link.token}/lezen")
    return page(request, "thanks.html", title="Dank u wel", token=link.token,
                read_at=from_iso(read_at))


def routes(token: str) -> list[web.RouteDef]:
    base = f"/bericht/{token}"
    # No HEAD for the notice: each showing is a receipt, and a HEAD shows nothing.
    return [web.get(f"{base}/lezen", show, name="pickup_read", allow_head=False),
            web.post(f"{base}/gelezen", acknowledge, name="pickup_acknowledge"),
            web.get(f"{base}/bedankt", thanks, name="pickup_thanks")]
