"""The opener on gpg's status lines: decisions pinned where a mutation run (`make mutate`,
mutate/run.py) found that the tests would not notice a wrong answer: each test here fails on at
least one mutant that survived before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import pytest
from pinned_helpers import _bad, gpg_result

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import GpgResult
from gateway.pipeline.opener import (
    decryption_key_verdict,
    decryption_verdict,
    own_key_fault,
    plaintext_verdict,
    signature_verdict,
)

# -- opener: the gateway's own key ---------------------------------------------------------------

# gpg-error codes as gpg prints them: the error source in the high bits (GPG_ERR_SOURCE_GPGAGENT
# is 4, so 4 << 24), the code in the low 16.
AGENT = 4 << 24


def test_bad_passphrase_is_the_gateways_own_fault() -> None:
    """BAD_PASSPHRASE means our own key's passphrase was refused: a temporary fault, named."""
    result = gpg_result("ENC_TO 1122334455667788 18 0", "BAD_PASSPHRASE 1122334455667788")
    fault = own_key_fault(result)
    assert fault == "the gateway key's passphrase was refused"


@pytest.mark.parametrize(("code", "fault"), [
    (AGENT | 11, "the gateway key's passphrase was refused"),
    (AGENT | 85, "no passphrase for the gateway key"),
    (AGENT | 99, "gpg cancelled the decryption"),
    (11, "the gateway key's passphrase was refused"),
], ids=["bad-passphrase", "no-passphrase", "cancelled", "without-source"])
def test_pkdecrypt_failed_with_a_passphrase_code_is_our_fault(code: int, fault: str) -> None:
    """`ERROR pkdecrypt_failed <code>` with a passphrase code (low 16 bits) is our key's fault."""
    result = gpg_result("ENC_TO 1122334455667788 18 0", f"ERROR pkdecrypt_failed {code}",
                        "BEGIN_DECRYPTION", "DECRYPTION_FAILED", "END_DECRYPTION", returncode=2)
    assert own_key_fault(result) == fault


@pytest.mark.parametrize("line", [
    f"ERROR pkdecrypt_failed {AGENT | 17}",  # no secret key: the sender's fault, not ours
    f"ERROR keyedit.passwd {AGENT | 11}",  # a passphrase code from another place
    "ERROR pkdecrypt_failed",
    "ERROR pkdecrypt_failed eleven",
    "DECRYPTION_FAILED",
], ids=["no-seckey", "elsewhere", "no-code", "not-a-number", "no-error"])
def test_other_decryption_failures_are_not_our_key(line: str) -> None:
    """Other gpg errors are not blamed on the gateway's key: they get the sender's refusal."""
    assert own_key_fault(gpg_result("ENC_TO 1122334455667788 18 0", line, returncode=2)) is None


def test_a_later_passphrase_code_is_found_after_another_error() -> None:
    """Every ERROR line is read, not only the first."""
    result = gpg_result(f"ERROR pkdecrypt_failed {AGENT | 17}",
                        f"ERROR pkdecrypt_failed {AGENT | 85}", returncode=2)
    assert own_key_fault(result) == "no passphrase for the gateway key"


# -- opener: which gateway key decrypted ---------------------------------------------------------

CURRENT = "A1" * 20
RETIRED = "B2" * 20
SUB = "C3" * 20
RETIRED_DETAIL = "message is encrypted to a gateway key that is no longer in use"


@pytest.mark.parametrize(("lines", "accepted"), [
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u"], {CURRENT}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT}"], {CURRENT}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u"], {CURRENT, RETIRED}),
    ([f"DECRYPTION_KEY {SUB} {CURRENT} u", f"DECRYPTION_KEY {SUB} {RETIRED} u"],
     {CURRENT, RETIRED}),
], ids=["current", "two-fields", "overlap", "both-accepted"])
def test_decryption_by_an_accepted_key_passes(lines: list[str], accepted: set[str]) -> None:
    """A message decrypted by the current key, or one still in its overlap, may be opened."""
    assert decryption_key_verdict(gpg_result(*lines), frozenset(accepted)) is None


