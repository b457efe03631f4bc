"""Pinning a school's or a sender's key: what every import checks, and what it never does.

docs/protocol.md §14: the key imported is the one whose primary fingerprint equals the
one given (full fingerprint, any common spelling); it is neither expired nor revoked; it can do
its job (a school key encrypts, a sender key signs); it is not bound by self-signatures over
a weak hash (SHA-1 and the like), nor does `keys update` bring such self-signatures in; nothing
else in the file reaches the gateway's keyring; and no keyserver or WKD is ever asked.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CONTACT_A, SCHOOL_A, Identities, Template, copy_gateway_state
from conftest import run_cli as run
from hostile import gpg

from gateway.admin import schools, senders
from gateway.admin.common import Refused
from gateway.admin.keys import keys_update
from gateway.admin.schools import schools_set_key
from gateway.admin.senders import senders_add_key
from gateway.core.config import Config
from gateway.core.keyinfo import SelfSignature, self_signatures_in_use, weak_hashes
from gateway.crypto.gpg import SAFE_OPTIONS, Gpg, GpgError
from gateway.crypto.keyadmin import stop_agent
from gateway.pipeline.context import open_context
from gateway.store.api import Tx


@dataclass(frozen=True)
class Key:
    fingerprint: str
    armored: bytes


@dataclass(frozen=True)
class BadKeys:
    expired: Key  # sign,cert primary and an encryption subkey, both expired in 2020
    revoked: Key  # sign,cert primary and an encryption subkey, revoked
    sign_only: Key  # no encryption (sub)key: not a school key
    stale_subkey: Key  # valid primary (no expiry), its only encryption subkey expired in 2020
    encrypt_only: Key  # cert-only primary and an encryption subkey: not a sender key


def gpg_cli(home: Path, *args: str, data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--no-tty", *args],
                          input=data, capture_output=True, timeout=60, check=True)


def _make_key(home: Path, uid: str, usage: str, subkey: bool, *extra: str,
              expire: str = "1d") -> str:
    gpg_cli(home, *extra, "--passphrase", "", "--quick-gen-key", uid, "ed25519", usage, expire)
    listing = gpg_cli(home, "--with-colons", "--list-keys", uid.split("<")[1].rstrip(">"))
    fpr = next(line.split(":")[9] for line in listing.stdout.decode().splitlines()
               if line.startswith("fpr:"))
    if subkey:
        gpg_cli(home, *extra, "--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr",
                "1d")
    return fpr


def _export(home: Path, fpr: str) -> Key:
    return Key(fpr, gpg_cli(home, "--armor", "--export", fpr).stdout)


@pytest.fixture(scope="module")
def bad_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadKeys]:
    """Keys an administrator could be handed, each with one flaw, made once with the gpg CLI."""
    home = tmp_path_factory.mktemp("bad-keys")
    home.chmod(0o700)
    try:
        expired = _make_key(home, "Old School <old@school.example.nl>", "sign,cert", True,
                            "--faked-system-time", "20200101T000000!")
        revoked = _make_key(home, "Gone School <gone@school.example.nl>", "sign,cert", True)
        certificate = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
        # gpg writes the certificate with a ':' in front of the armor so it is not imported
        # by accident; removing it is what an owner does to revoke.
        gpg_cli(home, "--import", data=certificate.replace(":-----BEGIN", "-----BEGIN").encode())
        sign_only = _make_key(home, "Sign Only <sign@school.example.nl>", "sign,cert", False)
        stale_subkey = _make_key(home, "Stale Sub <stale@school.example.nl>", "sign,cert", True,
                                 "--faked-system-time", "20200101T000000!", expire="never")
        encrypt_only = _make_key(home, "Enc Only <enc@sender.example.nl>", "cert", True)
        yield BadKeys(_export(home, expired), _export(home, revoked), _export(home, sign_only),
                      _export(home, stale_subkey), _export(home, encrypt_only))
    finally:
        stop_agent(home)


@pytest.fixture
def config(template: Template, tmp_path: Path) -> Iterator[Config]:
    """A gateway made from the session's template; its gpg-agent is stopped afterwards."""
    config = copy_gateway_state(template, tmp_path)
    yield config
    stop_agent(config.gnupg_home)


