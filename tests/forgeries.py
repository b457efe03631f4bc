"""The forger's kit for the hostile tests (tests/test_hostile.py, tests/test_hostile_smtp.py):
the keys a forger holds (`workshop`), the forged cases (`Case`, `Forge`; the builders are in
tests/forged_messages.py), and the checks on how the gateway refuses them.

`workshop` takes the test identities and the onboarded gateway template and makes the forger's
keys with the gpg command line (tests/hostile.py); a gpg failure raises `GpgFailed`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from conftest import (
    DAAN_BIRTH,
    GATEWAY,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SENDER,
    SENDER_ADDRESS,
    Harness,
    Identities,
    Template,
)
from hostile import (
    copy_home,
    crlf,
    export_public,
    gpg,
    import_keys,
    new_key,
    sign_encrypt,
    signed_entity,
    signing_subkeys,
)

from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import Reply, encrypted_envelope, json_payload
from gateway.store.api import Tx

BSN = "123456782"
PERSONAL = ("Sanne", "Vries", "Daan", BSN, SANNE_BIRTH.isoformat(), f"{SANNE_BIRTH:%d-%m-%Y}",
            DAAN_BIRTH.isoformat(), f"{DAAN_BIRTH:%d-%m-%Y}")
# gpg's faked clock, frozen ("!"): the expired key is born, signs and expires in January 2020.
BORN, SIGNED = "20200101T000000!", "20200101T120000!"
WEAK_HASHES = ("SHA1", "RIPEMD160", "SHA224")
SIG = (554, "5.7.7")
ENC = (554, "5.7.5")

def sanne(reference: str) -> bytes:
    """A valid JSON signal for Sanne (school A), with the extras a case system adds."""
    return crlf(json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(),
                               "bsn": BSN, "school": SCHOOL_A}], reference=reference,
                             incident="Politie ter plaatse om 02:10", notes="x" * 300))


DAAN_TEXT = ("Codewoord: Handle with Care\nNaam: Daan de Vries\n"
             f"Geboortedatum: {DAAN_BIRTH:%d-%m-%Y}\nSchool: {SCHOOL_B}\n")


def envelope(armored: bytes) -> bytes:
    return encrypted_envelope(armored, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)


@dataclass(frozen=True)
class Case:
    message: bytes
    code: int
    enhanced: str


@dataclass
class Forge:
    """Keys and forged messages, made once per module with the gpg command line."""

    gateway_fpr: str
    sender_fpr: str
    sender_subkey: str  # a second signing key (subkey) on the sender's own primary key
    sender_with_subkey: bytes  # the sender's public key including that subkey
    stranger_public: bytes
    expired_fpr: str
    expired_public: bytes
    revoked_fpr: str
    revoked_public: bytes
    revocation: bytes
    cases: dict[str, Case] = field(default_factory=dict)
    extra: dict[str, bytes] = field(default_factory=dict)  # not refusals: controls etc.

    def case(self, name: str) -> Case:
        return self.cases[name]


def gateway_key(template: Template, home: Path) -> tuple[str, bytes]:
    """The gateway's current fingerprint and public key, read from a copy of its home."""
    with sqlite3.connect(template.keys / "var" / "hwc-gateway.sqlite3") as db:
        (fpr,) = db.execute("SELECT fingerprint FROM gateway_keys"
                            " WHERE state = 'current'").fetchone()
    copy_home(template.keys / "keys" / "gnupg", home)
    try:
        return str(fpr), export_public(home, str(fpr))
    finally:
        stop_agent(home)


def revocation_certificate(home: Path, fpr: str) -> bytes:
    """The revocation gpg stored at key generation, made importable (RFC 4880 armor)."""
    text = (home / "openpgp-revocs.d" / f"{fpr}.rev").read_text()
    return text.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                        "-----BEGIN PGP PUBLIC KEY BLOCK-----").encode()



