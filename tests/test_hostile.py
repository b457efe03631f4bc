"""Hostile input over the real wire: forged PGP/MIME built with the gpg command line, and SMTP
protocol attacks on a raw socket, against a complete running gateway.

Each forged message gets exactly the reply SPEC §2 gives its class, a reply text without a
name, birth date or BSN, and nothing reaches a school. The forgeries are made once per module
(gpg is slow); every test gets a fresh gateway.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import structlog
from conftest import (
    DAAN_BIRTH,
    GATEWAY,
    PASSWORD,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SENDER,
    SENDER_ADDRESS,
    Harness,
    Identities,
    Template,
)
from hostile import (
    RawReply,
    RawSMTP,
    armor,
    auth_plain,
    clearsign,
    copy_home,
    crlf,
    dearmor,
    detach_sign,
    dot_stuff,
    export_public,
    flip_base64_char,
    flip_bit,
    gpg,
    headers,
    import_keys,
    list_packets,
    multipart,
    new_key,
    sign_encrypt,
    sign_only,
    signed_entity,
    signing_subkeys,
    symmetric,
    text_part,
)

from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import Reply, encrypted_envelope, json_payload, signed_multipart
from gateway.store.api import Tx

BSN = "123456782"
PERSONAL = ("Sanne", "Vries", "Daan", BSN, SANNE_BIRTH.isoformat(), f"{SANNE_BIRTH:%d-%m-%Y}",
            DAAN_BIRTH.isoformat(), f"{DAAN_BIRTH:%d-%m-%Y}")
# gpg's faked clock, frozen ("!"): the expired key is born, signs and expires in January 2020.
BORN, SIGNED = "20200101T000000!", "20200101T120000!"
WEAK_HASHES = ("SHA1", "RIPEMD160", "SHA224")


def sanne(reference: str) -> bytes:
    """A valid JSON signal for Sanne (school A), with the extras a case system adds."""
    return crlf(json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(),
                               "bsn": BSN, "school": SCHOOL_A}], reference=reference,
                             incident="Politie ter plaatse om 02:10", notes="x" * 300))


DAAN_TEXT = ("Codewoord: Handle with Care\nNaam: Daan de Vries\n"
             f"Geboortedatum: {DAAN_BIRTH:%d-%m-%Y}\nSchool: {SCHOOL_B}\n")


def envelope(armored: bytes) -> bytes:
    return encrypted_envelope(armored, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)


@dataclass(frozen=True)
class Case:
    message: bytes
    code: int
    enhanced: str


@dataclass
class Forge:
    """Keys and forged messages, made once per module with the gpg command line."""

    gateway_fpr: str
    sender_fpr: str
    sender_subkey: str  # a second signing key (subkey) on the sender's own primary key
    sender_with_subkey: bytes  # the sender's public key including that subkey
    stranger_public: bytes
    expired_fpr: str
    expired_public: bytes
    revoked_fpr: str
    revoked_public: bytes
    revocation: bytes
    cases: dict[str, Case] = field(default_factory=dict)
    extra: dict[str, bytes] = field(default_factory=dict)  # not refusals: controls etc.

    def case(self, name: str) -> Case:
        return self.cases[name]


def gateway_key(template: Template, home: Path) -> tuple[str, bytes]:
    """The gateway's current fingerprint and public key, read from a copy of its home."""
    with sqlite3.connect(template.keys / "var" / "hwc-gateway.sqlite3") as db:
        (fpr,) = db.execute("SELECT fingerprint FROM gateway_keys"
                            " WHERE state = 'current'").fetchone()
    copy_home(template.keys / "keys" / "gnupg", home)
    try:
        return str(fpr), export_public(home, str(fpr))
    finally:
        stop_agent(home)


def revocation_certificate(home: Path, fpr: str) -> bytes:
    """The revocation gpg stored at key generation, made importable (RFC 4880 armor)."""
    text = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
    return text.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                        "-----BEGIN PGP PUBLIC KEY BLOCK-----").encode()


