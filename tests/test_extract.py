"""Tests for pipeline.extract: the verified inner entity in, a minimal Signal or Rejection out."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import random

import pytest

from gateway.core.model import Child, RejectClass, Rejection, Signal
from gateway.pipeline.extract import MAX_DEPTH, parse_signal

TODAY = dt.date(2026, 3, 2)

SANNE_JSON = {
    "name": "Sanne de Vries",
    "birthdate": "2016-04-12",
    "bsn": "123456782",
    "school": "12AB00",
}
DAAN_JSON = {"name": "Daan de Vries", "birthdate": "2013-09-03"}
SPEC_JSON = {
    "codeword": "Handle with Care",
    "reference": "VT-HVB-2026-000123",
    "children": [SANNE_JSON, DAAN_JSON],
}
SPEC_SIGNAL = Signal(
    children=(
        Child("Sanne de Vries", dt.date(2016, 4, 12), bsn="123456782", school_hint="12AB00"),
        Child("Daan de Vries", dt.date(2013, 9, 3)),
    ),
    reference="VT-HVB-2026-000123",
)

DUTCH_TEXT = """\
Goedemorgen,

Hierbij een Handle with Care melding.

Codewoord: Handle with Care
Referentie: VT-HVB-2026-000123

Naam: Sanne de Vries
Geboortedatum: 12-04-2016
BSN: 123456782
School: 12AB00

Naam: Daan de Vries
Geboortedatum: 3-9-2013

Toelichting: incident in de nacht van zondag op maandag, vader aangehouden.
Adres: Dorpsstraat 1, Ergens

Met vriendelijke groet,
Medewerker Veilig Thuis
Telefoon: 0800-2000
"""

_boundaries = itertools.count()


def leaf(
    body: str | bytes, content_type: str = "text/plain; charset=utf-8", *headers: str
) -> bytes:
    """One MIME entity: a Content-Type, any extra header lines, a blank line, the body."""
    data = body.encode() if isinstance(body, str) else body
    head = "".join(f"{line}\n" for line in (f"Content-Type: {content_type}", *headers))
    return head.encode() + b"\n" + data


def multipart(*parts: bytes, subtype: str = "mixed") -> bytes:
    """A multipart entity around the given entities, with a fresh boundary."""
    boundary = f"b{next(_boundaries)}"
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\n\n'.encode()
    delimiter = f"--{boundary}\n".encode()
    body = b"".join(delimiter + part + b"\n" for part in parts)
    return head + body + f"--{boundary}--\n".encode()


def json_leaf(document: object, *headers: str) -> bytes:
    """An application/json entity holding the document."""
    return leaf(json.dumps(document), "application/json", *headers)


def signal(entity: bytes) -> Signal:
    """parse_signal's result, which the test expects to be a Signal."""
    result = parse_signal(entity, today=TODAY)
    assert isinstance(result, Signal), result
    return result


def rejected(entity: bytes) -> str:
    """The detail of parse_signal's result, which the test expects to be a Rejection."""
    result = parse_signal(entity, today=TODAY)
    assert isinstance(result, Rejection), result
    assert result.kind is RejectClass.INVALID_SIGNAL
    return result.detail


def text_signal(*lines: str) -> bytes:
    """A text/plain entity from labelled lines."""
    return leaf("\n".join(lines) + "\n")


def one_child(name: str = "Sanne de Vries", birthdate: str = "12-04-2016", *extra: str) -> bytes:
    """A text-form signal with a valid codeword and one child."""
    return text_signal(
        "Codewoord: Handle with Care", f"Naam: {name}", f"Geboortedatum: {birthdate}", *extra
    )


def json_child(**child: object) -> bytes:
    """A JSON-form signal with a valid codeword and one child."""
    return json_leaf({"codeword": "Handle with Care", "children": [child]})


# --- the two forms ------------------------------------------------------------------------


