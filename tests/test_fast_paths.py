"""Tests for the listener's fast readings of the envelope and the replay key: for every MAIL or
RCPT argument, what `GatewaySMTP._getaddr` answers (or raises) is exactly what aiosmtpd's own
`_getaddr` does; for every message, `intake.message_id_of` finds what a whole parse finds."""

from __future__ import annotations

import tempfile
from email import policy
from email.parser import BytesHeaderParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.ingress.session import GatewaySMTP
from gateway.ingress.wire import plain_path
from gateway.pipeline.intake import message_id_of

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hwc-gateway-hypothesis")

SETTINGS = settings(max_examples=1500, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def outcome(fn: object, arg: str) -> object:
    try:
        return fn(arg)  # type: ignore[operator]
    except Exception as exc:  # aiosmtpd lets some parser errors through; so must we
        return type(exc)


def both(arg: str, limit: int = 0) -> tuple[object, object]:
    # `_getaddr` reads nothing of a listener but its local part limit (0 = none).
    fast = GatewaySMTP.__new__(GatewaySMTP)
    fast.local_part_limit = limit
    slow = SimpleNamespace(local_part_limit=limit)
    return (outcome(fast._getaddr, arg),
            outcome(lambda a: SMTP._getaddr(slow, a), arg))  # type: ignore[arg-type]


@pytest.mark.parametrize("arg", [
    "<signalen@veiligthuis.example.nl>",
    "<signalen@veiligthuis.example.nl> SIZE=1494 BODY=8BITMIME",
    "<signalen@veiligthuis.example.nl>\t SIZE=1",
    "<a.b+c@x-y.nl>SIZE=1",
    "<a@b> (comment) SIZE=1",
    "<a@b>(comment)",
    '<"quoted local"@b>',
    "<@route:a@b>",
    "<>",
    "<a@[127.0.0.1]>",
    "<a..b@c>",
    "<.a@c>",
    "<a@b.>",
    "<a@b",
    "a@b",
    " <a@b>",
    "<ä@b>",
    "<a@b>\x0bSIZE=1",
    "<a@b> \x85 x",
])
def test_listed_paths_read_as_aiosmtpd_reads_them(arg: str) -> None:
    """Plain paths, paths with parameters, comments, quotes, routes, literals and malformed
    ones: the same address and parameters, or the same refusal, as aiosmtpd's parser."""
    fast, slow = both(arg)
    assert fast == slow


@SETTINGS
@given(local=st.text(st.sampled_from("ab.+-_'=!\"()\\ @<>"), min_size=0, max_size=8),
       domain=st.text(st.sampled_from("xy.-[]1 ()@<>"), min_size=0, max_size=8),
       rest=st.text(st.sampled_from("SIZE=1 \t()<>@a\x0b\x85"), max_size=8),
       limit=st.sampled_from([0, 3, 64]))
@example(local="abcd", domain="x", rest="", limit=3)
def test_generated_paths_read_as_aiosmtpd_reads_them(local: str, domain: str, rest: str,
                                                     limit: int) -> None:
    """Any `<local@domain>rest`, and a local part limit, in or out of the fast path: the
    answer is aiosmtpd's, a local part over the limit refused as it refuses it."""
    arg = f"<{local}@{domain}>{rest}"
    fast, slow = both(arg, limit)
    assert fast == slow


@SETTINGS
@given(st.text(max_size=24))
def test_arbitrary_text_reads_as_aiosmtpd_reads_it(arg: str) -> None:
    """Whatever a client writes after MAIL FROM: or RCPT TO:, the same answer or error."""
    fast, slow = both(arg)
    assert fast == slow


def test_the_fast_path_takes_what_senders_write() -> None:
    """The paths the bench's and a real sender's MTA write are read without the header
    parser, so the speed-up is not an accident of the test's inputs."""
    assert plain_path("<signalen@veiligthuis.example.nl> SIZE=1494") == (
        "signalen@veiligthuis.example.nl", "SIZE=1494")
    assert plain_path("<hwc@leerplicht.example.nl>") == ("hwc@leerplicht.example.nl", "")
    assert plain_path('<"x y"@b>') is None


def _message_id_by_whole_parse(raw: bytes) -> str | None:
    """The replay key as it was first read: the header parser over the whole message."""
    try:
        value = BytesHeaderParser(policy=policy.compat32).parsebytes(raw).get("Message-ID")
    except Exception:
        return None
    text = " ".join(str(value).split()) if value else ""
    return text[:250] or None


@SETTINGS
@given(st.lists(st.sampled_from([b"Message-ID: <a@b>", b"Message-Id:\r\n <c@d>", b" folded",
                                 b"X: y", b"", b"\r", b"not a header", b"Message-ID: <e@f>",
                                 b"\xff\xfe", b"From: x"]), max_size=10),
       st.sampled_from([b"\r\n", b"\n", b"\r"]))
@example([b"Subject: x", b"", b"Message-ID: <body@x>"], b"\r\n")
def test_message_id_is_read_from_the_header_section_alone(lines: list[bytes],
                                                           eol: bytes) -> None:
    """The outer Message-ID (the replay key) found from the header section alone is the one
    the parser finds reading the whole message: same key for every message, stored or new."""
    raw = eol.join(lines)
    assert message_id_of(raw) == _message_id_by_whole_parse(raw)