@pytest.fixture(scope="module")
def forge(identities: Identities, template: Template,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """Every forgery of this module, built once (sync: the harness is per test and async)."""
    base = tmp_path_factory.mktemp("hostile")
    gw_fpr, gw_public = gateway_key(template, base / "gateway-copy")
    sender, other, stranger = (identities.sender, identities.other_sender, identities.stranger)
    for identity in (sender, other, stranger):
        import_keys(identity.home, gw_public)
    s_home, s_fpr = sender.home, sender.fingerprint

    # A private copy of the sender's home holding, besides the sender's own key, the other
    # sender's secret key and a new signing subkey on the sender's key: for double signatures.
    multi = copy_home(s_home, base / "multi")
    import_keys(multi, gpg(other.home, "--export-secret-keys", other.fingerprint))
    gpg(multi, "--quick-add-key", s_fpr, "ed25519", "sign", "1y")
    [subkey] = signing_subkeys(multi, s_fpr)
    import_keys(multi, identities.school_a.public_key())

    # A sender key that was born and expired in 2020, and one that will be revoked.
    expired = base / "expired"
    expired_fpr = new_key(expired, "Old Sender <old@veiligthuis.example.nl>", expire="1d",
                          faked_time=BORN)
    import_keys(expired, gw_public)
    revoked = base / "revoked"
    revoked_fpr = new_key(revoked, "Revoked Sender <rev@veiligthuis.example.nl>")
    import_keys(revoked, gw_public)

    f = Forge(gw_fpr, s_fpr, subkey, export_public(multi, s_fpr), export_public(
        stranger.home, stranger.fingerprint), expired_fpr, export_public(expired, expired_fpr),
        revoked_fpr, export_public(revoked, revoked_fpr),
        revocation_certificate(revoked, revoked_fpr))
    c = f.cases

    def combined(home: Path, ref: str, signers: list[str], *extra: str) -> bytes:
        return envelope(sign_encrypt(home, sanne(ref), signers, [gw_fpr], *extra))

    def inside(home: Path, entity: bytes, signature: bytes, **kw: str) -> bytes:
        return envelope(sign_encrypt(home, signed_entity(entity, signature, **kw), [],
                                     [gw_fpr]))

    # Controls: the same builders, used honestly, make signals the gateway accepts.
    f.extra["good"] = combined(s_home, "VT-GOOD", [s_fpr])
    entity = sanne("VT-GOOD-INSIDE")
    f.extra["good_inside"] = inside(s_home, entity, detach_sign(s_home, entity, [s_fpr]))
    f.extra["good_subkey"] = combined(multi, "VT-GOOD-SUBKEY", [subkey])
    f.extra["daan"] = envelope(sign_encrypt(s_home, crlf(text_part(DAAN_TEXT)), [s_fpr],
                                            [gw_fpr]))
    around = signed_multipart(sanne("VT-AROUND"), sender)
    head, _, body = around.partition(b"\r\n\r\n")
    f.extra["text_around_signed"] = envelope(sign_encrypt(
        s_home, head + b"\r\n\r\n" + crlf(DAAN_TEXT.encode()) + body + crlf(DAAN_TEXT.encode()),
        [], [gw_fpr]))
    f.extra["sym_and_gateway"] = envelope(symmetric(
        s_home, sanne("VT-SYM-GW"), "x", "--sign", "--local-user", f"{s_fpr}!",
        "--encrypt", "--recipient", gw_fpr))

    # -- signatures: none, wrong key, too many, wrapped, expired, revoked (554 5.7.7) ----------
    sig = (554, "5.7.7")
    c["unsigned"] = Case(combined(s_home, "VT-UNSIGNED", []), *sig)
    c["stranger_combined"] = Case(combined(stranger.home, "VT-S1", [stranger.fingerprint]), *sig)
    entity = sanne("VT-S2")
    c["stranger_inside"] = Case(inside(stranger.home, entity, detach_sign(
        stranger.home, entity, [stranger.fingerprint])), *sig)
    c["other_sender_combined"] = Case(combined(other.home, "VT-O1", [other.fingerprint]), *sig)
    entity = sanne("VT-O2")
    c["other_sender_inside"] = Case(inside(other.home, entity, detach_sign(
        other.home, entity, [other.fingerprint])), *sig)
    c["two_keys_combined"] = Case(combined(multi, "VT-2K", [s_fpr, other.fingerprint]), *sig)
    c["same_key_twice_combined"] = Case(combined(multi, "VT-2S", [s_fpr, subkey]), *sig)
    entity = sanne("VT-2D")
    twice = detach_sign(s_home, entity, [s_fpr], armor=False) * 2
    c["same_key_twice_inside"] = Case(inside(s_home, entity, twice, signature_cte="base64"),
                                      *sig)
    entity = sanne("VT-2DK")
    c["two_keys_inside"] = Case(inside(multi, entity, detach_sign(
        multi, entity, [s_fpr, other.fingerprint])), *sig)
    c["combined_around_signed"] = Case(envelope(sign_encrypt(
        s_home, signed_multipart(sanne("VT-CS"), sender), [s_fpr], [gw_fpr])), *sig)
    attacker = text_part(DAAN_TEXT)
    signed = signed_multipart(sanne("VT-JOHNNY"), sender)
    c["johnny_before"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", attacker, signed), [], [gw_fpr])), *sig)
    c["johnny_after"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", signed, attacker), [], [gw_fpr])), *sig)
    entity = sanne("VT-EXPIRED")
    c["expired"] = Case(inside(expired, entity, detach_sign(
        expired, entity, [expired_fpr], faked_time=SIGNED)), *sig)
    c["revoked"] = Case(combined(revoked, "VT-REVOKED", [revoked_fpr]), *sig)
    # The sender's own pinned key, over a hash with collision attacks (or below SHA-256).
    for algo in WEAK_HASHES:
        c[f"{algo}_combined"] = Case(combined(s_home, f"VT-{algo}", [s_fpr], "--digest-algo",
                                              algo), *sig)
        entity = sanne(f"VT-{algo}-INSIDE")
        c[f"{algo}_inside"] = Case(inside(s_home, entity, detach_sign(
            s_home, entity, [s_fpr], "--digest-algo", algo)), *sig)

    # -- not encrypted to this gateway, or not decryptable (554 5.7.5) -------------------------
    enc = (554, "5.7.5")
    c["signed_only"] = Case(envelope(sign_only(s_home, sanne("VT-SO"), s_fpr)), *enc)
    c["clearsigned_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "text/plain; charset=utf-8")
        + clearsign(s_home, crlf(DAAN_TEXT.encode()), s_fpr), *enc)
    entity = sanne("VT-SIGNED-PLAIN")
    signed_top = signed_entity(entity, detach_sign(s_home, entity, [s_fpr]))
    head, _, body = signed_top.partition(b"\r\n\r\n")
    c["signed_multipart_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, head.decode().removeprefix("Content-Type: ")) + body,
        *enc)
    c["to_other_key"] = Case(envelope(sign_encrypt(
        multi, sanne("VT-OK"), [s_fpr], [identities.school_a.fingerprint])), *enc)
    c["to_other_key_hidden"] = Case(envelope(sign_encrypt(
        multi, sanne("VT-OKH"), [s_fpr], [identities.school_a.fingerprint], hidden=True)), *enc)
    c["symmetric"] = Case(envelope(symmetric(s_home, sanne("VT-SYM"), "x")), *enc)
    c["symmetric_signed"] = Case(envelope(symmetric(
        s_home, sanne("VT-SYMS"), "x", "--sign", "--local-user", f"{s_fpr}!")), *enc)
    plain_ct = sign_encrypt(s_home, sanne("VT-FLIP"), [s_fpr], [gw_fpr], "--compress-algo",
                            "none")
    c["flipped_literal"] = Case(envelope(flip_bit(plain_ct, 0.6)), *enc)
    c["flipped_mdc"] = Case(envelope(flip_bit(plain_ct, 1.0)), *enc)
    c["flipped_base64_stale_crc"] = Case(envelope(flip_base64_char(plain_ct)), *enc)
    for name, extra in (("no_mdc_aes", ()), ("no_mdc_3des", ("--cipher-algo", "3DES"))):
        f.extra[name] = sign_encrypt(s_home, sanne("VT-" + name), [s_fpr], [gw_fpr],
                                     "--rfc2440", *extra)
        c[name] = Case(envelope(f.extra[name]), *enc)
    # A captured genuine ciphertext glued to one the attacker encrypted to the gateway.
    genuine = sign_encrypt(s_home, sanne("VT-CAPTURED"), [s_fpr], [gw_fpr])
    forged = sign_encrypt(stranger.home, crlf(DAAN_TEXT.encode()), [], [gw_fpr])
    c["concatenated_genuine_first"] = Case(envelope(genuine + forged), *enc)
    c["concatenated_forged_first"] = Case(envelope(forged + genuine), *enc)
    c["concatenated_binary"] = Case(envelope(armor(dearmor(genuine) + dearmor(forged))), *enc)
    good_ct = f.extra["good_ciphertext"] = sign_encrypt(s_home, sanne("VT-INLINE"), [s_fpr],
                                                        [gw_fpr])
    c["inline_text_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "text/plain; charset=us-ascii")
        + b"Zie hieronder.\r\n\r\n" + crlf(good_ct), *enc)
    c["inline_octet_stream"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "application/octet-stream") + crlf(good_ct), *enc)
    inner = envelope(sign_encrypt(s_home, sanne("VT-NESTED-IN"), [s_fpr], [gw_fpr]))
    c["nested"] = Case(envelope(sign_encrypt(s_home, inner, [s_fpr], [gw_fpr])), *enc)
    c["nested_in_mixed"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", text_part("Zie bijlage."), inner), [s_fpr], [gw_fpr])), *enc)

    # -- Content-Types that lie ------------------------------------------------------------
    lie = combined(s_home, "VT-LIE", [s_fpr])
    c["lie_outer_protocol"] = Case(lie.replace(b'protocol="application/pgp-encrypted"',
                                               b'protocol="application/pgp-signature"'), *enc)
    c["lie_signature_as_ciphertext"] = Case(
        envelope(detach_sign(s_home, sanne("VT-LIE-SIG"), [s_fpr])), *enc)
    # Clearsigning dash-escapes a pasted "-----BEGIN PGP MESSAGE-----" line, which still
    # contains that marker: the part passes a naive substring check and reaches gpg.
    c["lie_clearsigned_as_ciphertext"] = Case(envelope(clearsign(
        s_home, crlf(DAAN_TEXT.encode()) + b"\r\n" + good_ct, s_fpr)), *enc)
    c["lie_json_holding_text"] = Case(envelope(sign_encrypt(s_home, crlf(text_part(
        DAAN_TEXT, "application/json")), [s_fpr], [gw_fpr])), 554, "5.6.0")
    json_text = sanne("VT-LIE-TXT").partition(b"\r\n\r\n")[2].decode()
    c["lie_text_holding_json"] = Case(envelope(sign_encrypt(s_home, crlf(text_part(
        json_text)), [s_fpr], [gw_fpr])), 554, "5.6.0")
    entity = sanne("VT-LIE-PKCS7")
    c["lie_signed_protocol"] = Case(inside(s_home, entity, detach_sign(s_home, entity, [s_fpr]),
                                           protocol="application/pkcs7-signature"), *sig)
    # The sender once signed something harmless; an attacker puts that signed message where a
    # detached signature belongs, next to content of their own.
    announcement = b"Veilig Thuis Utrecht is op 1 januari gesloten.\r\n"
    c["lie_signed_message_as_signature"] = Case(inside(
        s_home, crlf(text_part(DAAN_TEXT)), sign_only(s_home, announcement, s_fpr)), *sig)
    c["lie_clearsigned_as_signature"] = Case(inside(
        s_home, crlf(text_part(DAAN_TEXT)), clearsign(s_home, announcement, s_fpr)), *sig)
    try:
        yield f
    finally:
        for home in (multi, expired, revoked):
            stop_agent(home)


# -- helpers -------------------------------------------------------------------------------


def assert_no_personal_data(text: str) -> None:
    for secret in PERSONAL:
        assert secret not in text, f"reply leaks {secret!r}: {text}"


async def assert_nothing_delivered(h: Harness) -> None:
    await h.drain()
    assert {code: inbox.received for code, inbox in h.inboxes.items()} == \
        {SCHOOL_A: [], SCHOOL_B: []}
    assert "accepted" not in [r.event for r in await h.receipts()]


async def refuse(h: Harness, forge: Forge, name: str) -> Reply:
    """Send one forged case; assert its exact reply and that nothing reaches a school."""
    case = forge.case(name)
    reply = await h.send(case.message)
    assert (reply.code, reply.text.split(" ", 1)[0]) == (case.code, case.enhanced), \
        f"{name}: {reply}"
    assert_no_personal_data(reply.text)
    await assert_nothing_delivered(h)
    return reply


async def pin_sender_key(h: Harness, public: bytes, fpr: str) -> None:
    """What `senders add-key` would do, minus its checks: import the key and pin it."""
    h.ctx.gpg.call_sync(lambda g: g.import_keys(public))

    async def body(tx: Tx) -> None:
        await tx.directory.add_sender_key(SENDER, fpr, h.ctx.clock())

    await h.ctx.store.write(body)
    await h.ctx.refresh(force=True)


def pin_in_snapshot(h: Harness, fpr: str) -> None:
    """Make the directory snapshot count `fpr` as pinned, as a stale snapshot would."""
    snapshot = h.ctx.snapshot
    sender = snapshot.senders[SENDER]
    senders = {**snapshot.senders, SENDER: dataclasses.replace(
        sender, fingerprints=sender.fingerprints | {fpr})}
    h.ctx.snapshot = dataclasses.replace(snapshot, senders=senders)


# -- controls ------------------------------------------------------------------------------


async def test_builders_make_signals_the_gateway_accepts(harness: Harness, forge: Forge) -> None:
    """The forging tools used honestly (combined, signed-inside, signing subkey) are accepted."""
    assert forge.gateway_fpr == harness.gateway_fpr
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.sender_with_subkey))
    for name in ("good", "good_inside", "good_subkey"):
        reply = await harness.send(forge.extra[name])
        assert reply.code == 250 and reply.text.startswith("2.0.0 Signal accepted"), \
            f"{name}: {reply}"
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 3


# -- signatures ----------------------------------------------------------------------------


async def test_encrypted_but_unsigned_gets_554_577(harness: Harness, forge: Forge) -> None:
    """`gpg --encrypt` to the gateway without any signature is refused with 554 5.7.7."""
    reply = await refuse(harness, forge, "unsigned")
    assert "not signed" in reply.text


async def test_signed_but_not_encrypted_gets_554_575(harness: Harness, forge: Forge) -> None:
    """Signed-only OpenPGP in the envelope, clearsigned text and bare multipart/signed: 5.7.5."""
    for name in ("signed_only", "clearsigned_plain", "signed_multipart_plain"):
        await refuse(harness, forge, name)


async def test_signature_by_unpinned_key_gets_554_577(harness: Harness, forge: Forge) -> None:
    """A stranger's signature is refused, also once the stranger's key is in the keyring."""
    for name in ("stranger_combined", "stranger_inside"):
        await refuse(harness, forge, name)
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.stranger_public))
    for name in ("stranger_combined", "stranger_inside"):
        reply = await refuse(harness, forge, name)
        assert "not by a key pinned for this sender" in reply.text


