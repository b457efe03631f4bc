"""The pickup box: only the link's token opens a notice, codes survive being read out."""

from __future__ import annotations

import pytest

from gateway.crypto import pickupbox
from gateway.crypto.vault import Vault

VAULT = Vault(b"v" * 32, b"m" * 32)


def test_a_token_carries_256_random_bits_in_url_safe_text() -> None:
    """Tokens are 43 URL-safe characters (256 bits), each one new, and pass the shape check
    that runs before any look-up; other text does not."""
    tokens = {pickupbox.new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(pickupbox.well_formed_token(t) for t in tokens)
    assert not pickupbox.well_formed_token("a" * 42)
    assert not pickupbox.well_formed_token("a" * 42 + "/")
    assert not pickupbox.well_formed_token("é" * 43)


def test_only_its_token_and_notice_open_a_box() -> None:
    """A box opens with the token and associated data it was sealed with, and with no other
    token, notice or altered byte."""
    token = pickupbox.new_token()
    box = pickupbox.seal(token, {"name": "Anna"}, "pickup:<m@gw>")
    assert pickupbox.open_box(token, box, "pickup:<m@gw>") == {"name": "Anna"}
    assert b"Anna" not in box
    for other_token, aad, blob in ((pickupbox.new_token(), "pickup:<m@gw>", box),
                                   (token, "pickup:<n@gw>", box),
                                   (token, "pickup:<m@gw>", box[:-1] + bytes([box[-1] ^ 1]))):
        with pytest.raises(pickupbox.BoxError):
            pickupbox.open_box(other_token, blob, aad)


def test_digests_are_keyed_and_separate() -> None:
    """The look-up digest and the acknowledgement digest of one token differ, and neither is
    the token or what another vault key gives."""
    token = pickupbox.new_token()
    other = Vault(b"v" * 32, b"n" * 32)
    digests = {pickupbox.token_digest(VAULT, token), pickupbox.ack_digest(VAULT, token),
               pickupbox.token_digest(other, token)}
    assert len(digests) == 3 and token not in digests


def test_an_enrolment_code_survives_being_read_out() -> None:
    """A printed code and the same code typed in lower case, with spaces or without its
    dash give the same digest; a code with a letter outside the alphabet is no code."""
    code = pickupbox.new_enrolment_code()
    assert len(code) == 9 and code[4] == "-"
    typed = f" {code[:4].lower()} {code[5:]} "
    assert pickupbox.normalise_code(typed) == code.replace("-", "")
    assert pickupbox.code_digest(VAULT, "12AB00", "A@school.nl", code) == \
        pickupbox.code_digest(VAULT, "12AB00", "a@school.nl", typed)
    assert pickupbox.normalise_code("0000-0000") is None
    assert pickupbox.normalise_code(code + "A") is None
