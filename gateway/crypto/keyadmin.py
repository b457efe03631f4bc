"""Key custody for the command line: the gateway's own key and the keys pinned for others.

Takes key files and the fingerprint the administrator vouches for; produces imported keys or a
`KeyRefused` with a one-line reason. A file is first read in a throwaway GnuPG home: only the one
key whose primary fingerprint equals the pinned one is carried over (any other key in the file is
ignored), and only when it is neither expired nor revoked, can do its job (a school key
encrypts, a sender key signs), and is not bound by self-signatures over a weak hash (SHA-1 and
the like: `keyinfo.WEAK_KEY_HASHES`). Nothing here ever asks a keyserver or WKD.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from gateway.core.keyinfo import (
    KeyInfo,
    Purpose,
    SelfSignature,
    key_info,
    self_signatures_in_use,
    weak_hashes,
)
from gateway.core.validate import normalise_fingerprint
from gateway.crypto.gpg import NO_PROMPT, SAFE_OPTIONS, Gpg


class KeyRefused(Exception):
    """A key cannot be pinned or used; the message is one line for the administrator."""


def _gpg_cmd(binary: str, home: Path, *args: str) -> list[str]:
    return [binary, "--homedir", str(home), "--batch", "--no-tty", "--quiet", *SAFE_OPTIONS,
            *NO_PROMPT, *args]


@contextlib.contextmanager
def _scratch(data: bytes, binary: str) -> Iterator[tuple[Path, dict[str, KeyInfo]]]:
    """A throwaway GnuPG home with `data` imported, and what gpg says about its keys."""
    scratch = Path(tempfile.mkdtemp(prefix="hwc-keycheck-"))
    try:
        scratch.chmod(0o700)
        _import_into(binary, scratch, data)
        infos = {i.fingerprint: i for i in map(key_info, Gpg(scratch, binary=binary).list_keys())}
        yield scratch, infos
    finally:
        stop_agent(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def _import_into(binary: str, home: Path, data: bytes) -> None:
    subprocess.run(_gpg_cmd(binary, home, "--import"), input=data, capture_output=True,
                   timeout=60, check=False)


def _self_signatures(binary: str, home: Path, fpr: str) -> frozenset[SelfSignature]:
    """The self-signatures gpg uses for key `fpr` in `home`. `--check-sigs` rather than
    `--list-sigs`, so that a signature gpg found bad is not taken for the one in use."""
    listing = subprocess.run(_gpg_cmd(binary, home, "--with-colons", "--check-sigs", fpr),
                             capture_output=True, timeout=60, check=False)
    found = self_signatures_in_use(listing.stdout.decode("utf-8", "replace"), fpr)
    if found is None:
        raise KeyRefused(f"gpg could not list the self-signatures of key {fpr}")
    return found


def _weak_refusal(fpr: str, hashes: str, update: bool = False) -> KeyRefused:
    # gpg keeps the old signature's hash when it renews a self-signature of a DSA, ECDSA or
    # EdDSA key (g10/sign.c, update_keysig_packet): renewing alone would repeat SHA-1.
    what = "the update of key {} brings" if update else "key {} is bound by"
    return KeyRefused(
        f"{what.format(fpr)} self-signatures over {hashes}, which can be forged: ask its "
        f"owner to renew them (gpg --cert-digest-algo SHA256 --quick-set-expire {fpr} 2y, and "
        f"the same with '*' at the end for its subkeys) and send it again"
        + ("; nothing was imported" if update else ""))


def _export(binary: str, home: Path, fingerprint: str) -> bytes:
    """One key alone, without third-party signatures (its revocations and subkeys kept)."""
    return subprocess.run(_gpg_cmd(binary, home, "--export", "--export-options",
                                   "export-minimal", fingerprint),
                          capture_output=True, timeout=60, check=True).stdout


PRIVATE_ARMOR = b"-----BEGIN PGP PRIVATE KEY BLOCK-----"
PRIVATE_KEY_EXPOSED = (
    "the key file holds a PRIVATE key: it has been exposed and must be considered compromised; "
    "ask its owner to make a new key pair and to send the public key only (gpg --armor "
    "--export FINGERPRINT); nothing was imported")
# RFC 4880 §5.5.1.3 and §5.5.1.4, as `gpg --list-packets` names them.
_SECRET_PACKETS = (":secret key packet:", ":secret sub key packet:")


def lists_secret_packets(listing: str) -> bool:
    """Whether `gpg --list-packets` output shows a secret key or secret subkey packet."""
    return any(line.startswith(_SECRET_PACKETS) for line in listing.splitlines())


def refuse_private_key(data: bytes, binary: str = "gpg") -> None:
    """Refuse a key file holding a secret key, armored or binary (issue 12): whoever sent it by
    mail or on a stick exposed it, and pinning its public half would hide that. Read with
    `--list-packets`, which parses without importing, in a throwaway home that is removed: the
    secret reaches no keyring and no agent, not even a scratch one."""
    if PRIVATE_ARMOR in data:
        raise KeyRefused(PRIVATE_KEY_EXPOSED)
    scratch = Path(tempfile.mkdtemp(prefix="hwc-keycheck-"))
    try:
        scratch.chmod(0o700)
        listing = subprocess.run(_gpg_cmd(binary, scratch, "--list-packets"), input=data,
                                 capture_output=True, timeout=60, check=False).stdout
    finally:
        stop_agent(scratch)
        shutil.rmtree(scratch, ignore_errors=True)
    if lists_secret_packets(listing.decode("utf-8", "replace")):
        raise KeyRefused(PRIVATE_KEY_EXPOSED)


def inspect_key_file(data: bytes, fingerprint: str, purpose: Purpose, now: dt.datetime,
                     binary: str = "gpg") -> tuple[KeyInfo, bytes]:
    """Check the pinned key in `data`; return its info and a minimal export of it alone."""
    refuse_private_key(data, binary)
    fpr = normalise_fingerprint(fingerprint)
    if fpr is None:
        raise KeyRefused("--fingerprint must be the full fingerprint (40 hex digits)")
    with _scratch(data, binary) as (home, infos):
        info = infos.get(fpr)
        if info is None:
            raise KeyRefused(f"the key file holds no key with fingerprint {fpr}"
                             + (f" (it holds {', '.join(sorted(infos))})" if infos else ""))
        reason = info.unusable_reason(purpose, now)
        if reason is not None:
            raise KeyRefused(f"key {fpr} is {reason}" if reason in ("expired", "revoked")
                             else f"key {fpr} {reason}: a {_role(purpose)} key must {purpose}")
        # gpg checks self-signatures on import but takes SHA-1 ones as good (2.2.40 even new
        # ones): the very signatures a chosen-prefix collision forges.
        hashes = weak_hashes(_self_signatures(binary, home, fpr))
        if hashes is not None:
            raise _weak_refusal(fpr, hashes)
        return info, _export(binary, home, fpr)


def scan_key_file(data: bytes, binary: str = "gpg") -> dict[str, KeyInfo]:
    """The keys in a file, by primary fingerprint, as gpg sees them."""
    refuse_private_key(data, binary)
    with _scratch(data, binary) as (_, infos):
        return infos


def import_updates(gpg: Gpg, data: bytes, fingerprints: list[str],
                   binary: str = "gpg") -> None:
    """Take in what the file says about these already pinned keys: revocations, new expiry
    dates, new subkeys. Nothing else in the file is read. The file is merged with the keys as
    pinned in a throwaway home first: when the merged key relies on a self-signature over a
    weak hash that the pinned key did not rely on, nothing is imported (`KeyRefused`). A key
    pinned before that rule keeps working, and its revocation is always taken in."""
    with _scratch(export_public(gpg, fingerprints).encode(), binary) as (home, held):
        before = {fpr: _self_signatures(binary, home, fpr) if fpr in held else frozenset()
                  for fpr in fingerprints}
        _import_into(binary, home, data)
        for fpr in fingerprints:
            hashes = weak_hashes(_self_signatures(binary, home, fpr) - before[fpr])
            if hashes is not None:
                raise _weak_refusal(fpr, hashes, update=True)
        for fpr in fingerprints:
            blob = _export(binary, home, fpr)
            gpg.call_sync(lambda g, blob=blob: g.import_keys(blob))  # type: ignore[misc]


def stop_agent(home: Path) -> None:
    """gpg starts an agent per home; a throwaway home must not leave one running."""
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],  # noqa: S607
                   capture_output=True, check=False)


def _role(purpose: Purpose) -> str:
    return "school" if purpose == "encrypt" else "sender"


def import_pinned(gpg: Gpg, data: bytes, fingerprint: str, purpose: Purpose,
                  now: dt.datetime) -> KeyInfo:
    """Pin one key into the gateway's keyring after `inspect_key_file` accepted it."""
    info, minimal = inspect_key_file(data, fingerprint, purpose, now)
    result = gpg.call_sync(lambda g: g.import_keys(minimal))
    if info.fingerprint not in (result.fingerprints or []):
        raise KeyRefused(f"gpg did not import key {info.fingerprint}")
    return info


