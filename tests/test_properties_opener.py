"""Property tests (hypothesis) over the opener's MIME entry points and gpg verdicts: they never
raise, and accept exactly what they should. The properties and strategies are in
tests/property_checks.py and tests/*strategies.py."""

from __future__ import annotations

from gpg_strategies import GOOD_SIGNATURE, PINNED, gpg_results
from hypothesis import example, given
from hypothesis import strategies as st
from property_checks import (
    _STATUS_FOR_SIGNATURES,
    PROPERTIES,
    SETTINGS,
    check_decryption_verdict,
    check_encrypted_payload,
    check_signature_verdict,
    check_signed_parts,
)

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import GpgResult
from gateway.pipeline import opener


@SETTINGS
@given(PROPERTIES[3].strategy)
def test_encrypted_payload_never_raises(case: tuple[bytes, bool]) -> None:
    """encrypted_payload returns the armor of an RFC 3156 message and refuses anything else."""
    check_encrypted_payload(case)


@SETTINGS
@given(PROPERTIES[4].strategy)
def test_signed_parts_never_raises(case: tuple[bytes, bytes | None]) -> None:
    """signed_parts returns the exact signed bytes of a multipart/signed, else None or refusal."""
    check_signed_parts(case)


@SETTINGS
@given(gpg_results())
def test_decryption_verdict_never_raises(case: tuple[GpgResult, bool]) -> None:
    """decryption_verdict passes only DECRYPTION_OKAY + END_DECRYPTION with integrity proof."""
    check_decryption_verdict(case)


@SETTINGS
@given(_STATUS_FOR_SIGNATURES)
def test_signature_verdict_accepts_only_one_pinned_good_signature(
    case: tuple[tuple[GpgResult, bool], frozenset[str]],
) -> None:
    """signature_verdict accepts iff one NEWSIG/GOODSIG/VALIDSIG, pinned, a SHA-2 or SHA-3
    hash, no problem, exit 0."""
    check_signature_verdict(case)


@SETTINGS
@given(st.text(" \t\u00a0\u2003", max_size=3))
@example("")
def test_signature_verdict_survives_blank_validsig(value: str) -> None:
    """A VALIDSIG status line with no fields is refused as BAD_SIGNATURE, not an exception."""
    status = tuple((k, value if k == "VALIDSIG" else v) for k, v in GOOD_SIGNATURE)
    verdict = opener.signature_verdict(GpgResult(0, b"", status), frozenset(PINNED))
    assert isinstance(verdict, Rejection)
    assert verdict.kind is RejectClass.BAD_SIGNATURE


def _lone_cr_signed(param: str) -> bytes:
    # Part 1 ends in "x<CR>--b--": a closing delimiter to the email parser (a lone CR ends a
    # line for it), not to signed_parts' CRLF byte split; the "signature part" that follows
    # is epilogue to the first, guarded parse and is only parsed by the second, unguarded one.
    return (
        b'Content-Type: multipart/signed; protocol="application/pgp-signature"; boundary="b"\n'
        b"\n--b\n\nx\r--b--\n--b\nContent-Type: application/pgp-signature; "
        + param.encode() + b"\n\n--b--\n"
    )


@SETTINGS
@given(st.sampled_from(("x*", "name*", "x*0*", "name*0*")))
@example("x*")
def test_signed_parts_survives_a_part_after_the_parsers_closing_delimiter(param: str) -> None:
    """signed_parts refuses rather than raises when its byte split and the parser disagree."""
    result = opener.signed_parts(_lone_cr_signed(param))
    assert result is None or isinstance(result, Rejection | tuple)
