"""Tests for delivery.deliver: reply classification, backoff, and real deliveries over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from conftest import Template

from gateway.core.policy import backoff_at
from gateway.core.validate import HostPort
from gateway.crypto.tlsdev import make_ca, make_server_cert
from gateway.delivery.deliver import (
    FIXES,
    Outcome,
    Result,
    classify_reply,
    our_problem,
    send,
    tls_context,
)
from gateway.devkit.demokit import SchoolInbox

MESSAGE = (b"From: leerplicht@hwc.example.nl\r\nTo: hwc@regenboog.example.nl\r\n"
           b"Subject: Vertrouwelijk bericht\r\nMessage-ID: <abc@hwc.example.nl>\r\n\r\n"
           b"sealed\r\n")
FROM, TO = "leerplicht@hwc.example.nl", "hwc@regenboog.example.nl"
NOW = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (250, "2.0.0 Ok: queued as ABC",
         Outcome(Result.DELIVERED, "250 2.0.0 Ok: queued as ABC", "delivered")),
        (251, "2.1.5 will forward", Outcome(Result.DELIVERED, "251 2.1.5 will forward")),
        (421, "4.3.2 shutting down",
         Outcome(Result.TEMPORARY, "421 4.3.2 shutting down", "temporary")),
        (451, "4.3.0 later", Outcome(Result.TEMPORARY, "451 4.3.0 later", "temporary")),
        (499, "", Outcome(Result.TEMPORARY, "499", "temporary")),
        (550, "5.1.1 no such user",
         Outcome(Result.PERMANENT, "550 5.1.1 no such user", "refused")),
        (554, "5.7.1 rejected", Outcome(Result.PERMANENT, "554 5.7.1 rejected", "refused")),
        (599, "x", Outcome(Result.PERMANENT, "599 x", "refused")),
        (199, "odd", Outcome(Result.TEMPORARY, "199 odd", "not_smtp")),
        (354, "go ahead", Outcome(Result.TEMPORARY, "354 go ahead", "not_smtp")),
        (600, "not smtp", Outcome(Result.TEMPORARY, "600 not smtp", "not_smtp")),
        (-1, "no code", Outcome(Result.TEMPORARY, "-1 no code", "not_smtp")),
    ],
)
def test_classify_reply_by_code_class(code: int, text: str, expected: Outcome) -> None:
    """2xx delivered, 4xx temporary, 5xx permanent, anything else temporary (retry)."""
    assert classify_reply(code, text) == expected


# (command, code, text, reason): a 5xx that says the gateway is set up wrong is temporary.
OURS = [
    ("EHLO", 504, "5.5.2 Helo command rejected: need fully-qualified hostname", "ehlo_rejected"),
    ("EHLO", 550, "Access denied", "ehlo_rejected"),
    ("HELO", 501, "5.5.4 Syntax: HELO hostname", "ehlo_rejected"),
    ("RCPT", 504, "5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
     "ehlo_rejected"),
    ("RCPT", 554, "5.7.1 <hwc@regenboog.example.nl>: Relay access denied", "relay_denied"),
    ("RCPT", 550, "5.7.1 Unable to relay", "relay_denied"),
    ("RCPT", 550, "5.7.1 Relaying denied", "relay_denied"),
    ("", 550, "5.7.1 Message rejected: relay not permitted", "relay_denied"),
    ("MAIL", 530, "5.7.0 Authentication required", "auth_required"),
    ("MAIL", 530, "5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM",
     "auth_required"),
    ("MAIL", 550, "5.7.1 Authentication required before sending", "auth_required"),
    ("MAIL", 553, "5.7.0 Must be authenticated", "auth_required"),
]
# ...and a 5xx that is the server's answer about the notice is still permanent.
THEIRS = [
    ("RCPT", 550, "5.1.1 <hwc@regenboog.example.nl>: Recipient address rejected"),
    ("DATA", 554, "5.7.1 Message rejected as spam"),
    ("MAIL", 550, "5.7.1 Sender address rejected: domain not found"),
    ("MAIL", 552, "5.3.4 Message size exceeds fixed limit"),
    ("DATA", 550, "5.7.1 Authentication results say no"),  # 'authenticat' at DATA: theirs
    ("RCPT", 550, "5.7.1 <hwc@regenboog.example.nl>: Recipient address rejected: Access denied"),
]


@pytest.mark.parametrize(("command", "code", "text", "reason"), OURS)
def test_our_own_misconfiguration_is_temporary_with_a_fix(command: str, code: int, text: str,
                                                          reason: str) -> None:
    """A 5xx to EHLO/HELO, a relay refusal, or authentication wanted at MAIL is the gateway's
    set-up, not the school refusing: TEMPORARY, with a reason that has a fix for the
    administrator."""
    outcome = classify_reply(code, text, command)
    assert outcome == Outcome(Result.TEMPORARY, f"{code} {text}", reason)
    assert reason in FIXES and our_problem(code, text, command) == reason


@pytest.mark.parametrize(("command", "code", "text"), THEIRS)
def test_the_schools_refusal_stays_permanent(command: str, code: int, text: str) -> None:
    """A 5xx about the notice or its recipient stays PERMANENT (refused)."""
    assert classify_reply(code, text, command) == Outcome(Result.PERMANENT, f"{code} {text}",
                                                         "refused")
    assert our_problem(code, text, command) is None


def test_a_4xx_is_temporary_whatever_it_says() -> None:
    """A 4xx is TEMPORARY with the plain reason, even when its text names HELO or relaying."""
    assert classify_reply(450, "4.7.1 Helo command rejected: Host not found", "RCPT") == \
        Outcome(Result.TEMPORARY, "450 4.7.1 Helo command rejected: Host not found", "temporary")


def test_classify_reply_folds_multiline_text() -> None:
    """A multi-line reply is folded into one line of single spaces, at most 300 characters."""
    outcome = classify_reply(550, "5.7.1 first line\n  second\tline\r\n" + "x" * 500)
    assert outcome.result is Result.PERMANENT
    assert outcome.reply.startswith("550 5.7.1 first line second line x")
    assert "\n" not in outcome.reply and "\r" not in outcome.reply
    assert len(outcome.reply) == len("550 ") + 300


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(0, 60), (1, 60), (2, 120), (3, 240), (4, 480), (5, 960), (6, 1800), (7, 1800),
     (40, 1800), (10_000, 1800)],
)
def test_next_attempt_at_doubles_up_to_the_cap(attempts: int, seconds: int) -> None:
    """Backoff starts at the minimum after the first failure, doubles, and stops at the maximum."""
    assert backoff_at(attempts, NOW, 60, 1800) == NOW + dt.timedelta(seconds=seconds)


def test_tls_context_verifies_and_requires_tls12() -> None:
    """The client context checks the certificate and the host name, TLS 1.2 at least."""
    import ssl
    ctx = tls_context(None)
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname is True
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


@pytest.fixture
async def inbox(template: Template) -> AsyncIterator[SchoolInbox]:
    box = SchoolInbox()
    await box.start(template.school_cert)
    try:
        yield box
    finally:
        await box.stop()


async def deliver_to(port: int, ca_file: Path | None, *, limit: float = 10,
                     recipients: tuple[str, ...] = (TO,)) -> Outcome:
    return await send(MESSAGE, mail_from=FROM, recipients=recipients,
                      destination=HostPort("127.0.0.1", port), context=tls_context(ca_file),
                      timeout=limit, local_hostname="hwc.example.nl")


async def test_send_delivers_over_verified_starttls(inbox: SchoolInbox,
                                                    template: Template) -> None:
    """A school server with a certificate of the configured CA gets the message: DELIVERED, 250."""
    outcome = await deliver_to(inbox.port, template.school_ca)
    assert outcome.result is Result.DELIVERED
    assert outcome.reply.startswith("250 2.0.0 Ok: queued as ")
    assert len(inbox.received) == 1
    item = inbox.received[0]
    assert (item.mail_from, item.rcpt_tos) == (FROM, [TO])
    assert item.data.replace(b"\r\n", b"\n").endswith(b"sealed\n")
    assert item.header("Message-ID") == "<abc@hwc.example.nl>"


async def test_send_451_is_temporary(inbox: SchoolInbox, template: Template) -> None:
    """A 4xx reply to DATA is TEMPORARY and carries the server's reply."""
    inbox.fail_next("451 4.3.0 later")
    outcome = await deliver_to(inbox.port, template.school_ca)
    assert outcome == Outcome(Result.TEMPORARY, "451 4.3.0 later", "temporary")
    assert inbox.received == []


