"""Tests for pipeline.opener: the acceptance rules over gpg's status lines, the RFC 3156 shapes,
and real decryption and verification of signals built the way senders' clients build them."""

from __future__ import annotations

import base64
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import GATEWAY, SENDER_ADDRESS, Identities, Template, expired_key
from hostile import compressed_bomb, crc24, detach_sign, sign_encrypt, signed_entity

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import Gpg, GpgResult
from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import (
    Identity,
    build_signal,
    encrypted_envelope,
    json_payload,
    signed_multipart,
)
from gateway.pipeline.opener import (
    Opened,
    decryption_verdict,
    encrypted_payload,
    open_message,
    plaintext_verdict,
    signature_verdict,
    signed_parts,
)

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


WEAK_HASH = Rejection(RejectClass.BAD_SIGNATURE,
                      "signature uses a weak hash algorithm; sign with SHA-256 or stronger")


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


# -- the RFC 3156 shapes --------------------------------------------------------------------------

ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0\r\n=abcd\r\n-----END PGP MESSAGE-----\r\n"


def encrypted_mime(*, protocol: str = "application/pgp-encrypted",
                   control_type: str = "application/pgp-encrypted",
                   control: bytes = b"Version: 1\r\n",
                   body_type: str = "application/octet-stream", body: bytes = ARMOR,
                   extra_part: bool = False) -> bytes:
    parts = [f"--b1\r\nContent-Type: {control_type}\r\n\r\n".encode() + control,
             f"--b1\r\nContent-Type: {body_type}\r\n\r\n".encode() + body]
    if extra_part:
        parts.append(b"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n")
    return (f'From: a@b.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; '
            f'protocol="{protocol}"; boundary="b1"\r\n\r\n').encode() + \
        b"".join(parts) + b"--b1--\r\n"


def test_encrypted_payload_returns_the_armored_message() -> None:
    """A well-formed RFC 3156 §4 message yields the armored OpenPGP block of its second part."""
    # The CRLF before the closing delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    assert encrypted_payload(encrypted_mime()) == ARMOR.removesuffix(b"\r\n")


def test_encrypted_payload_accepts_upper_case_protocol_and_lf() -> None:
    """Parameter values compare case-insensitively and bare LF line ends are fine."""
    raw = encrypted_mime(protocol="Application/PGP-Encrypted").replace(b"\r\n", b"\n")
    payload = encrypted_payload(raw)
    assert isinstance(payload, bytes) and payload.startswith(b"-----BEGIN PGP MESSAGE-----")


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nSanne de Vries\r\n",
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (b"From: a@b.example\r\n\r\n" + ARMOR, "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(protocol="application/pgp-signature"),
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(protocol="application/pkcs7-mime"),
         "message is not PGP/MIME encrypted (RFC 3156)"),
        (encrypted_mime(control_type="text/plain"),
         "first part must be application/pgp-encrypted"),
        (encrypted_mime(body_type="text/plain"),
         "second part must be application/octet-stream"),
        (encrypted_mime(control=b"\r\n"), "application/pgp-encrypted part must say Version: 1"),
        (encrypted_mime(control=b"Version: 2\r\n"),
         "application/pgp-encrypted part must say Version: 1"),
        (encrypted_mime(body=b"Sanne de Vries, 12-04-2016\r\n"),
         "second part holds no OpenPGP message"),
        (encrypted_mime(extra_part=True), "multipart/encrypted must have exactly two parts"),
    ],
    ids=["plaintext", "inline-pgp", "wrong-protocol", "smime-protocol", "wrong-control-type",
         "wrong-body-type", "no-version", "version-2", "no-armor", "three-parts"],
)
def test_encrypted_payload_rejects(raw: bytes, detail: str) -> None:
    """Everything that is not exactly RFC 3156 §4 multipart/encrypted is NOT_ENCRYPTED."""
    assert encrypted_payload(raw) == Rejection(RejectClass.NOT_ENCRYPTED, detail)


PAYLOAD = json_payload([{"name": "Sanne de Vries", "birthdate": "2016-04-12"}],
                       reference="VT-HVB-2026-000123")


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture(scope="module")
def signed(identities: Identities) -> bytes:
    """A real RFC 3156 §5 multipart/signed over PAYLOAD by the sender."""
    return signed_multipart(PAYLOAD, identities.sender)


def boundary_of(entity: bytes) -> bytes:
    head = entity.split(b"\r\n\r\n", 1)[0]
    return head.split(b'boundary="', 1)[1].split(b'"', 1)[0]