def test_json_spec_example_with_siblings() -> None:
    """The docs/protocol.md §4 JSON example gives two children with their BSN and school hint."""
    assert signal(json_leaf(SPEC_JSON)) == SPEC_SIGNAL


def test_json_accepts_dutch_date_forms() -> None:
    """JSON birthdates may also be written the Dutch way."""
    result = signal(json_child(name="Sanne", birthdate="12/04/2016"))
    assert result.children[0].birthdate == dt.date(2016, 4, 12)


def test_text_form_dutch_labels_with_free_text_around() -> None:
    """Dutch labelled text between greetings and incident details gives the same signal."""
    assert signal(leaf(DUTCH_TEXT)) == SPEC_SIGNAL


def test_text_form_english_labels() -> None:
    """English labels, including both birth date spellings, are read."""
    entity = text_signal(
        "Codeword: Handle with Care",
        "Reference: VT-HVB-2026-000123",
        "Name: Sanne de Vries",
        "Date of birth: 2016-04-12",
        "BSN: 1234.56.782",
        "Vestiging: 12ab00",
        "Name: Daan de Vries",
        "Birthdate: 03/09/2013",
    )
    assert signal(entity) == SPEC_SIGNAL


def test_text_labels_case_insensitive_and_padded_colon() -> None:
    """Labels match in any case, with whitespace before the colon or inside the label."""
    entity = text_signal(
        "CODEWOORD : handle  WITH care",
        "  naam :Sanne de Vries",
        "DATE   OF BIRTH\t: 12-04-2016",
        "brin: 12ab",
    )
    child = signal(entity).children[0]
    assert (child.name, child.birthdate, child.school_hint) == (
        "Sanne de Vries",
        dt.date(2016, 4, 12),
        "12AB",
    )


@pytest.mark.parametrize("birthdate", ["12-04-2016", "12/04/2016", "2016-04-12"])
def test_text_accepts_every_date_form(birthdate: str) -> None:
    """DD-MM-YYYY, DD/MM/YYYY and ISO all give the same birth date."""
    assert signal(one_child(birthdate=birthdate)).children[0].birthdate == dt.date(2016, 4, 12)


@pytest.mark.parametrize("birthdate", ["2-4-2016", "2/4/2016"])
def test_text_accepts_single_digit_day_and_month(birthdate: str) -> None:
    """D-M-YYYY and D/M/YYYY are read."""
    assert signal(one_child(birthdate=birthdate)).children[0].birthdate == dt.date(2016, 4, 2)


def test_extra_lines_do_not_survive() -> None:
    """Unknown lines (incident, address, Subject) leave nothing in the result."""
    result = signal(
        one_child("Sanne de Vries", "12-04-2016", "Subject: geheim", "Incident: vader aangehouden")
    )
    assert result == Signal(children=(Child("Sanne de Vries", dt.date(2016, 4, 12)),))


def test_json_extra_keys_are_ignored_and_do_not_survive() -> None:
    """Keys outside the contract, at any level, are dropped without complaint."""
    document = {
        **SPEC_JSON,
        "incident": {"description": "vader aangehouden", "address": "Dorpsstraat 1"},
        "parents": ["Piet de Vries"],
        "children": [
            {**SANNE_JSON, "notes": "slaapt slecht", "name_mother": 7},
            DAAN_JSON,
        ],
    }
    assert signal(json_leaf(document)) == SPEC_SIGNAL


def test_json_null_optional_fields_are_absent() -> None:
    """null for reference, bsn or school means not given."""
    entity = json_leaf(
        {
            "codeword": "Handle with Care",
            "reference": None,
            "children": [{"name": "Sanne", "birthdate": "2016-04-12", "bsn": None, "school": None}],
        }
    )
    assert signal(entity) == Signal(children=(Child("Sanne", dt.date(2016, 4, 12)),))


def test_empty_optional_text_lines_are_absent() -> None:
    """A template line left empty (BSN:, School:, Referentie:) means not given."""
    result = signal(one_child("Sanne", "12-04-2016", "BSN:", "School:  ", "Referentie:"))
    assert result == Signal(children=(Child("Sanne", dt.date(2016, 4, 12)),))


