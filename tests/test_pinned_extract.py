"""Extract and mimelimits: decisions pinned where a mutation run (`make mutate`, mutate/run.py)
found that the tests would not notice a wrong answer: each test here fails on at least one mutant
that survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt
import json
from email import policy
from email.parser import BytesParser

import pytest
from pinned_helpers import LABELLED, _mixed_with

from gateway.core.mimelimits import delimiter_lines, header_lines, parse_mime
from gateway.core.model import Child, RejectClass, Rejection, Signal
from gateway.pipeline.extract import _unflow, parse_signal

# -- extract: the payload part and the labelled form ---------------------------------------------

TODAY = dt.date(2026, 3, 2)
SANNE = Signal(children=(Child("Sanne de Vries", dt.date(2016, 4, 12)),), reference="VT-1")


def _text(body: str, headers: str = "Content-Type: text/plain; charset=utf-8\r\n") -> bytes:
    return (headers + "\r\n" + body).encode()


def test_an_entity_the_email_package_raises_on_is_an_unreadable_signal() -> None:
    """A part header the email parser raises on (`x*`) is refused as unreadable, never a crash."""
    assert parse_signal(_text(LABELLED, "Content-Type: text/plain; x*\r\n"), today=TODAY) == \
        Rejection(RejectClass.INVALID_SIGNAL, "signal could not be read")


def test_delimiter_lines_up_to_twice_the_part_limit_are_read() -> None:
    """Lines that look like delimiters of a boundary named anywhere are counted before parsing:
    100 are read (here as free text), 101 are refused."""
    mention = 'Toelichting: the old mail said boundary="zz"\r\n'
    assert parse_signal(_text(LABELLED + mention + "--zz\r\n" * 100), today=TODAY) == SANNE
    assert parse_signal(_text(LABELLED + mention + "--zz\r\n" * 101), today=TODAY) == Rejection(
        RejectClass.INVALID_SIGNAL, "too many MIME parts")


def test_format_flowed_with_delsp_joins_without_the_space() -> None:
    """format=flowed; delsp=yes (RFC 3676 §4.2): the trailing space of a wrapped line goes."""
    body = LABELLED.replace("Naam: Sanne de Vries", "Naam: Sanne de Vr \r\nies")
    for delsp in ("yes", "Yes"):
        headers = f"Content-Type: text/plain; format=flowed; delsp={delsp}\r\n"
        assert parse_signal(_text(body, headers), today=TODAY) == SANNE
    flowed = "Content-Type: text/plain; format=flowed\r\n"
    assert parse_signal(_text(body, flowed), today=TODAY) == Signal(
        children=(Child("Sanne de Vr ies", dt.date(2016, 4, 12)),), reference="VT-1")


@pytest.mark.parametrize("extra", [
    'Content-Type: text/rfc822-headers; name="headers.json"\r\n\r\nSubject: x',
    'Content-Type: application/json; protected-headers="v1"\r\n\r\n{}',
], ids=["rfc822-headers-named-json", "protected-headers-json"])
def test_protected_header_parts_are_never_the_payload(extra: str) -> None:
    """Thunderbird's protected-headers parts are skipped even when they look like JSON."""
    assert parse_signal(_mixed_with(extra), today=TODAY) == SANNE


@pytest.mark.parametrize("cte", ["binary", "", "8bit", "7bit"])
def test_identity_transfer_encodings_are_read(cte: str) -> None:
    """binary, 7bit, 8bit and an empty Content-Transfer-Encoding carry the text as it is."""
    headers = f"Content-Type: text/plain\r\nContent-Transfer-Encoding: {cte}\r\n"
    assert parse_signal(_text(LABELLED, headers), today=TODAY) == SANNE


def test_a_non_string_reference_in_json_is_named() -> None:
    """JSON whose reference is not a string is refused naming the reference."""
    document = {"codeword": "Handle with Care", "reference": 5,
                "children": [{"name": "Sanne de Vries", "birthdate": "2016-04-12"}]}
    raw = ("Content-Type: application/json\r\n\r\n" + json.dumps(document)).encode()
    assert parse_signal(raw, today=TODAY) == Rejection(RejectClass.INVALID_SIGNAL,
                                                       "reference is not a string")


