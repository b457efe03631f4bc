"""Property tests (hypothesis) over the replies and the acknowledgement path: refusal replies,
ack addresses, automatic replies. The properties and strategies are in tests/property_checks.py
and tests/*strategies.py."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st
from property_checks import (
    _REJECTIONS,
    SETTINGS,
    check_ack_token,
    check_automatic_reply,
    check_automatic_reply_on_arbitrary_bytes,
    check_rejection_reply,
)
from strategies import ack_addresses, replies

from gateway.core.model import Rejection
from gateway.delivery.seal import ack_address, new_ack_token
from gateway.ingress.acks import ack_token


@SETTINGS
@given(_REJECTIONS)
def test_rejection_reply_is_one_reply_line(rejection: Rejection) -> None:
    """Any Rejection's reply is one line starting with its 55x and 5.x.x (docs/protocol.md §5)."""
    check_rejection_reply(rejection)


@SETTINGS
@given(ack_addresses())
@example("ack+\u212a" + "a" * 25 + "@hwc.example.nl")
def test_ack_token_takes_only_exact_base32_tokens(address: str) -> None:
    """ack_token never raises and accepts only `ack+` and 26 ASCII base32 characters."""
    check_ack_token(address)


def test_ack_token_round_trips_a_fresh_address() -> None:
    """The token the gateway writes into a notice is the token read back from the address."""
    for _ in range(50):
        token = new_ack_token()
        assert ack_token(ack_address(token, "leerplicht@hwc.example.nl")) == token


@SETTINGS
@given(replies())
@example((b"\r\nAuto-Submitted: auto-replied\r\n\r\n", None))
@example((b"\nX-Autoreply: yes\n", None))
@example((b"Subject: x\nPrecedence: bulk\n\r\nX-Autoreply: yes\r\n", "precedence"))
def test_automatic_reply_names_the_marker_in_the_header_section(
        case: tuple[bytes, str | None]) -> None:
    """Auto-Submitted (not `no`), Precedence bulk/junk/list/auto_reply, X-Autoreply and
    X-Autorespond in the header section are found, folded or not; in the body, never."""
    check_automatic_reply(case)


@SETTINGS
@given(st.binary(max_size=2048))
def test_automatic_reply_never_raises(message: bytes) -> None:
    """automatic_reply of arbitrary bytes is None or one known reason, never an exception."""
    check_automatic_reply_on_arbitrary_bytes(message)
