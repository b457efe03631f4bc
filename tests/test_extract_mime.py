"""Tests for pipeline.extract: which MIME part is the payload, its transfer encodings and
charsets, and the limits on the tree."""

from __future__ import annotations

import base64
import json

from extract_helpers import (
    DUTCH_TEXT,
    EXAMPLE_JSON,
    EXAMPLE_SIGNAL,
    json_leaf,
    leaf,
    multipart,
    rejected,
    signal,
)

from gateway.pipeline.extract import MAX_DEPTH

# --- MIME structure and encodings -----------------------------------------------------------


def test_text_part_and_json_attachment_json_wins() -> None:
    """In multipart/mixed, a JSON attachment is the payload and the text part is ignored."""
    entity = multipart(
        leaf("Zie bijlage.\nNaam: Iemand Anders\n"),
        json_leaf(EXAMPLE_JSON, 'Content-Disposition: attachment; filename="signaal.json"'),
    )
    assert signal(entity) == EXAMPLE_SIGNAL


def test_json_recognised_by_filename() -> None:
    """A part with a .json filename counts as JSON whatever its content type."""
    entity = multipart(
        leaf(
            json.dumps(EXAMPLE_JSON),
            "application/octet-stream",
            'Content-Disposition: attachment; filename="SIGNAAL.JSON"',
        )
    )
    assert signal(entity) == EXAMPLE_SIGNAL


def test_two_text_parts_rejected() -> None:
    """Two inline text/plain parts are ambiguous and refused."""
    entity = multipart(leaf(DUTCH_TEXT), leaf(DUTCH_TEXT))
    assert rejected(entity) == "more than one payload part"


def test_two_json_parts_rejected() -> None:
    """Two JSON parts are ambiguous and refused."""
    assert (
        rejected(multipart(json_leaf(EXAMPLE_JSON), json_leaf(EXAMPLE_JSON)))
        == "more than one payload part"
    )


def test_text_attachment_and_html_are_not_candidates() -> None:
    """A text/plain attachment and a text/html alternative are not the payload."""
    entity = multipart(
        multipart(leaf(DUTCH_TEXT), leaf("<p>Naam: X</p>", "text/html"), subtype="alternative"),
        leaf(
            "Naam: Bijlage\n", "text/plain", 'Content-Disposition: attachment; filename="notes.txt"'
        ),
    )
    assert signal(entity) == EXAMPLE_SIGNAL


def test_no_payload_part_rejected() -> None:
    """A message with neither JSON nor inline text is refused."""
    entity = multipart(leaf("<p>Naam: X</p>", "text/html"), leaf(b"\x89PNG", "image/png"))
    assert rejected(entity) == "no signal payload found"


def test_forwarded_message_is_not_descended() -> None:
    """Text inside an attached message/rfc822 is not a payload candidate."""
    forwarded = leaf(leaf(DUTCH_TEXT), "message/rfc822")
    assert rejected(multipart(forwarded)) == "no signal payload found"
    assert signal(multipart(leaf(DUTCH_TEXT), forwarded)) == EXAMPLE_SIGNAL


def test_root_without_content_type_is_plain_text() -> None:
    """An entity without a Content-Type is text/plain in US-ASCII/UTF-8, per RFC 2045."""
    entity = b"Subject: x\n\n" + DUTCH_TEXT.encode()
    assert signal(entity) == EXAMPLE_SIGNAL


def test_quoted_printable_part() -> None:
    """A quoted-printable part is decoded, soft line breaks included."""
    body = (
        "Codewoord: Handle with Care\n"
        "Naam: Zo=C3=AB d=E2=80=99Ancona van der Vries-Oudshoorn en nog een hele lange ach=\n"
        "ternaam\n"
        "Geboortedatum: 12-04-2016\n"
    )
    entity = leaf(body, "text/plain; charset=utf-8", "Content-Transfer-Encoding: quoted-printable")
    name = signal(entity).children[0].name
    assert name == "Zoë d’Ancona van der Vries-Oudshoorn en nog een hele lange achternaam"


def test_base64_part() -> None:
    """A base64 part is decoded, with line breaks in the encoding."""
    encoded = base64.encodebytes(json.dumps(EXAMPLE_JSON).encode())
    entity = leaf(encoded, "application/json", "Content-Transfer-Encoding: base64")
    assert signal(entity) == EXAMPLE_SIGNAL


def test_broken_base64_rejected() -> None:
    """Base64 with bad characters or padding is refused, not repaired into a shorter name."""
    encoded = base64.b64encode(DUTCH_TEXT.encode())
    for broken in (encoded[:-3], encoded[:20] + b"!" + encoded[20:]):
        entity = leaf(broken, "text/plain", "Content-Transfer-Encoding: base64")
        assert rejected(entity) == "payload part has broken base64"


def test_unsupported_transfer_encoding_rejected() -> None:
    """A transfer encoding other than 7bit/8bit/binary/QP/base64 is refused."""
    entity = leaf(DUTCH_TEXT, "text/plain", "Content-Transfer-Encoding: x-uuencode")
    assert rejected(entity) == "payload part has an unsupported transfer encoding"