async def test_send_550_is_permanent(inbox: SchoolInbox, template: Template) -> None:
    """A 5xx reply to DATA is PERMANENT and carries the server's reply."""
    inbox.fail_next("550 5.1.1 no such user")
    outcome = await deliver_to(inbox.port, template.school_ca)
    assert outcome == Outcome(Result.PERMANENT, "550 5.1.1 no such user", "refused")
    assert inbox.received == []


async def test_ehlo_refused_is_temporary_and_nothing_is_sent(inbox: SchoolInbox,
                                                            template: Template) -> None:
    """A school server answering EHLO with 504 5.5.2 (and HELO, which the client tries next,
    with a refusal too): TEMPORARY (ehlo_rejected), the message never sent; the name given in
    EHLO is the configured one."""
    inbox.fail_command("EHLO", "504 5.5.2 <localhost>: Helo command rejected: need"
                               " fully-qualified hostname")
    outcome = await deliver_to(inbox.port, template.school_ca)
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "ehlo_rejected")
    assert outcome.reply.startswith("5") and inbox.received == []
    assert inbox.ehlo_names == ["hwc.example.nl"]


async def test_relay_denied_at_rcpt_is_temporary(template: Template) -> None:
    """`554 5.7.1 Relay access denied` to every recipient: TEMPORARY (relay_denied)."""
    box = RefusingInbox()
    await box.start(template.school_cert)
    try:
        outcome = await deliver_to(box.port, template.school_ca,
                                   recipients=("relay@elsewhere.example",))
    finally:
        await box.stop()
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "relay_denied")
    assert box.received == []


