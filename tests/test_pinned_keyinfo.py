"""Keyinfo: decisions pinned where a mutation run (`make mutate`, mutate/run.py) found that the
tests would not notice a wrong answer: each test here fails on at least one mutant that survived
before it. Pure and fast: no gpg, no daemon, no SMTP."""

from __future__ import annotations

import datetime as dt
from typing import Literal

import pytest

from gateway.core.keyinfo import (
    KeyInfo,
    SelfSignature,
    key_info,
    key_usable,
    self_signatures_in_use,
)

# -- keyinfo: gpg's colon listing, short and odd records included ---------------------------------

WANT = "77C9EFD9CFA9264952F62530A50125A46251CFE7"
WANT_ID = WANT[-16:]
OTHER_KEY = "A" * 40


def _ksig(created: int, sig_class: str, hash_algo: str, keyid: str = WANT_ID,
          fields: int = 17) -> str:
    """A `sig` record (doc/DETAILS): issuer in field 5, creation in 6, class in 11, hash in 16."""
    values = ["sig", "!", "", "22", keyid, str(created), "", "", "", "Someone", sig_class, "",
              WANT, "", "", hash_algo, ""]
    return ":".join(values[:fields])


def test_self_signatures_are_read_from_short_and_odd_records() -> None:
    """Records cut short, revoked photo IDs and secret subkeys, and other keys around the wanted
    one are read as gpg means them, without an error: only the wanted key's own self-signatures
    on parts in use count."""
    listing = "\n".join([
        "uid:u::::::EEEE", _ksig(5, "13x", "1", keyid=""),  # before any key: nobody's
        "pub:u:255:22", "uid:u::::::FFFF", _ksig(6, "13x", "1", keyid=""),  # no fpr yet
        "fpr::::::::",  # 9 fields: no fingerprint, not the wanted key
        "pub:u:255:22:" + WANT_ID,  # 5 fields: just the key ID
        "fpr:::::::::" + WANT,  # 10 fields: just the fingerprint
        _ksig(100, "1fx", "8"),
        "rev",
        "uid:u::::::AAAA", _ksig(110, "13x", "8", fields=16), _ksig(120, "13x", "2", fields=15),
        _ksig(105, "13x", "2"),  # older than the one before: not in use
        "uid:u::::::G10", _ksig(210, "10x", "8"), _ksig(210, "10x", "9"),  # a tie: both
        "uid:u::::::G11", _ksig(211, "11x", "8"), "uid:u::::::G12", _ksig(212, "12x", "8"),
        "uat:r:::::::CCCC", _ksig(400, "13x", "2"),  # a revoked photo ID's
        "uid:r", _ksig(300, "13x", "2"),  # a revoked user ID's, the record cut short
        "uid:u:::::", _ksig(150, "13x", "10"),  # a user ID record without its hash
        "sub:u:255:18:SUBKEY0000000001", _ksig(160, "18x", "8"),
        "ssb:r", _ksig(170, "18x", "2"),  # a revoked secret subkey's
        "sub:u:255:18", _ksig(180, "18x", "9"),  # a subkey record without its key ID
        "pub", "fpr:::::::::" + "B" * 40,  # a key record cut down to its kind
        "pub:u:255:22:" + OTHER_KEY[-16:], "fpr:::::::::" + OTHER_KEY,
        "uid:u::::::DDDD", _ksig(190, "13x", "1", keyid=OTHER_KEY[-16:]),
    ])
    assert self_signatures_in_use(listing, WANT) == frozenset({
        SelfSignature("key", 100, "1f", "8"), SelfSignature("uid AAAA", 110, "13", "8"),
        SelfSignature("uid ", 150, "13", "10"), SelfSignature("uid G10", 210, "10", "8"),
        SelfSignature("uid G10", 210, "10", "9"), SelfSignature("uid G11", 211, "11", "8"),
        SelfSignature("uid G12", 212, "12", "8"),
        SelfSignature("subkey SUBKEY0000000001", 160, "18", "8"),
        SelfSignature("subkey ", 180, "18", "9")})


