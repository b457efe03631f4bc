"""Passkeys (WebAuthn) through the `webauthn` library: options out, answers verified.

Takes the relying party (`[web] rp_id`, the origin of `[web] public_url`), the credential ids
of a contact or a notice's recipients, and the browser's answer as JSON (base64url for binary
values, as `gateway/web/static/passkey.js` sends it). Produces the options as JSON text and the
challenge they carry, a `NewPasskey` after a registration, the new signature counter after a
login. Fails: any answer that does not verify (wrong origin, wrong challenge, bad signature, a
signature counter that went back, malformed JSON or CBOR) is a `PasskeyError` without detail:
the browser is untrusted, and what exactly it got wrong helps only an attacker.
User verification is preferred, not required: a security key without a PIN still proves
possession, and the link in the mail is the first factor.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

RP_NAME = "Handle with Care"
TIMEOUT_MS = 120_000  # two minutes: finding a phone or a security key takes a while


class PasskeyError(Exception):
    """The browser's answer does not verify."""


@dataclass(frozen=True)
class NewPasskey:
    credential_id: str  # base64url, as the store keeps it
    public_key: bytes
    sign_count: int


def _descriptors(ids: Sequence[str]) -> list[PublicKeyCredentialDescriptor]:
    return [PublicKeyCredentialDescriptor(id=base64url_to_bytes(i)) for i in ids]


def registration_options(rp_id: str, user_id: bytes, user_name: str,
                         existing: Sequence[str]) -> tuple[str, str]:
    """The options for `navigator.credentials.create` (JSON) and their challenge (base64url).
    `existing`: the contact's passkeys, which the browser then does not register twice."""
    options = generate_registration_options(
        rp_id=rp_id, rp_name=RP_NAME, user_id=user_id, user_name=user_name,
        user_display_name=user_name, timeout=TIMEOUT_MS, exclude_credentials=_descriptors(existing),
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED))
    return options_to_json(options), bytes_to_base64url(options.challenge)


def authentication_options(rp_id: str, allowed: Sequence[str]) -> tuple[str, str]:
    """The options for `navigator.credentials.get` naming the passkeys that may answer."""
    options = generate_authentication_options(
        rp_id=rp_id, timeout=TIMEOUT_MS, allow_credentials=_descriptors(allowed),
        user_verification=UserVerificationRequirement.PREFERRED)
    return options_to_json(options), bytes_to_base64url(options.challenge)


def answered_challenge(answer: dict[str, Any]) -> str | None:
    """The challenge the browser signed (from its clientDataJSON), to find the ceremony by; None
    when the answer has no readable one. Only a look-up key: the signature is checked later."""
    try:
        response = answer["response"]
        data = json.loads(base64url_to_bytes(response["clientDataJSON"]))
        challenge = data["challenge"]
    except (KeyError, TypeError, ValueError, RecursionError, binascii.Error):
        return None  # RecursionError: JSON nested past Python's limit
    return challenge if isinstance(challenge, str) and 0 < len(challenge) <= 128 else None


def credential_id(answer: dict[str, Any]) -> str | None:
    """The answer's credential id in base64url without padding, or None."""
    value = answer.get("rawId", answer.get("id"))
    if not isinstance(value, str) or not 0 < len(value) <= 1400:
        return None
    try:
        return bytes_to_base64url(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
    except (ValueError, binascii.Error):
        return None


def verify_registration(answer: dict[str, Any], challenge: str, rp_id: str,
                        origin: str) -> NewPasskey:
    try:
        verified = verify_registration_response(
            credential=answer, expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp_id, expected_origin=origin)
    except Exception:  # untrusted input: every way it fails is the same refusal
        raise PasskeyError("registration did not verify") from None
    return NewPasskey(bytes_to_base64url(verified.credential_id),
                      verified.credential_public_key, verified.sign_count)


def verify_login(answer: dict[str, Any], challenge: str, rp_id: str, origin: str,
                 public_key: bytes, sign_count: int) -> int:
    """The authenticator's new signature counter. The library refuses a counter that did not
    grow (a cloned authenticator) unless both are zero (passkeys that do not count)."""
    try:
        verified = verify_authentication_response(
            credential=answer, expected_challenge=base64url_to_bytes(challenge),
            expected_rp_id=rp_id, expected_origin=origin, credential_public_key=public_key,
            credential_current_sign_count=sign_count)
    except Exception:  # untrusted input: every way it fails is the same refusal
        raise PasskeyError("authentication did not verify") from None
    return int(verified.new_sign_count)
