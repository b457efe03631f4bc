"""Tests for pipeline.opener: the acceptance rules over gpg's status lines (decryption, signature,
plaintext), without gpg."""

from __future__ import annotations

import pytest
from opener_helpers import WEAK_HASH

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import GpgResult
from gateway.pipeline.opener import decryption_verdict, plaintext_verdict, signature_verdict

PRIMARY = "A1" * 20
SUBKEY = "B2" * 20
OTHER = "C3" * 20

# -- the acceptance rules over status lines -------------------------------------------------------


def gpg_result(*lines: str, returncode: int = 0, data: bytes = b"") -> GpgResult:
    """A GpgResult as the adapter builds it from `[GNUPG:]` lines."""
    status = []
    for line in lines:
        key, _, value = line.partition(" ")
        status.append((key, value))
    return GpgResult(returncode, data, tuple(status))


ENC_TO = "ENC_TO 1122334455667788 18 0"
DECRYPTED = [ENC_TO, "BEGIN_DECRYPTION", "DECRYPTION_KEY X Y u", "DECRYPTION_INFO 2 9",
             "PLAINTEXT 62 0", "DECRYPTION_OKAY", "GOODMDC", "END_DECRYPTION"]


def validsig(signing: str, primary: str, hash_algo: str = "10") -> str:
    return f"VALIDSIG {signing} 2026-03-02 1772434800 0 4 0 22 {hash_algo} 00 {primary}"


def good_signature(signing: str = PRIMARY, primary: str = PRIMARY,
                   hash_algo: str = "10") -> list[str]:
    return ["NEWSIG", "KEY_CONSIDERED x 0", "SIG_ID abc 2026-03-02 1772434800",
            "GOODSIG 8899AABBCCDDEEFF Veilig Thuis Utrecht", validsig(signing, primary, hash_algo)]


def test_decryption_verdict_accepts_real_decryption() -> None:
    """DECRYPTION_OKAY and END_DECRYPTION with MDC, or with AEAD: no objection."""
    assert decryption_verdict(gpg_result(*DECRYPTED)) is None
    aead = [line if not line.startswith("DECRYPTION_INFO") else "DECRYPTION_INFO 0 9 2"
            for line in DECRYPTED]
    assert decryption_verdict(gpg_result(*aead)) is None


@pytest.mark.parametrize(
    ("lines", "detail"),
    [
        # A signed-only OpenPGP message "decrypts" too: no DECRYPTION_OKAY.
        (["PLAINTEXT 62 0", *good_signature()], "message is not encrypted"),
        ([ENC_TO, "BEGIN_DECRYPTION", "NO_SECKEY 1122334455667788", "DECRYPTION_FAILED",
          "END_DECRYPTION"], "message cannot be decrypted with a gateway key"),
        ([*DECRYPTED[:5], "DECRYPTION_FAILED", "DECRYPTION_OKAY", "END_DECRYPTION"],
         "message cannot be decrypted with a gateway key"),
        ([ENC_TO, "BEGIN_DECRYPTION", "DECRYPTION_OKAY"],
         "message cannot be decrypted with a gateway key"),
        (["NEED_PASSPHRASE_SYM 9 3 2", "BEGIN_DECRYPTION", "DECRYPTION_FAILED",
          "END_DECRYPTION"], "symmetric encryption is not accepted; encrypt to the gateway key"),
        (["SYMKEY_ENC 9 3 2", *DECRYPTED[1:]],
         "symmetric encryption is not accepted; encrypt to the gateway key"),
        ([line if not line.startswith("DECRYPTION_INFO") else "DECRYPTION_INFO 0 0"
          for line in DECRYPTED], "ciphertext is not integrity protected"),
        ([line if not line.startswith("DECRYPTION_INFO") else "DECRYPTION_INFO 0 9 0"
          for line in DECRYPTED], "ciphertext is not integrity protected"),
        ([], "message is not encrypted"),
    ],
    ids=["signed-only", "no-seckey", "failed-then-okay", "no-end", "symmetric",
         "symmetric-and-okay", "no-mdc", "no-mdc-no-aead", "nothing"],
)
def test_decryption_verdict_rejects(lines: list[str], detail: str) -> None:
    """Anything short of a real, integrity-protected decryption with our key is NOT_ENCRYPTED."""
    assert decryption_verdict(gpg_result(*lines)) == Rejection(RejectClass.NOT_ENCRYPTED, detail)