@pytest.mark.parametrize("lines", [
    [f"DECRYPTION_KEY {SUB} {RETIRED} u"],
    [f"DECRYPTION_KEY {SUB} {CURRENT} u", f"DECRYPTION_KEY {SUB} {RETIRED} u"],
    [f"DECRYPTION_KEY {CURRENT}"],
    [],
], ids=["retired", "one-retired", "one-field", "none"])
def test_decryption_by_a_retired_or_unknown_key_is_refused(lines: list[str]) -> None:
    """A retired key (or no key gpg names) is refused as no longer in use."""
    verdict = decryption_key_verdict(gpg_result(*lines), frozenset({CURRENT}))
    assert verdict == Rejection(RejectClass.NOT_ENCRYPTED, RETIRED_DETAIL)


# -- opener: integrity protection and symmetric keys ---------------------------------------------

DECRYPTED = ["ENC_TO 1122334455667788 18 0", "BEGIN_DECRYPTION", "DECRYPTION_KEY X Y u",
             "PLAINTEXT 62 0", "DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"]


@pytest.mark.parametrize("infos", [
    ["DECRYPTION_INFO 2 9", "DECRYPTION_INFO 0 9"],
    ["DECRYPTION_INFO 0 9", "DECRYPTION_INFO 0 9 2"],
    ["DECRYPTION_INFO 0 9 2", "DECRYPTION_INFO 0 9 0"],
], ids=["mdc-then-none", "none-then-aead", "aead-then-none"])
def test_every_decryption_info_must_show_protection(infos: list[str]) -> None:
    """One unprotected packet among several DECRYPTION_INFO lines refuses the message."""
    verdict = decryption_verdict(gpg_result(*DECRYPTED, *infos))
    assert verdict == Rejection(RejectClass.NOT_ENCRYPTED, "ciphertext is not integrity protected")


def test_several_protected_decryption_infos_pass() -> None:
    """Several DECRYPTION_INFO lines that all show MDC or AEAD protection are accepted."""
    infos = ["DECRYPTION_INFO 2 9", "DECRYPTION_INFO 0 9 2"]
    assert decryption_verdict(gpg_result(*DECRYPTED, *infos)) is None


def test_a_symmetric_key_beside_a_public_key_one_is_accepted() -> None:
    """SYMKEY_ENC with ENC_TO: the message was also encrypted to us, and we decrypted it."""
    lines = ["SYMKEY_ENC 9 3 2", *DECRYPTED, "DECRYPTION_INFO 2 9"]
    assert decryption_verdict(gpg_result(*lines)) is None


def test_a_symmetric_key_alone_is_refused() -> None:
    """SYMKEY_ENC without ENC_TO is symmetric encryption only: refused, however it decrypted."""
    lines = ["SYMKEY_ENC 9 3 2", *DECRYPTED[1:], "DECRYPTION_INFO 2 9"]
    assert decryption_verdict(gpg_result(*lines)) == Rejection(
        RejectClass.NOT_ENCRYPTED,
        "symmetric encryption is not accepted; encrypt to the gateway key")


# -- opener: the verdicts line by line -----------------------------------------------------------

NOT_DECRYPTABLE = Rejection(RejectClass.NOT_ENCRYPTED,
                            "message cannot be decrypted with a gateway key")


@pytest.mark.parametrize(("lines", "verdict"), [
    (["ENC_TO 1122334455667788 18 0", "DECRYPTION_FAILED"], NOT_DECRYPTABLE),
    (["BEGIN_DECRYPTION", "DECRYPTION_FAILED", "END_DECRYPTION"], NOT_DECRYPTABLE),
    (["PLAINTEXT 62 0"], Rejection(RejectClass.NOT_ENCRYPTED, "message is not encrypted")),
], ids=["enc-to-only", "begin-only", "neither"])
def test_undecryptable_and_unencrypted_are_told_apart(lines: list[str], verdict: Rejection) -> None:
    """Either ENC_TO or BEGIN_DECRYPTION shows an encrypted message we could not open; with
    neither, the message was not encrypted at all."""
    assert decryption_verdict(gpg_result(*lines)) == verdict