def test_latin1_charset() -> None:
    """A Latin-1 part is decoded by its charset."""
    body = "Codewoord: Handle with Care\nNaam: Zoë Daniëls\nGeboortedatum: 12-04-2016\n"
    entity = leaf(
        body.encode("latin-1"), "text/plain; charset=iso-8859-1", "Content-Transfer-Encoding: 8bit"
    )
    assert signal(entity).children[0].name == "Zoë Daniëls"


def test_undecodable_charset_rejected() -> None:
    """Unknown charsets, non-text codecs and bytes invalid in the charset are refused."""
    body = "Codewoord: Handle with Care\nNaam: Zoë\nGeboortedatum: 12-04-2016\n"
    assert (
        rejected(leaf(body, "text/plain; charset=x-klingon"))
        == "payload part has an unknown charset"
    )
    assert (
        rejected(leaf(body, "text/plain; charset=rot13")) == "payload part has an unknown charset"
    )
    assert rejected(leaf(body.encode("latin-1"), "text/plain; charset=utf-8")) == (
        "payload part is not valid in its charset"
    )
    assert (
        rejected(leaf(body, "text/plain; charset=us-ascii"))
        == "payload part is not valid in its charset"
    )


def test_utf8_bom_stripped() -> None:
    """A UTF-8 byte order mark before the first label does not hide it."""
    entity = leaf(
        b"\xef\xbb\xbfCodewoord: Handle with Care\nNaam: Sanne\nGeboortedatum: 12-04-2016\n"
    )
    assert len(signal(entity).children) == 1


def test_crlf_input() -> None:
    """An entity with CRLF line endings throughout parses like its LF form."""
    entity = multipart(
        leaf(DUTCH_TEXT),
        leaf(b"\x00", "application/octet-stream", "Content-Disposition: attachment"),
    )
    assert signal(entity.replace(b"\n", b"\r\n")) == signal(leaf(DUTCH_TEXT))
    assert signal(leaf(DUTCH_TEXT).replace(b"\n", b"\r\n")) == EXAMPLE_SIGNAL


def test_format_flowed_rejoins_wrapped_lines() -> None:
    """A Naam line wrapped by a format=flowed client comes back whole."""
    body = (
        "Codewoord: Handle with Care\n"
        "Naam: Mohammed Abdullah Ibrahim Al-Hassan van den \n"
        "Berg-Oudshoorn\n"
        "Geboortedatum: 12-04-2016\n"
        "-- \n"
        "Veilig Thuis\n"
    )
    entity = leaf(body, "text/plain; charset=utf-8; format=flowed")
    name = signal(entity).children[0].name
    assert name == "Mohammed Abdullah Ibrahim Al-Hassan van den Berg-Oudshoorn"


def test_thunderbird_protected_headers_layout() -> None:
    """Thunderbird's text/rfc822-headers display part is skipped; its text/plain is the payload."""
    entity = (
        b'Content-Type: multipart/mixed; boundary="tb"; protected-headers="v1"\r\n'
        b"Subject: Handle with Care melding\r\n"
        b"From: Veilig Thuis <vt@example.nl>\r\n"
        b"To: leerplicht@hwc.example.nl\r\n"
        b"\r\n"
        b"--tb\r\n"
        b'Content-Type: text/rfc822-headers; protected-headers="v1"\r\n'
        b"Content-Disposition: inline\r\n"
        b"\r\n"
        b"Subject: Handle with Care melding\r\n"
        b"From: Veilig Thuis <vt@example.nl>\r\n"
        b"\r\n"
        b"--tb\r\n"
        b'Content-Type: text/plain; charset=UTF-8; format=flowed; protected-headers="v1"\r\n'
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n" + DUTCH_TEXT.replace("\n", "\r\n").encode() + b"\r\n"
        b"--tb--\r\n"
    )
    assert signal(entity) == EXAMPLE_SIGNAL


def test_protected_headers_on_other_types_skipped() -> None:
    """A non-text/plain part carrying protected-headers is a display part, not the payload."""
    entity = multipart(leaf("Naam: X", 'text/html; protected-headers="v1"'), leaf(DUTCH_TEXT))
    assert signal(entity) == EXAMPLE_SIGNAL


def test_too_many_parts_rejected() -> None:
    """A tree of more than 50 entities is refused."""
    parts = [leaf(b"\x00", "application/octet-stream")] * 48
    assert signal(multipart(leaf(DUTCH_TEXT), *parts)) == EXAMPLE_SIGNAL
    assert rejected(multipart(leaf(DUTCH_TEXT), *parts, parts[0])) == "too many MIME parts"


def test_deep_nesting_rejected() -> None:
    """A part inside more than 8 nested multiparts is refused; 8 is accepted."""
    entity = leaf(DUTCH_TEXT)
    for _ in range(MAX_DEPTH):
        entity = multipart(entity)
    assert signal(entity) == EXAMPLE_SIGNAL
    assert rejected(multipart(entity)) == "MIME nesting too deep"
    for _ in range(200):
        entity = multipart(entity)
    # So deep that the delimiter lines alone already exceed what 50 parts could need.
    assert rejected(entity) in ("MIME nesting too deep", "too many MIME parts")


def test_huge_flat_tree_rejected() -> None:
    """Tens of thousands of tiny parts are refused (counted before the slow email parser runs)."""
    entity = multipart(leaf(DUTCH_TEXT), *[leaf(b"x", "application/octet-stream")] * 30000)
    assert rejected(entity) == "too many MIME parts"
