"""Key lifecycle: rotation without a gap, expiry never a surprise, revocation never a leak."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import subprocess
import tempfile
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from conftest import (
    CONTACT_A,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    Harness,
    HarnessFactory,
    Identities,
    start_relay,
)

from gateway.admin.common import Refused
from gateway.admin.held import held_list
from gateway.admin.keys import (
    keys_export,
    keys_list,
    keys_pin_alerts,
    keys_retire,
    keys_rotate,
    keys_update,
)
from gateway.admin.queue import queue_list
from gateway.admin.schools import schools_add, schools_remove, schools_set_key
from gateway.admin.status import status as gateway_status
from gateway.core.model import Contact
from gateway.crypto.keyadmin import stop_agent
from gateway.delivery.openpgp import (
    STALE_REMOVED,
    STALE_REPLACED,
    STALE_UNUSABLE,
    OpenPgpChannel,
)
from gateway.devkit.demokit import Identity, Received, json_payload, read_notice
from gateway.pipeline.directory import Snapshot
from gateway.service import watch


def sanne() -> bytes:
    return json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])


def revoked_export(identity: Identity) -> bytes:
    """The identity's key with its own revocation certificate applied, as its owner sends it."""
    cert = (identity.home / "openpgp-revocs.d" / f"{identity.fingerprint}.rev").read_text()
    identity.import_public(cert.replace(":-----BEGIN", "-----BEGIN"))
    return identity.public_key()