def test_signed_parts_returns_exactly_the_signed_bytes(signed: bytes) -> None:
    """The first part comes back byte for byte, and the second is the armored signature."""
    parts = signed_parts(signed)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)
    assert parts[1].startswith(b"-----BEGIN PGP SIGNATURE-----")


def test_signed_parts_canonicalises_lf_input(signed: bytes) -> None:
    """A multipart/signed stored with bare LF yields the CRLF bytes that were signed."""
    parts = signed_parts(signed.replace(b"\r\n", b"\n"))
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_ignores_preamble_and_epilogue_text(signed: bytes) -> None:
    """MIME preamble and epilogue text (not parts) are outside the signature and ignored."""
    head, body = signed.split(b"\r\n\r\n", 1)
    entity = head + b"\r\n\r\nThis is an OpenPGP/MIME signed message.\r\n" + body + \
        b"epilogue\r\n"
    parts = signed_parts(entity)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_is_none_for_other_entities() -> None:
    """An entity that is not multipart/signed is not a signed entity (None)."""
    assert signed_parts(PAYLOAD) is None


def test_signed_parts_rejects_an_extra_third_part(signed: bytes) -> None:
    """A third part after the signature is not covered by it: BAD_SIGNATURE."""
    b = boundary_of(signed)
    closing = b"\r\n--" + b + b"--\r\n"
    entity = signed.replace(closing, b"\r\n--" + b + b"\r\nContent-Type: text/plain\r\n\r\n"
                            b"Also: Daan, 03-09-2013" + closing)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed must hold exactly one part and one signature")


def test_signed_parts_rejects_an_unsigned_part_before_the_signed_one(signed: bytes) -> None:
    """An extra part in front of the signed part (where the signature is not) is refused."""
    b = boundary_of(signed)
    first = b"--" + b + b"\r\n"
    entity = signed.replace(first, first + b"Content-Type: text/plain\r\n\r\nJohnny, you are "
                            b"fired\r\n" + first, 1)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed must hold exactly one part and one signature")


def test_signed_parts_rejects_other_protocols(signed: bytes) -> None:
    """multipart/signed with an S/MIME protocol is not an OpenPGP signature."""
    entity = signed.replace(b"application/pgp-signature\"", b"application/pkcs7-signature\"", 1)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "multipart/signed is not an OpenPGP signature (RFC 3156)")


def test_signed_parts_rejects_a_second_part_that_is_not_a_signature(signed: bytes) -> None:
    """The second part must be application/pgp-signature."""
    entity = signed.replace(b"Content-Type: application/pgp-signature; name",
                            b"Content-Type: text/plain; name")
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE,
        "second part of multipart/signed must be application/pgp-signature")


def test_signed_parts_accepts_close_delimiter_at_end_of_data(signed: bytes) -> None:
    """A close-delimiter at the very end of the data (no trailing CRLF) is valid MIME."""
    assert signed.endswith(b"--\r\n")
    parts = signed_parts(signed[:-2])
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


def test_signed_parts_refuses_an_entity_the_header_parser_raises_on() -> None:
    """A top-level Content-Type that makes the email header parser raise (`x*`): BAD_SIGNATURE."""
    entity = b"Content-Type: multipart/signed; x*\r\n\r\n" + crlf(PAYLOAD)
    assert signed_parts(entity) == Rejection(
        RejectClass.BAD_SIGNATURE, "signed entity cannot be parsed")


def test_signed_parts_reads_a_folded_thunderbird_header(signed: bytes) -> None:
    """A Content-Type folded over lines with tabs, unquoted micalg and a trailing `;` still
    splits: the same answer as policy.default gives."""
    body = signed.split(b"\r\n\r\n", 1)[1]
    b = boundary_of(signed)
    folded = (b"Content-Type: multipart/signed; micalg=pgp-sha256;\r\n\tprotocol="
              b'"application/pgp-signature";\r\n boundary="' + b + b'";\r\n')
    parts = signed_parts(folded + b"\r\n" + body)
    assert isinstance(parts, tuple)
    assert parts[0] == crlf(PAYLOAD)


# -- real decryption and verification ----------------------------------------------------------


@dataclass(frozen=True)
class OpenSetup:
    home: Path
    gateway_fpr: str
    expired: Identity


