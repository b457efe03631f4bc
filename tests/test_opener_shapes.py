"""Tests for pipeline.opener: the RFC 3156 shapes, the encrypted envelope and the multipart/signed
split on its exact bytes."""

from __future__ import annotations

import pytest
from hostile import crlf
from opener_helpers import PAYLOAD

from gateway.core.model import RejectClass, Rejection
from gateway.pipeline.opener import encrypted_payload, signed_parts

# -- the RFC 3156 shapes --------------------------------------------------------------------------

ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n"


def encrypted_mime(*, protocol: str = "application/pgp-encrypted",
                   control_type: str = "application/pgp-encrypted",
                   control: bytes = b"Version: 1\r\n",
                   body_type: str = "application/octet-stream", body: bytes = ARMOR,
                   extra_part: bool = False) -> bytes:
    parts = [f"--b1\r\nContent-Type: {control_type}\r\n\r\n".encode() + control,
             f"--b1\r\nContent-Type: {body_type}\r\n\r\n".encode() + body]
    if extra_part:
        parts.append(b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    return (f'From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; '
            f'protocol="{protocol}"; boundary="b1"\r\n\r\n').encode() + \
        b"".join(parts) + b"--b1--\r\n"


def test_encrypted_payload_returns_the_armored_message() -> None:
    """A well-formed RFC 3156 §4 message yields the armored OpenPGP block of its second part."""
    # The CRLF before the closing delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    assert encrypted_payload(encrypted_mime()) == ARMOR.removesuffix(b"\r\n")


def test_encrypted_payload_accepts_upper_case_protocol_and_lf() -> None:
    """Parameter values compare case-insensitively and bare LF line ends are fine."""
    raw = encrypted_mime(protocol="Application/PGP-Encrypted").replace(b"\r\n", b"\n")
    payload = encrypted_payload(raw)
    assert isinstance(payload, bytes) and payload.startswith(b"-----BEGIN PGP MESSAGE-----")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nSanne de Vries\r\n",
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (b"From: a@b.example\r\n\r\n" + ARMOR, "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(protocol="application/pgp-signature"),
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(protocol="application/pkcs7-mime"),
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(control_type="text/plain"),
         "first part must be application/pgp-encrypted"),
        (encrypted_mime(body_type="text/plain"),
         "second part must be application/octet-stream"),
        (encrypted_mime(control=b"\r\n"), "application/pgp-encrypted part must say Version: 1"),
        (encrypted_mime(control=b"Version: 2\r\n"),
         "application/pgp-encrypted part must say Version: 1"),
        (encrypted_mime(body=b"Sanne de Vries, 12-04-2016\r\n"),
         "second part holds no OpenPGP message"),
        (encrypted_mime(extra_part=True), "multipart/encrypted must have exactly two parts"),
    ],
    ids=["plaintext", "inline-pgp", "wrong-protocol", "smime-protocol", "wrong-control-type",
         "wrong-body-type", "no-version", "version-2", "no-armor", "three-parts"],
)
def test_encrypted_payload_rejects(raw: bytes, detail: str) -> None:
    """Everything that is not exactly RFC 3156 §4 multipart/encrypted is NOT_ENCRYPTED."""
    assert encrypted_payload(raw) == Rejection(RejectClass.NOT_ENCRYPTED, detail)


def boundary_of(entity: bytes) -> bytes:
    head = entity.split(b"\r\n\r\n", 1)[0]
    return head.split(b'boundary="', 1)[1].split(b'"', 1)[0]


def test_signed_parts_returns_exactly_the_signed_bytes(signed: bytes) -> None:
    """The first part comes back byte for byte, and the second is the armored signature."""
    parts = signed_parts(signed)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)
    assert parts[1].startswith(b"-----BEGIN PGP SIGNATURE-----")


def test_signed_parts_canonicalises_lf_input(signed: bytes) -> None:
    """A multipart/signed stored with bare LF yields the CRLF bytes that were signed."""
    parts = signed_parts(signed.replace(b"\r\n", b"\n"))
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_ignores_preamble_and_epilogue_text(signed: bytes) -> None:
    """MIME preamble and epilogue text (not parts) are outside the signature and ignored."""
    head, body = signed.split(b"\r\n\r\n", 1)
    entity = head + b"\r\n\r\nThis is an OpenPGP/MIME signed message.\r\n" + body + \
        b"epilogue\r\n"
    parts = signed_parts(entity)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_is_none_for_other_entities() -> None:
    """An entity that is not multipart/signed is not a signed entity (None)."""
    assert signed_parts(PAYLOAD) is None


def test_signed_parts_rejects_an_extra_third_part(signed: bytes) -> None:
    """A third part after the signature is not covered by it: BAD_SIGNATURE."""
    b = boundary_of(signed)
    closing = b"\r\n--" + b + b"--\r\n"
    entity = signed.replace(closing, b"\r\n--" + b + b"\r\nContent-Type: text/plain\r\n\r\n"
                            b"Also: Daan, 03-09-2013" + closing)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed must hold exactly one part and one signature")


def test_signed_parts_rejects_an_unsigned_part_before_the_signed_one(signed: bytes) -> None:
    """An extra part in front of the signed part (where the signature is not) is refused."""
    b = boundary_of(signed)
    first = b"--" + b + b"\r\n"
    entity = signed.replace(first, first + b"Content-Type: text/plain\r\n\r\nJohnny, you are "
                            b"fired\r\n" + first, 1)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed must hold exactly one part and one signature")


def test_signed_parts_rejects_other_protocols(signed: bytes) -> None:
    """multipart/signed with an S/MIME protocol is not an OpenPGP signature."""
    entity = signed.replace(b"application/pgp-signature\"", b"application/pkcs7-signature\"", 1)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed is not an OpenPGP signature (RFC 3156)")


def test_signed_parts_rejects_a_second_part_that_is_not_a_signature(signed: bytes) -> None:
    """The second part must be application/pgp-signature."""
    entity = signed.replace(b"Content-Type: application/pgp-signature; name",
                            b"Content-Type: text/plain; name")
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE,
        "second part of multipart/signed must be application/pgp-signature")


def test_signed_parts_accepts_close_delimiter_at_end_of_data(signed: bytes) -> None:
    """A close-delimiter at the very end of the data (no trailing CRLF) is valid MIME."""
    assert signed.endswith(b"--\r\n")
    parts = signed_parts(signed[:-2])
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_refuses_an_entity_the_header_parser_raises_on() -> None:
    """A top-level Content-Type that makes the email header parser raise (`x*`): BAD_SIGNATURE."""
    entity = b"Content-Type: multipart/signed; x*\r\n\r\n" + crlf(PAYLOAD)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "signed entity cannot be parsed")


def test_signed_parts_reads_a_folded_thunderbird_header(signed: bytes) -> None:
    """A Content-Type folded over lines with tabs, unquoted micalg and a trailing `;` still
    splits: the same answer as policy.default gives."""
    body = signed.split(b"\r\n\r\n", 1)[1]
    b = boundary_of(signed)
    folded = (b"Content-Type: multipart/signed; micalg=pgp-sha256;\r\n\tprotocol="
              b'"application/pgp-signature";\r\n boundary="' + b + b'";\r\n')
    parts = signed_parts(folded + b"\r\n" + body)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)
