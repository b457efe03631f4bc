"""Signals and MIME entities the tests/test_extract_*.py files build, and the answers they expect
from pipeline.extract."""

from __future__ import annotations

import datetime as dt
import itertools
import json

from gateway.core.model import Child, RejectClass, Rejection, Signal
from gateway.pipeline.extract import parse_signal

TODAY = dt.date(2026, 3, 2)

SANNE_JSON = {
    "name": "Sanne de Vries",
    "birthdate": "2016-04-12",
    "bsn": "123456782",
    "school": "12AB00",
}
DAAN_JSON = {"name": "Daan de Vries", "birthdate": "2013-09-03"}
EXAMPLE_JSON = {
    "codeword": "Handle with Care",
    "reference": "VT-HVB-2026-000123",
    "children": [SANNE_JSON, DAAN_JSON],
}
EXAMPLE_SIGNAL = Signal(
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
