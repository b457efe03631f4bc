"""Forged PGP/MIME for the hostile tests: one builder per kind of forged message, each made with
the gpg command line (tests/hostile.py) from the forger's keys (tests/forgeries.py), and
`build_forge`, which makes them all.

Each builder takes the `Workshop` and returns its cases by name, each with the exact reply the
gateway must give it; `controls` returns messages that are not refusals. `build_forge` produces
the `Forge` the conftest fixture `forge` holds, built once per session (gpg is slow). A gpg
failure raises `GpgFailed`.
"""

from __future__ import annotations

from conftest import GATEWAY, SENDER_ADDRESS
from forgeries import (
    DAAN_TEXT,
    ENC,
    SIG,
    SIGNED,
    WEAK_HASHES,
    Case,
    Forge,
    Workshop,
    envelope,
    revocation_certificate,
    sanne,
)
from hostile import (
    armor,
    clearsign,
    crlf,
    dearmor,
    detach_sign,
    export_public,
    flip_base64_char,
    flip_bit,
    headers,
    multipart,
    sign_encrypt,
    sign_only,
    signed_entity,
    symmetric,
    text_part,
)

from gateway.devkit.demokit import signed_multipart


def controls(w: Workshop) -> dict[str, bytes]:
    """The same builders, used honestly, make signals the gateway accepts; and the signal with
    text around its signed part, and one encrypted to a passphrase and the gateway's key."""
    s_home, s_fpr, gw_fpr = w.s_home, w.s_fpr, w.gw_fpr
    extra = {}
    extra["good"] = w.combined(s_home, "VT-GOOD", [s_fpr])
    entity = sanne("VT-GOOD-INSIDE")
    extra["good_inside"] = w.inside(s_home, entity, detach_sign(s_home, entity, [s_fpr]))
    extra["good_subkey"] = w.combined(w.multi, "VT-GOOD-SUBKEY", [w.subkey])
    extra["daan"] = envelope(sign_encrypt(s_home, crlf(text_part(DAAN_TEXT)), [s_fpr],
                                          [gw_fpr]))
    around = signed_multipart(sanne("VT-AROUND"), w.ids.sender)
    head, _, body = around.partition(b"\r\n\r\n")
    extra["text_around_signed"] = envelope(sign_encrypt(
        s_home, head + b"\r\n\r\n" + crlf(DAAN_TEXT.encode()) + body + crlf(DAAN_TEXT.encode()),
        [], [gw_fpr]))
    extra["sym_and_gateway"] = envelope(symmetric(
        s_home, sanne("VT-SYM-GW"), "x", "--sign", "--local-user", f"{s_fpr}!",
        "--encrypt", "--recipient", gw_fpr))
    return extra


def wrong_signers(w: Workshop) -> dict[str, Case]:
    """Signatures: none, by a stranger's or another sender's key, by two keys or one key twice
    (554 5.7.7)."""
    s_home, s_fpr, multi = w.s_home, w.s_fpr, w.multi
    stranger, other = w.ids.stranger, w.ids.other_sender
    c = {}
    c["unsigned"] = Case(w.combined(s_home, "VT-UNSIGNED", []), *SIG)
    c["stranger_combined"] = Case(w.combined(stranger.home, "VT-S1", [stranger.fingerprint]),
                                  *SIG)
    entity = sanne("VT-S2")
    c["stranger_inside"] = Case(w.inside(stranger.home, entity, detach_sign(
        stranger.home, entity, [stranger.fingerprint])), *SIG)
    c["other_sender_combined"] = Case(w.combined(other.home, "VT-O1", [other.fingerprint]),
                                      *SIG)
    entity = sanne("VT-O2")
    c["other_sender_inside"] = Case(w.inside(other.home, entity, detach_sign(
        other.home, entity, [other.fingerprint])), *SIG)
    c["two_keys_combined"] = Case(w.combined(multi, "VT-2K", [s_fpr, other.fingerprint]), *SIG)
    c["same_key_twice_combined"] = Case(w.combined(multi, "VT-2S", [s_fpr, w.subkey]), *SIG)
    entity = sanne("VT-2D")
    twice = detach_sign(s_home, entity, [s_fpr], armor=False) * 2
    c["same_key_twice_inside"] = Case(w.inside(s_home, entity, twice, signature_cte="base64"),
                                      *SIG)
    entity = sanne("VT-2DK")
    c["two_keys_inside"] = Case(w.inside(multi, entity, detach_sign(
        multi, entity, [s_fpr, other.fingerprint])), *SIG)
    return c


