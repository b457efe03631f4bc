"""Tests for gateway.core.mimelimits' parser: the cheap header path reads every value exactly as
policy.default does, and parse_mime answers every question open and extract ask of a tree (and
raises) exactly as `BytesParser(policy=policy.default)` does."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from email import policy
from email.message import Message
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from gateway.core.mimelimits import parse_mime, plain_header_text

# As in tests/strategies.py: hypothesis's Unicode tables stay out of the repository.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "hwc-gateway-hypothesis")

SETTINGS = settings(max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

HEADERS = ("Content-Type", "content-type", "Content-Disposition", "Content-Transfer-Encoding")


def default_text(name: str, value: str) -> str:
    """The text of policy.default's header object: what `Message` methods work on."""
    return str(policy.default.header_fetch_parse(name, value))


def unfolded(value: str) -> str:
    return value.replace("\r", "").replace("\n", "")


@pytest.mark.parametrize(("name", "value"), [
    ("Content-Type",
     'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="enc-ad23721f98"'),
    ("Content-Type", 'multipart/signed; micalg=pgp-sha256;\r\n\tprotocol="application/pgp-'
                     'signature";\r\n boundary="------------TE7WpXvHCb0FhkOl8"'),
    ("Content-Type", "text/plain; charset=UTF-8; format=flowed; delsp=yes"),
    ("Content-Type", 'multipart/mixed; boundary="=_hwc_mixed_1"; protected-headers="v1"'),
    ("Content-Type", 'text/plain; charset="utf-8" ;name="Sanne de Vries.txt"  '),
    ("Content-Type", "application/json"),
    ("Content-Type", "text/plain;"),
    ("Content-Type", "text/plain; \t"),
    ("content-type", "TEXT/Plain; Charset=ISO-8859-1; Format=Flowed"),
    ("Content-Disposition", 'attachment; filename="signaal.json"'),
    ("Content-Disposition", "inline"),
    ("Content-Transfer-Encoding", "quoted-printable"),
    ("Content-Transfer-Encoding", "Base64"),
])
def test_plain_values_skip_the_header_parser(name: str, value: str) -> None:
    """What senders' clients write is read without policy.default's parser, to the same text."""
    text = plain_header_text(name, unfolded(value))
    assert text is not None
    assert text == default_text(name, value)


@pytest.mark.parametrize(("name", "value"), [
    ("Content-Type", "text/plain; name*=utf-8''%C3%A9.json"),  # RFC 2231
    ("Content-Type", "text/plain; name*0=a; name*1=b"),
    ("Content-Type", "application/pgp-signature; x*"),  # the parser raises on this one
    ("Content-Type", 'text/plain; name="=?utf-8?q?Sanne?="'),  # RFC 2047 in a quoted string
    ("Content-Type", "text/plain (comment); charset=utf-8"),
    ("Content-Type", 'text/plain; name="a\\"b"'),  # a quoted pair
    ("Content-Type", 'text/plain; name="Jos\u00e9"'),
    ("Content-Type", 'text/plain; name="Jos\udcc3\udca9"'),  # undecodable bytes
    ("Content-Type", 'text/plain; name=""'),
    ("Content-Type", "text/plain ; charset=utf-8"),  # the space stays in policy.default's text
    ("Content-Type", " text/plain"),
    ("Content-Type", "text/plain; charset=utf-8; charset=latin-1"),  # the first one wins
    ("Content-Type", "text/plain; Charset=utf-8; charset=latin-1"),  # both are kept
    ("Content-Type", "text/plain; charset"),
    ("Content-Type", "text/plain; charset=utf-8 junk"),
    ("Content-Type", "text/plain; charset = utf-8"),
    ("Content-Type", "text"),
    ("Content-Type", ""),
    ("Content-Disposition", "attachment; filename=a/b.json"),
    ("Content-Transfer-Encoding", "base64 "),
    ("Subject", "Handle with Care"),
])
def test_other_values_are_left_to_the_header_parser(name: str, value: str) -> None:
    """Anything policy.default decodes, repairs, drops or raises on is not answered here."""
    assert plain_header_text(name, value) is None


