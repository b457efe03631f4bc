"""Pure rules over gpg's key listing: what a key is, and whether it may be used now.

Takes the dictionaries python-gnupg's `list_keys` returns (gpg's colon listing); produces
`KeyInfo` values. gpg's own capability field (upper-case letters = usable by the whole key, at
the time of listing) and validity field ('e' expired, 'r' revoked, 'i' invalid, 'd' disabled)
are the source; the expiry time is re-checked against `now` so that a cached listing cannot
keep an expired key alive (docs/architecture.md invariant 6).
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


def key_usable(info: KeyInfo | None, purpose: Purpose, now: dt.datetime) -> bool:
    """Whether gpg's listing of a key (None: gpg does not have it) allows `purpose` now: the
    one key rule, applied to sender keys and the alerts key by the directory and to contact
    keys by the OpenPGP channel (gateway.delivery.openpgp)."""
    return info is not None and info.unusable_reason(purpose, now) is None


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


# OpenPGP hash algorithm IDs (RFC 9580 §9.5) that must not bind a key: MD5 (1), SHA-1 (2) and
# RIPEMD-160 (3) have collision attacks, and a chosen-prefix collision on SHA-1 forged exactly
# such key signatures for OpenPGP ("SHA-1 is a Shambles", USENIX 2020); SHA-224 (11) is below
# 128-bit strength. The same set `opener.STRONG_HASHES` keeps out of signatures on signals.
WEAK_KEY_HASHES = {"1": "MD5", "2": "SHA-1", "3": "RIPEMD-160", "11": "SHA-224"}
# Validity letters (field 2) of a key, subkey or user ID that gpg will not use at all.
_NOT_IN_USE = frozenset("eri")
# Field 2 of a `sig` record in a `--check-sigs` listing: '-' bad, '%' could not be checked.
# gpg does not use such a signature; '!' (good) and '' (`--list-sigs`, not checked) count.
_FAILED_CHECK = frozenset("-%")


@dataclass(frozen=True)
class SelfSignature:
    """A self-signature gpg relies on: `part` is "key" (direct-key signature), "uid HASH"
    (gpg's hash of the user ID) or "subkey KEYID"; `created` in seconds; `hash_algo` the
    OpenPGP hash algorithm ID."""

    part: str
    created: int
    sig_class: str
    hash_algo: str


def self_signatures_in_use(listing: str, fingerprint: str) -> frozenset[SelfSignature] | None:
    """The self-signatures that bind key `fingerprint` as gpg uses it, from gpg's colon listing
    (`gpg --with-colons --check-sigs FPR`, doc/DETAILS): the newest direct-key signature (class
    0x1F), the newest certification (0x10-0x13) of each user ID, and the newest binding (0x18) of
    each subkey, all made by the primary key itself. Revoked, expired and invalid user IDs and
    subkeys are not used and are left out; a key that is itself revoked, expired or invalid has
    none in use. None when the listing does not hold the key."""
    found, pending = False, False  # pending: a `pub` record's `fpr` record is next
    primary_keyid, pub_validity = "", ""
    part: str | None = None  # the part of the wanted key the next `sig` records belong to
    newest: dict[str, SelfSignature] = {}
    ties: set[SelfSignature] = set()
    in_block = False
    for line in listing.splitlines():
        f = line.split(":")
        kind = f[0]
        if kind == "pub":
            in_block, part = False, None
            primary_keyid = f[4] if len(f) > 4 else ""
            pub_validity = f[1] if len(f) > 1 else ""
            pending = True
            continue
        if kind == "fpr" and pending:
            pending = False
            in_block = len(f) > 9 and f[9].upper() == fingerprint.upper()
            found = found or in_block
            if in_block and pub_validity in _NOT_IN_USE:
                return frozenset()
            part = "key" if in_block else None
            continue
        if kind == "fpr" or not in_block:
            continue
        validity = f[1] if len(f) > 1 else ""
        if kind in ("uid", "uat"):
            uid_hash = f[7] if len(f) > 7 else ""
            part = None if validity in _NOT_IN_USE else f"uid {uid_hash}"
        elif kind in ("sub", "ssb"):
            part = None if validity in _NOT_IN_USE else f"subkey {f[4] if len(f) > 4 else ''}"
        elif kind == "sig" and part is not None and len(f) > 15:
            sig_class = f[10][:2].lower()
            wanted = ({"1f"} if part == "key" else {"18"} if part.startswith("subkey ")
                      else {"10", "11", "12", "13"})
            if (sig_class not in wanted or f[4] != primary_keyid or validity in _FAILED_CHECK
                    or not f[5].isdigit()):
                continue
            sig = SelfSignature(part, int(f[5]), sig_class, f[15])
            current = newest.get(part)
            if current is None or sig.created > current.created:
                newest[part] = sig
            elif sig.created == current.created:
                ties.add(sig)  # same second: which one gpg takes is not ours to guess
        # Other records (`rev`, `grp`, `spk`, ...) change nothing: a `sig` after them still
        # belongs to the last user ID or subkey, so that none is skipped.
    if not found:
        return None
    chosen = set(newest.values())
    chosen |= {t for t in ties if newest[t.part].created == t.created}
    return frozenset(chosen)


def weak_hashes(signatures: frozenset[SelfSignature]) -> str | None:
    """The weak hash algorithms among `signatures`, as "SHA-1" or "MD5 and SHA-1"; None when
    there is none."""
    names = sorted({WEAK_KEY_HASHES[s.hash_algo] for s in signatures
                    if s.hash_algo in WEAK_KEY_HASHES})
    return " and ".join(names) if names else None