# --- codeword, reference, children ----------------------------------------------------------


def test_missing_codeword_rejected_in_both_forms() -> None:
    """No codeword is refused, in text and in JSON."""
    assert rejected(text_signal("Naam: Sanne", "Geboortedatum: 12-04-2016")) == "codeword missing"
    document = {"children": [{"name": "Sanne", "birthdate": "2016-04-12"}]}
    assert rejected(json_leaf(document)) == "codeword missing"
    assert rejected(text_signal("Codewoord:", "Naam: Sanne")) == "codeword missing"


def test_wrong_codeword_rejected() -> None:
    """A codeword other than Handle with Care is refused."""
    entity = text_signal(
        "Codewoord: Handle with caution", "Naam: Sanne", "Geboortedatum: 12-04-2016"
    )
    assert rejected(entity) == "codeword is not Handle with Care"
    document = {"codeword": 1, "children": [{"name": "Sanne", "birthdate": "2016-04-12"}]}
    assert rejected(json_leaf(document)) == "codeword is not a string"


def test_reference_must_be_a_plain_token() -> None:
    """A reference with characters outside [A-Za-z0-9._/-] or over 64 long is refused."""
    for reference in ("VT 123", "VT<123>", "x" * 65, "VT-ë"):
        entity = text_signal(f"Referentie: {reference}", "Codewoord: Handle with Care", "Naam: S")
        assert rejected(entity) == "reference is malformed"
    assert signal(one_child("Sanne", "12-04-2016", "Reference: " + "x" * 64)).reference == "x" * 64


def test_no_children_rejected() -> None:
    """A signal naming no child is refused, in both forms."""
    assert rejected(text_signal("Codewoord: Handle with Care")) == "no child named"
    assert rejected(json_leaf({"codeword": "Handle with Care", "children": []})) == "no child named"
    assert rejected(json_leaf({"codeword": "Handle with Care"})) == "children missing"
    document = {"codeword": "Handle with Care", "children": {"name": "Sanne"}}
    assert rejected(json_leaf(document)) == "children is not a list"


def test_too_many_children_rejected() -> None:
    """More than 20 children is refused; exactly 20 is accepted."""
    child = {"name": "Sanne", "birthdate": "2016-04-12"}
    assert (
        len(signal(json_leaf({"codeword": "Handle with Care", "children": [child] * 20})).children)
        == 20
    )
    assert (
        rejected(json_leaf({"codeword": "Handle with Care", "children": [child] * 21}))
        == "too many children"
    )
    lines = ["Naam: Sanne\nGeboortedatum: 12-04-2016"] * 21
    assert rejected(text_signal("Codewoord: Handle with Care", *lines)) == "too many children"


# --- per-child fields -----------------------------------------------------------------------


def test_missing_name_names_the_child() -> None:
    """A child without a name is refused with its 1-based number."""
    document = {
        "codeword": "Handle with Care",
        "children": [{"name": "Sanne", "birthdate": "2016-04-12"}, {"birthdate": "2013-09-03"}],
    }
    assert rejected(json_leaf(document)) == "child 2: name missing"
    assert rejected(one_child(" ")) == "child 1: name missing"


def test_missing_birthdate_names_the_child() -> None:
    """A child without a birth date is refused with its 1-based number."""
    entity = text_signal(
        "Codewoord: Handle with Care",
        "Naam: Sanne",
        "Geboortedatum: 12-04-2016",
        "Naam: Daan",
        "BSN: 123456782",
    )
    assert rejected(entity) == "child 2: birthdate missing"


def test_field_before_first_name_rejected() -> None:
    """A birthdate, BSN or school line before any Naam line cannot belong to a child."""
    entity = text_signal("Codewoord: Handle with Care", "Geboortedatum: 12-04-2016", "Naam: Sanne")
    assert rejected(entity) == "birthdate before the first name"
    assert rejected(text_signal("BSN: 123456782", "Naam: Sanne")) == "bsn before the first name"