def make_expired_signer(home: Path) -> Identity:
    """A sender key that expired in 2020, made with gpg's faked clock."""
    fpr, _ = expired_key(home, "Old Sender <old@vt.example>", encrypt=False)
    return Identity(home, fpr)


def sign_detached_in_2020(identity: Identity, data: bytes) -> bytes:
    """A detached signature made while the (now expired) key was still valid."""
    return subprocess.run(
        ["gpg", "--homedir", str(identity.home), "--batch", "--pinentry-mode", "loopback",
         "--passphrase", "", "--faked-system-time", "20200101T120000", "--armor",
         "--detach-sign", "--local-user", identity.fingerprint],
        input=data, check=True, capture_output=True).stdout


def import_public(gpg: Gpg, key: bytes) -> None:
    gpg.call_sync(lambda g: g.import_keys(key))


@pytest.fixture(scope="module")
def setup(template: Template, identities: Identities,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenSetup]:
    base = tmp_path_factory.mktemp("opener")
    home = base / "gnupg"
    shutil.copytree(template.keys / "keys" / "gnupg", home,
                    ignore=shutil.ignore_patterns("S.*", "*.lock", ".#*"))
    with sqlite3.connect(template.keys / "var" / "hwc-gateway.sqlite3") as db:
        (fpr,) = db.execute("SELECT fingerprint FROM gateway_keys"
                            " WHERE state = 'current'").fetchone()
    expired = make_expired_signer(base / "expired")
    gpg = Gpg(home)
    gateway_public = str(gpg.call_sync(lambda g: g.export_keys([fpr], armor=True)))
    for identity in (identities.sender, identities.other_sender, expired):
        import_public(gpg, identity.public_key())
    for identity in (identities.sender, identities.other_sender, identities.stranger):
        identity.import_public(gateway_public)
    identities.sender.import_public(identities.school_a.public_key())
    try:
        yield OpenSetup(home, str(fpr), expired)
    finally:
        stop_agent(home)
        stop_agent(expired.home)


async def open_as_sender(setup: OpenSetup, identities: Identities,
                         raw: bytes) -> Opened | Rejection:
    return await open_message(raw, Gpg(setup.home), frozenset({identities.sender.fingerprint}))


def envelope(armored: bytes) -> bytes:
    return encrypted_envelope(armored, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)


async def test_open_combined_sign_and_encrypt(setup: OpenSetup, identities: Identities) -> None:
    """Signed and encrypted in one OpenPGP message: opened, signer = the sender's fingerprint."""
    raw = build_signal(PAYLOAD, identities.sender, setup.gateway_fpr, mail_from=SENDER_ADDRESS,
                       rcpt=GATEWAY)
    opened = await open_as_sender(setup, identities, raw)
    assert opened == Opened(entity=crlf(PAYLOAD), signer=identities.sender.fingerprint)
    assert "Sanne" not in repr(opened)


async def test_open_signed_inside(setup: OpenSetup, identities: Identities) -> None:
    """An encrypted multipart/signed: opened, the entity is exactly the signed part."""
    raw = build_signal(PAYLOAD, identities.sender, setup.gateway_fpr, mail_from=SENDER_ADDRESS,
                       rcpt=GATEWAY, mode="signed-inside")
    opened = await open_as_sender(setup, identities, raw)
    assert opened == Opened(entity=crlf(PAYLOAD), signer=identities.sender.fingerprint)


async def test_open_encrypted_but_unsigned(setup: OpenSetup, identities: Identities) -> None:
    """Encrypted to the gateway but signed by nobody: BAD_SIGNATURE."""
    raw = envelope(identities.sender.sign_encrypt(PAYLOAD, setup.gateway_fpr, sign=False))
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.BAD_SIGNATURE, "message is not signed")


@pytest.mark.parametrize("mode", ["combined", "signed-inside"])
async def test_open_signed_by_a_stranger(setup: OpenSetup, identities: Identities,
                                         mode: str) -> None:
    """Signed by a key the gateway does not know (same user ID as the sender): BAD_SIGNATURE."""
    raw = build_signal(PAYLOAD, identities.stranger, setup.gateway_fpr,
                       mail_from=SENDER_ADDRESS, rcpt=GATEWAY,
                       mode="combined" if mode == "combined" else "signed-inside")
    result = await open_as_sender(setup, identities, raw)
    assert isinstance(result, Rejection) and result.kind is RejectClass.BAD_SIGNATURE