def wrapped_or_stale_signatures(w: Workshop) -> dict[str, Case]:
    """A signed part wrapped in more (combined signature around it, unsigned text beside it),
    and signatures by an expired or a revoked key (554 5.7.7)."""
    s_home, s_fpr, gw_fpr, sender = w.s_home, w.s_fpr, w.gw_fpr, w.ids.sender
    c = {}
    c["combined_around_signed"] = Case(envelope(sign_encrypt(
        s_home, signed_multipart(sanne("VT-CS"), sender), [s_fpr], [gw_fpr])), *SIG)
    attacker = text_part(DAAN_TEXT)
    signed = signed_multipart(sanne("VT-JOHNNY"), sender)
    c["johnny_before"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", attacker, signed), [], [gw_fpr])), *SIG)
    c["johnny_after"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", signed, attacker), [], [gw_fpr])), *SIG)
    entity = sanne("VT-EXPIRED")
    c["expired"] = Case(w.inside(w.expired, entity, detach_sign(
        w.expired, entity, [w.expired_fpr], faked_time=SIGNED)), *SIG)
    c["revoked"] = Case(w.combined(w.revoked, "VT-REVOKED", [w.revoked_fpr]), *SIG)
    return c


def weak_hashes(w: Workshop) -> dict[str, Case]:
    """The sender's own pinned key, over a hash with collision attacks (or below SHA-256),
    in both shapes (554 5.7.7)."""
    s_home, s_fpr = w.s_home, w.s_fpr
    c = {}
    for algo in WEAK_HASHES:
        c[f"{algo}_combined"] = Case(w.combined(s_home, f"VT-{algo}", [s_fpr], "--digest-algo",
                                                algo), *SIG)
        entity = sanne(f"VT-{algo}-INSIDE")
        c[f"{algo}_inside"] = Case(w.inside(s_home, entity, detach_sign(
            s_home, entity, [s_fpr], "--digest-algo", algo)), *SIG)
    return c


def not_encrypted(w: Workshop) -> dict[str, Case]:
    """Signed but not encrypted: an OpenPGP signed message, a clearsigned text, a plain
    multipart/signed (554 5.7.5)."""
    s_home, s_fpr = w.s_home, w.s_fpr
    c = {}
    c["signed_only"] = Case(envelope(sign_only(s_home, sanne("VT-SO"), s_fpr)), *ENC)
    c["clearsigned_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "text/plain; charset=utf-8")
        + clearsign(s_home, crlf(DAAN_TEXT.encode()), s_fpr), *ENC)
    entity = sanne("VT-SIGNED-PLAIN")
    signed_top = signed_entity(entity, detach_sign(s_home, entity, [s_fpr]))
    head, _, body = signed_top.partition(b"\r\n\r\n")
    c["signed_multipart_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, head.decode().removeprefix("Content-Type: ")) + body,
        *ENC)
    return c


def not_for_the_gateway(w: Workshop) -> dict[str, Case]:
    """Encrypted to another key (named or hidden), or to a passphrase only (554 5.7.5)."""
    s_home, s_fpr, multi, school_a = w.s_home, w.s_fpr, w.multi, w.ids.school_a
    c = {}
    c["to_other_key"] = Case(envelope(sign_encrypt(
        multi, sanne("VT-OK"), [s_fpr], [school_a.fingerprint])), *ENC)
    c["to_other_key_hidden"] = Case(envelope(sign_encrypt(
        multi, sanne("VT-OKH"), [s_fpr], [school_a.fingerprint], hidden=True)), *ENC)
    c["symmetric"] = Case(envelope(symmetric(s_home, sanne("VT-SYM"), "x")), *ENC)
    c["symmetric_signed"] = Case(envelope(symmetric(
        s_home, sanne("VT-SYMS"), "x", "--sign", "--local-user", f"{s_fpr}!")), *ENC)
    return c


def tampered_ciphertexts(w: Workshop, extra: dict[str, bytes]) -> dict[str, Case]:
    """Ciphertext with a flipped bit or base64 character, and ciphertext without integrity
    protection (RFC 2440, no MDC; kept in `extra` too) (554 5.7.5)."""
    s_home, s_fpr, gw_fpr = w.s_home, w.s_fpr, w.gw_fpr
    c = {}
    plain_ct = sign_encrypt(s_home, sanne("VT-FLIP"), [s_fpr], [gw_fpr], "--compress-algo",
                            "none")
    c["flipped_literal"] = Case(envelope(flip_bit(plain_ct, 0.6)), *ENC)
    c["flipped_mdc"] = Case(envelope(flip_bit(plain_ct, 1.0)), *ENC)
    c["flipped_base64_stale_crc"] = Case(envelope(flip_base64_char(plain_ct)), *ENC)
    for name, more in (("no_mdc_aes", ()), ("no_mdc_3des", ("--cipher-algo", "3DES"))):
        extra[name] = sign_encrypt(s_home, sanne("VT-" + name), [s_fpr], [gw_fpr],
                                   "--rfc2440", *more)
        c[name] = Case(envelope(extra[name]), *ENC)
    return c


def spliced_ciphertexts(w: Workshop, extra: dict[str, bytes]) -> dict[str, Case]:
    """Two OpenPGP messages in one part, a good ciphertext (kept in `extra`) inline in a
    plain part, and encryption nested in encryption (554 5.7.5)."""
    s_home, s_fpr, gw_fpr = w.s_home, w.s_fpr, w.gw_fpr
    c = {}
    # A captured genuine ciphertext glued to one the attacker encrypted to the gateway.
    genuine = sign_encrypt(s_home, sanne("VT-CAPTURED"), [s_fpr], [gw_fpr])
    forged = sign_encrypt(w.ids.stranger.home, crlf(DAAN_TEXT.encode()), [], [gw_fpr])
    c["concatenated_genuine_first"] = Case(envelope(genuine + forged), *ENC)
    c["concatenated_forged_first"] = Case(envelope(forged + genuine), *ENC)
    c["concatenated_binary"] = Case(envelope(armor(dearmor(genuine) + dearmor(forged))), *ENC)
    good_ct = extra["good_ciphertext"] = sign_encrypt(s_home, sanne("VT-INLINE"), [s_fpr],
                                                      [gw_fpr])
    c["inline_text_plain"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "text/plain; charset=us-ascii")
        + b"Zie hieronder.\r\n\r\n" + crlf(good_ct), *ENC)
    c["inline_octet_stream"] = Case(
        headers(SENDER_ADDRESS, GATEWAY, "application/octet-stream") + crlf(good_ct), *ENC)
    inner = envelope(sign_encrypt(s_home, sanne("VT-NESTED-IN"), [s_fpr], [gw_fpr]))
    c["nested"] = Case(envelope(sign_encrypt(s_home, inner, [s_fpr], [gw_fpr])), *ENC)
    c["nested_in_mixed"] = Case(envelope(sign_encrypt(
        s_home, multipart("mixed", text_part("Zie bijlage."), inner), [s_fpr], [gw_fpr])), *ENC)
    return c


def lying_content_types(w: Workshop, good_ct: bytes) -> dict[str, Case]:
    """Content-Types that lie: about the envelope's protocol (554 5.7.5), the payload's type
    (554 5.6.0), or what the signature part holds (554 5.7.7)."""
    s_home, s_fpr, gw_fpr = w.s_home, w.s_fpr, w.gw_fpr
    c = {}
    lie = w.combined(s_home, "VT-LIE", [s_fpr])
    c["lie_outer_protocol"] = Case(lie.replace(b'protocol="application/pgp-encrypted"',
                                               b'protocol="application/pgp-signature"'), *ENC)
    c["lie_signature_as_ciphertext"] = Case(
        envelope(detach_sign(s_home, sanne("VT-LIE-SIG"), [s_fpr])), *ENC)
    # Clearsigning dash-escapes a pasted "-----BEGIN PGP MESSAGE-----" line, which still
    # contains that marker: the part passes a naive substring check and reaches gpg.
    c["lie_clearsigned_as_ciphertext"] = Case(envelope(clearsign(
        s_home, crlf(DAAN_TEXT.encode()) + b"\r\n" + good_ct, s_fpr)), *ENC)
    c["lie_json_holding_text"] = Case(envelope(sign_encrypt(s_home, crlf(text_part(
        DAAN_TEXT, "application/json")), [s_fpr], [gw_fpr])), 554, "5.6.0")
    json_text = sanne("VT-LIE-TXT").partition(b"\r\n\r\n")[2].decode()
    c["lie_text_holding_json"] = Case(envelope(sign_encrypt(s_home, crlf(text_part(
        json_text)), [s_fpr], [gw_fpr])), 554, "5.6.0")
    entity = sanne("VT-LIE-PKCS7")
    c["lie_signed_protocol"] = Case(w.inside(s_home, entity, detach_sign(
        s_home, entity, [s_fpr]), protocol="application/pkcs7-signature"), *SIG)
    # The sender once signed something harmless; an attacker puts that signed message where a
    # detached signature belongs, next to content of their own.
    announcement = b"Veilig Thuis Utrecht is op 1 januari gesloten.\r\n"
    c["lie_signed_message_as_signature"] = Case(w.inside(
        s_home, crlf(text_part(DAAN_TEXT)), sign_only(s_home, announcement, s_fpr)), *SIG)
    c["lie_clearsigned_as_signature"] = Case(w.inside(
        s_home, crlf(text_part(DAAN_TEXT)), clearsign(s_home, announcement, s_fpr)), *SIG)
    return c


def build_forge(w: Workshop) -> Forge:
    """Every forgery and control, in the order the gateway gets them in a row."""
    ids = w.ids
    f = Forge(w.gw_fpr, w.s_fpr, w.subkey, export_public(w.multi, w.s_fpr), export_public(
        ids.stranger.home, ids.stranger.fingerprint), w.expired_fpr,
        export_public(w.expired, w.expired_fpr), w.revoked_fpr,
        export_public(w.revoked, w.revoked_fpr), revocation_certificate(w.revoked, w.revoked_fpr))
    f.extra.update(controls(w))
    for cases in (wrong_signers(w), wrapped_or_stale_signatures(w), weak_hashes(w),
                  not_encrypted(w), not_for_the_gateway(w), tampered_ciphertexts(w, f.extra),
                  spliced_ciphertexts(w, f.extra)):
        f.cases.update(cases)
    f.cases.update(lying_content_types(w, f.extra["good_ciphertext"]))
    return f