async def test_signature_by_another_senders_key_gets_554_577(harness: Harness,
                                                              forge: Forge) -> None:
    """A valid signature by the key pinned for "politie" does not count for vt-utrecht."""
    for name in ("other_sender_combined", "other_sender_inside"):
        reply = await refuse(harness, forge, name)
        assert "not by a key pinned for this sender" in reply.text


async def test_two_signatures_get_554_577(harness: Harness, forge: Forge) -> None:
    """Two signatures are refused: two keys, or the sender's own key twice, combined or inside."""
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.sender_with_subkey))
    for name in ("two_keys_combined", "same_key_twice_combined", "same_key_twice_inside",
                 "two_keys_inside", "combined_around_signed"):
        reply = await refuse(harness, forge, name)
        assert "more than one signature" in reply.text, f"{name}: {reply}"


async def test_weak_signature_hashes_get_554_577(harness: Harness, forge: Forge) -> None:
    """`gpg --digest-algo SHA1` (RIPEMD160, SHA224) by the pinned key, in either shape: 5.7.7."""
    for algo in WEAK_HASHES:
        for shape in ("combined", "inside"):
            reply = await refuse(harness, forge, f"{algo}_{shape}")
            assert reply.text == ("5.7.7 signature uses a weak hash algorithm; sign with "
                                  "SHA-256 or stronger"), f"{algo} {shape}: {reply}"


