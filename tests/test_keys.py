"""Key lifecycle: rotation without a gap, expiry never a surprise, revocation never a leak."""

from __future__ import annotations

import asyncio
import datetime as dt

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

from gateway import admin, watch
from gateway.demokit import Identity, json_payload, read_notice


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
    print(await admin.keys_rotate(harness.ctx, overlap_days=30))
    new = harness.ctx.snapshot.signing_key
    assert new is not None and new != old
    reply = await harness.send(old_key_signal)
    assert reply.code == 250, reply
    await harness.drain()
    harness.ids.school_a.import_public(admin.keys_export(harness.ctx))
    [(_, result, _)] = harness.notices(SCHOOL_A)
    assert result.valid and result.pubkey_fingerprint == new
    exported = admin.keys_export(harness.ctx, include_previous=True)
    assert f"current key {new}" in exported and f"previous key {old}" in exported
    status = await admin.status(harness.ctx, listener_up=True)
    [previous] = [k for k in status.data["gateway_keys"] if k["state"] == "previous"]
    assert previous["fingerprint"] == old and previous["overlap_until"]


async def test_retired_key_gets_554_575(harness: Harness) -> None:
    """After `keys retire`, a signal encrypted to the old key is refused with 554 5.7.5."""
    old = harness.gateway_fpr
    await admin.keys_rotate(harness.ctx, overlap_days=30)
    print(await admin.keys_retire(harness.ctx, old))
    reply = await harness.send(harness.signal(sanne(), to_key=old))
    assert reply.code == 554 and reply.text.startswith("5.7.5")
    with pytest.raises(admin.Refused):
        await admin.keys_retire(harness.ctx, harness.ctx.snapshot.signing_key or "")


async def test_overlap_end_refuses_the_old_key_and_the_watch_retires_it(
        harness: Harness) -> None:
    """Once the overlap ends, old-key signals get 554 5.7.5 and the daily check retires it."""
    old = harness.gateway_fpr
    await admin.keys_rotate(harness.ctx, overlap_days=2)
    harness.clock.advance(days=2, minutes=1)
    await harness.ctx.refresh(force=True)
    reply = await harness.send(harness.signal(sanne(), to_key=old))
    assert reply.code == 554 and reply.text.startswith("5.7.5")
    retired = await watch.retire_ended_overlaps(harness.ctx, harness.clock())
    assert retired == [old]
    states = {r["fingerprint"]: r["state"] for r in await harness.ctx.store.gateway_keys()}
    assert states[old] == "retired"
    assert "key.retired" in [r.event for r in await harness.receipts()]


async def test_keys_change_while_signals_flow_and_none_is_lost(harness: Harness) -> None:
    """Rotating the gateway key and a school key while signals arrive loses no signal."""
    messages = [harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}],
        reference=f"VT-FLOW-{i}")) for i in range(8)]

    async def change_keys() -> None:
        await asyncio.sleep(0.05)
        await admin.keys_rotate(harness.ctx, overlap_days=30)
        await admin.schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A,
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
    await admin.schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A, to_revoke.public_key(),
                                to_revoke.fingerprint)
    print(await admin.keys_update(harness.ctx, revoked_export(to_revoke)))
    ref = (await harness.send(harness.signal(sanne()))).text.rsplit(" ", 1)[1]
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [held] = await admin.held_list(harness.ctx)
    assert held["reason"] == "school has no contact with a usable key"
    await admin.schools_set_key(harness.ctx, SCHOOL_A, CONTACT_A,
                                harness.ids.school_a.public_key(),
                                harness.ids.school_a.fingerprint)
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert f"Referentie: {ref}-1" in text


async def test_keys_update_refuses_keys_that_are_not_pinned(harness: Harness,
                                                            identities: Identities) -> None:
    """`keys update` takes in nothing when the file holds a key that is not pinned."""
    with pytest.raises(admin.Refused, match="not pinned"):
        await admin.keys_update(harness.ctx, identities.stranger.public_key())
    assert harness.ctx.gpg.list_keys(fingerprints=[identities.stranger.fingerprint]) == []


async def test_expiring_key_warns_once_per_threshold(harness: Harness,
                                                     short_lived: Identity) -> None:
    """A key expiring in 20 days warns at 30 days, once, then again within 14 and 7 days."""
    await admin.schools_add(harness.ctx, SCHOOL_B, None, "kort@school.nl",
                            short_lived.public_key(), short_lived.fingerprint, None)
    now = harness.clock()
    warned = await watch.warn_expiring(harness.ctx, now)
    assert (short_lived.fingerprint, 30) in warned
    assert (short_lived.fingerprint, 30) not in await watch.warn_expiring(harness.ctx, now)
    harness.clock.advance(days=7)
    assert (short_lived.fingerprint, 14) in await watch.warn_expiring(harness.ctx,
                                                                       harness.clock())
    listed = await admin.keys_list(harness.ctx, harness.clock(), 14)
    assert [r["fingerprint"] for r in listed] == [short_lived.fingerprint]
    status = await admin.status(harness.ctx, listener_up=True)
    assert short_lived.fingerprint in status.data["keys_expiring_30_days"]


async def test_expiry_alert_is_mailed_encrypted_to_the_alerts_key(
        harness_factory: HarnessFactory, short_lived: Identity, identities: Identities,
        ) -> None:
    """With [alerts] address and key set, an expiry warning arrives encrypted to that key."""
    h0 = await harness_factory(extra_config=(
        f'[alerts]\naddress = "beheer@leerplicht.example.nl"\n'
        f'key = "{identities.other_sender.fingerprint}"\n'))
    relay = await start_relay(h0)
    await admin.keys_pin_alerts(h0.ctx, identities.other_sender.public_key())
    await admin.schools_add(h0.ctx, SCHOOL_B, None, "kort@school.nl",
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