def test_duplicate_labels_rejected() -> None:
    """The same label twice for one child, or the codeword/reference twice, is refused."""
    entity = one_child("Sanne", "12-04-2016", "Date of birth: 12-04-2016")
    assert rejected(entity) == "child 1: birthdate given twice"
    entity = one_child("Sanne", "12-04-2016", "School: 12AB00", "Vestiging: 12AB00")
    assert rejected(entity) == "child 1: school given twice"
    assert (
        rejected(one_child("Sanne", "12-04-2016", "Codeword: Handle with Care"))
        == "codeword given twice"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "Referentie: a", "Reference: a"))
        == "reference given twice"
    )


def test_json_duplicate_keys_rejected() -> None:
    """Duplicate keys anywhere in the JSON are refused rather than one silently winning."""
    top = b'{"codeword": "Handle with Care", "codeword": "x", "children": []}'
    assert rejected(leaf(top, "application/json")) == "duplicate key in JSON"
    nested = (
        b'{"codeword": "Handle with Care", "children": '
        b'[{"name": "Sanne", "name": "Daan", "birthdate": "2016-04-12"}]}'
    )
    assert rejected(leaf(nested, "application/json")) == "duplicate key in JSON"


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_json_nan_and_infinity_rejected(constant: bytes) -> None:
    """Non-standard JSON constants are refused even in keys nobody reads."""
    body = b'{"codeword": "Handle with Care", "x": ' + constant + b', "children": []}'
    assert rejected(leaf(body, "application/json")) == "JSON contains NaN or Infinity"


@pytest.mark.parametrize(
    ("child", "detail"),
    [
        ({"name": 5, "birthdate": "2016-04-12"}, "child 1: name is not a string"),
        ({"name": "Sanne", "birthdate": 20160412}, "child 1: birthdate is not a string"),
        (
            {"name": "Sanne", "birthdate": "2016-04-12", "bsn": 123456782},
            "child 1: bsn is not a string",
        ),
        (
            {"name": "Sanne", "birthdate": "2016-04-12", "school": ["12AB00"]},
            "child 1: school is not a string",
        ),
    ],
)
def test_json_wrong_types_name_field_and_child(child: dict[str, object], detail: str) -> None:
    """A field of the wrong JSON type is refused, naming the field and child."""
    assert rejected(json_child(**child)) == detail


def test_json_malformed_or_not_an_object() -> None:
    """Invalid JSON, a non-object document, or a child that is not an object are refused."""
    assert rejected(leaf(b'{"codeword": ', "application/json")) == "JSON is malformed"
    assert rejected(leaf(b"[1, 2]", "application/json")) == "JSON is not an object"
    assert rejected(leaf(b"[" * 100000, "application/json")) == "JSON is malformed"
    document = {"codeword": "Handle with Care", "children": ["Sanne"]}
    assert rejected(json_leaf(document)) == "child 1: not an object"


def test_impossible_date_rejected() -> None:
    """31-02-2016 is not a date."""
    assert rejected(one_child(birthdate="31-02-2016")) == "child 1: birthdate is not a valid date"
    assert (
        rejected(one_child(birthdate="12 april 2016")) == "child 1: birthdate is not a valid date"
    )


def test_implausible_birthdates_rejected() -> None:
    """A birth date after today or more than 25 years ago is refused; the bounds are accepted."""
    detail = "child 1: birthdate is not plausible for a pupil"
    assert rejected(one_child(birthdate="03-03-2026")) == detail
    assert rejected(one_child(birthdate="01-03-2001")) == detail
    assert signal(one_child(birthdate="02-03-2026")).children[0].birthdate == TODAY
    assert signal(one_child(birthdate="02-03-2001")).children[0].birthdate == dt.date(2001, 3, 2)


