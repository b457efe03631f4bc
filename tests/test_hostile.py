"""Hostile input over the real wire: forged PGP/MIME built with the gpg command line, against a
complete running gateway (SMTP protocol attacks on a raw socket: tests/test_hostile_smtp.py).

Each forged message gets exactly the reply README.md's reply table gives its class, a reply text
without a name, birth date or BSN, and nothing reaches a school. The forgeries are made once per
session (tests/forged_messages.py: gpg is slow); every test gets a fresh gateway.
"""

from __future__ import annotations

from conftest import SANNE_BIRTH, SCHOOL_A, SCHOOL_B, SENDER, Harness, Identities
from forgeries import (
    WEAK_HASHES,
    Forge,
    assert_nothing_delivered,
    pin_in_snapshot,
    pin_sender_key,
    refuse,
)
from hostile import gpg, list_packets

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
