"""The acknowledgement link of an OpenPGP notice: `/bevestig/{token}`.

Takes the token the decrypted notice's link carries; the GET shows one button and changes
nothing (a mail scanner may fetch it), the POST records the acknowledgement as a reply to the
`ack+TOKEN@` address does (`gateway.ingress.acks`): the notice's acknowledged time and a receipt
`acknowledged` with via "link", in one transaction. Produces a Dutch page; an unknown or used
token is a 404 page naming the helpdesk.
"""

from __future__ import annotations

import datetime as dt
import functools

from aiohttp import web

from gateway.core.records import NoticeRecord
from gateway.crypto.pickupbox import ack_digest
from gateway.observe.logs import get_logger
from gateway.store.api import Tx
from gateway.web.site import message, page, site_of

log = get_logger("web")

GONE = ("Deze link werkt niet (meer). Misschien hebt u het bericht al bevestigd; dan hoeft u "
        "niets meer te doen.")


def _digest(request: web.Request) -> str:
    return ack_digest(site_of(request).ctx.vault, request.match_info["token"])


async def show(request: web.Request) -> web.Response:
    if not await site_of(request).ctx.store.notices.ack_pending(_digest(request)):
        return message(request, 404, "Link niet geldig", GONE)
    return page(request, "confirm.html", title="Bericht gelezen?",
                token=request.match_info["token"])


async def _record(digest: str, now: dt.datetime, tx: Tx) -> NoticeRecord | None:
    notice = await tx.notices.acknowledge(digest, now)
    if notice is not None:
        await tx.receipts.append("acknowledged", at=now, ref=notice.ref, school=notice.school,
                                 notice=notice.id, via="link")
    return notice


async def acknowledge(request: web.Request) -> web.Response:
    ctx = site_of(request).ctx
    notice = await ctx.store.write(functools.partial(_record, _digest(request), ctx.clock()))
    if notice is None:
        return message(request, 404, "Link niet geldig", GONE)
    log.info("notice.acknowledged", ref=notice.ref, school=notice.school, notice=notice.id,
             via="link")
    return message(request, 200, "Dank u wel",
                   "Wij hebben vastgelegd dat u het bericht hebt gelezen. U hoeft verder niets "
                   "te doen.", helpdesk=False)


def routes(token: str) -> list[web.RouteDef]:
    return [web.get(f"/bevestig/{token}", show, name="confirm"),
            web.post(f"/bevestig/{token}", acknowledge, name="confirm_post")]