def test_gpg_folds_the_same_local_user_given_twice(forge: Forge, identities: Identities) -> None:
    """`gpg -u F -u F` makes one signature, hence the subkey and concatenation forgeries."""
    home = identities.sender.home
    signed = gpg(home, "--sign", "--local-user", forge.sender_fpr, "--local-user",
                 forge.sender_fpr, data=b"x")
    packets = gpg(home, "--list-packets", data=signed).decode()
    assert packets.count(":signature packet:") == 1


async def test_signed_part_wrapped_in_unsigned_content_gets_554_577(harness: Harness,
                                                                   forge: Forge) -> None:
    """"Johnny, you are fired": attacker text before or after a valid multipart/signed: 5.7.7."""
    for name in ("johnny_before", "johnny_after"):
        await refuse(harness, forge, name)


async def test_text_in_preamble_and_epilogue_of_signed_part_is_never_delivered(
        harness: Harness, forge: Forge) -> None:
    """Unsigned text in a multipart/signed's preamble and epilogue never reaches a school."""
    # RFC 2046 §5.1.1 gives preamble and epilogue no meaning: the signal is accepted and only
    # the signed child is delivered (refusing it would be safe too; this pins acceptance).
    reply = await harness.send(forge.extra["text_around_signed"])
    assert reply.code == 250 and reply.text.startswith("2.0.0 Signal accepted"), reply
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert "Naam: Sanne de Vries" in text and "Daan" not in text
    assert harness.inboxes[SCHOOL_B].received == []