def test_decryption_info_fields_are_read_safely() -> None:
    """A DECRYPTION_INFO with only its MDC field is read; an empty one is no proof of integrity
    (and no error)."""
    assert decryption_verdict(gpg_result(*DECRYPTED, "DECRYPTION_INFO 2")) is None
    assert decryption_verdict(gpg_result(*DECRYPTED, "DECRYPTION_INFO ")) == Rejection(
        RejectClass.NOT_ENCRYPTED, "ciphertext is not integrity protected")


PINNED = frozenset({CURRENT})


def _validsig(fields: int) -> str:
    """A VALIDSIG with its first `fields` fields (gpg gives 10; the tenth is the primary)."""
    values = [CURRENT, "2026-03-02", "1772434800", "0", "4", "0", "22", "10", "00", CURRENT]
    return "VALIDSIG " + " ".join(values[:fields])


def _signed(*lines: str, returncode: int = 0) -> GpgResult:
    return gpg_result("NEWSIG", "GOODSIG 8899AABBCCDDEEFF Veilig Thuis", *lines,
                      returncode=returncode)


def test_a_validsig_without_the_primary_field_names_its_first_field() -> None:
    """A VALIDSIG of 8 or 9 fields (hash included, no primary) is read: the signer is its first
    field; fewer than 8 is not valid."""
    assert signature_verdict(_signed(_validsig(8)), PINNED) == CURRENT
    assert signature_verdict(_signed(_validsig(9)), PINNED) == CURRENT
    assert signature_verdict(_signed(_validsig(7)), PINNED) == _bad("signature is not valid")


def test_two_goodsigs_under_one_newsig_are_two_signatures() -> None:
    """Two GOODSIG lines are two signatures even when gpg announced one."""
    result = _signed("GOODSIG 1122334455667788 Other", _validsig(10))
    assert signature_verdict(result, PINNED) == _bad("more than one signature")


@pytest.mark.parametrize(("errsig", "detail"), [
    ("ERRSIG 8899AABBCCDDEEFF 22", "signature is not by a key pinned for this sender"),
    ("ERRSIG 8899AABBCCDDEEFF 22 2", "signature uses a weak hash algorithm; sign with SHA-256 or "
                                     "stronger"),
    ("ERRSIG 8899AABBCCDDEEFF 22 2 1f 1772434800 9 -", "signature uses a weak hash algorithm; "
                                                       "sign with SHA-256 or stronger"),
    ("ERRSIG 8899AABBCCDDEEFF 22 10 00 1772434800 9 -", "signature is not by a key pinned for "
                                                        "this sender"),
], ids=["no-hash-field", "hash-last", "hex-class", "strong-hash"])
def test_errsig_is_read_by_its_hash_field(errsig: str, detail: str) -> None:
    """ERRSIG's third field is the hash: a weak one is named, a missing one is no error, and
    anything else is a key not pinned."""
    result = gpg_result("NEWSIG", errsig, returncode=2)
    assert signature_verdict(result, PINNED) == _bad(detail)


def test_no_pubkey_alone_is_a_key_not_pinned() -> None:
    """NO_PUBKEY without ERRSIG still means the signer's key is not pinned for this sender."""
    result = gpg_result("NEWSIG", "NO_PUBKEY 8899AABBCCDDEEFF", returncode=2)
    assert signature_verdict(result, PINNED) == _bad(
        "signature is not by a key pinned for this sender")


def test_a_problem_beside_one_good_signature_is_not_valid() -> None:
    """A BADSIG next to a GOODSIG and a pinned VALIDSIG, exit 0: still not a valid signature."""
    result = _signed("BADSIG 8899AABBCCDDEEFF Veilig Thuis", _validsig(10))
    assert signature_verdict(result, PINNED) == _bad("signature is not valid")


def test_an_error_exit_with_a_signature_is_left_to_the_signature_verdict() -> None:
    """gpg's error exit with a NEWSIG alone (no problem keyword) is not a decryption error."""
    lines = [*DECRYPTED, "DECRYPTION_INFO 2 9", "NEWSIG"]
    assert plaintext_verdict(gpg_result(*lines, returncode=2), 4096) is None
    unsigned = gpg_result(*DECRYPTED, "DECRYPTION_INFO 2 9", returncode=2)
    assert plaintext_verdict(unsigned, 4096) == Rejection(
        RejectClass.NOT_ENCRYPTED, "gpg reported an error while decrypting the message")