_PIECES = (
    "text/plain", "multipart/mixed", "a/b", "attachment", "base64", ";", "; ", " ", "\t", "\r\n ",
    "\n\t", "=", '"', "\\", "*", "'", "%", "?", "=?", "=?utf-8?q?a=41?=", "(c)", "/", ",", ".",
    "charset", "boundary", "name", "Name", "x", "x*", "name*0*", "utf-8", "utf-8''%C3%A9", "a",
    "\u00e9", "\udcff", "\x00", "\x7f",
)
_VALUES = st.lists(st.sampled_from(_PIECES), max_size=16).map("".join)
_PARAMETERS = st.lists(st.tuples(
    st.sampled_from(("", " ", "\t", "\r\n ")),
    st.sampled_from(("charset", "Charset", "boundary", "name", "protocol", "format", "x")),
    st.one_of(st.from_regex(r"[A-Za-z0-9!#$&+.^_`{|}~-]{1,5}", fullmatch=True),
              st.from_regex(r'"[\t !#-\[\]-~]{0,6}"', fullmatch=True)),
    st.sampled_from(("", " ", "\t")),
).map(lambda p: f";{p[0]}{p[1]}={p[2]}{p[3]}"), max_size=4).map("".join)
_PLAINISH = st.tuples(
    st.sampled_from(("text/plain", "multipart/signed", "application/json", "inline", "base64")),
    _PARAMETERS, st.sampled_from(("", ";", "; ", " ", ";;", " ;")),
).map("".join)


@SETTINGS
@given(st.sampled_from(HEADERS), st.one_of(_VALUES, _PLAINISH))
@example("Content-Type", 'text/plain; charset="a b" ; format=flowed')
@example("Content-Type", 'text/plain;\tcharset=utf-8;')
def test_plain_header_text_is_policy_defaults_text(name: str, value: str) -> None:
    """Whenever the cheap path answers, its text is policy.default's, character for character."""
    text = plain_header_text(name, unfolded(value))
    if text is not None:
        assert text == default_text(name, value)


def _outcome(question: Callable[[Message], object], part: Message) -> object:
    try:
        return question(part)
    except Exception as error:  # the same exception, or the same answer
        return (type(error), str(error))


def _answers(parse: Callable[[bytes], Message], data: bytes) -> object:
    """Everything open and extract ask of a parsed tree, part by part."""
    try:
        root = parse(data)
    except Exception as error:
        return (type(error), str(error))
    questions: list[Callable[[Message], object]] = [
        Message.get_content_type, Message.get_content_maintype, Message.get_params,
        lambda part: part.get_params(header="content-disposition"),
        lambda part: part.get_param("protocol", "", header="content-type"),
        lambda part: part.get_param("charset"), lambda part: part.get_param("format", ""),
        lambda part: part.get_param("protected-headers"), Message.get_boundary,
        Message.get_filename, Message.get_content_charset, Message.get_content_disposition,
        lambda part: str(part.get("content-transfer-encoding", "7bit")),
        lambda part: part.get_payload(decode=True),
        lambda part: part.get_payload() if not part.is_multipart() else len(part.get_payload()),
        lambda part: [type(defect) for defect in part.defects],
    ]
    return [[_outcome(question, part) for question in questions]
            for part in root.walk()]


@st.composite
def entities(draw: st.DrawFn) -> bytes:
    """A MIME entity with hostile Content-* headers, alone or as a part of a multipart."""
    names = st.sampled_from(HEADERS)
    head = "".join(f"{name}: {value}\n" for name, value in draw(
        st.lists(st.tuples(names, st.one_of(_VALUES, _PLAINISH)), min_size=1, max_size=4)))
    body = draw(st.sampled_from((
        "Codewoord: Handle with Care\nNaam: Jan=20Jansen\n", "SGFuZGxlIHdpdGggQ2FyZQ==\n",
        "--b\nContent-Type: text/plain\n\nx\n--b--\n", "caf\u00e9\n",
    )))
    data = (head + "\n" + body).encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        data = b'Content-Type: multipart/mixed; boundary="m"\n\n--m\n' + data + b"\n--m--\n"
    return data.replace(b"\n", b"\r\n") if draw(st.booleans()) else data


@SETTINGS
@given(entities())
@example(b"Content-Type: application/pgp-signature; x*\n\n")
@example(b"Content-Type: text/plain; name*=utf-8''Jos%C3%A9.json\n\nx\n")
@example(b'Content-Type: text/plain; charset="iso-8859-1"\n'
         b"Content-Transfer-Encoding: quoted-printable\n\nJos=E9\n")
def test_parse_mime_answers_as_policy_default(data: bytes) -> None:
    """Every question open and extract ask of the tree gets policy.default's answer, or its
    exception."""
    reference = BytesParser(policy=policy.default)
    assert _answers(parse_mime, data) == _answers(reference.parsebytes, data)
