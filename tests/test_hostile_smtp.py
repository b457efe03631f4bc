"""Hostile input over the real wire: SMTP protocol attacks on a raw socket (smuggling, bare LF,
commands pipelined with STARTTLS, AUTH before TLS or overlong, recipient after recipient),
against a complete running gateway. Every test gets a fresh gateway.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog
from conftest import GATEWAY, PASSWORD, SCHOOL_A, SCHOOL_B, SENDER, SENDER_ADDRESS, Harness
from forgeries import Forge, assert_nothing_delivered
from hostile import RawReply, RawSMTP, auth_plain, dot_stuff

# -- SMTP protocol attacks on a raw socket ------------------------------------------------------


def ca_file(h: Harness) -> Path:
    return h.ctx.config.smtp.tls_cert.parent / "ca.pem"


async def open_transaction(h: Harness) -> RawSMTP:
    """A raw session up to the 354 of DATA: EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT."""
    client = await RawSMTP.connect("127.0.0.1", h.port)
    assert (await client.command("EHLO attacker.example")).code == 250
    await client.starttls(ca_file(h))
    assert (await client.command("EHLO attacker.example")).code == 250
    assert (await client.login(SENDER, PASSWORD)).code == 235
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    assert (await client.command(f"RCPT TO:<{GATEWAY}>")).code == 250
    assert (await client.command("DATA")).code == 354
    return client


SMUGGLE_MARKERS = {"lf-dot-crlf": b"\n.\r\n", "cr-dot-crlf": b"\r.\r\n", "lf-dot-lf": b"\n.\n",
                   "crlf-dot-cr": b"\r\n.\r"}


@pytest.mark.parametrize("marker", list(SMUGGLE_MARKERS))
async def test_smuggled_second_transaction_is_not_one(harness: Harness, forge: Forge,
                                                      marker: str) -> None:
    """A fake end-of-data then MAIL/RCPT/DATA inside one DATA is message text: one reply only."""
    client = await open_transaction(harness)
    smuggled = (SMUGGLE_MARKERS[marker]
                + f"MAIL FROM:<{SENDER_ADDRESS}>\r\nRCPT TO:<{GATEWAY}>\r\nDATA\r\n".encode()
                + dot_stuff(forge.extra["daan"]) + b".\r\nQUIT\r\n")
    await client.write(dot_stuff(forge.extra["good"]).rstrip(b"\r\n") + smuggled)
    replies = await client.replies_until_closed()
    await client.close()
    assert [r.code for r in replies] == [250, 221], replies
    assert replies[0].text.startswith("2.0.0 Signal accepted")
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1
    assert harness.inboxes[SCHOOL_B].received == [], "the smuggled signal was delivered"
    assert [r.event for r in await harness.receipts()].count("accepted") == 1


async def test_bare_lf_data_is_one_transaction(harness: Harness, forge: Forge) -> None:
    """Bare-LF lines, an LF-only dot and LF commands inside DATA end nothing: one reply only."""
    short = (b"Subject: x\nContent-Type: text/plain\n\nhello\n.\n"
             + f"MAIL FROM:<{SENDER_ADDRESS}>\nRCPT TO:<{GATEWAY}>\nDATA\n".encode()
             + b"Subject: smuggled\n\nNaam: Daan de Vries\r\n.\r\nQUIT\r\n")
    client = await open_transaction(harness)
    await client.write(short)
    replies = await client.replies_until_closed()
    await client.close()
    assert [(r.code, r.text.split(" ", 1)[0]) for r in replies] == [(554, "5.7.5"),
                                                                     (221, "Bye")], replies
    # A whole signal in bare LF is one over-long line: refused, still a single reply.
    client = await open_transaction(harness)
    await client.write(forge.extra["good"].replace(b"\r\n", b"\n")
                       + f".\nMAIL FROM:<{SENDER_ADDRESS}>\nRCPT TO:<{GATEWAY}>\nDATA\n".encode()
                       + forge.extra["daan"].replace(b"\r\n", b"\n") + b"\r\n.\r\nQUIT\r\n")
    replies = await client.replies_until_closed()
    await client.close()
    assert len(replies) == 2 and replies[0].code >= 500 and replies[1].code == 221, replies
    await assert_nothing_delivered(harness)


async def test_commands_pipelined_with_starttls_are_discarded(harness: Harness) -> None:
    """AUTH and MAIL sent in the same segment as STARTTLS are never answered or obeyed."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    assert (await client.command("EHLO attacker.example")).code == 250
    await client.write(b"STARTTLS\r\n" + auth_plain(SENDER, PASSWORD)
                       + f"MAIL FROM:<{SENDER_ADDRESS}>\r\n".encode())
    assert (await client.reply()).code == 220
    await client.starttls(ca_file(harness), send_command=False)
    noop = await client.command("NOOP")
    assert noop.code == 250, f"a pipelined command was answered after TLS: {noop}"
    assert (await client.command("EHLO attacker.example")).code == 250
    # MAIL is open to schools' acknowledgements; the intake address needs the AUTH that was
    # sent before TLS and must have been thrown away.
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    rcpt = await client.command(f"RCPT TO:<{GATEWAY}>")
    assert (rcpt.code, rcpt.text.split(" ", 1)[0]) == (530, "5.7.0"), \
        f"the pipelined AUTH was obeyed: {rcpt}"
    assert (await client.command("QUIT")).code == 221
    await client.close()