def test_plausibility_on_leap_day() -> None:
    """Counting 25 years back from 29 February does not fail."""
    result = parse_signal(one_child(birthdate="28-02-2003"), today=dt.date(2028, 2, 29))
    assert isinstance(result, Signal)


@pytest.mark.parametrize("bsn", ["123456782", "111222333", "1234 56 782", "012345672", "12345672"])
def test_bsn_passing_eleven_test_kept(bsn: str) -> None:
    """A BSN passing the eleven-test is kept as 9 digits."""
    result = signal(one_child("Sanne", "12-04-2016", f"BSN: {bsn}"))
    assert result.children[0].bsn in ("123456782", "111222333", "012345672")


def test_bsn_failures_named() -> None:
    """A BSN failing the eleven-test or of the wrong shape is refused, saying which."""
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 123456789"))
        == "child 1: bsn fails the eleven-test"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 12345")) == "child 1: bsn is not 9 digits"
    )
    assert (
        rejected(one_child("Sanne", "12-04-2016", "BSN: 12345678X"))
        == "child 1: bsn is not 9 digits"
    )


def test_bad_school_rejected() -> None:
    """A school that is not a vestigingscode or BRIN is refused."""
    detail = "child 1: school is not a valid vestigingscode"
    assert rejected(one_child("Sanne", "12-04-2016", "School: De Regenboog")) == detail


@pytest.mark.parametrize(
    "name",
    [
        "Sanne\x00",
        "Sanne \u202eseirV ed",
        "San\u200bne",
        "Sanne\rde Vries",
        "Sanne\nde Vries",
        "Sanne2",
    ],
)
def test_name_with_hidden_or_non_name_characters_rejected_json(name: str) -> None:
    """NUL, bidi override, zero-width space, CR, LF and digits make a JSON name invalid."""
    assert (
        rejected(json_child(name=name, birthdate="2016-04-12"))
        == "child 1: name is not a valid name"
    )


@pytest.mark.parametrize(
    "name", ["Sanne\x00", "Sanne \u202eseirV ed", "San\u200bne", "Sanne\rX", "R2D2"]
)
def test_name_with_hidden_or_non_name_characters_rejected_text(name: str) -> None:
    """The same characters in a labelled line are refused, not stripped."""
    assert rejected(one_child(name)) == "child 1: name is not a valid name"