async def test_signature_by_expired_key_gets_554_577(harness: Harness, forge: Forge) -> None:
    """A 2020 signature by a pinned key that expired in 2020 is refused, even if still pinned."""
    await pin_sender_key(harness, forge.expired_public, forge.expired_fpr)
    # The directory itself leaves an expired key out of the pinned set (gpg still knows it) ...
    assert forge.expired_fpr not in harness.ctx.snapshot.senders[SENDER].fingerprints
    reply = await refuse(harness, forge, "expired")
    assert "expired or revoked" in reply.text
    # ... and were the snapshot stale, gpg's EXPKEYSIG would still refuse it.
    pin_in_snapshot(harness, forge.expired_fpr)
    reply = await refuse(harness, forge, "expired")
    assert "expired or revoked" in reply.text


async def test_signature_by_revoked_key_gets_554_577(harness: Harness, forge: Forge) -> None:
    """A signature by a pinned key whose revocation was imported afterwards is refused."""
    await pin_sender_key(harness, forge.revoked_public, forge.revoked_fpr)
    assert forge.revoked_fpr in harness.ctx.snapshot.senders[SENDER].fingerprints
    result = harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.revocation))
    assert result.n_revoc == 1
    # The snapshot (up to 5 minutes old) still pins the key: gpg's REVKEYSIG refuses it.
    reply = await refuse(harness, forge, "revoked")
    assert "expired or revoked" in reply.text
    await harness.ctx.refresh(force=True)
    assert forge.revoked_fpr not in harness.ctx.snapshot.senders[SENDER].fingerprints
    await refuse(harness, forge, "revoked")


