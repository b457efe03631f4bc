"""The OpenPGP channel behind the Channel seam: reachability, staleness, sealing, sending."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import gnupg
import pytest
from conftest import (
    CONTACT_A,
    GATEWAY,
    SCHOOL_A,
    SCHOOL_B,
    SCHOOL_C,
    Harness,
    expired_key,
)

from gateway.core.keyinfo import KeyInfo, key_info, key_usable
from gateway.core.model import Contact
from gateway.core.resolve import HELD_NO_USABLE_KEY
from gateway.core.validate import HostPort
from gateway.delivery import deliver
from gateway.delivery.channel import (
    CHANNELS,
    ContactEntry,
    Reachability,
    SealError,
    channel_of,
    hold_reason,
    reachable_by_channel,
    reachable_contacts,
)
from gateway.delivery.openpgp import (
    HELD_NO_SIGNING_KEY,
    NO_ROUTE,
    STALE_REMOVED,
    STALE_REPLACED,
    STALE_UNUSABLE,
    OpenPgpChannel,
    key_reachability,
)
from gateway.delivery.seal import NoticeChild
from gateway.devkit.demokit import Identity, Received, read_notice
from gateway.pipeline.directory import Snapshot

CHANNEL = OpenPgpChannel()
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
A, B = "a" * 40, "b" * 40


def listed(home: Path, fingerprint: str) -> KeyInfo:
    """gpg's own listing of one key in `home`, as the directory reads it."""
    [entry] = gnupg.GPG(gnupghome=str(home)).list_keys(keys=[fingerprint])
    return key_info(entry)


def test_key_reachability_over_real_gpg_listings(tmp_path: Path) -> None:
    """A valid encryption key is reachable; expired, revoked, sign-only and missing are not,
    each with the fixed reason resolve holds children with."""
    fresh = Identity.create(tmp_path / "fresh", "Vers", "vers@school.nl")
    revoked = Identity.create(tmp_path / "revoked", "Kwijt", "kwijt@school.nl")
    cert = (revoked.home / "openpgp-revocs.d" / f"{revoked.fingerprint}.rev").read_text()
    revoked.import_public(cert.replace(":-----BEGIN", "-----BEGIN"))
    expired, _ = expired_key(tmp_path / "expired", "Oud <oud@school.nl>", encrypt=True)
    sign_only, _ = expired_key(tmp_path / "signonly", "Teken <t@school.nl>", encrypt=False)
    try:
        now = dt.datetime.now(dt.UTC)
        assert key_reachability(listed(fresh.home, fresh.fingerprint), now) == Reachability(True)
        unreachable = Reachability(False, HELD_NO_USABLE_KEY)
        for info in (listed(revoked.home, revoked.fingerprint),
                     listed(tmp_path / "expired", expired),
                     listed(tmp_path / "signonly", sign_only), None):
            assert key_reachability(info, now) == unreachable
        soon = listed(fresh.home, fresh.fingerprint)
        assert soon.expires is not None
        assert not key_usable(soon, "encrypt", soon.expires), "expired at its expiry instant"
        assert key_usable(soon, "sign", now)
    finally:
        fresh.close()
        revoked.close()


def snapshot() -> Snapshot:
    return Snapshot("1", NOW, contacts={SCHOOL_A: (Contact("x@s.nl", A), Contact("y@s.nl", B))},
                    key_expires={B: NOW + dt.timedelta(minutes=1)}, signing_key="c" * 40)


