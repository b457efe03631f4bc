"""The extract stage: the verified inner entity in, the minimal `Signal` out.

Takes: the exact bytes of the MIME entity that `open` decrypted and whose signature it verified
(a header block, a blank line, a body; LF or CRLF). The caller has already bounded its size.
Produces: a `Signal` with the codeword checked, the sender's reference, and per child the name,
birth date, optional BSN and school hint (docs/protocol.md §4, JSON or text); nothing else of the
message (headers, incident details, other parts, unknown keys and lines) leaves this function.
Fails: never raises. Anything not a valid signal is `Rejection(INVALID_SIGNAL, detail)`; the
detail goes back to the sender in the SMTP reply, so it names a field and a 1-based child number
in fixed ASCII and never carries a value from the message (docs/architecture.md invariant 4).
Trusts: that `open` checked who sent it; nothing about its shape.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass, field
from email.message import Message

from gateway.core import fields
from gateway.core.mimelimits import delimiter_lines, parse_mime
from gateway.core.model import CODEWORD, Child, RejectClass, Rejection, Signal

MAX_PARTS = 50  # every entity in the tree, the root and containers included
MAX_DEPTH = 8  # multipart containers around a part; a signal needs two or three at most
MAX_CHILDREN = 20
PUPIL_MAX_AGE_YEARS = 25

_REFERENCE = re.compile(r"[A-Za-z0-9._/-]{1,64}")

# Labels as docs/protocol.md §4 lists them, casefolded with inner whitespace collapsed.
_LABELS = {
    "codewoord": "codeword",
    "codeword": "codeword",
    "referentie": "reference",
    "reference": "reference",
    "naam": "name",
    "name": "name",
    "geboortedatum": "birthdate",
    "date of birth": "birthdate",
    "birthdate": "birthdate",
    "bsn": "bsn",
    "school": "school",
    "vestiging": "school",
    "brin": "school",
}
_CHILD_FIELDS = ("name", "birthdate", "bsn", "school")


class _Invalid(Exception):
    """Internal: carries a detail that is already safe to show the sender."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class _Fields:
    """What a payload said, as untrusted strings, before validation (both forms end here)."""

    codeword: str | None = None
    reference: str | None = None
    children: list[dict[str, str]] = field(default_factory=list)


def parse_signal(entity: bytes, *, today: dt.date) -> Signal | Rejection:
    """The validated signal in `entity`, or the reason it is not one."""
    try:
        kind, text = _payload(entity)
        found = _read_json(text) if kind == "json" else _read_labelled(text)
        return _validate(found, today)
    except _Invalid as invalid:
        return Rejection(RejectClass.INVALID_SIGNAL, invalid.detail)
    except Exception:  # the email package raises odd things on odd input; never a traceback here
        return Rejection(RejectClass.INVALID_SIGNAL, "signal could not be read")


# --- MIME: find the one payload part and decode it ------------------------------------------


def _payload(entity: bytes) -> tuple[str, str]:
    """("json" | "text", decoded text) of the single payload part."""
    # The email parser takes seconds on a megabyte of tiny parts; count before parsing.
    if delimiter_lines(entity) > 2 * MAX_PARTS:
        raise _Invalid("too many MIME parts")
    root = parse_mime(entity)
    json_parts: list[Message] = []
    text_parts: list[Message] = []
    for part in _leaves(root):
        kind = _candidate_kind(part)
        if kind == "json":
            json_parts.append(part)
        elif kind == "text":
            text_parts.append(part)
    chosen = json_parts or text_parts
    if not chosen:
        raise _Invalid("no signal payload found")
    if len(chosen) > 1:
        # Never pick one of two: the other might be the signal the sender meant.
        raise _Invalid("more than one payload part")
    part = chosen[0]
    text = _decoded_text(part)
    if not json_parts and str(part.get_param("format", "")).lower() == "flowed":
        text = _unflow(text, delsp=str(part.get_param("delsp", "")).lower() == "yes")
    return ("json" if json_parts else "text"), text