def test_signature_verdict_accepts_one_good_pinned_signature() -> None:
    """One GOODSIG whose VALIDSIG primary fingerprint is pinned: that fingerprint."""
    result = gpg_result(*DECRYPTED, *good_signature())
    assert signature_verdict(result, frozenset({PRIMARY, OTHER})) == PRIMARY


def test_signature_verdict_maps_a_subkey_signature_to_its_primary() -> None:
    """A signature by a signing subkey counts for the pinned primary (VALIDSIG field 10)."""
    result = gpg_result(*DECRYPTED, *good_signature(signing=SUBKEY, primary=PRIMARY))
    assert signature_verdict(result, frozenset({PRIMARY})) == PRIMARY


@pytest.mark.parametrize(
    ("lines", "pinned", "detail"),
    [
        (DECRYPTED, {PRIMARY}, "message is not signed"),
        ([*good_signature(), *good_signature()], {PRIMARY}, "more than one signature"),
        ([*good_signature(), "NEWSIG", "ERRSIG 1 22 10 00 1772434800 9", "NO_PUBKEY 1"],
         {PRIMARY}, "more than one signature"),
        (["NEWSIG", "KEYEXPIRED 1700000000", "EXPKEYSIG 8899AABBCCDDEEFF VT",
          validsig(PRIMARY, PRIMARY)], {PRIMARY}, "signing key is expired or revoked"),
        (["NEWSIG", "KEYREVOKED", "REVKEYSIG 8899AABBCCDDEEFF VT", validsig(PRIMARY, PRIMARY)],
         {PRIMARY}, "signing key is expired or revoked"),
        (["NEWSIG", "EXPSIG 8899AABBCCDDEEFF VT", validsig(PRIMARY, PRIMARY)], {PRIMARY},
         "signing key is expired or revoked"),
        (["NEWSIG", "ERRSIG 8899AABBCCDDEEFF 22 10 00 1772434800 9 -",
          "NO_PUBKEY 8899AABBCCDDEEFF"], {PRIMARY},
         "signature is not by a key pinned for this sender"),
        (["NEWSIG", "BADSIG 8899AABBCCDDEEFF VT"], {PRIMARY}, "signature is not valid"),
        (good_signature(primary=OTHER), {PRIMARY},
         "signature is not by a key pinned for this sender"),
        # The signing subkey's own fingerprint is not what is pinned; the primary decides.
        (good_signature(signing=PRIMARY, primary=OTHER), {PRIMARY},
         "signature is not by a key pinned for this sender"),
        (good_signature(), set(), "signature is not by a key pinned for this sender"),
        (["NEWSIG", "GOODSIG 8899AABBCCDDEEFF VT"], {PRIMARY}, "signature is not valid"),
    ],
    ids=["unsigned", "two-good", "good-and-unknown", "expkeysig", "revkeysig", "expsig",
         "no-pubkey", "badsig", "primary-not-pinned", "subkey-pinned-primary-not",
         "nothing-pinned", "no-validsig"],
)
def test_signature_verdict_rejects(lines: list[str], pinned: set[str], detail: str) -> None:
    """Every signature that is missing, doubled, bad, expired or not pinned is BAD_SIGNATURE."""
    assert signature_verdict(gpg_result(*lines), frozenset(pinned)) == \
        Rejection(RejectClass.BAD_SIGNATURE, detail)


def test_signature_verdict_rejects_good_signature_with_failed_exit() -> None:
    """A GOODSIG from a gpg run that failed overall (non-zero exit) is not accepted."""
    result = gpg_result(*good_signature(), returncode=2)
    assert signature_verdict(result, frozenset({PRIMARY})) == \
        Rejection(RejectClass.BAD_SIGNATURE, "signature is not valid")


