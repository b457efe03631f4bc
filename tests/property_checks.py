"""The properties of the property tests, as plain checks over one drawn value each, and
`PROPERTIES`, each check with its strategy: tests/test_properties_*.py run them with a few
examples (`SETTINGS`), `fuzz/run.py` with many more.

What they pin: arbitrary bytes never make a pure stage raise (so never a traceback, never a 451
for a sender's garbage, never a 5xx that is our own fault), every accepted name is clean, every
accepted birth date plausible, no refusal carries a value from the message, and a well-formed
signal comes out exactly as it went in."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from gpg_strategies import (
    _PINNED_SETS,
    _SIGNATURE_PROBLEMS,
    ARMOR,
    PINNED,
    SIGNATURE,
    STRONG_HASHES,
    encrypted_messages,
    gpg_results,
    signed_entities,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from signal_strategies import (
    Generated,
    arbitrary_entities,
    fuzzed_signals,
    mutated,
    well_formed_signals,
)
from strategies import (
    _ANY_CHAR,
    NAME_MAX,
    PUPIL_MAX_AGE_YEARS,
    TODAY,
    ack_addresses,
    replies,
    years_before,
)

from gateway.core.model import CODEWORD, RejectClass, Rejection, Signal
from gateway.crypto.gpg import GpgResult
from gateway.ingress.acks import ack_token, automatic_reply
from gateway.ingress.replies import rejection_reply
from gateway.pipeline import extract, opener
from gateway.pipeline.extract import parse_signal

EXAMPLES = 120  # per test in `make test`; fuzz/run.py runs thousands
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


# The reply table (README.md, the replies to a sender): the one reply code per refusal class.
REPLY_CODES = {
    RejectClass.NOT_ENCRYPTED: "554 5.7.5",
    RejectClass.BAD_SIGNATURE: "554 5.7.7",
    RejectClass.INVALID_SIGNAL: "554 5.6.0",
    RejectClass.TOO_LARGE: "552 5.3.4",
}
FORBIDDEN_IN_NAMES = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))
# The catch-all detail of parse_signal: an exception inside extract, i.e. not a decision.
CATCH_ALL = "signal could not be read"


# --- oracles --------------------------------------------------------------------------------


def _fixed_texts() -> tuple[str, ...]:
    """Every string literal in extract's code (docstrings excluded), and the codeword: the only
    text a refusal detail may be made of."""
    tree = ast.parse(inspect.getsource(extract))
    docstrings = {
        id(node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    texts = {
        node.value for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and id(node) not in docstrings
    }
    return (*sorted(texts), CODEWORD)


FIXED_TEXTS = _fixed_texts()
_CHILD_PREFIX = re.compile(r"child [0-9]+: ")


def assert_safe_detail(rejection: Rejection) -> None:
    """A refusal detail fit for an SMTP reply: printable ASCII, one line, 1..200 characters."""
    detail = rejection.detail
    assert detail.isascii(), detail
    assert detail.isprintable(), detail  # no CR, LF, tab or other control character
    assert 0 < len(detail) <= 200, detail


def assert_no_value_in(detail: str, values: tuple[str, ...]) -> None:
    """No generated value of 4 or more characters appears in `detail`, unless the value is
    itself part of extract's fixed wording (a name "Care" is in "Handle with Care")."""
    body = _CHILD_PREFIX.sub("", detail)
    for value in values:
        if len(value) >= 4 and value in body:
            assert any(value in text for text in FIXED_TEXTS), (value, detail)


def assert_valid_signal(signal: Signal, today: dt.date) -> None:
    """Every child of an accepted signal has a clean name and a plausible birth date."""
    assert 1 <= len(signal.children) <= extract.MAX_CHILDREN
    earliest = years_before(today, PUPIL_MAX_AGE_YEARS)
    for child in signal.children:
        name = child.name
        assert 1 <= len(name) <= NAME_MAX
        assert unicodedata.is_normalized("NFC", name)
        for char in name:
            assert unicodedata.category(char) not in FORBIDDEN_IN_NAMES, hex(ord(char))
            assert unicodedata.category(char) != "Nd" and not char.isdigit(), hex(ord(char))
        assert isinstance(child.birthdate, dt.date)
        assert earliest <= child.birthdate <= today
        if child.bsn is not None:
            assert re.fullmatch(r"[0-9]{9}", child.bsn)
        if child.school_hint is not None:
            assert re.fullmatch(r"[0-9]{2}[A-Z]{2}([0-9]{2})?", child.school_hint)
    if signal.reference is not None:
        assert re.fullmatch(r"[A-Za-z0-9._/-]{1,64}", signal.reference)