def test_reachable_contacts_is_the_one_rule() -> None:
    """A school's contacts are reachable while pinned with that key and not expired since the
    load; a school without such contacts is held with HELD_NO_USABLE_KEY."""
    snap = snapshot()
    x, y = ContactEntry(SCHOOL_A, "x@s.nl", A), ContactEntry(SCHOOL_A, "y@s.nl", B)
    assert reachable_contacts(SCHOOL_A, snap, NOW) == (x, y)
    later = NOW + dt.timedelta(minutes=1)
    assert reachable_contacts(SCHOOL_A, snap, later) == (x,)
    assert CHANNEL.reachable(y, snap, later) == Reachability(False, HELD_NO_USABLE_KEY)
    assert not CHANNEL.reachable(ContactEntry(SCHOOL_A, "x@s.nl", B), snap, NOW).ok
    assert not CHANNEL.reachable(ContactEntry(SCHOOL_B, "x@s.nl", A), snap, NOW).ok
    assert reachable_by_channel(SCHOOL_A, snap, NOW) == {"openpgp": (x, y)}
    assert hold_reason(SCHOOL_A, snap, NOW) is None
    assert hold_reason(SCHOOL_B, snap, NOW) == HELD_NO_USABLE_KEY
    no_signer = dataclasses.replace(snap, signing_key=None)
    assert hold_reason(SCHOOL_A, no_signer, NOW) == HELD_NO_SIGNING_KEY
    assert hold_reason(SCHOOL_B, no_signer, NOW) == HELD_NO_USABLE_KEY, "as _seal_group orders"
    assert channel_of("openpgp") is CHANNELS["openpgp"]
    with pytest.raises(KeyError):
        channel_of("fax")  # a channel this build does not have


def unpinned(recipients: Sequence[str], fingerprints: Sequence[str], snapshot: Snapshot,
             school: str, now: dt.datetime) -> list[tuple[str, str]]:
    """The rule as the directory had it before the channel (the oracle): the pairs that are
    not a contact of the school with that key, unexpired now."""
    usable = {(c.email, c.fingerprint) for c in snapshot.contacts.get(school, ())
              if (until := snapshot.key_expires.get(c.fingerprint)) is None or until > now}
    pairs = list(zip(recipients, fingerprints, strict=False))
    if len(recipients) != len(fingerprints) or not pairs:
        return pairs or [("", "")]
    return [pair for pair in pairs if pair not in usable]


def stale_reason(stale: Sequence[tuple[str, str]], pinned: Mapping[str, str]) -> str:
    """The oracle for why: removed, else replaced, else unusable."""
    if any(email not in pinned for email, _ in stale):
        return STALE_REMOVED
    if any(pinned[email] != fpr for email, fpr in stale):
        return STALE_REPLACED
    return STALE_UNUSABLE


def test_still_valid_and_stale_reason_equal_the_directory_rules() -> None:
    """still_valid and stale_reason give what the directory's rules gave before the channel
    (the oracle above), for every combination of addresses, keys, schools and times."""
    snap = snapshot()
    emails, keys = ["x@s.nl", "y@s.nl", "z@s.nl"], [A, B, "d" * 40]
    pinned = [{}, {"x@s.nl": A}, {"x@s.nl": B, "y@s.nl": B}]
    for n, school, minutes in itertools.product([0, 1, 2], [SCHOOL_A, SCHOOL_B], [0, 1]):
        now = NOW + dt.timedelta(minutes=minutes)
        for recipients in itertools.permutations(emails, n):
            for fingerprints in itertools.product(keys, repeat=min(n, 2)):
                mine = CHANNEL.still_valid(recipients, fingerprints, snap, school, now)
                assert mine == unpinned(recipients, fingerprints, snap, school, now)
                for pins in pinned:
                    if mine:
                        assert CHANNEL.stale_reason(mine, pins) == stale_reason(mine, pins)
    assert CHANNEL.still_valid([], [], snap, SCHOOL_A, NOW) == [("", "")]