# -- encryption ----------------------------------------------------------------------------


async def test_encrypted_to_another_key_gets_554_575(harness: Harness, forge: Forge) -> None:
    """Signed by the sender but encrypted to a school's key (also as hidden recipient): 5.7.5."""
    for name in ("to_other_key", "to_other_key_hidden"):
        await refuse(harness, forge, name)


async def test_symmetric_encryption_gets_554_575(harness: Harness, forge: Forge) -> None:
    """A passphrase-encrypted message, signed by the sender or not, is refused with 5.7.5."""
    for name in ("symmetric", "symmetric_signed"):
        reply = await refuse(harness, forge, name)
        assert "symmetric" in reply.text


async def test_symmetric_and_gateway_key_is_accepted_as_signed(harness: Harness,
                                                              forge: Forge) -> None:
    """`gpg -c -s -e -r GATEWAY` is accepted as signed: a passphrase is one more reader only."""
    # gpg decrypts with the gateway key and never touches the passphrase packet (no
    # NEED_PASSPHRASE_SYM), and the whole payload carries one good signature by the pinned key.
    # The extra passphrase lets someone else read it too, like any additional recipient: the
    # sender's choice, not a forgery. Refusing it (5.7.5) would also be defensible; this pins
    # today's acceptance and that the school gets exactly what the sender signed.
    reply = await harness.send(forge.extra["sym_and_gateway"])
    assert reply.code == 250 and reply.text.startswith("2.0.0 Signal accepted"), reply
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert "Naam: Sanne de Vries" in text and f"Geboortedatum: {SANNE_BIRTH:%d-%m-%Y}" in text
    assert harness.inboxes[SCHOOL_B].received == []


async def test_ciphertext_failing_integrity_check_gets_554_575(harness: Harness,
                                                                forge: Forge) -> None:
    """One bit flipped in the literal data or in the MDC, or a base64 char (stale CRC): 5.7.5."""
    for name in ("flipped_literal", "flipped_mdc", "flipped_base64_stale_crc"):
        await refuse(harness, forge, name)


async def test_ciphertext_without_mdc_gets_554_575(harness: Harness, forge: Forge) -> None:
    """`gpg --rfc2440` ciphertext without MDC (EFAIL-malleable), AES or 3DES, gets 5.7.5."""
    # gpg 2.2.40 still writes such messages with --rfc2440 (--disable-mdc and --no-force-mdc are
    # ignored), so no hand-crafting is needed. Decrypting, gpg prints the plaintext first and
    # then DECRYPTION_FAILED ("decryption forced to fail"), which the gateway must honour.
    for name in ("no_mdc_aes", "no_mdc_3des"):
        await refuse(harness, forge, name)


def test_rfc2440_ciphertext_really_has_no_mdc(forge: Forge, identities: Identities) -> None:
    """The no-MDC forgeries are SED packets (tag 9); the honest ciphertext is SEIPD (tag 18)."""
    home = identities.sender.home
    for name in ("no_mdc_aes", "no_mdc_3des"):
        listing = list_packets(home, forge.extra[name])
        assert "tag=9 " in listing and "tag=18 " not in listing, listing
    assert "tag=18 " in list_packets(home, forge.extra["good_ciphertext"])


async def test_two_ciphertexts_in_one_part_get_554_575(harness: Harness, forge: Forge) -> None:
    """A captured genuine ciphertext glued to a forged one (either order, or binary): 5.7.5."""
    # gpg decrypts and verifies the first, then says "multiple plaintexts seen" and
    # DECRYPTION_FAILED for the second; its plaintext output holds both.
    for name in ("concatenated_genuine_first", "concatenated_forged_first",
                 "concatenated_binary"):
        await refuse(harness, forge, name)


async def test_inline_pgp_gets_554_575(harness: Harness, forge: Forge) -> None:
    """A valid signed+encrypted armored message pasted into text/plain or octet-stream: 5.7.5."""
    for name in ("inline_text_plain", "inline_octet_stream"):
        await refuse(harness, forge, name)


async def test_nested_encryption_gets_554_575(harness: Harness, forge: Forge) -> None:
    """A multipart/encrypted inside the signed payload, at its top or in a mixed part: 5.7.5."""
    for name in ("nested", "nested_in_mixed"):
        reply = await refuse(harness, forge, name)
        assert "nested" in reply.text


# -- Content-Types that lie ----------------------------------------------------------------


async def test_lying_envelope_is_refused_554_575(harness: Harness, forge: Forge) -> None:
    """A pgp-signature protocol, or a signature or clearsigned text as ciphertext: 5.7.5."""
    for name in ("lie_outer_protocol", "lie_signature_as_ciphertext",
                 "lie_clearsigned_as_ciphertext"):
        await refuse(harness, forge, name)