@pytest.fixture(scope="module")
def short_lived(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A school contact key that expires in 20 days."""
    return Identity.create(tmp_path_factory.mktemp("short") / "h", "Kort", "kort@school.nl",
                           expire="20d")


@pytest.fixture(scope="module")
def to_revoke(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """A school contact key that its school will revoke (a lost laptop)."""
    return Identity.create(tmp_path_factory.mktemp("lost") / "h", "Laptop", CONTACT_A)


async def test_rotation_signs_with_the_new_key_and_still_opens_the_old(harness: Harness) -> None:
    """After `keys rotate`, notices are signed by the new key and old-key signals still open."""
    old = harness.gateway_fpr
    old_key_signal = harness.signal(sanne())
    print(await keys_rotate(harness.ctx, overlap_days=30))
    new = harness.ctx.snapshot.signing_key
    assert new is not None and new != old
    reply = await harness.send(old_key_signal)
    assert reply.code == 250, reply
    await harness.drain()
    harness.ids.school_a.import_public(keys_export(harness.ctx))
    [(_, result, _)] = harness.notices(SCHOOL_A)
    assert result.valid and result.pubkey_fingerprint == new
    exported = keys_export(harness.ctx, include_previous=True)
    assert f"current key {new}" in exported and f"previous key {old}" in exported
    status = await gateway_status(harness.ctx, listener_up=True)
    [previous] = [k for k in status.data["gateway_keys"] if k["state"] == "previous"]
    assert previous["fingerprint"] == old and previous["overlap_until"]


async def test_retired_key_gets_554_575(harness: Harness) -> None:
    """After `keys retire`, a signal encrypted to the old key is refused with 554 5.7.5."""
    old = harness.gateway_fpr
    await keys_rotate(harness.ctx, overlap_days=30)
    print(await keys_retire(harness.ctx, old))
    reply = await harness.send(harness.signal(sanne(), to_key=old))
    assert reply.code == 554 and reply.text.startswith("5.7.5")
    with pytest.raises(Refused):
        await keys_retire(harness.ctx, harness.ctx.snapshot.signing_key or "")


async def test_overlap_end_refuses_the_old_key_and_the_watch_retires_it(
        harness: Harness) -> None:
    """Once the overlap ends, old-key signals get 554 5.7.5 and the daily check retires it."""
    old = harness.gateway_fpr
    await keys_rotate(harness.ctx, overlap_days=2)
    harness.clock.advance(days=2, minutes=1)
    await harness.ctx.refresh(force=True)
    reply = await harness.send(harness.signal(sanne(), to_key=old))
    assert reply.code == 554 and reply.text.startswith("5.7.5")
    retired = await watch.retire_ended_overlaps(harness.ctx, harness.clock())
    assert retired == [old]
    states = {r.fingerprint: r.state for r in await harness.ctx.store.directory.gateway_keys()}
    assert states[old] == "retired"
    assert "key.retired" in [r.event for r in await harness.receipts()]


async def test_keys_change_while_signals_flow_and_none_is_lost(harness: Harness) -> None:
    """Rotating the gateway key and a school key while signals arrive loses no signal."""
    messages = [harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}],
        reference=f"VT-FLOW-{i}")) for i in range(8)]

    async def change_keys() -> None:
        await asyncio.sleep(0.05)
        await keys_rotate(harness.ctx, overlap_days=30)
        await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A,
                              harness.ids.school_a.public_key(),
                              harness.ids.school_a.fingerprint)

    replies, _ = await asyncio.gather(asyncio.gather(*(harness.send(m) for m in messages)),
                                      change_keys())
    assert all(r.code == 250 for r in replies), replies
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 8


async def test_revocation_holds_and_a_new_key_releases(harness: Harness,
                                                       to_revoke: Identity) -> None:
    """A revocation taken in by `keys update` stops the next notice; `set-key` releases it."""
    await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A, to_revoke.public_key(),
                          to_revoke.fingerprint)
    print(await keys_update(harness.ctx, revoked_export(to_revoke)))
    ref = (await harness.send(harness.signal(sanne()))).text.rsplit(" ", 1)[1]
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [held] = await held_list(harness.ctx)
    assert held["reason"] == "school has no contact with a usable key"
    await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A,
                          harness.ids.school_a.public_key(),
                          harness.ids.school_a.fingerprint)
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert f"Referentie: {ref}-1" in text


async def test_keys_update_refuses_keys_that_are_not_pinned(harness: Harness,
                                                            identities: Identities) -> None:
    """`keys update` takes in nothing when the file holds a key that is not pinned."""
    with pytest.raises(Refused, match="not pinned"):
        await keys_update(harness.ctx, identities.stranger.public_key())
    assert harness.ctx.gpg.list_keys(fingerprints=[identities.stranger.fingerprint]) == []


async def test_expiring_key_warns_once_per_threshold(harness: Harness,
                                                     short_lived: Identity) -> None:
    """A key expiring in 20 days warns at 30 days, once, then again within 14 and 7 days."""
    await schools_add(harness.ctx, SCHOOL_B, None, "kort@school.nl",
                      short_lived.public_key(), short_lived.fingerprint, None)
    now = harness.clock()
    warned = await watch.warn_expiring(harness.ctx, now)
    assert (short_lived.fingerprint, 30) in warned
    assert (short_lived.fingerprint, 30) not in await watch.warn_expiring(harness.ctx, now)
    harness.clock.advance(days=7)
    assert (short_lived.fingerprint, 14) in await watch.warn_expiring(harness.ctx,
                                                                       harness.clock())
    listed = await keys_list(harness.ctx, harness.clock(), 14)
    assert [r["fingerprint"] for r in listed] == [short_lived.fingerprint]
    status = await gateway_status(harness.ctx, listener_up=True)
    assert short_lived.fingerprint in status.data["keys_expiring_30_days"]


async def test_expiry_alert_is_mailed_encrypted_to_the_alerts_key(
        harness_factory: HarnessFactory, short_lived: Identity, identities: Identities,
        ) -> None:
    """With [alerts] address and key set, an expiry warning arrives encrypted to that key."""
    h0 = await harness_factory(extra_config=(
        f'[alerts]\naddress = "beheer@leerplicht.example.nl"\n'
        f'key = "{identities.other_sender.fingerprint}"\n'))
    relay = await start_relay(h0)
    await keys_pin_alerts(h0.ctx, identities.other_sender.public_key())
    await schools_add(h0.ctx, SCHOOL_B, None, "kort@school.nl",
                      short_lived.public_key(), short_lived.fingerprint, None)
    await watch.warn_expiring(h0.ctx, h0.clock())
    [mail] = relay.received
    assert mail.rcpt_tos == ["beheer@leerplicht.example.nl"]
    assert short_lived.fingerprint.encode() not in mail.data, "alert sent in plaintext"
    text, result = read_notice(mail, identities.other_sender)
    assert short_lived.fingerprint in text and result.valid


def test_warning_thresholds() -> None:
    """The threshold is the smallest of 30/14/7/1 days that the time left is within."""
    now = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)
    assert watch.warning_threshold(now + dt.timedelta(days=40), now) is None
    assert watch.warning_threshold(now + dt.timedelta(days=30), now) == 30
    assert watch.warning_threshold(now + dt.timedelta(days=10), now) == 14
    assert watch.warning_threshold(now + dt.timedelta(hours=20), now) == 1


# -- a notice waiting in the queue when its key stops holding (issue 11) -----------------------

def pkesk_key_ids(item: Received) -> set[str]:
    """The key IDs a received notice is encrypted to, as `gpg --list-packets` shows them."""
    msg = BytesParser(policy=policy.default).parsebytes(item.data)
    parts = msg.get_payload()
    assert isinstance(parts, list) and not isinstance(parts[1], str)
    armored = bytes(parts[1].get_payload(decode=True))
    with tempfile.TemporaryDirectory() as home:
        listing = subprocess.run(["gpg", "--homedir", home, "--batch", "--list-packets"],
                                 input=armored, capture_output=True, timeout=60, check=False)
        stop_agent(Path(home))
    return set(re.findall(r":pubkey enc packet: .*keyid ([0-9A-F]{16})", listing.stdout.decode()))


def encryption_key_ids(identity: Identity) -> set[str]:
    """The key IDs of an identity's encryption subkeys."""
    listing = subprocess.run(["gpg", "--homedir", str(identity.home), "--with-colons",
                              "--list-keys", identity.fingerprint], capture_output=True,
                             text=True, check=True).stdout
    return {line.split(":")[4] for line in listing.splitlines()
            if line.startswith("sub:") and "e" in line.split(":")[11]}


@pytest.fixture
def lost(tmp_path: Path) -> Iterator[Identity]:
    """A school contact key of this test alone, which its school revokes or replaces."""
    identity = Identity.create(tmp_path / "lost-key", "Laptop", CONTACT_A)
    yield identity
    identity.close()


async def deferred_notice(harness: Harness) -> str:
    """A signal for school A whose notice the school's server defers (451): its reference."""
    harness.inboxes[SCHOOL_A].fail_next("451 4.3.0 try again later")
    reply = await harness.send(harness.signal(sanne()))
    assert reply.code == 250, reply
    await harness.drain()
    [queued] = await queue_list(harness.ctx)
    assert queued["last_reply"].startswith("451") and harness.inboxes[SCHOOL_A].received == []
    return str(reply.text.rsplit(" ", 1)[1])


async def test_queued_notice_is_never_sent_to_a_key_revoked_while_it_waited(
        harness: Harness, lost: Identity) -> None:
    """A notice deferred by the school, then its key's revocation taken in by `keys update`:
    the next attempt sends nothing, the notice is superseded and its child held; `set-key`
    then delivers it sealed to the new key only."""
    await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A, lost.public_key(),
                          lost.fingerprint)
    ref = await deferred_notice(harness)
    print(await keys_update(harness.ctx, revoked_export(lost)))
    harness.clock.advance(seconds=61)
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == [], "sent after its key was revoked"
    assert await queue_list(harness.ctx) == []
    [held] = await held_list(harness.ctx)
    assert held["id"] == f"{ref}-1"
    assert held["reason"] == "school has no contact with a usable key"
    receipts = await harness.receipts()
    [superseded] = [r for r in receipts if r.event == "superseded"]
    assert superseded.detail["fingerprints"] == [lost.fingerprint]
    assert superseded.detail["reason"] == STALE_UNUSABLE
    assert superseded.detail["children"] == [f"{ref}-1"]
    events = [r.event for r in receipts if r.ref in (ref, f"{ref}-1")]
    assert events.index("superseded") < len(events) - 1 - events[::-1].index("held")
    [notice] = [n for n in await harness.ctx.store.notices.all() if n.ref == ref]
    assert notice.state == "superseded"
    stored = await harness.ctx.store.notices.get(int(notice.id))
    assert stored is not None and stored.parcel == b"", "the stale ciphertext is kept"
    await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A,
                          harness.ids.school_a.public_key(),
                          harness.ids.school_a.fingerprint)
    await harness.drain()
    [(text, result, item)] = harness.notices(SCHOOL_A)
    assert f"Referentie: {ref}-1" in text and result.ok
    assert pkesk_key_ids(item) == encryption_key_ids(harness.ids.school_a)
    assert not pkesk_key_ids(item) & encryption_key_ids(lost)


