"""Tests for pipeline.extract: what a rejection may say, and that no input makes it raise."""

from __future__ import annotations

import base64
import json
import random

import pytest
from extract_helpers import (
    DUTCH_TEXT,
    EXAMPLE_JSON,
    TODAY,
    json_child,
    json_leaf,
    leaf,
    multipart,
    one_child,
    rejected,
    text_signal,
)

from gateway.core.model import Rejection, Signal
from gateway.pipeline.extract import parse_signal

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
        multipart(leaf(DUTCH_TEXT), json_leaf(EXAMPLE_JSON)),
        leaf(
            base64.encodebytes(json.dumps(EXAMPLE_JSON).encode()),
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