async def test_lying_signed_structure_is_refused_554_577(harness: Harness, forge: Forge) -> None:
    """A multipart/signed claiming pkcs7, or holding a signed message as its "signature": 5.7.7."""
    for name in ("lie_signed_protocol", "lie_signed_message_as_signature",
                 "lie_clearsigned_as_signature"):
        await refuse(harness, forge, name)


async def test_lying_payload_type_is_refused_554_560(harness: Harness, forge: Forge) -> None:
    """application/json holding labelled text, text/plain holding JSON: 5.6.0, never guessed."""
    for name in ("lie_json_holding_text", "lie_text_holding_json"):
        await refuse(harness, forge, name)


# -- the gateway is not wedged ---------------------------------------------------------------


async def test_every_forgery_in_a_row_then_a_good_signal_is_delivered(harness: Harness,
                                                                      forge: Forge) -> None:
    """All forgeries on one gateway get their replies; the next good signal is delivered."""
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.sender_with_subkey))
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.stranger_public))
    await pin_sender_key(harness, forge.expired_public, forge.expired_fpr)
    await pin_sender_key(harness, forge.revoked_public, forge.revoked_fpr)
    harness.ctx.gpg.call_sync(lambda g: g.import_keys(forge.revocation))
    observed = {name: await harness.send(case.message) for name, case in forge.cases.items()}
    assert {name: (r.code, r.text.split(" ", 1)[0]) for name, r in observed.items()} == \
        {name: (case.code, case.enhanced) for name, case in forge.cases.items()}
    await assert_nothing_delivered(harness)
    reply = await harness.send(forge.extra["good"])
    assert reply.code == 250, reply
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert "Naam: Sanne de Vries" in text


# -- SMTP protocol attacks on a raw socket ------------------------------------------------------


def ca_file(h: Harness) -> Path:
    return h.ctx.config.smtp.tls_cert.parent / "ca.pem"


async def open_transaction(h: Harness) -> RawSMTP:
    """A raw session up to the 354 of DATA: EHLO, STARTTLS, EHLO, AUTH, MAIL, RCPT."""
    client = await RawSMTP.connect("127.0.0.1", h.port)
    assert (await client.command("EHLO attacker.example")).code == 250
    await client.starttls(ca_file(h))
    assert (await client.command("EHLO attacker.example")).code == 250
    assert (await client.login(SENDER, PASSWORD)).code == 235
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    assert (await client.command(f"RCPT TO:<{GATEWAY}>")).code == 250
    assert (await client.command("DATA")).code == 354
    return client


SMUGGLE_MARKERS = {"lf-dot-crlf": b"\n.\r\n", "cr-dot-crlf": b"\r.\r\n", "lf-dot-lf": b"\n.\n",
                   "crlf-dot-cr": b"\r\n.\r"}


@pytest.mark.parametrize("marker", list(SMUGGLE_MARKERS))
async def test_smuggled_second_transaction_is_not_one(harness: Harness, forge: Forge,
                                                      marker: str) -> None:
    """A fake end-of-data then MAIL/RCPT/DATA inside one DATA is message text: one reply only."""
    client = await open_transaction(harness)
    smuggled = (SMUGGLE_MARKERS[marker]
                + f"MAIL FROM:<{SENDER_ADDRESS}>\r\nRCPT TO:<{GATEWAY}>\r\nDATA\r\n".encode()
                + dot_stuff(forge.extra["daan"]) + b".\r\nQUIT\r\n")
    await client.write(dot_stuff(forge.extra["good"]).rstrip(b"\r\n") + smuggled)
    replies = await client.replies_until_closed()
    await client.close()
    assert [r.code for r in replies] == [250, 221], replies
    assert replies[0].text.startswith("2.0.0 Signal accepted")
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1
    assert harness.inboxes[SCHOOL_B].received == [], "the smuggled signal was delivered"
    assert [r.event for r in await harness.receipts()].count("accepted") == 1


async def test_bare_lf_data_is_one_transaction(harness: Harness, forge: Forge) -> None:
    """Bare-LF lines, an LF-only dot and LF commands inside DATA end nothing: one reply only."""
    short = (b"Subject: x\nContent-Type: text/plain\n\nhello\n.\n"
             + f"MAIL FROM:<{SENDER_ADDRESS}>\nRCPT TO:<{GATEWAY}>\nDATA\n".encode()
             + b"Subject: smuggled\n\nNaam: Daan de Vries\r\n.\r\nQUIT\r\n")
    client = await open_transaction(harness)
    await client.write(short)
    replies = await client.replies_until_closed()
    await client.close()
    assert [(r.code, r.text.split(" ", 1)[0]) for r in replies] == [(554, "5.7.5"),
                                                                     (221, "Bye")], replies
    # A whole signal in bare LF is one over-long line: refused, still a single reply.
    client = await open_transaction(harness)
    await client.write(forge.extra["good"].replace(b"\r\n", b"\n")
                       + f".\nMAIL FROM:<{SENDER_ADDRESS}>\nRCPT TO:<{GATEWAY}>\nDATA\n".encode()
                       + forge.extra["daan"].replace(b"\r\n", b"\n") + b"\r\n.\r\nQUIT\r\n")
    replies = await client.replies_until_closed()
    await client.close()
    assert len(replies) == 2 and replies[0].code >= 500 and replies[1].code == 221, replies
    await assert_nothing_delivered(harness)