# --- the properties, as plain checks (shared with fuzz/run.py) --------------------------------


def check_parse_signal_on_arbitrary_bytes(entity: bytes) -> None:
    """parse_signal never raises; a refusal is INVALID_SIGNAL with a safe detail."""
    result = parse_signal(entity, today=TODAY)
    if isinstance(result, Signal):
        assert_valid_signal(result, TODAY)
    else:
        assert isinstance(result, Rejection)
        assert result.kind is RejectClass.INVALID_SIGNAL
        assert_safe_detail(result)


def check_parse_signal_on_fuzzed_signal(case: Generated) -> None:
    """Accepted names and dates are clean; refusals are decisions that carry no value."""
    result = parse_signal(case.entity, today=case.today)
    if isinstance(result, Signal):
        assert_valid_signal(result, case.today)
        return
    assert isinstance(result, Rejection)
    assert result.kind is RejectClass.INVALID_SIGNAL
    assert_safe_detail(result)
    # The entity is well-formed MIME: an exception inside extract here is our fault, not the
    # sender's, and must not be answered with a 5xx.
    assert result.detail != CATCH_ALL
    assert_no_value_in(result.detail, case.values)


def check_round_trip(case: Generated) -> None:
    """A well-formed signal is accepted with exactly its children, in order."""
    result = parse_signal(case.entity, today=case.today)
    assert isinstance(result, Signal), result
    assert case.expected is not None
    got = [(c.name, c.birthdate, c.bsn, c.school_hint) for c in result.children]
    want = [(c.name, c.birthdate, c.bsn, c.school_hint) for c in case.expected.children]
    assert got == want
    assert result.reference == case.expected.reference


def check_encrypted_payload(case: tuple[bytes, bool]) -> None:
    """encrypted_payload never raises; it returns the armor of a right message, else a refusal."""
    raw, right = case
    result = opener.encrypted_payload(raw)
    if isinstance(result, Rejection):
        assert result.kind in (RejectClass.NOT_ENCRYPTED, RejectClass.TOO_LARGE)
        assert_safe_detail(result)
        assert not right, result
    else:
        assert isinstance(result, bytes)
        assert b"-----BEGIN PGP MESSAGE-----" in result
        if right:
            assert ARMOR.strip() in result.replace(b"\r\n", b"\n")


def check_signed_parts(case: tuple[bytes, bytes | None]) -> None:
    """signed_parts never raises; what it calls signed is bytes of the input, exact if right."""
    entity, signed = case
    result = opener.signed_parts(entity)
    if result is None:
        assert signed is None
    elif isinstance(result, Rejection):
        assert result.kind is RejectClass.BAD_SIGNATURE
        assert_safe_detail(result)
        assert signed is None, result
    else:
        got, signature = result
        assert isinstance(got, bytes) and isinstance(signature, bytes)
        assert got in entity.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        if signed is not None:
            assert got == signed
            assert signature.replace(b"\r\n", b"\n").strip() == SIGNATURE.strip()


def check_rejection_reply(rejection: Rejection) -> None:
    """Every refusal is one 55x line with its enhanced code (docs/protocol.md §5), no CR or LF."""
    reply = rejection_reply(rejection)
    code = REPLY_CODES[rejection.kind]
    assert re.match(r"55[0-9] 5\.[0-9]{1,3}\.[0-9]{1,3}( |$)", reply), reply
    assert reply == code or reply.startswith(code + " "), reply
    assert "\r" not in reply and "\n" not in reply
    assert len(reply.splitlines()) == 1
    if rejection.detail.isascii():
        assert reply.isascii() and len(reply) <= len(code) + 1 + 200


def check_decryption_verdict(case: tuple[GpgResult, bool]) -> None:
    """decryption_verdict never raises and passes only a real, integrity-protected decryption."""
    result, pristine = case
    verdict = opener.decryption_verdict(result)
    if verdict is not None:
        assert isinstance(verdict, Rejection)
        assert verdict.kind is RejectClass.NOT_ENCRYPTED
        assert_safe_detail(verdict)
        assert not pristine, verdict
        return
    keys = [key for key, _ in result.status]
    assert "DECRYPTION_OKAY" in keys and "END_DECRYPTION" in keys
    assert "DECRYPTION_FAILED" not in keys and "NEED_PASSPHRASE_SYM" not in keys
    infos = [value.split() for key, value in result.status if key == "DECRYPTION_INFO"]
    assert infos
    for info in infos:
        assert (info and info[0] != "0") or (len(info) > 2 and info[2] != "0")


