"""Acknowledgements: a school's reply to the `ack+TOKEN@` address that only the decrypted notice
shows (`delivery/seal.py`), taken by the same listener as signals, without AUTH.

Takes the envelope and content of an unauthenticated transaction whose recipients are all
acknowledgement addresses; produces a receipt `acknowledged` (and the notice's acknowledged
time) per live token, in one store transaction each, and the reply. RCPT looks a token up
(`ack_recipient`): an unknown or used one is `550 5.1.1` and charges the client address (see
`IntakeHandler.refused`); at most `MAX_ACK_RECIPIENTS` distinct addresses per transaction
(`452 4.5.3`), the same one twice is one. A null sender or an automatic reply (RFC 3834
`Auto-Submitted` other than `no`, `Precedence: auto_reply/bulk/junk/list`, `X-Autoreply`,
`X-Autorespond`) is refused with `550 5.7.1` and records nothing: an out-of-office must not stop
an escalation. The content is otherwise discarded unread. A failing store raises to aiosmtpd,
which answers `451 4.3.0` through `IntakeHandler.handle_exception`.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable

from aiosmtpd.smtp import Envelope, Session

from gateway.core.records import NoticeRecord
from gateway.ingress.wire import peer_host
from gateway.observe.logs import get_logger
from gateway.pipeline.context import Context
from gateway.store.api import Tx

log = get_logger("ingress")

AUTOMATIC_REPLY = "550 5.7.1 An automatic reply is not an acknowledgement"
UNKNOWN_ACK = "550 5.1.1 Unknown or already used acknowledgement address"
# A reply goes to one notice's address; a few in one transaction are allowed (a contact
# answering several notices at once), hundreds would be a cheap way to make us look them up.
MAX_ACK_RECIPIENTS = 5


class AckEnvelope(Envelope):
    """aiosmtpd's envelope (one per transaction), and the ack tokens looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.ack_tried: set[str] = set()


class Acknowledgements:
    """RCPT and DATA of the transactions that carry acknowledgements; one per listener."""

    def __init__(self, ctx: Context, address: str, refused: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.address = address  # the intake address: acknowledgements come to its domain
        self.refused = refused  # charges a client address with a refusal

    def ack_domain(self, address: str) -> bool:
        """Whether `address` is in the intake address's domain, where ack addresses live."""
        return address.lower().rpartition("@")[2] == self.address.rpartition("@")[2]

    async def ack_recipient(self, session: Session, envelope: Envelope, address: str,
                            token: str) -> str:
        """RCPT of an acknowledgement address whose token is `token`: 250 for a live one."""
        peer = peer_host(session)
        if null_sender(envelope.mail_from):
            # RFC 3834 §2: automatic responses go to the null path. Nobody read the notice.
            log.warning("acknowledgement.refused", peer=peer, reason="null_sender")
            return AUTOMATIC_REPLY
        # The same address again is the same answer without a second look-up; at most
        # MAX_ACK_RECIPIENTS distinct ones are looked up per transaction.
        tried = envelope.ack_tried if isinstance(envelope, AckEnvelope) else set()
        if token in tried:
            return "250 2.1.5 OK" if token in {ack_token(a) for a in envelope.rcpt_tos} \
                else UNKNOWN_ACK
        if len(tried) >= MAX_ACK_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        tried.add(token)
        if not await self.ctx.store.notices.ack_pending(self.ctx.vault.digest("ack", token)):
            self.refused(peer)  # guessing tokens costs the guesser its address for a while
            return UNKNOWN_ACK
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def acknowledge(self, session: Session, envelope: Envelope) -> str:
        """Record each acknowledgement; the reply's content is discarded unread, except for the
        header fields that say a machine wrote it: those record nothing."""
        marker = automatic_reply(envelope.original_content or b"")
        if marker is not None:
            log.warning("acknowledgement.refused", peer=peer_host(session), reason=marker)
            return AUTOMATIC_REPLY
        now = self.ctx.clock()
        for address in envelope.rcpt_tos:
            token = ack_token(address)
            if token is None:
                continue
            notice = await self.ctx.store.write(functools.partial(
                _record_acknowledgement, self.ctx.vault.digest("ack", token), now))
            if notice is not None:
                log.info("notice.acknowledged", ref=notice.ref, school=notice.school,
                         notice=notice.id)
        return "250 2.0.0 Acknowledgement recorded, thank you"


async def _record_acknowledgement(ack_digest: str, now: dt.datetime,
                                  tx: Tx) -> NoticeRecord | None:
    notice = await tx.notices.acknowledge(ack_digest, now)
    if notice is not None:
        await tx.receipts.append("acknowledged", at=now, ref=notice.ref, school=notice.school,
                                 notice=notice.id)
    return notice


def ack_token(address: str) -> str | None:
    """The token of an `ack+TOKEN@domain` address (26 base32 characters, either case), or None.

    ASCII only: `str.lower` folds some other characters into ASCII letters (the Kelvin sign
    into `k`), and a token is exactly what `seal.new_ack_token` wrote, nothing that lowers to it.
    """
    local = address.rpartition("@")[0]
    if not local.isascii():
        return None
    prefix, plus, token = local.lower().partition("+")
    if prefix != "ack" or not plus or len(token) != 26:
        return None
    return token if all(c in "abcdefghijklmnopqrstuvwxyz234567" for c in token) else None


def null_sender(mail_from: str | None) -> bool:
    """`MAIL FROM:<>` (aiosmtpd gives the path as "<>")."""
    return (mail_from or "").strip() in ("", "<>")


_COMMENT = re.compile(r"\([^()]*\)")
_BLANK_LINE = re.compile(rb"(?:\A|\n)\r?\n")  # the end of the header section (RFC 5322 §2.1)
# Precedence values that list managers and vacation programs set (RFC 3834 §3.1.8, RFC 2076).
_BULK = frozenset({"auto_reply", "bulk", "junk", "list"})


def automatic_reply(message: bytes) -> str | None:
    """Why a reply was written by a machine, from its header section alone; None for a person.

    "auto_submitted" for RFC 3834 `Auto-Submitted` with any value but `no` (comments and
    parameters aside; an empty value is not `no` either), "precedence" for
    `Precedence: auto_reply/bulk/junk/list`, "x_autoreply" / "x_autorespond" for those fields
    (vacation, Exchange and many ticket systems set them). Reads only up to the first empty
    line; any bytes at all are taken (as Latin-1, which cannot fail).
    """
    blank = _BLANK_LINE.search(message)
    end = blank.start() if blank is not None else len(message)
    fields: list[str] = []
    for line in message[:end].decode("latin-1").split("\n"):
        line = line.rstrip("\r")
        if line[:1] in (" ", "\t") and fields:
            fields[-1] += line  # RFC 5322 §2.2.3: folded
        else:
            fields.append(line)
    for field in fields:
        name, colon, value = field.partition(":")
        if not colon:
            continue
        name = name.strip().lower()
        value = _COMMENT.sub(" ", value).strip().lower()
        if name == "auto-submitted" and value.split(";")[0].strip() != "no":
            return "auto_submitted"
        if name == "precedence" and value in _BULK:
            return "precedence"
        if name in ("x-autoreply", "x-autorespond"):
            return name.replace("-", "_")
    return None