async def test_commands_pipelined_with_starttls_are_discarded(harness: Harness) -> None:
    """AUTH and MAIL sent in the same segment as STARTTLS are never answered or obeyed."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    assert (await client.command("EHLO attacker.example")).code == 250
    await client.write(b"STARTTLS\r\n" + auth_plain(SENDER, PASSWORD)
                       + f"MAIL FROM:<{SENDER_ADDRESS}>\r\n".encode())
    assert (await client.reply()).code == 220
    await client.starttls(ca_file(harness), send_command=False)
    noop = await client.command("NOOP")
    assert noop.code == 250, f"a pipelined command was answered after TLS: {noop}"
    assert (await client.command("EHLO attacker.example")).code == 250
    # MAIL is open to schools' acknowledgements; the intake address needs the AUTH that was
    # sent before TLS and must have been thrown away.
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    rcpt = await client.command(f"RCPT TO:<{GATEWAY}>")
    assert (rcpt.code, rcpt.text.split(" ", 1)[0]) == (530, "5.7.0"), \
        f"the pipelined AUTH was obeyed: {rcpt}"
    assert (await client.command("QUIT")).code == 221
    await client.close()


async def test_auth_before_starttls_gets_530_570(harness: Harness) -> None:
    """AUTH is not offered before STARTTLS, and AUTH PLAIN/LOGIN there get 530 5.7.0."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    ehlo = await client.command("EHLO attacker.example")
    assert not any(line.upper().startswith("AUTH") for line in ehlo.lines), ehlo
    replies: list[RawReply] = [await client.login(SENDER, PASSWORD),
                               await client.command("AUTH LOGIN")]
    for reply in replies:
        assert (reply.code, reply.text.split(" ", 1)[0]) == (530, "5.7.0"), reply
    mail = await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")
    assert mail.code == 530
    assert (await client.command("QUIT")).code == 221
    await client.close()



@pytest.mark.parametrize("mechanism", ["AUTH PLAIN", "AUTH LOGIN"])
async def test_overlong_auth_answer_is_cut_with_421_not_a_gateway_failure(
        harness: Harness, mechanism: str) -> None:
    """An answer to a 334 longer than a line (attack review: 1,100 bytes gave 451 4.3.0 and a
    session.failed error) ends the session with 421 4.7.0 and logs only the cut."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    await client.command("EHLO attacker.example")
    await client.starttls(ca_file(harness))
    await client.command("EHLO attacker.example")
    assert (await client.command(mechanism)).code == 334
    with structlog.testing.capture_logs() as logs:
        await client.write(b"A" * 1100 + b"\r\n")
        replies = await client.replies_until_closed()
    await client.close()
    assert [(r.code, r.text) for r in replies] == \
        [(421, "4.7.0 Authentication line too long, closing connection")]
    assert [e["event"] for e in logs if e["log_level"] == "error"] == []
    assert {"event": "session.cut", "reason": "auth_line"}.items() <= \
        next(e for e in logs if e["event"] == "session.cut").items()


async def test_session_naming_recipient_after_recipient_is_closed(harness: Harness) -> None:
    """An authenticated session naming recipient after foreign recipient (1,000 RCPTs made 500
    log lines in 0.1 s in the attack review) gets 550 ten times, then 421 and the close."""
    client = await RawSMTP.connect("127.0.0.1", harness.port)
    await client.command("EHLO attacker.example")
    await client.starttls(ca_file(harness))
    await client.command("EHLO attacker.example")
    assert (await client.login(SENDER, PASSWORD)).code == 235
    assert (await client.command(f"MAIL FROM:<{SENDER_ADDRESS}>")).code == 250
    with structlog.testing.capture_logs() as logs:
        codes = [(await client.command(f"RCPT TO:<victim{i}@example.org>")).code
                 for i in range(10)]
        await client.write(b"RCPT TO:<victim10@example.org>\r\nRCPT TO:<victim11@example.org>\r\n")
        rest = await client.replies_until_closed()
    await client.close()
    assert codes == [550] * 10
    assert [(r.code, r.text) for r in rest] == \
        [(421, "4.7.0 Too many refused recipients, closing connection")]
    assert [e["event"] for e in logs].count("envelope.refused") == 10