async def test_open_signed_by_another_senders_pinned_key(setup: OpenSetup,
                                                         identities: Identities) -> None:
    """A valid signature by a key pinned for another sender is not this sender's: BAD_SIGNATURE."""
    raw = build_signal(PAYLOAD, identities.other_sender, setup.gateway_fpr,
                       mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
    assert await open_as_sender(setup, identities, raw) == Rejection(
        RejectClass.BAD_SIGNATURE, "signature is not by a key pinned for this sender")


async def test_open_signed_by_an_expired_key(setup: OpenSetup, identities: Identities) -> None:
    """A signature made before the pinned key expired is refused now: BAD_SIGNATURE."""
    data = crlf(PAYLOAD)
    boundary = "sig-expired"
    entity = (f'Content-Type: multipart/signed; micalg=pgp-sha512; '
              f'protocol="application/pgp-signature"; boundary="{boundary}"\r\n\r\n'
              f"--{boundary}\r\n").encode() + data + (
              f"\r\n--{boundary}\r\nContent-Type: application/pgp-signature\r\n\r\n").encode() + \
        crlf(sign_detached_in_2020(setup.expired, data)) + f"\r\n--{boundary}--\r\n".encode()
    raw = envelope(identities.sender.sign_encrypt(entity, setup.gateway_fpr, sign=False))
    result = await open_message(raw, Gpg(setup.home),
                                frozenset({setup.expired.fingerprint}))
    assert result == Rejection(RejectClass.BAD_SIGNATURE, "signing key is expired or revoked")


async def test_open_tampered_signed_part(setup: OpenSetup, identities: Identities) -> None:
    """A multipart/signed whose first part was changed after signing: BAD_SIGNATURE."""
    entity = signed_multipart(PAYLOAD, identities.sender).replace(b"Sanne", b"Sarah")
    raw = envelope(identities.sender.sign_encrypt(entity, setup.gateway_fpr, sign=False))
    result = await open_as_sender(setup, identities, raw)
    assert isinstance(result, Rejection) and result.kind is RejectClass.BAD_SIGNATURE


async def test_open_encrypted_to_someone_else(setup: OpenSetup, identities: Identities) -> None:
    """Encrypted to a school's key instead of the gateway's: NOT_ENCRYPTED."""
    raw = build_signal(PAYLOAD, identities.sender, identities.school_a.fingerprint,
                       mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
    assert await open_as_sender(setup, identities, raw) == Rejection(
        RejectClass.NOT_ENCRYPTED, "message cannot be decrypted with a gateway key")


async def test_open_symmetric_encryption(setup: OpenSetup, identities: Identities) -> None:
    """A passphrase-encrypted message is refused as NOT_ENCRYPTED, never decrypted."""
    res = identities.sender.gpg.encrypt(PAYLOAD, None, symmetric=True, passphrase="x",
                                        armor=True)
    assert res.ok
    assert await open_as_sender(setup, identities, envelope(bytes(res.data))) == Rejection(
        RejectClass.NOT_ENCRYPTED,
        "symmetric encryption is not accepted; encrypt to the gateway key")


async def test_open_signed_only_openpgp_message(setup: OpenSetup, identities: Identities) -> None:
    """A signed but unencrypted OpenPGP message in a multipart/encrypted envelope: NOT_ENCRYPTED."""
    res = identities.sender.gpg.sign(PAYLOAD, keyid=identities.sender.fingerprint,
                                     passphrase=None, clearsign=False)
    assert bytes(res.data).startswith(b"-----BEGIN PGP MESSAGE-----")
    assert await open_as_sender(setup, identities, envelope(bytes(res.data))) == Rejection(
        RejectClass.NOT_ENCRYPTED, "message is not encrypted")


def flip_byte(armored: bytes, where: str) -> bytes:
    """Re-armor the message with one bit flipped in its middle or last byte (valid checksum)."""
    lines = armored.decode().replace("\r\n", "\n").split("\n")
    start = lines.index("") + 1
    end = next(i for i, line in enumerate(lines) if i >= start
               and (line.startswith("=") or line.startswith("-----END")))
    data = bytearray(base64.b64decode("".join(lines[start:end])))
    data[len(data) // 2 if where == "middle" else -1] ^= 0x01
    body = base64.b64encode(bytes(data)).decode()
    checksum = base64.b64encode(crc24(bytes(data)).to_bytes(3, "big")).decode()
    out = [lines[0], "", *(body[i:i + 64] for i in range(0, len(body), 64)),
           "=" + checksum, "-----END PGP MESSAGE-----", ""]
    return "\r\n".join(out).encode()


@pytest.mark.parametrize("where", ["middle", "last"])
async def test_open_modified_ciphertext(setup: OpenSetup, identities: Identities,
                                        where: str) -> None:
    """One bit flipped in the ciphertext (body or MDC): NOT_ENCRYPTED, nothing comes back."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": "2016-04-12"}],
                           notes="x" * 400)
    armored = identities.sender.sign_encrypt(crlf(payload), setup.gateway_fpr)
    modified = flip_byte(armored, where)
    gpg = Gpg(setup.home)
    # What gpg itself says: it may have streamed (part of) the plaintext before noticing.
    raw_result = await gpg.decrypt(modified)
    assert "DECRYPTION_OKAY" not in [key for key, _ in raw_result.status]
    result = await open_message(envelope(modified), gpg,
                                frozenset({identities.sender.fingerprint}))
    assert isinstance(result, Rejection)
    assert result.kind is RejectClass.NOT_ENCRYPTED
    assert "Sanne" not in result.detail


async def test_open_combined_signature_and_signed_entity(setup: OpenSetup,
                                                        identities: Identities) -> None:
    """A combined signature around a multipart/signed is two signatures: BAD_SIGNATURE."""
    entity = signed_multipart(PAYLOAD, identities.sender)
    raw = envelope(identities.sender.sign_encrypt(entity, setup.gateway_fpr, sign=True))
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.BAD_SIGNATURE, "more than one signature")


async def test_open_signed_part_wrapped_in_unsigned_mixed(setup: OpenSetup,
                                                          identities: Identities) -> None:
    """"Johnny, you are fired": attacker text beside a genuinely signed part: BAD_SIGNATURE."""
    signed_entity = signed_multipart(PAYLOAD, identities.sender)
    mixed = (b'Content-Type: multipart/mixed; boundary="mix"\r\n\r\n--mix\r\n'
             b"Content-Type: text/plain\r\n\r\nCodewoord: Handle with Care\r\n"
             b"Naam: Someone Else\r\nGeboortedatum: 01-01-2015\r\n--mix\r\n"
             + signed_entity + b"\r\n--mix--\r\n")
    raw = envelope(identities.sender.sign_encrypt(mixed, setup.gateway_fpr, sign=False))
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.BAD_SIGNATURE, "message is not signed")


async def test_open_nested_encryption(setup: OpenSetup, identities: Identities) -> None:
    """A signed payload that is itself multipart/encrypted is refused: NOT_ENCRYPTED."""
    inner = encrypted_envelope(identities.sender.sign_encrypt(PAYLOAD, setup.gateway_fpr),
                               mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
    raw = build_signal(inner, identities.sender, setup.gateway_fpr, mail_from=SENDER_ADDRESS,
                       rcpt=GATEWAY)
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.NOT_ENCRYPTED, "nested encryption is not accepted")


async def test_open_nested_encryption_in_a_signed_part(setup: OpenSetup,
                                                       identities: Identities) -> None:
    """A multipart/signed whose signed part is itself multipart/encrypted: NOT_ENCRYPTED."""
    inner = encrypted_envelope(identities.sender.sign_encrypt(PAYLOAD, setup.gateway_fpr),
                               mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
    raw = build_signal(inner, identities.sender, setup.gateway_fpr, mail_from=SENDER_ADDRESS,
                       rcpt=GATEWAY, mode="signed-inside")
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.NOT_ENCRYPTED, "nested encryption is not accepted")


async def test_open_combined_signature_over_an_unparsable_entity(setup: OpenSetup,
                                                                identities: Identities) -> None:
    """Validly signed and encrypted, but the header parser raises on the entity: BAD_SIGNATURE,
    never a traceback."""
    entity = b"Content-Type: text/plain; x*\r\n\r\nCodewoord: Handle with Care\r\n"
    raw = envelope(identities.sender.sign_encrypt(entity, setup.gateway_fpr))
    assert await open_as_sender(setup, identities, raw) == \
        Rejection(RejectClass.BAD_SIGNATURE, "signed entity cannot be parsed")


async def test_open_plaintext(setup: OpenSetup, identities: Identities) -> None:
    """A plain text message never reaches gpg: NOT_ENCRYPTED."""
    raw = b"From: a@b.example\r\nContent-Type: text/plain\r\n\r\nNaam: Sanne de Vries\r\n"
    result = await open_as_sender(setup, identities, raw)
    assert isinstance(result, Rejection) and result.kind is RejectClass.NOT_ENCRYPTED


async def test_verify_detached_over_signed_parts(setup: OpenSetup, identities: Identities,
                                                 signed: bytes) -> None:
    """The bytes signed_parts returns (from LF-only input) verify with real gpg as the sender's."""
    parts = signed_parts(signed.replace(b"\r\n", b"\n"))
    assert isinstance(parts, tuple)
    result = await Gpg(setup.home).verify_detached(parts[1], parts[0])
    assert signature_verdict(result, frozenset({identities.sender.fingerprint})) == \
        identities.sender.fingerprint


# -- weak hashes and decompression bombs, with real gpg -----------------------------------------


@pytest.mark.parametrize("algo", ["SHA1", "RIPEMD160"])
async def test_gpg_itself_refuses_sha1_and_ripemd160(setup: OpenSetup, identities: Identities,
                                                     algo: str) -> None:
    """Verification runs with `--weak-digest`: gpg reports ERRSIG, never GOODSIG."""
    sender = identities.sender
    signature = detach_sign(sender.home, crlf(PAYLOAD), [sender.fingerprint], "--digest-algo",
                            algo)
    result = await Gpg(setup.home).verify_detached(signature, crlf(PAYLOAD))
    assert result.keywords("ERRSIG") and not result.keywords("GOODSIG"), result.status


@pytest.mark.parametrize("algo", ["SHA1", "RIPEMD160", "SHA224"])
@pytest.mark.parametrize("mode", ["combined", "signed-inside"])
async def test_open_refuses_signatures_over_weak_hashes(setup: OpenSetup, identities: Identities,
                                                        mode: str, algo: str) -> None:
    """Signed with `gpg --digest-algo SHA1` (RIPEMD160, SHA224) by the pinned key: weak hash."""
    sender = identities.sender
    hashed = ("--digest-algo", algo)
    if mode == "combined":
        armored = sign_encrypt(sender.home, crlf(PAYLOAD), [sender.fingerprint],
                               [setup.gateway_fpr], *hashed)
    else:
        inner = signed_entity(crlf(PAYLOAD), detach_sign(sender.home, crlf(PAYLOAD),
                                                         [sender.fingerprint], *hashed))
        armored = sign_encrypt(sender.home, inner, [], [setup.gateway_fpr])
    assert await open_as_sender(setup, identities, envelope(armored)) == WEAK_HASH


async def test_decrypt_stops_at_the_bound_and_says_so(setup: OpenSetup) -> None:
    """gpg --max-output: at most the bound is written, and the result is marked cut off."""
    home = setup.home
    bomb = compressed_bomb(home, b"", 1024 * 1024, "--encrypt", "--recipient", setup.gateway_fpr)
    result = await Gpg(home, max_plaintext=64 * 1024).decrypt(bomb)
    assert result.cut_off and result.returncode != 0
    assert len(result.data) <= 64 * 1024
    assert decryption_verdict(result) is None  # gpg still says DECRYPTION_OKAY
    whole = await Gpg(home, max_plaintext=2 * 1024 * 1024).decrypt(bomb)
    assert not whole.cut_off and whole.returncode == 0 and len(whole.data) == 1024 * 1024


@pytest.mark.parametrize("mode", ["combined", "signed-inside"])
async def test_open_refuses_a_plaintext_past_the_bound(setup: OpenSetup, identities: Identities,
                                                       mode: str) -> None:
    """A signed signal with a megabyte of zeros after it (in the signed data, or in the
    epilogue of a multipart/signed) opens as TOO_LARGE under a 64 KiB bound, not as a signal."""
    sender = identities.sender
    if mode == "combined":
        armored = compressed_bomb(sender.home, crlf(PAYLOAD), 1024 * 1024, "--sign",
                                  "--local-user", f"{sender.fingerprint}!", "--encrypt",
                                  "--recipient", setup.gateway_fpr)
    else:
        signed = signed_entity(crlf(PAYLOAD), detach_sign(sender.home, crlf(PAYLOAD),
                                                          [sender.fingerprint]))
        armored = compressed_bomb(sender.home, signed, 1024 * 1024, "--encrypt",
                                  "--recipient", setup.gateway_fpr)
    result = await open_message(envelope(armored), Gpg(setup.home, max_plaintext=64 * 1024),
                                frozenset({sender.fingerprint}))
    assert result == Rejection(RejectClass.TOO_LARGE,
                               f"decrypted message is larger than {64 * 1024} bytes")
