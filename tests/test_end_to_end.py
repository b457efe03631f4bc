"""A signal's whole path on real parts: SMTP in, gpg, SQLite, SMTP out to school servers. The
refusals on that path are in tests/test_end_to_end_replies.py, acknowledgements in
tests/test_end_to_end_acks.py."""

from __future__ import annotations

import datetime as dt
import sqlite3

from conftest import (
    CONTACT_A,
    DAAN_BIRTH,
    EVA_BIRTH,
    GATEWAY,
    PUPILS_CSV,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SCHOOL_C,
    Harness,
    raw_sql,
)

from gateway.admin.held import held_drop, held_list, held_route, held_show
from gateway.admin.pupils import pupils_import
from gateway.admin.queue import queue_list
from gateway.admin.receipts import receipts_find, receipts_verify
from gateway.admin.schools import schools_add
from gateway.devkit.demokit import json_payload, text_payload
from gateway.pipeline.context import open_context


def _events(receipts: list[object]) -> list[str]:
    return [r.event for r in receipts]  # type: ignore[attr-defined]


async def test_json_signal_reaches_the_school_with_only_three_fields(harness: Harness) -> None:
    """A JSON signal is accepted, and the school gets name, birth date, codeword and reference."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(),
                             "bsn": "123456782", "school": SCHOOL_A}],
                           reference="VT-HVB-2026-000123",
                           incident="Politie ter plaatse om 02:10, vader aangehouden",
                           parents=["Peter de Vries"])
    reply = await harness.send(harness.signal(payload))
    assert reply.code == 250 and reply.text.startswith("2.0.0 Signal accepted as HWC-")
    ref = reply.text.rsplit(" ", 1)[1]
    await harness.drain()

    [(text, result, item)] = harness.notices(SCHOOL_A)
    assert harness.inboxes[SCHOOL_B].received == []
    assert text.splitlines()[:6] == ["Handle with Care", "", "Naam: Sanne de Vries",
                                     f"Geboortedatum: {SANNE_BIRTH:%d-%m-%Y}", "",
                                     f"Referentie: {ref}-1"]
    for secret in ("123456782", "VT-HVB-2026-000123", "Politie", "Peter", "vader"):
        assert secret not in text
    assert result.valid and result.pubkey_fingerprint == harness.gateway_fpr
    assert item.rcpt_tos == [CONTACT_A] and item.mail_from == GATEWAY
    assert item.header("Subject") == "Vertrouwelijk bericht"
    assert b"Sanne" not in item.data and b"Handle with Care" not in item.data


async def test_text_signal_in_dutch_is_delivered(harness: Harness) -> None:
    """A labelled-text signal, as a person types it, is routed by name and birth date."""
    payload = text_payload("Beste collega,\n\nCodewoord: handle with care\n"
                           f"Naam: Eva Jansen\nGeboortedatum: {EVA_BIRTH:%d-%m-%Y}\n"
                           "Adres: Dorpsstraat 1\n\nMet vriendelijke groet, VT\n")
    reply = await harness.send(harness.signal(payload, mode="signed-inside"))
    assert reply.code == 250, reply
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert "Naam: Eva Jansen" in text and f"Geboortedatum: {EVA_BIRTH:%d-%m-%Y}" in text
    assert "Dorpsstraat" not in text


async def test_surname_first_name_is_accepted_and_routed_like_the_natural_order(
        harness: Harness) -> None:
    """"Jansen, Eva" (surname first, as registers write it) is a valid name at intake and
    matches the register's "Eva Maria Jansen" by name and birth date, as "Eva Jansen" does."""
    payload = json_payload([{"name": "Jansen, Eva", "birthdate": EVA_BIRTH.isoformat()}])
    reply = await harness.send(harness.signal(payload))
    assert reply.code == 250, reply.text
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_A)
    assert "Naam: Jansen, Eva" in text