def test_a_revoked_key_in_a_short_record_has_nothing_in_use() -> None:
    """`pub:r` cut short after its validity still marks the key revoked: nothing in use."""
    listing = "\n".join(["pub:r", "fpr:::::::::" + WANT, "uid:u::::::AAAA",
                         _ksig(1, "13x", "8", keyid="")])
    assert self_signatures_in_use(listing, WANT) == frozenset()


def test_a_fingerprint_without_its_key_record_is_not_the_key() -> None:
    """An `fpr` record that follows no `pub` record names no key of the listing."""
    assert self_signatures_in_use("fpr:::::::::" + WANT, WANT) is None


# -- keyinfo: whether a listed key may be used -----------------------------------------------------

NOW_UTC = dt.datetime(2026, 3, 2, 7, 0, tzinfo=dt.UTC)


def test_key_info_reads_gpgs_listing_entry() -> None:
    """Fingerprint, user IDs, the whole key's capitals only, the expiry, gpg's validity."""
    info = key_info({"fingerprint": WANT, "uids": ["A <a@example.nl>"], "cap": "scESC",
                     "expires": "1800000000", "trust": "u"})
    assert info == KeyInfo(WANT, ("A <a@example.nl>",), "ESC",
                           dt.datetime.fromtimestamp(1800000000, dt.UTC), None)
    bare = key_info({"expires": "", "trust": None})
    assert bare == KeyInfo("", (), "", None, None)


@pytest.mark.parametrize(("trust", "problem"), [
    ("e", "expired"), ("r", "revoked"), ("i", "invalid"), ("d", "disabled"), ("u", None),
    ("f", None), ("-", None)])
def test_key_info_names_gpgs_unusable_validities(trust: str, problem: str | None) -> None:
    """gpg's validity letters e, r, i and d make a key unusable, named; others do not."""
    assert key_info({"trust": trust}).problem == problem


@pytest.mark.parametrize(("fields", "purpose", "reason"), [
    ({"cap": "SCE"}, "encrypt", None), ({"cap": "SC"}, "encrypt", "cannot encrypt"),
    ({"cap": "E"}, "sign", "cannot sign"), ({"cap": "S"}, "sign", None),
    ({"cap": "E", "trust": "r"}, "encrypt", "revoked"),
    ({"cap": "E", "expires": str(int(NOW_UTC.timestamp()))}, "encrypt", "expired"),
    ({"cap": "E", "expires": str(int(NOW_UTC.timestamp()) + 1)}, "encrypt", None),
    ({"cap": "e"}, "encrypt", "cannot encrypt"),
], ids=["encrypt", "no-encrypt", "no-sign", "sign", "revoked", "expiring-now", "a-second-left",
        "subkey-only"])
def test_a_key_is_unusable_when_revoked_expired_or_without_the_capability(
        fields: dict[str, str], purpose: Literal["encrypt", "sign"], reason: str | None) -> None:
    """A key is refused when gpg says it is unusable, when it expires now or has expired, and
    when the whole key lacks the capability (a lower-case letter is one subkey's only)."""
    assert key_info(fields).unusable_reason(purpose, NOW_UTC) == reason


NOW = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("info", "purpose", "usable"), [
    (None, "encrypt", False),  # gpg does not have the key
    (KeyInfo(WANT, (), "SCE", None, None), "encrypt", True),
    (KeyInfo(WANT, (), "SCE", None, None), "sign", True),
    (KeyInfo(WANT, (), "SC", None, None), "encrypt", False),  # cannot encrypt
    (KeyInfo(WANT, (), "E", None, None), "sign", False),  # cannot sign
    (KeyInfo(WANT, (), "SCE", None, "revoked"), "encrypt", False),
    (KeyInfo(WANT, (), "SCE", NOW, None), "encrypt", False),  # expires this very moment
    (KeyInfo(WANT, (), "SCE", NOW + dt.timedelta(seconds=1), None), "encrypt", True),
])
def test_key_usable_is_the_one_key_rule(info: KeyInfo | None, purpose: Literal["encrypt", "sign"],
                                        usable: bool) -> None:
    """A key is usable for a purpose only when gpg has it, reports no problem, it has not
    expired by now, and it can do that purpose: the rule the directory and the channel share."""
    assert key_usable(info, purpose, NOW) is usable