@dataclass(frozen=True)
class Workshop:
    """What a forger holds: the test identities, the gateway's public key imported in every
    sender's home, and homes of its own (below)."""

    ids: Identities
    gw_fpr: str
    gw_public: bytes
    # A private copy of the sender's home holding, besides the sender's own key, the other
    # sender's secret key and a new signing subkey on the sender's key: for double signatures.
    multi: Path
    subkey: str
    expired: Path  # a sender key that was born and expired in 2020
    expired_fpr: str
    revoked: Path  # a sender key that will be revoked
    revoked_fpr: str

    @property
    def s_home(self) -> Path:
        return self.ids.sender.home

    @property
    def s_fpr(self) -> str:
        return self.ids.sender.fingerprint

    def combined(self, home: Path, ref: str, signers: list[str], *extra: str) -> bytes:
        """Sanne's signal signed by `signers`, encrypted to the gateway: one OpenPGP message."""
        return envelope(sign_encrypt(home, sanne(ref), signers, [self.gw_fpr], *extra))

    def inside(self, home: Path, entity: bytes, signature: bytes, **kw: str) -> bytes:
        """A multipart/signed of `entity` and `signature`, encrypted (unsigned) to the gateway."""
        return envelope(sign_encrypt(home, signed_entity(entity, signature, **kw), [],
                                     [self.gw_fpr]))

    def stop_agents(self) -> None:
        for home in (self.multi, self.expired, self.revoked):
            stop_agent(home)


def workshop(identities: Identities, template: Template, base: Path) -> Workshop:
    """The forger's keys, made in homes under `base`."""
    gw_fpr, gw_public = gateway_key(template, base / "gateway-copy")
    sender, other, stranger = (identities.sender, identities.other_sender, identities.stranger)
    for identity in (sender, other, stranger):
        import_keys(identity.home, gw_public)
    s_home, s_fpr = sender.home, sender.fingerprint

    multi = copy_home(s_home, base / "multi")
    import_keys(multi, gpg(other.home, "--export-secret-keys", other.fingerprint))
    gpg(multi, "--quick-add-key", s_fpr, "ed25519", "sign", "1y")
    [subkey] = signing_subkeys(multi, s_fpr)
    import_keys(multi, identities.school_a.public_key())

    expired = base / "expired"
    expired_fpr = new_key(expired, "Old Sender <old@veiligthuis.example.nl>", expire="1d",
                          faked_time=BORN)
    import_keys(expired, gw_public)
    revoked = base / "revoked"
    revoked_fpr = new_key(revoked, "Revoked Sender <rev@veiligthuis.example.nl>")
    import_keys(revoked, gw_public)
    return Workshop(identities, gw_fpr, gw_public, multi, subkey, expired, expired_fpr, revoked,
                    revoked_fpr)


# -- helpers -------------------------------------------------------------------------------


def assert_no_personal_data(text: str) -> None:
    for secret in PERSONAL:
        assert secret not in text, f"reply leaks {secret!r}: {text}"


async def assert_nothing_delivered(h: Harness) -> None:
    await h.drain()
    assert {code: inbox.received for code, inbox in h.inboxes.items()} == \
        {SCHOOL_A: [], SCHOOL_B: []}
    assert "accepted" not in [r.event for r in await h.receipts()]


async def refuse(h: Harness, forge: Forge, name: str) -> Reply:
    """Send one forged case; assert its exact reply and that nothing reaches a school."""
    case = forge.case(name)
    reply = await h.send(case.message)
    assert (reply.code, reply.text.split(" ", 1)[0]) == (case.code, case.enhanced), \
        f"{name}: {reply}"
    assert_no_personal_data(reply.text)
    await assert_nothing_delivered(h)
    return reply


async def pin_sender_key(h: Harness, public: bytes, fpr: str) -> None:
    """What `senders add-key` would do, minus its checks: import the key and pin it."""
    h.ctx.gpg.call_sync(lambda g: g.import_keys(public))

    async def body(tx: Tx) -> None:
        await tx.directory.add_sender_key(SENDER, fpr, h.ctx.clock())

    await h.ctx.store.write(body)
    await h.ctx.refresh(force=True)


def pin_in_snapshot(h: Harness, fpr: str) -> None:
    """Make the directory snapshot count `fpr` as pinned, as a stale snapshot would."""
    snapshot = h.ctx.snapshot
    sender = snapshot.senders[SENDER]
    senders = {**snapshot.senders, SENDER: dataclasses.replace(
        sender, fingerprints=sender.fingerprints | {fpr})}
    h.ctx.snapshot = dataclasses.replace(snapshot, senders=senders)