async def test_queued_notice_is_sealed_again_after_set_key(harness: Harness,
                                                           lost: Identity) -> None:
    """A notice deferred by the school, then `schools set-key` to a new key: the next attempt
    delivers a notice sealed again to the new key, never the one made for the old key."""
    ref = await deferred_notice(harness)
    old_ids = encryption_key_ids(harness.ids.school_a)
    await schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A, lost.public_key(),
                          lost.fingerprint)
    harness.clock.advance(seconds=61)
    await harness.drain()
    [item] = harness.inboxes[SCHOOL_A].received
    assert pkesk_key_ids(item) == encryption_key_ids(lost)
    assert not pkesk_key_ids(item) & old_ids, "sent to the replaced key"
    text, result = read_notice(item, lost)
    assert f"Referentie: {ref}-1" in text and result.ok and "Sanne de Vries" in text
    receipts = [r for r in await harness.receipts() if r.ref in (ref, f"{ref}-1")]
    [superseded] = [r for r in receipts if r.event == "superseded"]
    assert superseded.detail["reason"] == STALE_REPLACED
    assert superseded.detail["fingerprints"] == [harness.ids.school_a.fingerprint]
    sealed = [r.detail["fingerprints"] for r in receipts if r.event == "sealed"]
    assert sealed == [[harness.ids.school_a.fingerprint], [lost.fingerprint]]
    [delivered] = [r for r in receipts if r.event == "delivered"]
    assert delivered.detail["notice"] != superseded.detail["notice"]
    child = await harness.ctx.store.children.get(ref, 1)
    assert child is not None and child.state == "delivered" and child.blob is None



