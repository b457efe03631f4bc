"""The opener on the RFC 3156 structure: decisions pinned where a mutation run (`make mutate`,
mutate/run.py) found that the tests would not notice a wrong answer: each test here fails on at
least one mutant that survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import pytest
from pinned_helpers import _bad, _mixed_with

from gateway.core.mimelimits import parse_mime
from gateway.core.model import RejectClass, Rejection
from gateway.pipeline.opener import _contains_encrypted, _structure, encrypted_payload, signed_parts

# -- opener: the structural limits at their edges ------------------------------------------------

# The limits themselves, as numbers: a test written with the constants would move with them.
OUTER_MAX_PARTS = 8  # the outer multipart/encrypted: 2 * 8 delimiter lines
INNER_MAX_PARTS = 50  # the decrypted entity: 2 * 50 delimiter lines
MAX_HEADER_LINES = 500  # top-level header lines, outside and inside

ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n"


def _encrypted(extra_headers: int = 0, extra_parts: int = 0) -> bytes:
    """An RFC 3156 §4 message with filler header lines, or with parts beyond its two."""
    head = b"".join(b"X-Filler: %d\r\n" % i for i in range(extra_headers))
    parts = [b"--b1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n",
             b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n" + ARMOR]
    parts += [b"--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n"] * extra_parts
    return (head + b'MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; '
            b'protocol="application/pgp-encrypted"; boundary="b1"\r\n\r\n'
            + b"".join(parts) + b"--b1--\r\n")


def test_outer_header_lines_up_to_the_limit_pass() -> None:
    """A message with exactly MAX_HEADER_LINES header lines is read; one more is too large."""
    at_limit = _encrypted(extra_headers=MAX_HEADER_LINES - 2)
    assert encrypted_payload(at_limit) == ARMOR.removesuffix(b"\r\n")
    over = _encrypted(extra_headers=MAX_HEADER_LINES - 1)
    assert encrypted_payload(over) == Rejection(RejectClass.TOO_LARGE, "too many header lines")


def test_outer_parts_up_to_the_limit_are_parsed() -> None:
    """2 * OUTER_MAX_PARTS delimiter lines are parsed (and then refused for their shape); one
    more is refused before parsing."""
    # n parts have n + 1 delimiter lines (the closing one included).
    at_limit = _encrypted(extra_parts=2 * OUTER_MAX_PARTS - 3)
    assert encrypted_payload(at_limit) == Rejection(
        RejectClass.NOT_ENCRYPTED, "multipart/encrypted must have exactly two parts")
    over = _encrypted(extra_parts=2 * OUTER_MAX_PARTS - 2)
    assert encrypted_payload(over) == Rejection(
        RejectClass.NOT_ENCRYPTED, "message is not PGP/MIME encrypted: too many MIME parts")


def _mixed(parts: int) -> bytes:
    body = b"".join(b"--in\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts))
    return b'Content-Type: multipart/mixed; boundary="in"\r\n\r\n' + body + b"--in--\r\n"


def test_inner_parts_up_to_the_limit_are_parsed() -> None:
    """A decrypted entity with 2 * INNER_MAX_PARTS delimiter lines is parsed; one more is an
    invalid signal."""
    parsed = _structure(_mixed(2 * INNER_MAX_PARTS - 1))
    assert not isinstance(parsed, Rejection)
    assert parsed[1] is None  # not a multipart/signed
    assert _structure(_mixed(2 * INNER_MAX_PARTS)) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many MIME parts")


def test_inner_header_lines_up_to_the_limit_are_parsed() -> None:
    """A decrypted entity with MAX_HEADER_LINES header lines is parsed; one more is invalid."""
    head = b"".join(b"X-Filler: %d\r\n" % i for i in range(MAX_HEADER_LINES - 1))
    assert not isinstance(_structure(head + _mixed(1)), Rejection)
    assert _structure(b"X-Filler: x\r\n" + head + _mixed(1)) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many header lines")


# -- opener: the RFC 3156 shapes, exactly --------------------------------------------------------

SIGNED_TYPE = b'multipart/signed; protocol="application/pgp-signature"; boundary="b1"'
PART = b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
SIGNATURE = (b"--b1\r\nContent-Type: application/pgp-signature\r\n\r\n"
             b"-----BEGIN PGP SIGNATURE-----\r\n")
CLOSE = b"--b1--\r\n"
ONE_PART = "multipart/signed must hold exactly one part and one signature"


def _entity(body: bytes, content_type: bytes = SIGNED_TYPE) -> bytes:
    return b"Content-Type: " + content_type + b"\r\n\r\n" + body


def test_a_well_formed_multipart_signed_splits() -> None:
    """The shape the rules below break: one part, one signature, the close delimiter."""
    assert signed_parts(_entity(PART + SIGNATURE + CLOSE)) == (
        b"Content-Type: text/plain\r\n\r\nhello", b"-----BEGIN PGP SIGNATURE-----")


@pytest.mark.parametrize("body", [
    PART + CLOSE + SIGNATURE[6:] + CLOSE,
    CLOSE + PART[6:] + SIGNATURE + CLOSE,
    PART + SIGNATURE + CLOSE + b"epilogue\r\n" + CLOSE,
    PART + SIGNATURE + SIGNATURE + CLOSE,
], ids=["close-after-part", "close-first", "second-close-in-epilogue", "second-signature"])
def test_multipart_signed_delimiters_must_be_open_open_close(body: bytes) -> None:
    """Exactly three delimiters: two that open a part, then the close; a close delimiter in any
    other place, or a fourth delimiter, refuses the entity."""
    assert signed_parts(_entity(body)) == _bad(ONE_PART)


def test_a_multipart_signed_without_a_body_cannot_be_parsed() -> None:
    """A multipart/signed header with no blank line and no body: refused as unparsable."""
    assert signed_parts(SIGNED_TYPE.join([b"Content-Type: ", b""])) == _bad(
        "signed entity cannot be parsed")


def test_a_non_ascii_boundary_is_refused_not_raised() -> None:
    """A boundary with a non-ASCII byte never raises: the delimiters cannot be found, refused."""
    content_type = b'multipart/signed; protocol="application/pgp-signature"; boundary="b\xc3\xa9"'
    assert signed_parts(_entity(PART + SIGNATURE + CLOSE, content_type)) == _bad(ONE_PART)


def test_an_unparsable_outer_content_type_is_not_pgp_mime() -> None:
    """A Content-Type the header parser raises on (`x*`) is refused as not PGP/MIME, exactly."""
    raw = b"Content-Type: multipart/encrypted; x*\r\n\r\nx\r\n"
    assert encrypted_payload(raw) == Rejection(RejectClass.NOT_ENCRYPTED,
                                               "message is not PGP/MIME encrypted")


# -- opener: what only the byte split sees -------------------------------------------------------


def test_a_signature_part_the_header_parser_raises_on_is_refused() -> None:
    """A signature part whose header the parser raises on is refused as unparsable. (Reached
    when the parser did not split the entity, here because its boundary is not ASCII, and the
    split on bytes did: `bé` is looked for as `b?`.)"""
    entity = (b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
              b'boundary="b\xc3\xa9"\r\n\r\n--b?\r\nContent-Type: text/plain\r\n\r\nhello\r\n'
              b"--b?\r\nContent-Type: application/pgp-signature; x*\r\n\r\nSIG\r\n--b?--\r\n")
    assert signed_parts(entity) == _bad("signature part cannot be parsed")


def test_a_delimiter_in_place_of_the_blank_line_is_not_the_first_delimiter() -> None:
    """The signed part starts after the header's blank line: a delimiter line right under the
    header (no blank line) is header, not the first delimiter, and the shape is refused."""
    entity = (b'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
              b'boundary="b1"\r\n--b1\r\n\r\nhello\r\n--b1\r\n'
              b"Content-Type: application/pgp-signature\r\n\r\nSIG\r\n--b1--\r\n")
    assert signed_parts(entity) == _bad(ONE_PART)


def test_structure_gives_the_signed_part_of_a_multipart_signed() -> None:
    """The decrypted entity's structure carries its signed part and signature, and an entity
    the parser raises on is refused as unparsable."""
    parsed = _structure(_entity(PART + SIGNATURE + CLOSE))
    assert not isinstance(parsed, Rejection)
    assert parsed[1] == (b"Content-Type: text/plain\r\n\r\nhello", b"-----BEGIN PGP SIGNATURE-----")
    assert _structure(b"Content-Type: multipart/signed; x*\r\n\r\nhello") == _bad(
        "signed entity cannot be parsed")


# -- opener: nested encryption -------------------------------------------------------------------


def test_an_encrypted_part_anywhere_is_found() -> None:
    """multipart/encrypted at the top or deep inside is found; other entities, and ones the
    parser raises on, are not."""
    nested = _mixed_with('Content-Type: multipart/encrypted; boundary="c2"\r\n\r\n--c2--')
    assert _contains_encrypted(nested)
    assert _contains_encrypted(nested, parse_mime(nested))
    assert _contains_encrypted(_encrypted())
    assert not _contains_encrypted(_mixed(2))
    assert not _contains_encrypted(b"Content-Type: multipart/encrypted; x*\r\n\r\nx")
