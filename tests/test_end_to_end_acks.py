"""Acknowledgements on the real path: a school's mail to a notice's ack address counts only when
a person sent it (issue 11)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from pathlib import Path

from conftest import CONTACT_A, SANNE_BIRTH, SCHOOL_A, Harness, raw_sql

from gateway.devkit.demokit import json_payload, notice_header

# -- acknowledgements: only a person who read the notice (issue 11) ---------------------------


def _ack_session_sync(port: int, ca: Path, mail_from: str, rcpts: list[str],
                      message: bytes) -> list[tuple[int, str]]:
    """A school's MTA without AUTH: the replies to each RCPT, then to DATA if one was taken."""
    replies: list[tuple[int, str]] = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("school.example")
        smtp.starttls(context=ssl.create_default_context(cafile=str(ca)))
        smtp.ehlo("school.example")
        code, text = smtp.docmd("MAIL", f"FROM:<{mail_from}>")
        assert code == 250, text
        for rcpt in rcpts:
            code, text = smtp.docmd("RCPT", f"TO:<{rcpt}>")
            replies.append((code, text.decode()))
        if any(code == 250 for code, _ in replies):
            code, text = smtp.docmd("DATA")
            assert code == 354, text
            smtp.send(message.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
            code, text = smtp.getreply()
            replies.append((code, text.decode()))
    return replies


async def _ack_session(h: Harness, rcpts: list[str], message: bytes = b"", *,
                       mail_from: str = CONTACT_A) -> list[tuple[int, str]]:
    message = message or b"Subject: Re: Vertrouwelijk bericht\r\n\r\nGelezen, dank.\r\n"
    return await asyncio.to_thread(_ack_session_sync, h.port,
                                   h.ctx.config.smtp.tls_cert.parent / "ca.pem", mail_from,
                                   rcpts, message)


async def _notice_ack(h: Harness) -> tuple[str, str]:
    """A delivered notice for Sanne: its reference and the ack address inside it."""
    reply = await h.send(h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])))
    await h.drain()
    [(_, _, item)] = h.notices(SCHOOL_A)
    assert item.header("Reply-To") == "", "the ack address is not outside"
    return reply.text.rsplit(" ", 1)[1], notice_header(item, h.ids.school_a, "Reply-To")


async def _acknowledged(h: Harness, ref: str) -> bool:
    return ("acknowledged", ref) in [(r.event, r.ref) for r in await h.receipts()]


async def test_automatic_replies_are_not_acknowledgements(harness: Harness) -> None:
    """A null sender (550 5.7.1 at RCPT) and replies marked Auto-Submitted (not `no`),
    Precedence bulk/junk/auto_reply, X-Autoreply or X-Autorespond (550 5.7.1 at DATA) record
    nothing; the person's reply afterwards is recorded, also with `Auto-Submitted: no`."""
    ref, ack = await _notice_ack(harness)
    [(code, text)] = await _ack_session(harness, [ack], mail_from="")
    assert (code, text) == (550, "5.7.1 An automatic reply is not an acknowledgement")
    for header in ("Auto-Submitted: auto-replied", "auto-submitted:  Auto-Generated (vacation)",
                   "Auto-Submitted: auto-notified; owner-email=\"a@b.example\"",
                   "Precedence: bulk", "Precedence: junk", "Precedence: auto_reply",
                   "X-Autoreply: yes", "X-Autorespond: Out of office",
                   "Auto-Submitted:\r\n auto-replied"):
        message = (f"From: {CONTACT_A}\r\n{header}\r\nSubject: Automatisch antwoord\r\n\r\n"
                   "Ik ben afwezig tot maandag.\r\n").encode()
        replies = await _ack_session(harness, [ack], message)
        assert replies == [(250, "2.1.5 OK"),
                           (550, "5.7.1 An automatic reply is not an acknowledgement")], header
    assert not await _acknowledged(harness, ref)
    person = b"Auto-Submitted: no (a person)\r\nSubject: Re: Vertrouwelijk bericht\r\n\r\nOk.\r\n"
    assert (await _ack_session(harness, [ack], person))[-1][0] == 250
    assert await _acknowledged(harness, ref)


async def test_ack_recipients_are_collapsed_and_capped(harness: Harness) -> None:
    """The same ack address twice is one recipient and one acknowledgement; past five distinct
    addresses in one transaction, 452 4.5.3 without a look-up."""
    ref, ack = await _notice_ack(harness)
    replies = await _ack_session(harness, [ack, ack.upper().replace("@HWC", "@hwc"), ack])
    assert [code for code, _ in replies] == [250, 250, 250, 250]
    assert [r.event for r in await harness.receipts()].count("acknowledged") == 1
    assert await _acknowledged(harness, ref)
    unknown = [f"ack+{c * 26}@hwc.example.nl" for c in "abcdefg"]
    replies = await _ack_session(harness, [*unknown[:5], unknown[0], *unknown[5:]])
    assert [code for code, _ in replies] == [550] * 6 + [452, 452]
    assert replies[-1][1] == "4.5.3 Too many recipients"


async def test_ack_token_of_an_earlier_notice_is_still_taken(harness: Harness) -> None:
    """A token stored before the address moved inside (notices already sent) still acknowledges."""
    ref, _ = await _notice_ack(harness)
    token = "q" * 26

    raw_sql(harness.ctx.config.storage.path, "UPDATE notices SET ack_digest = ? WHERE ref = ?",
            (harness.ctx.vault.digest("ack", token), ref))
    replies = await _ack_session(harness, [f"ack+{token}@hwc.example.nl"])
    assert replies[-1][0] == 250 and await _acknowledged(harness, ref)
