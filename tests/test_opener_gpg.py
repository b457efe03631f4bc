"""Tests for pipeline.opener with real gpg: decryption and verification of signals built the way
senders' clients build them, weak hashes and decompression bombs."""

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
from hostile import compressed_bomb, crc24, crlf, detach_sign, sign_encrypt, signed_entity
from opener_helpers import PAYLOAD, WEAK_HASH

from gateway.core.model import RejectClass, Rejection
from gateway.crypto.gpg import Gpg
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
    open_message,
    signature_verdict,
    signed_parts,
)

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
