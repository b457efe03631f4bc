"""A private key handed over to be pinned (issue 12): refused as exposed, and nothing of the file
reaches the gateway's keyring."""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_key_imports
from conftest import CONTACT_A, SCHOOL_A, Identities
from conftest import run_cli as run
from test_key_imports import Key, assert_refused, gpg_cli, in_keyring

from gateway.core.config import Config

# The fixture: the gateway made from the session's template, as tests/test_key_imports.py
# makes it.
config = test_key_imports.config


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
