"""Pure rules over gpg's key listing: what a key is, and whether it may be used now.

Takes the dictionaries python-gnupg's `list_keys` returns (gpg's colon listing); produces
`KeyInfo` values. gpg's own capability field (upper-case letters = usable by the whole key, at
the time of listing) and validity field ('e' expired, 'r' revoked, 'i' invalid, 'd' disabled)
are the source; the expiry time is re-checked against `now` so that a cached listing cannot
keep an expired key alive (DESIGN invariant 6).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal

Purpose = Literal["encrypt", "sign"]

_UNUSABLE_VALIDITY = {"e": "expired", "r": "revoked", "i": "invalid", "d": "disabled"}


@dataclass(frozen=True)
class KeyInfo:
    fingerprint: str
    user_ids: tuple[str, ...]
    capabilities: str  # gpg's usable capabilities of the whole key, e.g. "SCE"
    expires: dt.datetime | None
    problem: str | None  # "expired", "revoked", ... as gpg reports it; None when valid

    def unusable_reason(self, purpose: Purpose, now: dt.datetime) -> str | None:
        """Why this key must not be used for `purpose` now; None when it may."""
        if self.problem:
            return self.problem
        if self.expires is not None and self.expires <= now:
            return "expired"
        letter = "E" if purpose == "encrypt" else "S"
        if letter not in self.capabilities:
            return f"cannot {purpose}"
        return None


def key_info(entry: dict[str, Any]) -> KeyInfo:
    expires_text = str(entry.get("expires") or "")
    expires = (dt.datetime.fromtimestamp(int(expires_text), dt.UTC)
               if expires_text.isdigit() else None)
    validity = str(entry.get("trust") or "")
    return KeyInfo(
        fingerprint=str(entry.get("fingerprint", "")),
        user_ids=tuple(str(u) for u in entry.get("uids", [])),
        capabilities="".join(c for c in str(entry.get("cap", "")) if c.isupper()),
        expires=expires,
        problem=_UNUSABLE_VALIDITY.get(validity),
    )