async def test_queued_notice_is_never_sent_after_its_school_was_removed(
        harness: Harness) -> None:
    """A notice deferred by the school, then `schools remove`: nothing is sent, the notice is
    superseded ("removed") and its child held."""
    ref = await deferred_notice(harness)
    await schools_remove(harness.ctx, SCHOOL_A)
    harness.clock.advance(seconds=61)
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [superseded] = [r for r in await harness.receipts() if r.event == "superseded"]
    assert superseded.detail["reason"] == STALE_REMOVED and superseded.ref == ref
    [held] = await held_list(harness.ctx)
    assert held["id"] == f"{ref}-1"

def test_unpinned_names_what_no_longer_holds() -> None:
    """A notice's (address, key) pairs hold only while the school has that contact with that
    key, usable now: removed, replaced and expired since the last load are each caught."""
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    pgp = OpenPgpChannel()
    a, b = "a" * 40, "b" * 40
    snapshot = Snapshot("1", now, contacts={"12AB00": (Contact("x@s.nl", a),
                                                       Contact("y@s.nl", b))},
                        key_expires={b: now + dt.timedelta(minutes=1)})
    assert pgp.still_valid(["x@s.nl", "y@s.nl"], [a, b], snapshot, "12AB00", now) == []
    later = now + dt.timedelta(minutes=1)
    assert pgp.still_valid(["y@s.nl"], [b], snapshot, "12AB00", later) == \
        [("y@s.nl", b)], "a key that expired after the directory was loaded"
    assert pgp.still_valid(["x@s.nl"], [b], snapshot, "12AB00", now) == [("x@s.nl", b)]
    assert pgp.still_valid(["x@s.nl"], [a], snapshot, "34CD01", now) == [("x@s.nl", a)]
    assert pgp.still_valid(["x@s.nl"], [], snapshot, "12AB00", now) != [], \
        "whom it was for is unclear"
    assert pgp.stale_reason([("z@s.nl", a)], {"x@s.nl": a}) == STALE_REMOVED
    assert pgp.stale_reason([("x@s.nl", b)], {"x@s.nl": a}) == STALE_REPLACED
    assert pgp.stale_reason([("x@s.nl", a)], {"x@s.nl": a}) == STALE_UNUSABLE