async def test_siblings_at_two_schools_each_get_only_their_child(harness: Harness) -> None:
    """Siblings are split: each school gets one notice holding only its own child."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()},
                            {"name": "Daan de Vries", "birthdate": DAAN_BIRTH.isoformat()}])
    reply = await harness.send(harness.signal(payload))
    ref = reply.text.rsplit(" ", 1)[1]
    await harness.drain()
    [(text_a, _, _)] = harness.notices(SCHOOL_A)
    [(text_b, _, _)] = harness.notices(SCHOOL_B)
    assert "Sanne" in text_a and "Daan" not in text_a and f"{ref}-1" in text_a
    assert "Daan" in text_b and "Sanne" not in text_b and f"{ref}-2" in text_b


async def test_held_child_is_routed_by_hand(harness: Harness) -> None:
    """A child the register does not know is held, then `held route` delivers it."""
    payload = json_payload([{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}])
    reply = await harness.send(harness.signal(payload))
    ref = reply.text.rsplit(" ", 1)[1]
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [held] = await held_list(harness.ctx)
    assert held["id"] == f"{ref}-1" and "Noor" not in str(held)
    shown = await held_show(harness.ctx, held["id"])
    assert shown["name"] == "Noor Bakker"
    print(await held_route(harness.ctx, held["id"], SCHOOL_B))
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_B)
    assert "Naam: Noor Bakker" in text
    events = _events(await harness.receipts())
    assert "held" in events and "held.shown" in events and "routed_by_hand" in events
    row = await harness.ctx.store.children.get(ref, 1)
    assert row is not None and row.state == "delivered" and row.blob is None


async def test_held_child_dropped_is_erased(harness: Harness) -> None:
    """`held drop` erases the held child's sealed data and records why."""
    payload = json_payload([{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}])
    ref = (await harness.send(harness.signal(payload))).text.rsplit(" ", 1)[1]
    await held_drop(harness.ctx, f"{ref}-1", "not a pupil in this municipality")
    row = await harness.ctx.store.children.get(ref, 1)
    assert row is not None and row.state == "dropped" and row.blob is None


async def test_duplicate_signal_is_not_sent_twice(harness: Harness) -> None:
    """The same message again gets 250 with the first reference and nothing is sent twice."""
    message = harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}], reference="VT-1"))
    first = await harness.send(message)
    await harness.drain()
    again = await harness.send(message)
    ref = first.text.rsplit(" ", 1)[1]
    assert again.code == 250 and again.text == f"2.0.0 Signal already accepted as {ref}"
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1


async def test_reused_reference_with_a_forgotten_sibling_is_a_new_signal(
        harness: Harness) -> None:
    """A second signal under the same case reference naming another child is accepted under a
    reference of its own and delivered; its receipt names our earlier reference, not theirs."""
    sanne = {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}
    daan = {"name": "Daan de Vries", "birthdate": DAAN_BIRTH.isoformat()}
    first = await harness.send(harness.signal(json_payload([sanne], reference="VT-7")))
    second = await harness.send(harness.signal(json_payload([daan], reference="VT-7")))
    first_ref, second_ref = first.text.rsplit(" ", 1)[1], second.text.rsplit(" ", 1)[1]
    assert second.code == 250 and second.text == f"2.0.0 Signal accepted as {second_ref}"
    assert second_ref != first_ref
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_B)
    assert "Naam: Daan de Vries" in text and f"{second_ref}-1" in text
    [accepted] = [r for r in await harness.receipts()
                  if r.event == "accepted" and r.ref == second_ref]
    assert accepted.detail["reference_reused"] == first_ref
    assert all("VT-7" not in str(r) for r in await harness.receipts())


