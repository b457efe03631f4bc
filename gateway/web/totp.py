"""Authenticator-app codes (TOTP, RFC 6238): a secret, its QR code, and checking a code once.

Takes a base32 secret, the code a person typed and the last time step already used; produces
the step the code belongs to (or None), a new secret, its provisioning URI and the QR code as
inline SVG (segno). Pure apart from the random secret. A code is accepted for the current step
and one step either side (a phone's clock a little off), never for a step at or before the last
one used: a code seen over someone's shoulder cannot be used again.
"""

from __future__ import annotations

import datetime as dt
import hmac
import re

import pyotp
import segno

ISSUER = "Handle with Care"
_CODE = re.compile(r"[0-9]{6}")


def new_secret() -> str:
    """160 random bits in base32 (RFC 4226 §4's recommended length)."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def qr_svg(uri: str) -> str:
    """The QR code as an inline `<svg>` that scales with its box (viewBox, no size)."""
    return str(segno.make(uri, error="m").svg_inline(
        scale=1, border=4, omitsize=True, title="QR-code voor uw app", dark="#000000",
        light="#ffffff"))


def clean_code(text: str) -> str | None:
    """Six digits, with the spaces people type between them gone; None otherwise."""
    code = re.sub(r"[\s-]", "", text)[:12]
    return code if _CODE.fullmatch(code) else None


def accepted_step(secret: str, text: str, now: dt.datetime, last_step: int | None) -> int | None:
    """The time step `text` is the code of (now or one step either side), if that step comes
    after `last_step`; None for a wrong, malformed or reused code."""
    code = clean_code(text)
    if code is None:
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    found = None
    for step in (current - 1, current, current + 1):
        # All three compared, in constant time each: the timing says nothing about which.
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    if found is None or (last_step is not None and found <= last_step):
        return None
    return found
