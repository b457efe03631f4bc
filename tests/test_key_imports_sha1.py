"""Pinning a key bound by self-signatures over a weak hash (SHA-1 and the like) is refused, and
`keys update` brings no such self-signature in (docs/protocol.md §14); the pure rule over gpg's
listing that decides which self-signatures are in use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_key_imports
from conftest import CONTACT_A, SCHOOL_A, Identities
from conftest import run_cli as run
from hostile import gpg
from test_key_imports import (
    Key,
    _export,
    assert_refused,
    gpg_cli,
    in_keyring,
    schools_add,
    senders_add,
)

from gateway.admin import schools, senders
from gateway.admin.common import Refused
from gateway.admin.keys import keys_update
from gateway.admin.schools import schools_set_key
from gateway.admin.senders import senders_add_key
from gateway.core.config import Config
from gateway.core.keyinfo import SelfSignature, self_signatures_in_use, weak_hashes
from gateway.crypto.keyadmin import stop_agent
from gateway.pipeline.context import open_context
from gateway.store.api import Tx

# The fixture: the gateway made from the session's template, as tests/test_key_imports.py
# makes it.
config = test_key_imports.config


# -- self-signatures over weak hashes -----------------------------------------------------------

# Made on gpg's faked clock in 2018, as a forged key would claim to be: gpg is said to refuse
# SHA-1 key signatures made after 2019-01-19. (gpg 2.2.40 still takes new SHA-1 self-signatures:
# `renewed_plainly` is certified now, and gpg lists it as good.)
IN_2018 = "20180601T000000"
LATER_IN_2018 = "20180901T000000"


@dataclass(frozen=True)
class WeakKeys:
    weak: Key  # sign,cert primary and encryption subkey, every self-signature over SHA-1
    renewed_plainly: Key  # the same after `--quick-set-expire` without a digest option
    weak_binding: Key  # user ID re-certified with SHA-256, the subkey binding still SHA-1
    renewed: Key  # every self-signature renewed with SHA-256
    revoked: Key  # the weak key with its revocation
    strong_2018: Key  # a key certified with SHA-256 in 2018
    resigned_weak: Key  # that key re-certified with SHA-1 later in 2018: an update to refuse
    resigned_strong: Key  # that key renewed with SHA-256 now: an update to take in


def _hashes(home: Path, fpr: str) -> list[str]:
    """Field 16 (hash algorithm) of every signature gpg lists on the key."""
    listing = gpg(home, "--with-colons", "--list-sigs", fpr).decode()
    return [line.split(":")[15] for line in listing.splitlines() if line.startswith("sig:")]


def _key(home: Path, uid: str, digest: str) -> str:
    gpg(home, "--cert-digest-algo", digest, "--quick-gen-key", uid, "ed25519", "sign,cert",
        "10y", faked_time=IN_2018)
    listing = gpg(home, "--with-colons", "--list-keys", uid.split("<")[1].rstrip(">")).decode()
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
    gpg(home, "--cert-digest-algo", digest, "--quick-add-key", fpr, "cv25519", "encr", "10y",
        faked_time=IN_2018)
    return fpr


def _armored(home: Path, fpr: str) -> Key:
    return Key(fpr, gpg(home, "--armor", "--export", fpr))


@pytest.fixture(scope="module")
def weak_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeakKeys]:
    """Keys bound by SHA-1 self-signatures from 2018, and the same keys renewed, made once with
    the gpg CLI (`--faked-system-time`, `--cert-digest-algo SHA1`)."""
    home, other = tmp_path_factory.mktemp("weak-keys"), tmp_path_factory.mktemp("weak-revoked")
    home.chmod(0o700)
    other.chmod(0o700)
    try:
        fpr = _key(home, "Old Hash <old-hash@school.example.nl>", "SHA1")
        weak = _armored(home, fpr)
        certificate = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
        gpg_cli(other, "--import", data=weak.armored)  # (`--trust-model always` would stop
        # gpg at the revocation: it then wants a trust database that was never made)
        gpg_cli(other, "--import",
                data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
        revoked = _export(other, fpr)
        gpg(home, "--quick-set-expire", fpr, "3y")
        gpg(home, "--quick-set-expire", fpr, "3y", "*")
        renewed_plainly = _armored(home, fpr)
        gpg(home, "--cert-digest-algo", "SHA256", "--quick-set-expire", fpr, "2y")
        weak_binding = _armored(home, fpr)
        gpg(home, "--cert-digest-algo", "SHA256", "--quick-set-expire", fpr, "2y", "*")
        renewed = _armored(home, fpr)
        strong = _key(home, "New Hash <new-hash@sender.example.nl>", "SHA256")
        strong_2018 = _armored(home, strong)
        gpg(home, "--cert-digest-algo", "SHA1", "--quick-set-expire", strong, "9y",
            faked_time=LATER_IN_2018)
        gpg(home, "--cert-digest-algo", "SHA1", "--quick-set-expire", strong, "9y", "*",
            faked_time=LATER_IN_2018)
        resigned_weak = _armored(home, strong)
        gpg(home, "--cert-digest-algo", "SHA256", "--quick-set-expire", strong, "2y")
        gpg(home, "--cert-digest-algo", "SHA256", "--quick-set-expire", strong, "2y", "*")
        resigned_strong = _armored(home, strong)
        yield WeakKeys(weak, renewed_plainly, weak_binding, renewed, revoked, strong_2018,
                       resigned_weak, resigned_strong)
    finally:
        stop_agent(home)
        stop_agent(other)


def _listed_hashes(home: Path, key: Key) -> list[str]:
    """What gpg lists for `key` imported alone into a new home."""
    home.mkdir(mode=0o700)
    try:
        gpg(home, "--import", data=key.armored)
        return _hashes(home, key.fingerprint)
    finally:
        stop_agent(home)


def test_gpg_lists_sha1_for_a_key_certified_in_2018(tmp_path: Path,
                                                   weak_keys: WeakKeys) -> None:
    """gpg 2.2 takes in a key whose self-signatures were made over SHA-1 in 2018 and lists hash
    2 for them; renewing without a digest option keeps SHA-1 for an EdDSA key, which is why the
    refusal says `--cert-digest-algo SHA256`."""
    assert _listed_hashes(tmp_path / "a", weak_keys.weak) == ["2", "2"]
    assert _listed_hashes(tmp_path / "b", weak_keys.renewed_plainly) == ["2", "2"]
    assert _listed_hashes(tmp_path / "c", weak_keys.weak_binding) == ["8", "2"]
    assert _listed_hashes(tmp_path / "d", weak_keys.renewed) == ["8", "8"]


def _weak_line(fpr: str) -> str:
    return (f"key {fpr} is bound by self-signatures over SHA-1, which can be forged: ask its "
            f"owner to renew them (gpg --cert-digest-algo SHA256 --quick-set-expire {fpr} 2y")


@pytest.mark.parametrize("case", ["every self-signature", "subkey binding"])
def test_schools_add_refuses_a_key_bound_by_sha1(capsys: pytest.CaptureFixture[str],
                                                 config: Config, tmp_path: Path,
                                                 weak_keys: WeakKeys, case: str) -> None:
    """`schools add` refuses a key whose user ID or encryption subkey is bound by a SHA-1
    self-signature, in one line naming the fingerprint, the hash and the remedy."""
    key = weak_keys.weak if case == "every self-signature" else weak_keys.weak_binding
    assert_refused(*schools_add(capsys, config, tmp_path, key.armored, key.fingerprint),
                   _weak_line(key.fingerprint))
    assert not in_keyring(config, key.fingerprint)


def test_senders_add_refuses_a_key_bound_by_sha1(capsys: pytest.CaptureFixture[str],
                                                 config: Config, tmp_path: Path,
                                                 weak_keys: WeakKeys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`senders add` refuses a signing key bound by SHA-1 self-signatures in one line, and
    neither the key nor the sender is added."""
    key = weak_keys.weak
    assert_refused(*senders_add(capsys, config, tmp_path, key.armored, key.fingerprint,
                                monkeypatch), _weak_line(key.fingerprint))
    assert not in_keyring(config, key.fingerprint)
    code, out, _ = run(capsys, "--config", str(config.path), "senders", "list", "--json")
    assert code == 0 and out.strip() == "[]"