async def test_auth_before_starttls_gets_530_570(harness: Harness) -> None:
    """AUTH is not offered before STARTTLS, and AUTH PLAIN/LOGIN there get 530 5.7.0."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    ehlo = await client.command("EHLO attacker.example")
    assert not any(line.upper().startswith("AUTH") for line in ehlo.lines), ehlo
    replies: list[RawReply] = [await client.login(SENDER, PASSWORD),
                               await client.command("AUTH LOGIN")]
    for reply in replies:
        assert (reply.code, reply.text.split(" ", 1)[0]) == (530, "5.7.0"), reply
    mail = await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")
    assert mail.code == 530
    assert (await client.command("QUIT")).code == 221
    await client.close()



@pytest.mark.parametrize("mechanism", ["AUTH PLAIN", "AUTH LOGIN"])
async def test_overlong_auth_answer_is_cut_with_421_not_a_gateway_failure(
        harness: Harness, mechanism: str) -> None:
    """An answer to a 334 longer than a line (attack review: 1,100 bytes gave 451 4.3.0 and a
    session.failed error) ends the session with 421 4.7.0 and logs only the cut."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    await client.command("EHLO attacker.example")
    await client.starttls(ca_file(harness))
    await client.command("EHLO attacker.example")
    assert (await client.command(mechanism)).code == 334
    with structlog.testing.capture_logs() as logs:
        await client.write(b"A" * 1100 + b"\r\n")
        replies = await client.replies_until_closed()
    await client.close()
    assert [(r.code, r.text) for r in replies] == \
        [(421, "4.7.0 Authentication line too long, closing connection")]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []
    assert {"event": "session.cut", "reason": "auth_line"}.items() <= \
        next(e for e in logs if e["event"] == "session.cut").items()


async def test_session_naming_recipient_after_recipient_is_closed(harness: Harness) -> None:
    """An authenticated session naming recipient after foreign recipient (1,000 RCPTs made 500
    log lines in 0.1 s in the attack review) gets 550 ten times, then 421 and the close."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    await client.command("EHLO attacker.example")
    await client.starttls(ca_file(harness))
    await client.command("EHLO attacker.example")
    assert (await client.login(SENDER, PASSWORD)).code == 235
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    with structlog.testing.capture_logs() as logs:
        codes = [(await client.command(f"RCPT TO:<victim{i}@example.org>")).code
                 for i in range(10)]
        await client.write(b"RCPT TO:<victim10@example.org>\r\nRCPT TO:<victim11@example.org>\r\n")
        rest = await client.replies_until_closed()
    await client.close()
    assert codes == [550] * 10
    assert [(r.code, r.text) for r in rest] == \
        [(421, "4.7.0 Too many refused recipients, closing connection")]
    assert [e["event"] for e in logs].count("envelope.refused") == 10