async def test_authentication_wanted_at_mail_is_temporary(inbox: SchoolInbox,
                                                          template: Template) -> None:
    """`530 5.7.0 Authentication required` to MAIL: TEMPORARY (auth_required)."""
    inbox.fail_command("MAIL", "530 5.7.0 Authentication required")
    outcome = await deliver_to(inbox.port, template.school_ca)
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "auth_required")
    assert inbox.received == []


class RefusingInbox(SchoolInbox):
    """A school server that refuses one recipient at RCPT time."""

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address.startswith("gone@"):
            return "550 5.1.1 no such user"
        if address.startswith("relay@"):
            return f"554 5.7.1 <{address}>: Relay access denied"
        envelope.rcpt_tos.append(address)
        return "250 OK"


async def test_send_all_recipients_refused_is_permanent(template: Template) -> None:
    """When the only recipient is refused at RCPT with 5xx, the outcome is PERMANENT."""
    box = RefusingInbox()
    await box.start(template.school_cert)
    try:
        outcome = await deliver_to(box.port, template.school_ca,
                                   recipients=("gone@regenboog.example.nl",))
    finally:
        await box.stop()
    assert outcome.result is Result.PERMANENT
    assert "550" in outcome.reply and "gone@regenboog.example.nl" in outcome.reply
    assert box.received == []


async def test_send_some_recipients_refused_is_delivered_with_note(template: Template) -> None:
    """One of two recipients refused: delivered to the other, the refusal noted in the reply."""
    box = RefusingInbox()
    await box.start(template.school_cert)
    try:
        outcome = await deliver_to(box.port, template.school_ca,
                                   recipients=(TO, "gone@regenboog.example.nl"))
    finally:
        await box.stop()
    assert outcome.result is Result.DELIVERED
    assert outcome.reply.startswith("250 ")
    assert "(refused: gone@regenboog.example.nl: 550" in outcome.reply
    assert [r.rcpt_tos for r in box.received] == [[TO]]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_connection_refused_is_temporary(template: Template) -> None:
    """Nobody listening on the port: TEMPORARY, never PERMANENT."""
    outcome = await deliver_to(closed_port(), template.school_ca)
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "connection")


UNTRUSTED = ["system store does not know the CA", "another CA configured",
             "certificate for another host"]


async def untrusted_attempt(case: str, template: Template,
                            tmp_path: Path) -> tuple[Outcome, SchoolInbox]:
    """One delivery to a school server whose certificate must not be trusted."""
    server_cert = template.school_cert
    ca_file: Path | None = template.school_ca
    if case == "system store does not know the CA":
        ca_file = None
    elif case == "another CA configured":
        ca_file = make_ca(tmp_path / "other-ca", "some other CA")[0].cert
    else:
        ca_pair, ca_cert, ca_key = make_ca(tmp_path / "ca", "school servers CA 2")
        server_cert = make_server_cert(tmp_path / "ca", "wrong", ["mx.elsewhere.example"],
                                       ca_cert, ca_key)
        ca_file = ca_pair.cert
    box = SchoolInbox()
    await box.start(server_cert)
    try:
        return await deliver_to(box.port, ca_file), box
    finally:
        await box.stop()


@pytest.mark.parametrize("case", UNTRUSTED)
async def test_untrusted_certificate_gets_nothing(case: str, template: Template,
                                                  tmp_path: Path) -> None:
    """A certificate that does not verify: not delivered, and the server received nothing."""
    outcome, box = await untrusted_attempt(case, template, tmp_path)
    assert outcome.result is not Result.DELIVERED
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.reply
    assert box.received == []


@pytest.mark.parametrize("case", UNTRUSTED)
async def test_untrusted_certificate_is_temporary(case: str, template: Template,
                                                  tmp_path: Path) -> None:
    """A certificate that does not verify is a TEMPORARY failure (the school may fix it)."""
    outcome, _ = await untrusted_attempt(case, template, tmp_path)
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "tls")


async def test_server_without_starttls_gets_nothing(template: Template) -> None:
    """A server that offers no STARTTLS: TEMPORARY, and the message is never sent in plaintext."""
    box = SchoolInbox()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(box, hostname="plain.example"),
                                      "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        outcome = await deliver_to(port, template.school_ca)
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "no_starttls")
    assert "STARTTLS" in outcome.reply
    assert box.received == []


async def test_silent_server_times_out_as_temporary(template: Template) -> None:
    """A server that accepts the connection but never greets: TEMPORARY after the time limit."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        outcome = await deliver_to(port, template.school_ca, limit=0.3)
    finally:
        for writer in connections:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
    assert (outcome.result, outcome.reason) == (Result.TEMPORARY, "timeout")
    assert connections