def test_a_key_renewed_with_sha256_is_accepted(capsys: pytest.CaptureFixture[str],
                                               config: Config, tmp_path: Path,
                                               weak_keys: WeakKeys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same key, its self-signatures renewed with SHA-256, is pinned by `schools add` and
    by `senders add` (the older SHA-1 signatures in gpg's history do not count)."""
    key = weak_keys.renewed
    code, out, err = schools_add(capsys, config, tmp_path, key.armored, key.fingerprint)
    assert code == 0 and key.fingerprint in out, err
    code, out, err = senders_add(capsys, config, tmp_path, weak_keys.weak.armored + key.armored,
                                 key.fingerprint, monkeypatch)
    assert code == 0 and key.fingerprint in out, err


async def test_set_key_and_add_key_refuse_a_key_bound_by_sha1(
        config: Config, identities: Identities, weak_keys: WeakKeys) -> None:
    """`schools set-key` and `senders add-key` refuse a key bound by SHA-1 self-signatures and
    leave the pinned key in place."""
    ctx = await open_context(config)
    try:
        school_fpr, sender_fpr = identities.school_a.fingerprint, identities.sender.fingerprint
        await schools.schools_add(ctx, SCHOOL_A, "De Regenboog", CONTACT_A,
                          identities.school_a.public_key(), school_fpr, None)
        await senders.senders_add(ctx, "vt", identities.sender.public_key(), sender_fpr,
                          "a long enough password", [])
        for key in (weak_keys.weak, weak_keys.weak_binding):
            with pytest.raises(Refused, match="self-signatures over SHA-1"):
                await schools_set_key(ctx, SCHOOL_A, CONTACT_A, key.armored,
                                      key.fingerprint)
        with pytest.raises(Refused, match="self-signatures over SHA-1"):
            await senders_add_key(ctx, "vt", weak_keys.weak.armored,
                                  weak_keys.weak.fingerprint)
        [contact] = await ctx.store.directory.contacts(SCHOOL_A)
        assert contact.fingerprint == school_fpr
        assert [r.fingerprint for r in await ctx.store.directory.sender_keys()] == [sender_fpr]
        assert not in_keyring(config, weak_keys.weak.fingerprint)
    finally:
        await ctx.close()
        stop_agent(config.gnupg_home)


def _expiry(config: Config, fpr: str) -> str:
    """Field 7 (expiry) of the key's `pub` record in the gateway's keyring, asked with gpg."""
    listing = gpg(config.gnupg_home, "--with-colons", "--list-keys", fpr).decode()
    return next(line.split(":")[6] for line in listing.splitlines() if line.startswith("pub:"))


async def test_keys_update_refuses_new_sha1_self_signatures(config: Config,
                                                            identities: Identities,
                                                            weak_keys: WeakKeys) -> None:
    """`keys update` refuses a file that would make a pinned key rely on SHA-1 self-signatures
    (nothing imported), and still takes in a renewal made with SHA-256."""
    ctx = await open_context(config)
    try:
        key = weak_keys.strong_2018
        await senders.senders_add(ctx, "vt", key.armored, key.fingerprint,
                          "a long enough password", [])
        pinned = _expiry(config, key.fingerprint)
        with pytest.raises(Refused) as refused:
            await keys_update(ctx, weak_keys.resigned_weak.armored)
        assert str(refused.value) == (
            f"the update of key {key.fingerprint} brings self-signatures over SHA-1, which can "
            f"be forged: ask its owner to renew them (gpg --cert-digest-algo SHA256 "
            f"--quick-set-expire {key.fingerprint} 2y, and the same with '*' at the end for its "
            "subkeys) and send it again; nothing was imported")
        assert _expiry(config, key.fingerprint) == pinned
        assert "2" not in _hashes(config.gnupg_home, key.fingerprint)
        out = await keys_update(ctx, weak_keys.resigned_strong.armored)
        assert f"{key.fingerprint} (sender vt): updated, now valid" in out
        assert _expiry(config, key.fingerprint) != pinned
    finally:
        await ctx.close()
        stop_agent(config.gnupg_home)


async def test_keys_update_takes_in_a_revocation_of_a_key_pinned_with_sha1(
        config: Config, identities: Identities, weak_keys: WeakKeys) -> None:
    """A key pinned before weak self-signatures were refused keeps working with `keys update`:
    a file that brings nothing new and its revocation are taken in, a renewal that makes new
    SHA-1 self-signatures is refused."""
    ctx = await open_context(config)
    try:
        await senders.senders_add(ctx, "vt", identities.sender.public_key(),
                          identities.sender.fingerprint, "a long enough password", [])
        key = weak_keys.weak  # pinned the way an older gateway did, without the hash check
        gpg(config.gnupg_home, "--import", data=key.armored)

        async def body(tx: Tx) -> None:
            await tx.directory.add_sender_key("vt", key.fingerprint, ctx.clock())

        await ctx.store.write(body)
        with pytest.raises(Refused, match="brings self-signatures over SHA-1"):
            await keys_update(ctx, weak_keys.renewed_plainly.armored)
        out = await keys_update(ctx, key.armored)
        assert f"{key.fingerprint} (sender vt): unchanged, now valid" in out
        out = await keys_update(ctx, weak_keys.revoked.armored)
        assert f"{key.fingerprint} (sender vt): updated, now revoked" in out
    finally:
        await ctx.close()
        stop_agent(config.gnupg_home)


# -- the pure rule over gpg's listing -----------------------------------------------------------

PRIMARY = "77C9EFD9CFA9264952F62530A50125A46251CFE7"
KEYID = PRIMARY[-16:]


def _sig(created: int, sig_class: str, hash_algo: str, keyid: str = KEYID,
         checked: str = "!") -> str:
    return f"sig:{checked}::22:{keyid}:{created}::::Someone:{sig_class}::{PRIMARY}:::{hash_algo}:"


def _listing(*records: str, pub_validity: str = "u") -> str:
    return "\n".join([
        "tru::1:1796137232:1843171200:3:1:5",
        f"pub:{pub_validity}:255:22:{KEYID}:1527811200:1843171200::u:::scESC:::::ed25519:::0:",
        f"fpr:::::::::{PRIMARY}:", *records])


def test_self_signatures_in_use_are_the_newest_of_each_part() -> None:
    """The rule takes the newest good self-signature of each valid user ID and subkey (and the
    direct-key signature), whatever other records come between: older ones, third-party
    certifications, bad signatures and revoked or expired parts do not count."""
    listing = _listing(
        _sig(100, "1fx", "2"), _sig(200, "1fx", "8"),
        "uid:u::::1527811200::AAAA::Kept <kept@example.nl>::::::::::0:",
        _sig(100, "13x", "2"), _sig(300, "13x", "10"), _sig(400, "10x", "2", keyid="0" * 16),
        _sig(500, "13x", "2", checked="-"),
        "uid:r::::1527811200::BBBB::Revoked <revoked@example.nl>::::::::::0:",
        _sig(100, "13x", "1"),
        "sub:e:255:18:EXPIREDSUBKEY000:1527811200:1527897600:::::e:::::cv25519::",
        "fpr:::::::::0000000000000000000000000000EXPIREDSUBKEY000:",
        _sig(100, "18x", "2"),
        "sub:u:255:18:CEBFEE4560C18C97:1527811200:1843171200:::::e:::::cv25519::",
        "fpr:::::::::53C82951EC2F4083C948BCCFCEBFEE4560C18C97:",
        "grp:::::::::0123456789ABCDEF0123456789ABCDEF01234567:",  # `--with-keygrip`
        _sig(100, "18x", "8"), _sig(600, "18x", "11"), _sig(700, "28x", "2"))
    assert self_signatures_in_use(listing, PRIMARY.lower()) == frozenset({
        SelfSignature("key", 200, "1f", "8"), SelfSignature("uid AAAA", 300, "13", "10"),
        SelfSignature("subkey CEBFEE4560C18C97", 600, "18", "11")})
    assert weak_hashes(self_signatures_in_use(listing, PRIMARY) or frozenset()) == "SHA-224"


def test_self_signatures_in_use_of_a_missing_or_unusable_key() -> None:
    """None when the listing does not hold the key (the caller refuses); nothing in use when
    the key itself is revoked or expired; two self-signatures of the same second both count."""
    uid = "uid:u::::1527811200::AAAA::Kept <kept@example.nl>::::::::::0:"
    assert self_signatures_in_use(_listing(uid, _sig(1, "13x", "2")), "F" * 40) is None
    assert self_signatures_in_use("", PRIMARY) is None
    for validity in "re":
        assert self_signatures_in_use(_listing(uid, _sig(1, "13x", "2"),
                                               pub_validity=validity), PRIMARY) == frozenset()
    tied = self_signatures_in_use(_listing(uid, _sig(5, "13x", "8"), _sig(5, "13x", "1")),
                                  PRIMARY)
    assert tied is not None and weak_hashes(tied) == "MD5"
    mixed = frozenset({SelfSignature("key", 1, "1f", "3"), SelfSignature("uid A", 1, "13", "2"),
                       SelfSignature("uid B", 1, "13", "9")})
    assert weak_hashes(mixed) == "RIPEMD-160 and SHA-1"
    assert weak_hashes(frozenset()) is None
