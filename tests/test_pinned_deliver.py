"""Delivery: decisions pinned where a mutation run (`make mutate`, mutate/run.py) found that the
tests would not notice a wrong answer: each test here fails on at least one mutant that survived
before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt
import ssl

import aiosmtplib
import pytest

from gateway.core.policy import backoff_at
from gateway.delivery.deliver import (
    Result,
    _command_of,
    classify_reply,
    failure_reason,
    our_problem,
)

# -- deliver: the reply classes at their edges ---------------------------------------------------


@pytest.mark.parametrize(("code", "result"), [
    (199, Result.TEMPORARY), (200, Result.DELIVERED), (299, Result.DELIVERED),
    (300, Result.TEMPORARY), (399, Result.TEMPORARY), (400, Result.TEMPORARY),
    (499, Result.TEMPORARY), (500, Result.PERMANENT), (501, Result.PERMANENT),
    (599, Result.PERMANENT), (600, Result.TEMPORARY),
])
def test_reply_classes_at_their_first_and_last_code(code: int, result: Result) -> None:
    """x00 and x99 belong to their class: 200-299 delivered, 400-499 temporary, 500-599
    permanent, everything else (not SMTP) temporary."""
    assert classify_reply(code, "text").result is result


def test_backoff_doubles_up_to_thirty_times_at_most() -> None:
    """The doubling stops at 2**30 (the cap on the exponent keeps the number small)."""
    now = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)
    huge = 2**40
    assert backoff_at(31, now, 1, huge) == now + dt.timedelta(seconds=2**30)
    assert backoff_at(32, now, 1, huge) == now + dt.timedelta(seconds=2**30)


# --- deliver: the gateway's own set-up faults (issue 12) at their edges ---


@pytest.mark.parametrize(("code", "expected"), [(499, None), (500, "relay_denied"),
                                                (599, "relay_denied"), (600, None)])
def test_classify_reply_our_problem_is_5xx_only(code: int, expected: str | None) -> None:
    """Only a 5xx can be the gateway's set-up: 500 and 599 are, 499 and 600 are not."""
    assert our_problem(code, "5.7.1 Relay access denied", "RCPT") == expected


def test_classify_reply_helo_refusal_by_command_alone() -> None:
    """A 5xx to HELO (however the command is spelt) is the EHLO name, whatever its text."""
    assert our_problem(550, "5.7.1 go away", "helo") == "ehlo_rejected"
    assert our_problem(550, "5.7.1 go away", "HELO") == "ehlo_rejected"
    assert our_problem(550, "5.7.1 go away", "RCPT") is None


def test_classify_reply_authentication_wanted_at_mail() -> None:
    """530 at MAIL is authentication wanted whatever it says; other codes need 5.7.0, 5.7.1
    or Exchange's 5.7.57 and the word; at RCPT it is the school's refusal."""
    assert our_problem(530, "Must issue a STARTTLS command first", "MAIL") == "auth_required"
    assert our_problem(550, "5.7.57 Client was not authenticated to send anonymous mail",
                       "MAIL") == "auth_required"
    assert our_problem(550, "5.7.1 Client was not authenticated", "MAIL") == "auth_required"
    assert our_problem(550, "5.7.2 Client was not authenticated", "MAIL") is None
    assert our_problem(550, "5.7.57 Client was not authenticated", "RCPT") is None


@pytest.mark.parametrize("code", [400, 499])
def test_classify_reply_4xx_edges_are_temporary_not_unknown(code: int) -> None:
    """400 and 499 are plain temporary replies, not replies outside SMTP ("not_smtp")."""
    assert classify_reply(code, "4.0.0 later").reason == "temporary"


def test_classify_reply_keeps_the_reply_with_the_fix_reason() -> None:
    """A set-up fault is TEMPORARY with the whole reply and the reason key of its fix."""
    outcome = classify_reply(504, "5.5.2 <localhost>: Helo command rejected", "RCPT")
    assert outcome.result is Result.TEMPORARY
    assert outcome.reply == "504 5.5.2 <localhost>: Helo command rejected"
    assert outcome.reason == "ehlo_rejected"


@pytest.mark.parametrize(("exc", "reason"), [
    (TimeoutError(), "timeout"),
    (ssl.SSLError("certificate verify failed"), "tls"),
    (aiosmtplib.SMTPException("server does not support STARTTLS"), "no_starttls"),
    (aiosmtplib.SMTPException("something else"), "smtp_error"),
    (ConnectionRefusedError(), "connection"),
    (ValueError("odd"), "smtp_error"),
])
def test_failure_reason_names_each_kind(exc: BaseException, reason: str) -> None:
    """An attempt that ended without an SMTP reply gets the reason key of its kind."""
    assert failure_reason(exc) == reason


@pytest.mark.parametrize(("exc", "command"), [
    (aiosmtplib.SMTPHeloError(504, "x"), "EHLO"),
    (aiosmtplib.SMTPSenderRefused(550, "x", "a@example.org"), "MAIL"),
    (aiosmtplib.SMTPDataError(554, "x"), "DATA"),
    (aiosmtplib.SMTPConnectResponseError(554, "x"), "CONNECT"),
    (aiosmtplib.SMTPRecipientRefused(550, "x", "a@example.org"), ""),
])
def test_command_of_each_refusal(exc: aiosmtplib.SMTPResponseException, command: str) -> None:
    """Which command a refusal answered, from aiosmtplib's exception class."""
    assert _command_of(exc) == command
