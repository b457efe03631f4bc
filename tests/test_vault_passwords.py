"""Tests for crypto.vault (secrets at rest) and crypto.passwords (sender password hashes)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gateway.crypto.passwords import check_password, hash_password
from gateway.crypto.vault import PSEUDONYM_KEY, VAULT_KEY, Vault, VaultError, create_secrets


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    create_secrets(tmp_path / "secrets")
    return Vault.load(tmp_path / "secrets")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_seal_open_round_trip(vault: Vault) -> None:
    """A sealed value opens to the same value, accents and all, with the same associated data."""
    value = {"name": "Zo\u00eb \u00c7elik-van der Berg", "birthdate": "2016-04-12", "n": 2}
    blob = vault.seal(value, "child:HWC-1-1")
    assert vault.open(blob, "child:HWC-1-1") == value


def test_sealed_blob_hides_the_value(vault: Vault) -> None:
    """The blob holds no plaintext and differs on every seal (fresh nonce)."""
    value = {"name": "Sanne de Vries"}
    first, second = vault.seal(value, "a"), vault.seal(value, "a")
    assert b"Sanne" not in first
    assert first != second


def test_open_with_wrong_aad_fails(vault: Vault) -> None:
    """A blob moved to another row (other associated data) does not open."""
    blob = vault.seal({"name": "Sanne"}, "child:HWC-1-1")
    with pytest.raises(VaultError):
        vault.open(blob, "child:HWC-1-2")


@pytest.mark.parametrize("where", [0, 12, -1])
def test_open_tampered_blob_fails(vault: Vault, where: int) -> None:
    """A blob with one bit flipped (nonce, ciphertext or tag) does not open."""
    blob = bytearray(vault.seal({"name": "Sanne"}, "aad"))
    blob[where] ^= 0x01
    with pytest.raises(VaultError):
        vault.open(bytes(blob), "aad")


@pytest.mark.parametrize("blob", [b"", b"short", b"\0" * 12, b"\0" * 28])
def test_open_truncated_blob_fails(vault: Vault, blob: bytes) -> None:
    """Garbage or truncated blobs raise VaultError, never another exception."""
    with pytest.raises(VaultError):
        vault.open(blob, "aad")


def test_open_with_another_vault_key_fails(vault: Vault, tmp_path: Path) -> None:
    """A blob sealed by another gateway's vault does not open here."""
    create_secrets(tmp_path / "other")
    other = Vault.load(tmp_path / "other")
    with pytest.raises(VaultError):
        other.open(vault.seal({"x": 1}, "aad"), "aad")


def test_digest_is_deterministic_per_key_and_label(vault: Vault, tmp_path: Path) -> None:
    """Equal inputs give equal digests; another label or another key gives another digest."""
    assert vault.digest("bsn", "123456782") == vault.digest("bsn", b"123456782")
    assert len(vault.digest("bsn", "123456782")) == 64
    assert vault.digest("bsn", "123456782") != vault.digest("birthdate", "123456782")
    create_secrets(tmp_path / "other")
    other = Vault.load(tmp_path / "other")
    assert other.digest("bsn", "123456782") != vault.digest("bsn", "123456782")
    reloaded = Vault.load(tmp_path / "secrets")
    assert reloaded.digest("bsn", "123456782") == vault.digest("bsn", "123456782")


def test_digest_label_is_domain_separated(vault: Vault) -> None:
    """Moving bytes between label and value does not produce the same digest."""
    assert vault.digest("ab", "c") != vault.digest("a", "bc")


def test_pseudonym_is_stable_and_separates_children(vault: Vault) -> None:
    """The receipt pseudonym is 32 hex digits, equal for the same child, different otherwise."""
    p = vault.pseudonym("sanne de vries", "2016-04-12")
    assert len(p) == 32 and int(p, 16) >= 0
    assert p == vault.pseudonym("sanne de vries", "2016-04-12")
    assert p != vault.pseudonym("sanne de vries", "2016-04-13")
    assert p != vault.pseudonym("daan de vries", "2016-04-12")


def test_create_secrets_makes_private_files(tmp_path: Path) -> None:
    """New secrets are 32 random bytes, mode 0600, in a new directory of mode 0700."""
    directory = tmp_path / "keys" / "secrets"
    created = create_secrets(directory)
    assert created == [directory / VAULT_KEY, directory / PSEUDONYM_KEY]
    assert mode(directory) == 0o700
    for path in created:
        assert mode(path) == 0o600
        assert len(path.read_bytes()) == 32
    assert (directory / VAULT_KEY).read_bytes() != (directory / PSEUDONYM_KEY).read_bytes()


def test_create_secrets_never_overwrites(tmp_path: Path) -> None:
    """A second run keeps existing secrets and creates only what is missing."""
    directory = tmp_path / "secrets"
    create_secrets(directory)
    before = (directory / VAULT_KEY).read_bytes()
    (directory / PSEUDONYM_KEY).unlink()
    created = create_secrets(directory)
    assert created == [directory / PSEUDONYM_KEY]
    assert (directory / VAULT_KEY).read_bytes() == before
    assert create_secrets(directory) == []


def test_vault_load_missing_directory_fails(tmp_path: Path) -> None:
    """Loading from a directory without secrets raises VaultError pointing at `keys init`."""
    with pytest.raises(VaultError, match="keys init"):
        Vault.load(tmp_path / "nowhere")


def test_vault_load_short_secret_fails(tmp_path: Path) -> None:
    """A truncated secret file is refused, not used as a weak key."""
    directory = tmp_path / "secrets"
    create_secrets(directory)
    (directory / VAULT_KEY).write_bytes(b"\1" * 16)
    with pytest.raises(VaultError, match="32 bytes"):
        Vault.load(directory)


def test_password_round_trip() -> None:
    """A password checks against its own hash; the hash carries scheme and parameters."""
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("scrypt$16384$8$1$")
    assert "correct horse" not in stored
    assert check_password("correct horse battery staple", stored)


def test_wrong_password_fails() -> None:
    """Any other password, including a case or whitespace variant, does not check."""
    stored = hash_password("correct horse battery staple")
    for attempt in ("Correct horse battery staple", "correct horse battery staple ", ""):
        assert not check_password(attempt, stored)


def test_same_password_hashes_differ() -> None:
    """Two hashes of one password differ (random salt), and both check."""
    first, second = hash_password("geheim"), hash_password("geheim")
    assert first != second
    assert check_password("geheim", first) and check_password("geheim", second)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "not a hash",
        "scrypt$16384$8$1$c2FsdA==",
        "bcrypt$16384$8$1$c2FsdA==$aGFzaA==",
        "scrypt$many$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$!!!$aGFzaA==",
        "scrypt$16384$8$1$c2FsdA==$",
        "scrypt$1000$8$1$c2FsdA==$aGFzaA==",
        "scrypt$1073741824$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$0$c2FsdA==$aGFzaA==",
        "scrypt$" + "9" * 40 + "$8$1$c2FsdA==$aGFzaA==",
        "scrypt$16384$8$1$c2FsdA==$aGFzaA==$extra",
    ],
)
def test_malformed_stored_hash_is_false(stored: str) -> None:
    """A stored hash that is malformed or has impossible parameters never checks, never raises."""
    assert check_password("geheim", stored) is False
    assert check_password("", stored) is False