async def test_reused_reference_for_a_new_incident_is_delivered_again(harness: Harness) -> None:
    """The same child under the same case reference, with other signed content (a new incident
    in the same case), is a new signal: the school hears of it again."""
    child = [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}]
    first = await harness.send(harness.signal(json_payload(child, reference="VT-7",
                                                           incident="maandag")))
    await harness.drain()
    second = await harness.send(harness.signal(json_payload(child, reference="VT-7",
                                                            incident="woensdag")))
    assert second.code == 250 and "already" not in second.text
    assert second.text.rsplit(" ", 1)[1] != first.text.rsplit(" ", 1)[1]
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 2


async def test_message_id_reused_for_other_content_gets_554_560(harness: Harness) -> None:
    """Other signed content under an earlier signal's Message-ID is refused with a reply that
    says so, never taken for the earlier signal; the earlier one resent is still a duplicate."""
    sanne = {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}
    daan = {"name": "Daan de Vries", "birthdate": DAAN_BIRTH.isoformat()}
    message = harness.signal(json_payload([sanne], reference="VT-8"),
                             message_id="<reused@sender.example>")
    first = await harness.send(message)
    ref = first.text.rsplit(" ", 1)[1]
    other = await harness.send(harness.signal(json_payload([daan], reference="VT-9"),
                                              message_id="<reused@sender.example>"))
    assert other.code == 554 and other.text.startswith("5.6.0 Message-ID already used for "
                                                       f"another signal ({ref})")
    again = await harness.send(message)
    assert again.code == 250 and again.text == f"2.0.0 Signal already accepted as {ref}"
    assert [r["ref"] for r in raw_sql(harness.ctx.config.storage.path,
                                      "SELECT ref FROM signals")] == [ref]
    await harness.drain()
    assert harness.inboxes[SCHOOL_B].received == []


async def test_replayed_ciphertext_with_new_message_id_is_a_duplicate(harness: Harness) -> None:
    """The same signed content under a fresh Message-ID is still the same signal."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    message = harness.signal(payload, message_id="<one@sender.example>")
    first = await harness.send(message)
    replay = message.replace(b"<one@sender.example>", b"<two@sender.example>")
    second = await harness.send(replay)
    assert second.text.endswith(first.text.rsplit(" ", 1)[1]) and "already" in second.text


async def test_temporary_failure_is_retried_then_delivered(harness: Harness) -> None:
    """A 451 from the school defers the notice; the retry after the backoff delivers it."""
    harness.inboxes[SCHOOL_A].fail_next("451 4.3.0 Try again later")
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    await harness.send(harness.signal(payload))
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [queued] = await queue_list(harness.ctx)
    assert queued["last_reply"].startswith("451") and queued["attempts"] == 1
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == [], "retried before the backoff"
    harness.clock.advance(seconds=61)
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1
    events = _events(await harness.receipts())
    assert events.index("deferred") < events.index("delivered")
    assert await queue_list(harness.ctx) == []


async def test_permanent_failure_fails_the_notice(harness: Harness) -> None:
    """A 5xx from the school fails the notice with a receipt holding the server's reply."""
    harness.inboxes[SCHOOL_A].fail_next("554 5.7.1 Policy rejection")
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    await harness.send(harness.signal(payload))
    await harness.drain()
    failed = [r for r in await harness.receipts() if r.event == "failed"]
    assert len(failed) == 1 and failed[0].detail["reply"].startswith("554 5.7.1")
    assert await queue_list(harness.ctx) == []