@pytest.mark.parametrize("hash_algo", ["8", "9", "10", "12", "14"],
                         ids=["sha256", "sha384", "sha512", "sha3-256", "sha3-512"])
def test_signature_verdict_accepts_sha2_and_sha3(hash_algo: str) -> None:
    """A good pinned signature over SHA-256, -384, -512, SHA3-256 or SHA3-512 is accepted."""
    result = gpg_result(*DECRYPTED, *good_signature(hash_algo=hash_algo))
    assert signature_verdict(result, frozenset({PRIMARY})) == PRIMARY


@pytest.mark.parametrize("hash_algo", ["1", "2", "3", "11", "0", "110", "x"],
                         ids=["md5", "sha1", "ripemd160", "sha224", "zero", "unknown", "junk"])
def test_signature_verdict_refuses_weak_hashes(hash_algo: str) -> None:
    """A good pinned signature over MD5, SHA-1, RIPEMD-160, SHA-224 or anything unknown is not."""
    result = gpg_result(*DECRYPTED, *good_signature(hash_algo=hash_algo))
    assert signature_verdict(result, frozenset({PRIMARY})) == WEAK_HASH


@pytest.mark.parametrize("hash_algo", ["1", "2", "3"])
def test_signature_verdict_names_the_weak_hash_gpg_refused(hash_algo: str) -> None:
    """gpg's own `--weak-digest` refusal (ERRSIG, hash in field 3) gets the weak-hash detail."""
    result = gpg_result("NEWSIG", f"ERRSIG 8899AABBCCDDEEFF 22 {hash_algo} 00 1772434800 5 "
                        + PRIMARY)
    assert signature_verdict(result, frozenset({PRIMARY})) == WEAK_HASH


def test_signature_verdict_refuses_a_validsig_without_its_hash_field() -> None:
    """A VALIDSIG too short to name its hash algorithm proves nothing about it."""
    result = gpg_result(*good_signature()[:-1], f"VALIDSIG {PRIMARY} 2026-03-02 1772434800")
    assert signature_verdict(result, frozenset({PRIMARY})) == \
        Rejection(RejectClass.BAD_SIGNATURE, "signature is not valid")


def test_plaintext_verdict_refuses_a_cut_off_plaintext_as_too_large() -> None:
    """gpg stopped at --max-output (DECRYPTION_OKAY all the same): TOO_LARGE, naming the bound."""
    result = GpgResult(2, b"x", gpg_result(*DECRYPTED).status, cut_off=True)
    assert plaintext_verdict(result, 4096) == \
        Rejection(RejectClass.TOO_LARGE, "decrypted message is larger than 4096 bytes")
    signed = GpgResult(2, b"x", gpg_result(*DECRYPTED, *good_signature()).status, cut_off=True)
    assert plaintext_verdict(signed, 4096) == \
        Rejection(RejectClass.TOO_LARGE, "decrypted message is larger than 4096 bytes")


def test_plaintext_verdict_refuses_an_unexplained_error_exit() -> None:
    """An error exit with no signature inside to explain it: the plaintext is not opened."""
    assert plaintext_verdict(gpg_result(*DECRYPTED, returncode=2), 4096) == \
        Rejection(RejectClass.NOT_ENCRYPTED, "gpg reported an error while decrypting the message")


def test_plaintext_verdict_leaves_signature_errors_to_signature_verdict() -> None:
    """A clean exit passes; so does an error exit that a signature inside explains."""
    assert plaintext_verdict(gpg_result(*DECRYPTED), 4096) is None
    unknown_key = ["NEWSIG", "ERRSIG 8899AABBCCDDEEFF 22 10 00 1772434800 9 -", "NO_PUBKEY 1"]
    assert plaintext_verdict(gpg_result(*DECRYPTED, *unknown_key, returncode=2), 4096) is None