def in_keyring(config: Config, fpr: str) -> bool:
    """Whether the gateway's own keyring holds the key (asked with the gpg CLI, not the code)."""
    result = subprocess.run(["gpg", "--homedir", str(config.gnupg_home), "--batch", "--no-tty",
                             "--list-keys", fpr], capture_output=True, timeout=60, check=False)
    return result.returncode == 0


def schools_add(capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path, data: bytes,
                fingerprint: str, email: str = CONTACT_A) -> tuple[int, str, str]:
    key = tmp_path / "school.asc"
    key.write_bytes(data)
    return run(capsys, "--config", str(config.path), "schools", "add", SCHOOL_A, "--name",
               "Basisschool De Regenboog", "--email", email, "--key", str(key),
               "--fingerprint", fingerprint)


def senders_add(capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path, data: bytes,
                fingerprint: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, str]:
    key = tmp_path / "sender.asc"
    key.write_bytes(data)
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    return run(capsys, "--config", str(config.path), "senders", "add", "vt", "--key", str(key),
               "--fingerprint", fingerprint, "--password-stdin")


def spaced(fpr: str) -> str:
    return " ".join(fpr[i:i + 4] for i in range(0, len(fpr), 4))


def assert_refused(code: int, out: str, err: str, reason: str) -> None:
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("hwc-gateway: ")
    assert reason in err, err


# -- schools add --------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "reason"), [
    ("wrong fingerprint", "holds no key with fingerprint"),
    ("expired", "is expired"),
    ("revoked", "is revoked"),
    ("sign-only", "cannot encrypt"),
    ("encryption subkey expired", "cannot encrypt"),
    ("short key id", "full fingerprint"),
])
def test_schools_add_refuses_an_unfit_key(capsys: pytest.CaptureFixture[str], config: Config,
                                          tmp_path: Path, identities: Identities,
                                          bad_keys: BadKeys, case: str, reason: str) -> None:
    """`schools add` refuses a key that is not the pinned one, or cannot be used to encrypt,
    in one line, and imports nothing."""
    school = Key(identities.school_a.fingerprint, identities.school_a.public_key())
    data, real, given = {
        "wrong fingerprint": (school.armored, school.fingerprint,
                              identities.school_b.fingerprint),
        "expired": (bad_keys.expired.armored, bad_keys.expired.fingerprint,
                    bad_keys.expired.fingerprint),
        "revoked": (bad_keys.revoked.armored, bad_keys.revoked.fingerprint,
                    bad_keys.revoked.fingerprint),
        "sign-only": (bad_keys.sign_only.armored, bad_keys.sign_only.fingerprint,
                      bad_keys.sign_only.fingerprint),
        "encryption subkey expired": (bad_keys.stale_subkey.armored,
                                      bad_keys.stale_subkey.fingerprint,
                                      bad_keys.stale_subkey.fingerprint),
        "short key id": (school.armored, school.fingerprint, school.fingerprint[-16:]),
    }[case]
    assert_refused(*schools_add(capsys, config, tmp_path, data, given), reason)
    assert not in_keyring(config, real)
    code, out, _ = run(capsys, "--config", str(config.path), "schools", "list", "--json")
    assert code == 0 and out.strip() == "[]"


def test_schools_add_takes_only_the_pinned_key_from_a_file_of_two(
        capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path,
        identities: Identities) -> None:
    """From a file holding two keys, only the pinned one reaches the gateway's keyring."""
    both = identities.school_b.public_key() + identities.school_a.public_key()
    code, out, err = schools_add(capsys, config, tmp_path, both, identities.school_a.fingerprint)
    assert code == 0 and identities.school_a.fingerprint in out, err
    assert in_keyring(config, identities.school_a.fingerprint)
    assert not in_keyring(config, identities.school_b.fingerprint)


@pytest.mark.parametrize("spelling", ["lower case", "groups of four", "lower case in groups"])
def test_schools_add_accepts_common_fingerprint_spellings(
        capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path,
        identities: Identities, spelling: str) -> None:
    """A full fingerprint in lower case or in groups of four, as people copy it, is accepted."""
    fpr = identities.school_a.fingerprint
    given = {"lower case": fpr.lower(), "groups of four": spaced(fpr),
             "lower case in groups": spaced(fpr.lower())}[spelling]
    code, out, err = schools_add(capsys, config, tmp_path, identities.school_a.public_key(),
                                 given)
    assert code == 0 and f"with key {fpr}" in out, err
    assert in_keyring(config, fpr)