def _leaves(root: Message) -> list[Message]:
    """The leaf parts in document order, refusing trees too big or deep to be a signal."""
    leaves: list[Message] = []
    stack: list[tuple[Message, int]] = [(root, 0)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > MAX_PARTS:
            raise _Invalid("too many MIME parts")
        if depth > MAX_DEPTH:
            raise _Invalid("MIME nesting too deep")
        if not part.is_multipart():
            leaves.append(part)
        elif part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if not isinstance(children, list):
                raise _Invalid("signal could not be read")
            stack.extend(
                (child, depth + 1) for child in reversed(children) if isinstance(child, Message)
            )
        # else message/rfc822 and kin: a forwarded message is an attachment, not the signal.
    return leaves


def _candidate_kind(part: Message) -> str | None:
    content_type = part.get_content_type()
    # Thunderbird's legacy protected-headers display part repeats the Subject and addresses
    # for old clients; it is never the payload, though the main text/plain may carry the same
    # parameter.
    if content_type == "text/rfc822-headers":
        return None
    if part.get_param("protected-headers") is not None and content_type != "text/plain":
        return None
    filename = part.get_filename()
    if content_type == "application/json" or (
        isinstance(filename, str) and filename.lower().endswith(".json")
    ):
        return "json"
    if content_type == "text/plain" and part.get_content_disposition() != "attachment":
        return "text"
    return None


def _decoded_text(part: Message) -> str:
    """The part's content as text; a broken transfer encoding or charset is a rejection."""
    encoding = str(part.get("content-transfer-encoding", "7bit")).strip().lower()
    if encoding in ("7bit", "8bit", "binary", "", "quoted-printable"):
        # get_payload() without decode would already decode 8-bit bytes, lossily ("replace");
        # with decode=True it gives the exact bytes back (QP decoded), never raising.
        data = part.get_payload(decode=True)
    elif encoding == "base64":
        # Decoded by hand: get_payload(decode=True) repairs broken base64 silently (a defect,
        # not an error) and so could yield a truncated name.
        try:
            encoded = str(part.get_payload()).encode("ascii")
            data = base64.b64decode(b"".join(encoded.split()), validate=True)
        except (UnicodeError, binascii.Error):
            raise _Invalid("payload part has broken base64") from None
    else:
        raise _Invalid("payload part has an unsupported transfer encoding")
    if not isinstance(data, bytes):
        raise _Invalid("payload part is unreadable")
    charset = part.get_content_charset() or "utf-8"
    try:
        text = data.decode(charset)
    except LookupError:  # unknown, or not a text codec ("base64", "rot13")
        raise _Invalid("payload part has an unknown charset") from None
    except UnicodeError:
        raise _Invalid("payload part is not valid in its charset") from None
    return text.removeprefix("\ufeff")


def _unflow(text: str, *, delsp: bool) -> str:
    """Undo RFC 3676 format=flowed, so a long `Naam:` line that the sender's client wrapped
    comes back whole instead of losing its tail (Thunderbird sends flowed text by default)."""
    lines: list[str] = []
    pending: str | None = None
    pending_depth = 0
    for physical in text.split("\n"):
        line = physical.removesuffix("\r")
        depth = len(line) - len(line.lstrip(">"))
        body = line[depth:].removeprefix(" ")  # space-stuffing, RFC 3676 §4.4
        flowed = body.endswith(" ") and body != "-- "
        if flowed and delsp:
            body = body[:-1]
        if pending is not None:
            if depth == pending_depth:
                body = pending + body
            else:  # a quote-depth change ends a paragraph (§4.5)
                lines.append(">" * pending_depth + pending)
            pending = None
        if flowed:
            pending, pending_depth = body, depth
        else:
            lines.append(">" * depth + body)
    if pending is not None:
        lines.append(">" * pending_depth + pending)
    return "\n".join(lines)


# --- the two payload forms ------------------------------------------------------------------


def _read_json(text: str) -> _Fields:
    try:
        document: object = json.loads(
            text, object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except (ValueError, RecursionError):
        raise _Invalid("JSON is malformed") from None
    if not isinstance(document, dict):
        raise _Invalid("JSON is not an object")
    found = _Fields(
        codeword=_json_string(document, "codeword", "codeword"),
        reference=_json_string(document, "reference", "reference"),
    )
    children = document.get("children")
    if children is None:
        raise _Invalid("children missing")
    if not isinstance(children, list):
        raise _Invalid("children is not a list")
    if len(children) > MAX_CHILDREN:
        raise _Invalid("too many children")
    for number, item in enumerate(children, start=1):
        if not isinstance(item, dict):
            raise _Invalid(f"child {number}: not an object")
        values: dict[str, str] = {}
        for key in _CHILD_FIELDS:
            value = _json_string(item, key, f"child {number}: {key}")
            if value is not None:
                values[key] = value
        found.children.append(values)
    return found


def _json_string(obj: dict[str, object], key: str, what: str) -> str | None:
    """obj[key] as a string; None when absent or null (treated alike: both say "not given")."""
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise _Invalid(f"{what} is not a string")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Parsers disagree on which duplicate wins; a signal that means two things is refused.
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise _Invalid("duplicate key in JSON")
        result[key] = value
    return result


def _no_constant(name: str) -> object:
    raise _Invalid("JSON contains NaN or Infinity")


def _read_labelled(text: str) -> _Fields:
    found = _Fields()
    # Split on LF only: str.splitlines() would also break at VT, FF, NEL and U+2028, turning a
    # hidden separator inside a name into a line of its own instead of an invalid name.
    for line in text.split("\n"):
        label, colon, rest = line.removesuffix("\r").partition(":")
        what = _LABELS.get(" ".join(label.split()).casefold()) if colon else None
        if what is None:
            continue  # free text, greetings, incident details, signatures: read by nobody
        value = rest.strip(" \t")
        if what in ("codeword", "reference"):
            if getattr(found, what) is not None:
                raise _Invalid(f"{what} given twice")
            setattr(found, what, value)
        elif what == "name":
            if len(found.children) == MAX_CHILDREN:
                raise _Invalid("too many children")
            found.children.append({"name": value})
        elif not found.children:
            raise _Invalid(f"{what} before the first name")
        elif what in found.children[-1]:
            raise _Invalid(f"child {len(found.children)}: {what} given twice")
        else:
            found.children[-1][what] = value
    return found


# --- validation, the same for both forms ----------------------------------------------------


def _validate(found: _Fields, today: dt.date) -> Signal:
    if found.codeword is None or not found.codeword.strip():
        raise _Invalid("codeword missing")
    if " ".join(found.codeword.split()).casefold() != CODEWORD.casefold():
        raise _Invalid(f"codeword is not {CODEWORD}")
    reference = _given(found.reference)
    if reference is not None and _REFERENCE.fullmatch(reference) is None:
        raise _Invalid("reference is malformed")
    if not found.children:
        raise _Invalid("no child named")
    if len(found.children) > MAX_CHILDREN:
        raise _Invalid("too many children")
    children = tuple(
        _child(number, values, today) for number, values in enumerate(found.children, start=1)
    )
    return Signal(children=children, reference=reference)


def _child(number: int, values: dict[str, str], today: dt.date) -> Child:
    prefix = f"child {number}:"
    name_text = _given(values.get("name"))
    if name_text is None:
        raise _Invalid(f"{prefix} name missing")
    name = fields.clean_name(name_text)
    if name is None:
        raise _Invalid(f"{prefix} name is not a valid name")

    date_text = _given(values.get("birthdate"))
    if date_text is None:
        raise _Invalid(f"{prefix} birthdate missing")
    birthdate = fields.parse_date(date_text)
    if birthdate is None:
        raise _Invalid(f"{prefix} birthdate is not a valid date")
    if not _years_before(today, PUPIL_MAX_AGE_YEARS) <= birthdate <= today:
        raise _Invalid(f"{prefix} birthdate is not plausible for a pupil")

    bsn: str | None = None
    bsn_text = _given(values.get("bsn"))
    if bsn_text is not None:
        bsn = fields.bsn_digits(bsn_text)
        if bsn is None:
            raise _Invalid(f"{prefix} bsn is not 9 digits")
        if not fields.passes_eleven_test(bsn):
            raise _Invalid(f"{prefix} bsn fails the eleven-test")

    school: str | None = None
    school_text = _given(values.get("school"))
    if school_text is not None:
        school = fields.normalise_school(school_text)
        if school is None:
            raise _Invalid(f"{prefix} school is not a valid vestigingscode")

    return Child(name=name, birthdate=birthdate, bsn=bsn, school_hint=school)


def _given(value: str | None) -> str | None:
    """The value trimmed of spaces and tabs, or None when blank: a template line left empty
    (`BSN:`) means "not given", not "invalid"."""
    if value is None:
        return None
    trimmed = value.strip(" \t")
    return trimmed or None


def _years_before(today: dt.date, years: int) -> dt.date:
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February
        return today.replace(year=today.year - years, day=28)