def test_a_labelled_value_is_read_from_the_first_colon() -> None:
    """The label ends at the first colon: "Referentie: VT:1" is the reference "VT:1" (refused
    as malformed), not free text."""
    body = LABELLED.replace("Referentie: VT-1", "Referentie: VT:1")
    assert parse_signal(_text(body), today=TODAY) == Rejection(RejectClass.INVALID_SIGNAL,
                                                               "reference is malformed")


def test_a_label_without_a_colon_is_free_text() -> None:
    """A line that is only a label word ("Naam") is free text, not an empty field."""
    assert parse_signal(_text("Naam\r\n" + LABELLED + "BSN\r\n"), today=TODAY) == SANNE


@pytest.mark.parametrize("end", ["\x0c", "\x0b", "\u2028", "\x1c"])
def test_a_labelled_value_is_trimmed_of_spaces_and_tabs_only(end: str) -> None:
    """Only spaces and tabs are trimmed from a value: a form feed or line separator at its end
    makes the name invalid instead of vanishing."""
    body = LABELLED.replace("Sanne de Vries", "Sanne de Vries" + end)
    assert parse_signal(_text(body), today=TODAY) == Rejection(
        RejectClass.INVALID_SIGNAL, "child 1: name is not a valid name")


@pytest.mark.parametrize(("text", "delsp", "unflowed"), [
    ("> a \n> b\nc", False, ">a b\nc"),
    ("> a \nb", False, ">a \nb"),
    ("a \nb ", False, "a b "),
    ("a \r\nb\r\n", False, "a b\n"),
    ("a \nb", True, "ab"),
    ("ab  \nc", True, "ab c"),
    ("-- \nx", False, "-- \nx"),
    ("  From here\n>> quoted", False, " From here\n>>quoted"),
    ("> first", False, ">first"),
    ("x\n> a ", False, "x\n>a "),
], ids=["quoted-paragraph", "depth-change", "flowed-at-end", "crlf", "delsp", "delsp-one",
        "signature-separator", "space-stuffing", "quoted-first-line", "quoted-flowed-at-end"])
def test_unflow_follows_rfc_3676(text: str, delsp: bool, unflowed: str) -> None:
    """Flowed lines join within one quote depth; a depth change, the signature separator and
    the end close a paragraph; one stuffed space and, with delsp, one trailing space go."""
    assert _unflow(text, delsp=delsp) == unflowed


# -- mimelimits: a folded plain value reads as policy.default reads it ---------------------------


def test_a_folded_quoted_parameter_is_unfolded_like_policy_default() -> None:
    """A quoted parameter folded over two lines reads as policy.default reads it: unfolded."""
    data = b'Content-Type: text/plain; name="a\r\n b.txt"\r\n\r\nx'
    expected = BytesParser(policy=policy.default).parsebytes(data)
    assert parse_mime(data).get_param("name") == expected.get_param("name") == "a b.txt"


# -- mimelimits: counting before parsing ---------------------------------------------------------


@pytest.mark.parametrize(("data", "count"), [
    (b"Content-Type: text/plain\r\n\r\n--b1\r\n--b1\r\n", 0),
    (b'boundary="b1 "\r\n--b1\r\n--b1--\r\n', 2),
    (b'boundary="b1X"\r\n--b1X\r\n', 1),
    (b'boundary="b1\x0c"\r\n--b1\x0c\r\n', 1),
    (b'boundary="b1"\r\n--b1 x\r\n--b1\x0c\r\n--b1X\r\n--b1 \t\r\n', 1),
], ids=["no-boundary", "quoted-trailing-space", "x-at-end", "form-feed", "look-alikes"])
def test_delimiter_lines_count_only_lines_of_a_declared_boundary(data: bytes,
                                                                 count: int) -> None:
    """A line counts when it is `--` and a declared boundary (spaces and tabs after either
    ignored), with or without the closing `--`; other look-alike lines do not."""
    assert delimiter_lines(data) == count


@pytest.mark.parametrize(("data", "count"), [
    (b"", 0), (b"\r\n\r\nbody", 0), (b"A: 1\r\nB: 2", 2), (b"A: 1\r\n folded\r\n\r\nbody", 2),
], ids=["empty", "no-header", "no-blank-line", "folded"])
def test_header_lines_are_the_lines_before_the_first_blank_line(data: bytes,
                                                                 count: int) -> None:
    """Header lines are counted up to the first blank line, or to the end when there is none."""
    assert header_lines(data) == count