# -- senders add --------------------------------------------------------------------------------

@pytest.mark.parametrize(("case", "reason"), [
    ("wrong fingerprint", "holds no key with fingerprint"),
    ("expired", "is expired"),
    ("revoked", "is revoked"),
    ("encrypt-only", "cannot sign"),
    ("short key id", "full fingerprint"),
])
def test_senders_add_refuses_an_unfit_key(capsys: pytest.CaptureFixture[str], config: Config,
                                          tmp_path: Path, identities: Identities,
                                          bad_keys: BadKeys, monkeypatch: pytest.MonkeyPatch,
                                          case: str, reason: str) -> None:
    """`senders add` refuses a key that is not the pinned one, or cannot sign, in one line, and
    neither the key nor the sender is added."""
    sender = Key(identities.sender.fingerprint, identities.sender.public_key())
    data, real, given = {
        "wrong fingerprint": (sender.armored, sender.fingerprint,
                              identities.other_sender.fingerprint),
        "expired": (bad_keys.expired.armored, bad_keys.expired.fingerprint,
                    bad_keys.expired.fingerprint),
        "revoked": (bad_keys.revoked.armored, bad_keys.revoked.fingerprint,
                    bad_keys.revoked.fingerprint),
        "encrypt-only": (bad_keys.encrypt_only.armored, bad_keys.encrypt_only.fingerprint,
                         bad_keys.encrypt_only.fingerprint),
        "short key id": (sender.armored, sender.fingerprint, sender.fingerprint[-16:]),
    }[case]
    assert_refused(*senders_add(capsys, config, tmp_path, data, given, monkeypatch), reason)
    assert not in_keyring(config, real)
    code, out, _ = run(capsys, "--config", str(config.path), "senders", "list", "--json")
    assert code == 0 and out.strip() == "[]"


