"""Pinning a school's or a sender's key: what every import checks, and what it never does.

docs/protocol.md §14: the key imported is the one whose primary fingerprint equals the
one given (full fingerprint, any common spelling); it is neither expired nor revoked; it can do
its job (a school key encrypts, a sender key signs); it is not bound by self-signatures over
a weak hash (SHA-1 and the like), nor does `keys update` bring such self-signatures in; nothing
else in the file reaches the gateway's keyring; and no keyserver or WKD is ever asked. The weak
hashes are in tests/test_key_imports_sha1.py, a private key handed over in
tests/test_key_imports_secret.py.
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

from gateway.admin import schools, senders
from gateway.admin.common import Refused
from gateway.admin.schools import schools_set_key
from gateway.admin.senders import senders_add_key
from gateway.core.config import Config
from gateway.crypto.gpg import SAFE_OPTIONS, Gpg, GpgError
from gateway.crypto.keyadmin import stop_agent
from gateway.pipeline.context import open_context


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