async def test_seal_makes_a_notice_the_school_key_opens(harness: Harness) -> None:
    """seal gives a parcel bound to the reachable contacts' keys, signed by the gateway key,
    that the school's own key decrypts; its ack token matches the parcel's ack digest."""
    ctx = harness.ctx
    contacts = reachable_contacts(SCHOOL_A, ctx.snapshot, ctx.clock())
    assert contacts == (ContactEntry(SCHOOL_A, CONTACT_A, harness.ids.school_a.fingerprint),)
    child = NoticeChild("Sanne de Vries", dt.date(2017, 4, 12), "VT-1-1")
    parcel = await CHANNEL.seal(ctx, SCHOOL_A, contacts, [child], ctx.clock())
    assert parcel.channel == "openpgp" and parcel.recipients == (CONTACT_A,)
    assert parcel.keys == (harness.ids.school_a.fingerprint,)
    assert parcel.signed_by == harness.gateway_fpr
    assert parcel.message_id.endswith(f"@{GATEWAY.rpartition('@')[2]}>")
    assert b"Sanne" not in parcel.body and "Sanne" not in repr(parcel)
    text, result = read_notice(Received(GATEWAY, [CONTACT_A], parcel.body), harness.ids.school_a)
    text = text.replace("\r\n", "\n")
    assert result.valid and result.pubkey_fingerprint == harness.gateway_fpr
    assert "Naam: Sanne de Vries" in text and "Referentie: VT-1-1" in text
    assert ctx.config.gateway.teacher_text.strip() in text
    [token] = re.findall(r"ack\+([a-z2-7]+)@", text)
    assert ctx.vault.digest("ack", token) == parcel.ack_digest


async def test_seal_fails_with_seal_error(harness: Harness) -> None:
    """A key gpg does not have, or no signing key, is a SealError (never a plaintext)."""
    ctx = harness.ctx
    child = [NoticeChild("Sanne de Vries", dt.date(2017, 4, 12), "VT-1-1")]
    missing = (ContactEntry(SCHOOL_A, CONTACT_A, "F" * 40),)
    before = ctx.snapshot
    with pytest.raises(SealError):
        await CHANNEL.seal(ctx, SCHOOL_A, missing, child, ctx.clock())
    assert ctx.snapshot is not before, "the directory is reloaded for the retry"
    assert ctx.snapshot.signing_key == harness.gateway_fpr
    ctx.snapshot = dataclasses.replace(ctx.snapshot, signing_key=None)
    contacts = (ContactEntry(SCHOOL_A, CONTACT_A, harness.ids.school_a.fingerprint),)
    with pytest.raises(SealError, match=HELD_NO_SIGNING_KEY):
        await CHANNEL.seal(ctx, SCHOOL_A, contacts, child, ctx.clock())
    with pytest.raises(ValueError):
        await CHANNEL.seal(ctx, SCHOOL_C, contacts, child, ctx.clock())


async def test_deliver_sends_the_parcel_over_smtp(harness: Harness) -> None:
    """deliver hands the parcel to the school's server (STARTTLS, verified) and returns its
    250; with no connection it is a temporary no_route outcome and nothing is sent."""
    ctx = harness.ctx
    contacts = reachable_contacts(SCHOOL_A, ctx.snapshot, ctx.clock())
    child = NoticeChild("Sanne de Vries", dt.date(2017, 4, 12), "VT-1-1")
    parcel = await CHANNEL.seal(ctx, SCHOOL_A, contacts, [child], ctx.clock())
    inbox = harness.inboxes[SCHOOL_A]
    assert await CHANNEL.deliver(ctx, parcel, None) == deliver.Outcome(
        deliver.Result.TEMPORARY, NO_ROUTE, "no_route")
    connection = deliver.Connection(HostPort("127.0.0.1", inbox.port),
                                    context=deliver.tls_context(harness.template.school_ca),
                                    timeout=10)
    try:
        outcome = await CHANNEL.deliver(ctx, parcel, connection)
    finally:
        await connection.close()
    assert outcome.result is deliver.Result.DELIVERED and outcome.reply.startswith("250")
    [item] = inbox.received
    assert item.mail_from == GATEWAY and item.rcpt_tos == [CONTACT_A]
    assert item.header("Message-ID") == parcel.message_id
    text, result = read_notice(item, harness.ids.school_a)
    assert "Referentie: VT-1-1" in text and result.valid