def check_signature_verdict(case: tuple[tuple[GpgResult, bool], frozenset[str]]) -> None:
    """signature_verdict never raises and accepts exactly one good signature by a pinned key."""
    (result, pristine), pinned = case
    verdict = opener.signature_verdict(result, pinned)
    count = {key: 0 for key in ("NEWSIG", "GOODSIG", "VALIDSIG", *_SIGNATURE_PROBLEMS)}
    for key, _ in result.status:
        if key in count:
            count[key] += 1
    valid = result.keywords("VALIDSIG")
    fields = valid[0].split() if len(valid) == 1 else []
    # gpg writes the primary-key fingerprint as VALIDSIG's tenth field (DETAILS); the verdict
    # falls back to the first field for a gpg too old to write it.
    primary = fields[9] if len(fields) >= 10 else (fields[0] if fields else None)
    acceptable = (
        count["NEWSIG"] == count["GOODSIG"] == count["VALIDSIG"] == 1
        and not any(count[key] for key in _SIGNATURE_PROBLEMS)
        and result.returncode == 0
        and len(fields) >= 8 and fields[7] in STRONG_HASHES
        and primary is not None
        and primary in pinned
    )
    if isinstance(verdict, str):
        assert acceptable, verdict
        assert verdict == primary
    else:
        assert isinstance(verdict, Rejection)
        assert verdict.kind is RejectClass.BAD_SIGNATURE
        assert_safe_detail(verdict)
        assert not acceptable, verdict
    if pristine and PINNED[0] in pinned:
        assert verdict == PINNED[0]


_TOKEN = re.compile(r"ack\+([a-z2-7]{26})", re.ASCII | re.IGNORECASE)


def check_ack_token(address: str) -> None:
    """ack_token never raises and returns, lower-cased, exactly a 26-character base32 token
    after `ack+` in an ASCII local part; anything else is None."""
    local = address.rpartition("@")[0]
    match = _TOKEN.fullmatch(local)
    assert ack_token(address) == (match.group(1).lower() if match else None), address


def check_automatic_reply(case: tuple[bytes, str | None]) -> None:
    """automatic_reply reads the header section only and names the marker it holds."""
    message, expected = case
    assert automatic_reply(message) == expected, message


def check_automatic_reply_on_arbitrary_bytes(message: bytes) -> None:
    """automatic_reply never raises on any bytes and answers None or one known reason."""
    assert automatic_reply(message) in (None, "auto_submitted", "precedence", "x_autoreply",
                                        "x_autorespond")


T = TypeVar("T")


@dataclass(frozen=True)
class Property(Generic[T]):
    """One property: a strategy and the check every value it draws must pass."""

    name: str
    strategy: st.SearchStrategy[T]
    check: Callable[[T], None]


_REJECTIONS = st.builds(Rejection, st.sampled_from(RejectClass), st.text(_ANY_CHAR, max_size=300))
_STATUS_FOR_SIGNATURES = st.tuples(gpg_results(), _PINNED_SETS)

PROPERTIES: tuple[Property[Any], ...] = (
    Property("parse_signal/arbitrary", arbitrary_entities, check_parse_signal_on_arbitrary_bytes),
    Property("parse_signal/fuzzed", fuzzed_signals(), check_parse_signal_on_fuzzed_signal),
    Property("parse_signal/round-trip", well_formed_signals(), check_round_trip),
    Property("encrypted_payload", st.one_of(
        encrypted_messages(),
        st.tuples(st.binary(max_size=1024), st.just(False)),
        st.tuples(mutated(encrypted_messages().map(lambda m: m[0])), st.just(False)),
    ), check_encrypted_payload),
    Property("signed_parts", st.one_of(
        signed_entities(),
        st.tuples(st.binary(max_size=1024), st.none()),
        st.tuples(mutated(signed_entities().map(lambda m: m[0])), st.none()),
    ), check_signed_parts),
    Property("rejection_reply", _REJECTIONS, check_rejection_reply),
    Property("decryption_verdict", gpg_results(), check_decryption_verdict),
    Property("signature_verdict", _STATUS_FOR_SIGNATURES, check_signature_verdict),
    Property("ack_token", ack_addresses(), check_ack_token),
    Property("automatic_reply", replies(), check_automatic_reply),
    Property("automatic_reply/arbitrary", st.binary(max_size=2048),
             check_automatic_reply_on_arbitrary_bytes),
)