async def test_receipts_verify_detects_edit_and_deletion(harness: Harness) -> None:
    """`receipts verify` passes on the real log and finds an edited and a deleted receipt."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    await harness.send(harness.signal(payload))
    await harness.drain()
    count, problems = await receipts_verify(harness.ctx.store)
    assert count > 5 and problems == []
    db = sqlite3.connect(harness.ctx.config.storage.path)
    db.execute("DROP TRIGGER receipts_append_only")
    db.execute("UPDATE receipts SET school = '99ZZ00' WHERE event = 'delivered'")
    db.execute("DELETE FROM receipts WHERE seq = 3")
    db.commit()
    db.close()
    _, problems = await receipts_verify(harness.ctx.store)
    assert any("missing" in p for p in problems)
    assert any("does not match its hash" in p for p in problems)


async def test_receipts_hold_no_personal_data_and_find_by_pseudonym(harness: Harness) -> None:
    """Receipts carry no name, birth date or BSN, yet `receipts find` finds the child."""
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(),
                             "bsn": "123456782"}])
    await harness.send(harness.signal(payload))
    await harness.drain()
    dump = str([(r.event, r.ref, r.school, r.detail, r.pseudonym)
                for r in await harness.receipts()])
    for secret in ("Sanne", "Vries", "123456782", SANNE_BIRTH.isoformat(),
                   f"{SANNE_BIRTH:%d-%m-%Y}"):
        assert secret not in dump
    found = await receipts_find(harness.ctx, "sanne  DE vries", SANNE_BIRTH)
    assert {"resolved", "held"} & {r["event"] for r in found}


async def test_child_held_for_a_school_without_key_is_released_when_it_has_one(
        harness: Harness) -> None:
    """A school without a usable key gets nothing; once onboarded, the held child goes out."""
    payload = json_payload([{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat(),
                             "school": SCHOOL_C}])
    ref = (await harness.send(harness.signal(payload))).text.rsplit(" ", 1)[1]
    await harness.drain()
    [held] = await held_list(harness.ctx)
    assert held["reason"] == "school has no contact with a usable key"
    assert held["school"] == SCHOOL_C
    await schools_add(harness.ctx, SCHOOL_C, None, "hwc@jozef.example.nl",
                      harness.ids.school_b.public_key(), harness.ids.school_b.fingerprint,
                      f"127.0.0.1:{harness.inboxes[SCHOOL_B].port}")
    await harness.drain()
    [(text, _, item)] = harness.notices(SCHOOL_B)
    assert "Naam: Noor Bakker" in text and item.rcpt_tos == ["hwc@jozef.example.nl"]
    assert "released" in _events(await harness.receipts())
    assert await held_list(harness.ctx) == []
    row = await harness.ctx.store.children.get(ref, 1)
    assert row is not None and row.state == "delivered"


async def test_replay_is_recognised_for_thirty_days(harness: Harness) -> None:
    """A replay 29 days later is still the same signal: nothing is sent twice."""
    message = harness.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}]))
    first = await harness.send(message)
    await harness.drain()
    harness.clock.advance(days=29, hours=23)
    again = await harness.send(message)
    assert "already accepted as " + first.text.rsplit(" ", 1)[1] in again.text
    await harness.drain()
    assert len(harness.inboxes[SCHOOL_A].received) == 1


async def test_birth_date_one_day_off_is_held_not_routed(harness: Harness) -> None:
    """A name that matches but a birth date one day off is held: never routed on a guess."""
    payload = json_payload([{"name": "Eva Jansen",
                             "birthdate": (EVA_BIRTH + dt.timedelta(days=1)).isoformat()}])
    await harness.send(harness.signal(payload))
    await harness.drain()
    assert harness.inboxes[SCHOOL_A].received == []
    [held] = await held_list(harness.ctx)
    assert held["reason"] == "not in the register and no school named"


async def test_register_import_takes_effect_in_the_running_daemon(harness: Harness) -> None:
    """A register imported by another process (the CLI) routes the very next signal."""
    payload = json_payload([{"name": "Noor Bakker", "birthdate": EVA_BIRTH.isoformat()}])
    second = await open_context(harness.ctx.config)
    try:
        print(await pupils_import(
            second, (PUPILS_CSV + f";Noor Bakker;{EVA_BIRTH:%d-%m-%Y};{SCHOOL_B}\n").encode(),
            False))
    finally:
        await second.close()
    await harness.send(harness.signal(payload))
    await harness.drain()
    [(text, _, _)] = harness.notices(SCHOOL_B)
    assert "Naam: Noor Bakker" in text