@pytest.mark.parametrize("separator", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028"])
def test_text_lines_split_only_at_line_feed(separator: str) -> None:
    """Other line separators inside a Naam line make the name invalid, not a new line."""
    assert rejected(one_child(f"Sanne{separator}Daan")) == "child 1: name is not a valid name"


def test_names_with_accents_and_apostrophes_accepted() -> None:
    """Daan 't Hart and Zoë d’Ancona come through intact, in text and JSON."""
    entity = text_signal(
        "Codewoord: Handle with Care",
        "Naam: Daan 't Hart",
        "Geboortedatum: 12-04-2016",
        "Naam: Zoë d’Ancona",
        "Geboortedatum: 13-04-2016",
    )
    assert [c.name for c in signal(entity).children] == ["Daan 't Hart", "Zoë d’Ancona"]
    assert (
        signal(json_child(name="Zoë d’Ancona", birthdate="2016-04-13")).children[0].name
        == "Zoë d’Ancona"
    )


# --- MIME structure and encodings -----------------------------------------------------------


def test_text_part_and_json_attachment_json_wins() -> None:
    """In multipart/mixed, a JSON attachment is the payload and the text part is ignored."""
    entity = multipart(
        leaf("Zie bijlage.\nNaam: Iemand Anders\n"),
        json_leaf(SPEC_JSON, 'Content-Disposition: attachment; filename="signaal.json"'),
    )
    assert signal(entity) == SPEC_SIGNAL


def test_json_recognised_by_filename() -> None:
    """A part with a .json filename counts as JSON whatever its content type."""
    entity = multipart(
        leaf(
            json.dumps(SPEC_JSON),
            "application/octet-stream",
            'Content-Disposition: attachment; filename="SIGNAAL.JSON"',
        )
    )
    assert signal(entity) == SPEC_SIGNAL


def test_two_text_parts_rejected() -> None:
    """Two inline text/plain parts are ambiguous and refused."""
    entity = multipart(leaf(DUTCH_TEXT), leaf(DUTCH_TEXT))
    assert rejected(entity) == "more than one payload part"


def test_two_json_parts_rejected() -> None:
    """Two JSON parts are ambiguous and refused."""
    assert (
        rejected(multipart(json_leaf(SPEC_JSON), json_leaf(SPEC_JSON)))
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
    assert signal(entity) == SPEC_SIGNAL


def test_no_payload_part_rejected() -> None:
    """A message with neither JSON nor inline text is refused."""
    entity = multipart(leaf("<p>Naam: X</p>", "text/html"), leaf(b"\x89PNG", "image/png"))
    assert rejected(entity) == "no signal payload found"


def test_forwarded_message_is_not_descended() -> None:
    """Text inside an attached message/rfc822 is not a payload candidate."""
    forwarded = leaf(leaf(DUTCH_TEXT), "message/rfc822")
    assert rejected(multipart(forwarded)) == "no signal payload found"
    assert signal(multipart(leaf(DUTCH_TEXT), forwarded)) == SPEC_SIGNAL


def test_root_without_content_type_is_plain_text() -> None:
    """An entity without a Content-Type is text/plain in US-ASCII/UTF-8, per RFC 2045."""
    entity = b"Subject: x\n\n" + DUTCH_TEXT.encode()
    assert signal(entity) == SPEC_SIGNAL


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
    encoded = base64.encodebytes(json.dumps(SPEC_JSON).encode())
    entity = leaf(encoded, "application/json", "Content-Transfer-Encoding: base64")
    assert signal(entity) == SPEC_SIGNAL


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
    assert signal(leaf(DUTCH_TEXT).replace(b"\n", b"\r\n")) == SPEC_SIGNAL


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
    assert signal(entity) == SPEC_SIGNAL


def test_protected_headers_on_other_types_skipped() -> None:
    """A non-text/plain part carrying protected-headers is a display part, not the payload."""
    entity = multipart(leaf("Naam: X", 'text/html; protected-headers="v1"'), leaf(DUTCH_TEXT))
    assert signal(entity) == SPEC_SIGNAL


def test_too_many_parts_rejected() -> None:
    """A tree of more than 50 entities is refused."""
    parts = [leaf(b"\x00", "application/octet-stream")] * 48
    assert signal(multipart(leaf(DUTCH_TEXT), *parts)) == SPEC_SIGNAL
    assert rejected(multipart(leaf(DUTCH_TEXT), *parts, parts[0])) == "too many MIME parts"


def test_deep_nesting_rejected() -> None:
    """A part inside more than 8 nested multiparts is refused; 8 is accepted."""
    entity = leaf(DUTCH_TEXT)
    for _ in range(MAX_DEPTH):
        entity = multipart(entity)
    assert signal(entity) == SPEC_SIGNAL
    assert rejected(multipart(entity)) == "MIME nesting too deep"
    for _ in range(200):
        entity = multipart(entity)
    # So deep that the delimiter lines alone already exceed what 50 parts could need.
    assert rejected(entity) in ("MIME nesting too deep", "too many MIME parts")


def test_huge_flat_tree_rejected() -> None:
    """Tens of thousands of tiny parts are refused (counted before the slow email parser runs)."""
    entity = multipart(leaf(DUTCH_TEXT), *[leaf(b"x", "application/octet-stream")] * 30000)
    assert rejected(entity) == "too many MIME parts"


# --- what a rejection may say, and never raising --------------------------------------------

SECRETS = ("Sanne", "Vries", "2016", "04", "123456789", "12ZZ", "VT 123", "Handle with caution")


@pytest.mark.parametrize(
    "entity",
    [
        one_child("Sanne de Vries2"),
        one_child("Sanne de Vries", "31-04-2016"),
        one_child("Sanne de Vries", "12-04-2036"),
        one_child("Sanne de Vries", "12-04-2016", "BSN: 123456789"),
        one_child("Sanne de Vries", "12-04-2016", "BSN: 2016"),
        one_child("Sanne de Vries", "12-04-2016", "School: 12ZZ9"),
        one_child("Sanne de Vries", "12-04-2016", "Referentie: VT 123"),
        one_child("Sanne de Vries", "12-04-2016", "Naam: Sanne de Vries"),
        text_signal("Codewoord: Handle with caution", "Naam: Sanne de Vries"),
        json_child(name="Sanne de Vries", birthdate="2016-04-31"),
        json_child(name="Sanne de Vries", birthdate="2016-04-12", bsn=123456789),
        leaf(b'{"codeword": "Sanne de Vries", "codeword": "2016-04-12"}', "application/json"),
        leaf(b'{"Sanne de Vries": 2016-04-12}', "application/json"),
        leaf("Naam: Sanne de Vries".encode("latin-1"), "text/plain; charset=Sanne-de-Vries"),
        leaf(b"Naam: Sanne de Vries\xff", "text/plain; charset=utf-8"),
        leaf(b"U2FubmUgZGUgVnJpZXM=!", "text/plain", "Content-Transfer-Encoding: base64"),
        leaf(b"Naam: Sanne", "text/plain", "Content-Transfer-Encoding: Sanne-de-Vries"),
    ],
)
def test_rejection_detail_never_contains_message_values(entity: bytes) -> None:
    """The detail names a field and child only: no name, date, BSN or other value from the input."""
    detail = rejected(entity)
    assert detail.isascii() and detail.isprintable() and len(detail) <= 80
    for secret in SECRETS:
        assert secret.casefold() not in detail.casefold()


@pytest.mark.parametrize(
    "entity",
    [
        b"",
        b"\x00\xff" * 100,
        b"\n\n\n",
        b"Content-Type: multipart/mixed\n\n--\n",
        b'Content-Type: multipart/mixed; boundary="x"\n\n--x\n--x--\n',
        b"Content-Type: text/plain; charset*=''%FF%FE\n\nNaam: x",
        b'Content-Type: text/plain; charset="\xff\xfe"\n\nNaam: x',
        b"Content-Type: \xff/\xfe; name*0*=utf-8''%ff\n\n",
        b"Content-Transfer-Encoding: \xff\n\nx",
        b"Content-Type: application/json; charset=utf-16\n\n{}",
        b"=?utf-8?q?=FF?=: x\n\n",
    ],
)
def test_junk_returns_rejection(entity: bytes) -> None:
    """Empty, binary or malformed entities give a Rejection, never an exception."""
    rejected(entity)


def test_random_bytes_and_mutations_never_raise() -> None:
    """Random bytes and byte-level mutations of valid signals always give a Signal or Rejection."""
    rng = random.Random(20260302)
    seeds = [
        leaf(DUTCH_TEXT),
        multipart(leaf(DUTCH_TEXT), json_leaf(SPEC_JSON)),
        leaf(
            base64.encodebytes(json.dumps(SPEC_JSON).encode()),
            "application/json",
            "Content-Transfer-Encoding: base64",
        ),
    ]
    for _ in range(300):
        junk = rng.randbytes(rng.randrange(0, 2000))
        assert isinstance(parse_signal(junk, today=TODAY), Rejection)
    for _ in range(1500):
        mutated = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 8)):
            position = rng.randrange(len(mutated))
            action = rng.randrange(3)
            if action == 0:
                mutated[position] = rng.randrange(256)
            elif action == 1:
                del mutated[position]
            else:
                mutated.insert(position, rng.choice(b':\n\r-"{}[],=;\\\x00\xff'))
        result = parse_signal(bytes(mutated), today=TODAY)
        assert isinstance(result, Signal | Rejection)