def generate_gateway_key(gpg: Gpg, address: str, passphrase: str | None,
                         years: int = 2) -> str:
    """A new ed25519/cv25519 gateway key, protected by `passphrase` unless it is None."""
    params = gpg.call_sync(lambda g: g.gen_key_input(
        key_type="EDDSA", key_curve="ed25519", key_usage="sign",
        subkey_type="ECDH", subkey_curve="cv25519", subkey_usage="encrypt",
        name_real="hwc-gateway", name_email=address, expire_date=f"{years}y",
        passphrase=passphrase, no_protection=passphrase is None))
    result = gpg.call_sync(lambda g: g.gen_key(params))
    fpr = str(result.fingerprint or "")
    if not fpr:
        raise KeyRefused("gpg could not create the gateway key")
    return fpr


def delete_secret_key(gpg: Gpg, fingerprint: str, passphrase: str | None) -> None:
    """Remove the gateway's secret key `fingerprint`: nothing encrypted to it opens any more.
    The public key stays, so notices signed with it can still be verified."""
    result = gpg.call_sync(lambda g: g.delete_keys(fingerprint, secret=True,
                                                   passphrase=passphrase,
                                                   expect_passphrase=passphrase is not None))
    if str(result.status) != "ok":
        raise KeyRefused(f"gpg could not delete the secret key {fingerprint}: {result.status}")


def export_public(gpg: Gpg, fingerprints: list[str]) -> str:
    return str(gpg.call_sync(lambda g: g.export_keys(fingerprints, armor=True,
                                                     minimal=True)))


def list_key_infos(gpg: Gpg, secret: bool = False) -> list[KeyInfo]:
    return [key_info(k) for k in gpg.list_keys(secret=secret)]