def test_senders_add_takes_only_the_pinned_key_from_a_file_of_two(
        capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path,
        identities: Identities, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sender's file that also holds another key pins the sender's key and nothing else."""
    both = identities.sender.public_key() + identities.other_sender.public_key()
    code, out, err = senders_add(capsys, config, tmp_path, both,
                                 spaced(identities.sender.fingerprint.lower()), monkeypatch)
    assert code == 0 and identities.sender.fingerprint in out, err
    assert in_keyring(config, identities.sender.fingerprint)
    assert not in_keyring(config, identities.other_sender.fingerprint)


# -- the same checks behind the other verbs that pin keys ---------------------------------------

async def test_set_key_and_add_key_refuse_expired_revoked_and_unfit_keys(
        config: Config, identities: Identities, bad_keys: BadKeys) -> None:
    """`schools set-key` and `senders add-key` check a replacement key like a first one, and a
    refusal leaves the pinned key in place."""
    ctx = await open_context(config)
    try:
        school_fpr, sender_fpr = identities.school_a.fingerprint, identities.sender.fingerprint
        await schools.schools_add(ctx, SCHOOL_A, "De Regenboog", CONTACT_A,
                          identities.school_a.public_key(), school_fpr, None)
        await senders.senders_add(ctx, "vt", identities.sender.public_key(), sender_fpr,
                          "a long enough password", [])
        for key, reason in ((bad_keys.expired, "is expired"), (bad_keys.revoked, "is revoked"),
                            (bad_keys.sign_only, "cannot encrypt"),
                            (bad_keys.stale_subkey, "cannot encrypt")):
            with pytest.raises(Refused, match=reason):
                await schools_set_key(ctx, SCHOOL_A, CONTACT_A, key.armored,
                                      key.fingerprint)
        for key, reason in ((bad_keys.expired, "is expired"), (bad_keys.revoked, "is revoked"),
                            (bad_keys.encrypt_only, "cannot sign")):
            with pytest.raises(Refused, match=reason):
                await senders_add_key(ctx, "vt", key.armored, key.fingerprint)
        with pytest.raises(Refused, match="full fingerprint"):
            await senders_add_key(ctx, "vt", identities.other_sender.public_key(),
                                  identities.other_sender.fingerprint[-16:])
        [contact] = await ctx.store.directory.contacts(SCHOOL_A)
        assert contact.fingerprint == school_fpr
        assert [r.fingerprint for r in await ctx.store.directory.sender_keys()] == [sender_fpr]
        for key in (bad_keys.expired, bad_keys.revoked, bad_keys.sign_only,
                    bad_keys.stale_subkey, bad_keys.encrypt_only):
            assert not in_keyring(config, key.fingerprint)
        assert not in_keyring(config, identities.other_sender.fingerprint)
    finally:
        await ctx.close()
        stop_agent(config.gnupg_home)


# -- no keyserver, no WKD -----------------------------------------------------------------------

def test_imports_never_ask_a_keyserver_or_wkd(capsys: pytest.CaptureFixture[str],
                                              config: Config, tmp_path: Path,
                                              identities: Identities) -> None:
    """gpg runs with key location limited to the local keyring and no dirmngr, so an address
    whose key is not in the file is never looked up; no dirmngr ever starts for the gateway."""
    pairs = list(itertools.pairwise(SAFE_OPTIONS))
    assert ("--auto-key-locate", "clear,local") in pairs
    assert "--no-auto-key-retrieve" in SAFE_OPTIONS and "--disable-dirmngr" in SAFE_OPTIONS
    nobody = "contact@no-key-published.example.org"  # not a user ID of the key in the file
    code, out, err = schools_add(capsys, config, tmp_path, identities.school_a.public_key(),
                                 identities.school_a.fingerprint, email=nobody)
    assert code == 0 and nobody in out, err
    home = config.gnupg_home
    assert subprocess.run(["gpg", "--homedir", str(home), "--batch", "--list-keys", nobody],
                          capture_output=True, timeout=60, check=False).returncode != 0
    # The gpg adapter chooses keys by full fingerprint only: an address never reaches gpg.
    gpg = Gpg(home)
    with pytest.raises(GpgError, match="not a full fingerprint"):
        asyncio.run(gpg.sign_encrypt(b"x", [nobody], identities.school_a.fingerprint))
    socket_path = subprocess.run(["gpgconf", "--homedir", str(home), "--list-dirs",
                                  "dirmngr-socket"], capture_output=True, text=True, timeout=60,
                                 check=True).stdout.strip()
    try:  # looked at before the agent is stopped: stopping it would remove a dirmngr socket
        assert not (home / "S.dirmngr").exists()
        assert socket_path and not Path(socket_path).exists()
    finally:
        stop_agent(home)


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


# -- a private key handed over (issue 12) -------------------------------------------------------

@dataclass(frozen=True)
class SecretKeys:
    school_a: Key  # school A's own secret key, as `gpg --export-secret-keys --armor` writes it
    school_a_binary: bytes  # the same, binary
    school_b: bytes  # school B's, binary
    sender: bytes  # the sender's, armored
    other_sender: bytes  # the other sender's, binary


@pytest.fixture(scope="module")
def secret_keys(identities: Identities) -> SecretKeys:
    """The parties' secret keys, exported with the gpg CLI from their own throwaway homes."""
    def export(home: Path, fpr: str, *armor: str) -> bytes:
        return gpg_cli(home, "--pinentry-mode", "loopback", "--passphrase", "", *armor,
                       "--export-secret-keys", fpr).stdout

    ids = identities
    keys = SecretKeys(
        Key(ids.school_a.fingerprint, export(ids.school_a.home, ids.school_a.fingerprint,
                                             "--armor")),
        export(ids.school_a.home, ids.school_a.fingerprint),
        export(ids.school_b.home, ids.school_b.fingerprint),
        export(ids.sender.home, ids.sender.fingerprint, "--armor"),
        export(ids.other_sender.home, ids.other_sender.fingerprint))
    assert keys.school_a.armored.startswith(b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
    # Binary: the first packet is an old-format packet of tag 5, a secret key (RFC 4880 §4.2).
    assert all(b"PRIVATE" not in k and (k[0] & 0x3C) >> 2 == 5
               for k in (keys.school_a_binary, keys.school_b, keys.other_sender))
    return keys


def secret_in_keyring(config: Config, fpr: str) -> bool:
    """Whether the gateway's keyring holds a secret key `fpr` (asked with the gpg CLI)."""
    result = subprocess.run(["gpg", "--homedir", str(config.gnupg_home), "--batch", "--no-tty",
                             "--list-secret-keys", fpr], capture_output=True, timeout=60,
                            check=False)
    return result.returncode == 0


@pytest.mark.parametrize("verb", ["schools add", "schools add (binary)", "schools set-key",
                                  "senders add", "senders add-key"])
def test_a_private_key_file_is_refused_as_exposed_and_nothing_is_imported(
        capsys: pytest.CaptureFixture[str], config: Config, tmp_path: Path,
        identities: Identities, secret_keys: SecretKeys, monkeypatch: pytest.MonkeyPatch,
        verb: str) -> None:
    """A key file holding a secret key (armored or binary, with the right fingerprint) is refused
    in one line saying the key is compromised; nothing of it reaches the gateway's keyring, and
    the throwaway home that read it is gone."""
    cfg = str(config.path)
    ids = identities
    school_file, sender_file = tmp_path / "school-public.asc", tmp_path / "sender-public.asc"
    school_file.write_bytes(ids.school_a.public_key())
    sender_file.write_bytes(ids.sender.public_key())
    monkeypatch.setattr(sys, "stdin", io.StringIO("a long enough password\n"))
    if verb in ("schools set-key", "senders add-key"):  # first the real public keys
        assert run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "De Regenboog",
                   "--email", CONTACT_A, "--key", str(school_file),
                   "--fingerprint", ids.school_a.fingerprint)[0] == 0
        assert run(capsys, "--config", cfg, "senders", "add", "vt", "--key", str(sender_file),
                   "--fingerprint", ids.sender.fingerprint, "--password-stdin")[0] == 0
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    secret = tmp_path / "key.asc"
    school = ["--name", "De Regenboog", "--email", CONTACT_A, "--key", str(secret)]
    data, fpr, args = {
        "schools add": (secret_keys.school_a.armored, ids.school_a.fingerprint,
                        ["schools", "add", SCHOOL_A, *school]),
        "schools add (binary)": (secret_keys.school_a_binary, ids.school_a.fingerprint,
                                 ["schools", "add", SCHOOL_A, *school]),
        "schools set-key": (secret_keys.school_b, ids.school_b.fingerprint,
                            ["schools", "set-key", SCHOOL_A, *school[2:]]),
        "senders add": (secret_keys.sender, ids.sender.fingerprint,
                        ["senders", "add", "vt2", "--key", str(secret), "--password-stdin"]),
        "senders add-key": (secret_keys.other_sender, ids.other_sender.fingerprint,
                            ["senders", "add-key", "vt", "--key", str(secret)]),
    }[verb]
    secret.write_bytes(data)
    monkeypatch.setattr(sys, "stdin", io.StringIO("another long password\n"))
    code, out, err = run(capsys, "--config", cfg, *args, "--fingerprint", fpr)
    assert_refused(code, out, err, "holds a PRIVATE key: it has been exposed and must be "
                                   "considered compromised")
    assert "public key only" in err
    assert not secret_in_keyring(config, fpr)
    if verb in ("schools add", "schools add (binary)", "senders add"):
        assert not in_keyring(config, fpr)
    else:  # the replacement's public half is not pinned, and the old key stays
        assert not in_keyring(config, fpr)
        code, out, _ = run(capsys, "--config", cfg, "schools", "list", "--json")
        assert ids.school_a.fingerprint in out and ids.school_b.fingerprint not in out
    assert list(scratch.iterdir()) == []


def test_keys_update_refuses_a_private_key_file(capsys: pytest.CaptureFixture[str],
                                                config: Config, tmp_path: Path,
                                                identities: Identities,
                                                secret_keys: SecretKeys) -> None:
    """`keys update` with a file holding a pinned key's secret half refuses it the same way."""
    cfg = str(config.path)
    public = tmp_path / "school.asc"
    public.write_bytes(identities.school_a.public_key())
    assert run(capsys, "--config", cfg, "schools", "add", SCHOOL_A, "--name", "De Regenboog",
               "--email", CONTACT_A, "--key", str(public),
               "--fingerprint", identities.school_a.fingerprint)[0] == 0
    secret = tmp_path / "update.gpg"
    secret.write_bytes(secret_keys.school_a_binary)
    assert_refused(*run(capsys, "--config", cfg, "keys", "update", str(secret)),
                   "must be considered compromised")
    assert not secret_in_keyring(config, identities.school_a.fingerprint)
