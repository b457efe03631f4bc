"""What a stored signal and the status mail give away: the sender's case reference is never in
the database in clear, and the status mail tells a sender nothing about the pupil register."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

from conftest import (
    SANNE_BIRTH,
    SCHOOL_A,
    SENDER,
    HarnessFactory,
    Identities,
    Template,
    copy_gateway_state,
    raw_sql,
    start_relay,
)

from gateway.admin.held import held_drop, held_list
from gateway.core.model import Child, Signal
from gateway.devkit.demokit import json_payload, read_notice
from gateway.pipeline.context import open_context

CASE = "VT-HVB-2026-000123"  # a Veilig Thuis case number: it points at a family
_OUR_REF = re.compile(r"HWC-\d{8}-[0-9A-Z]{8}")


def database_bytes(db: Path) -> bytes:
    """Every byte SQLite keeps for the database: the file, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in db.parent.iterdir()
                    if p.is_file() and p.name.startswith(db.name))


async def test_case_reference_is_never_stored_in_clear(harness_factory: HarnessFactory) -> None:
    """After signals with a case reference (one of them reusing it) are accepted, delivered and
    reported, the reference is nowhere in the SQLite file or its WAL, yet the status mail, which
    the sender decrypts, quotes it."""
    h = await harness_factory()
    relay = await start_relay(h)
    db = h.ctx.config.storage.path
    first = await h.send(h.signal(json_payload(
        [{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}], reference=CASE)))
    await h.drain()
    await h.drain()
    second = await h.send(h.signal(json_payload(
        [{"name": "Noor Bakker", "birthdate": SANNE_BIRTH.isoformat()}], reference=CASE)))
    assert first.code == second.code == 250 and "already" not in second.text
    await h.drain()
    await h.drain()
    assert db.with_name(db.name + "-wal").stat().st_size > 0  # the WAL is really searched
    assert CASE.encode() not in database_bytes(db)
    texts = [read_notice(mail, h.ids.sender)[0] for mail in relay.received]
    assert len(texts) == 2 and all(f"Status van uw signaal {CASE}" in t for t in texts)
    assert CASE.encode() not in b"".join(mail.data for mail in relay.received)
    rows = raw_sql(h.ctx.config.storage.path,
                   "SELECT sender_ref_digest, sender_ref_blob FROM signals")
    assert [r["sender_ref_blob"] for r in rows] == [None, None]  # reported: the seal is gone
    assert {r["sender_ref_digest"] for r in rows} == {h.ctx.vault.digest("sender-ref", CASE)}


async def test_old_database_with_clear_case_references_is_migrated_at_start(
        identities: Identities, template: Template, tmp_path: Path) -> None:
    """A database where an older gateway kept case references in clear is migrated when the
    gateway opens it: digested, sealed while the status mail is to come, the column gone, and
    no byte of the file or its WAL still holding a reference."""
    config = copy_gateway_state(template, tmp_path)
    ctx = await open_context(config)
    await ctx.close()
    db = config.storage.path
    con = sqlite3.connect(db, isolation_level=None)
    try:  # made into what an older gateway left: the reference in clear, and indexed
        con.execute("DROP INDEX signals_sender_ref_digest")
        con.execute("ALTER TABLE signals DROP COLUMN sender_ref_digest")
        con.execute("ALTER TABLE signals DROP COLUMN sender_ref_blob")
        con.execute("ALTER TABLE signals ADD COLUMN sender_ref TEXT")
        con.execute("CREATE INDEX signals_sender_ref ON signals(sender, sender_ref)")
        # Enough of them to fill many pages, where rows shift and freed space keeps old bytes.
        for i in range(400):
            ref = f"HWC-20260301-{i:08d}"
            con.execute("INSERT INTO signals (ref, sender, sender_ref, content_digest,"
                        " accepted_at, children, reported) VALUES (?, ?, ?, ?,"
                        " '2026-03-01T07:00:00Z', 1, ?)",
                        (ref, SENDER, CASE if i < 2 else f"{CASE[:-6]}{i:06d}", ref, i % 2))
    finally:
        con.close()
    assert CASE.encode() in database_bytes(db)
    assert CASE[:-6].encode() in database_bytes(db)

    from gateway.pipeline.intake import (
        protect_sender_ref,  # here, so the other tests run on old code
    )

    ctx = await open_context(config)
    try:
        assert CASE[:-6].encode() not in database_bytes(db)
        rows = raw_sql(db, "SELECT * FROM signals ORDER BY ref LIMIT 2")
        assert raw_sql(db, "SELECT name FROM pragma_table_info('signals')"
                           " WHERE name = 'sender_ref'") == []
        digest = ctx.vault.digest("sender-ref", CASE)
        assert [r["sender_ref_digest"] for r in rows] == [digest, digest]
        assert ctx.vault.open(rows[0]["sender_ref_blob"],
                              f"sender-ref:{rows[0]['ref']}") == {"reference": CASE}
        assert rows[1]["sender_ref_blob"] is None  # its status mail was dealt with already
        assert raw_sql(db, "SELECT name FROM sqlite_master WHERE name ="
                           " 'signals_sender_ref'") == []
        # A second start finds nothing left to move.
        assert await ctx.store.protect_sender_refs(
            lambda ref, value, seal: protect_sender_ref(ctx.vault, ref, value, seal)) == 0
    finally:
        await ctx.close()


async def test_status_mail_does_not_tell_whether_a_bsn_is_in_the_register(
        harness_factory: HarnessFactory) -> None:
    """A BSN in the register under a wrong name and a BSN not in the register are both held
    for different reasons, yet the two status mails the sender decrypts read the same apart
    from the references: no school code, no hold reason."""
    h = await harness_factory()
    relay = await start_relay(h)
    minute = h.clock().replace(second=0)
    refs = []
    for case, bsn in (("VT-ORAKEL-1", "123456782"), ("VT-ORAKEL-2", "111222333")):
        h.clock.set(minute)  # both accepted within the same minute, the mail's resolution
        reply = await h.send(h.signal(json_payload(
            [{"name": "Noor Bakker", "birthdate": SANNE_BIRTH.isoformat(), "bsn": bsn}],
            reference=case)))
        assert reply.code == 250, reply
        refs.append(reply.text.rsplit(" ", 1)[1])
    await h.drain()
    await h.drain()
    # Inside, leerplicht sees precisely why each one waits.
    reasons = {row["signal"]: row["reason"] for row in await held_list(h.ctx)}
    assert reasons == {refs[0]: "BSN and name or birth date disagree",
                       refs[1]: "not in the register and no school named"}

    texts = {}
    for mail in relay.received:
        text, result = read_notice(mail, h.ids.sender)
        assert result.valid
        [ref] = set(_OUR_REF.findall(text))
        texts[ref] = re.sub(r"VT-ORAKEL-\d", "<case>", _OUR_REF.sub("<ref>", text))
    assert set(texts) == set(refs)
    assert texts[refs[0]] == texts[refs[1]]
    assert "Kind 1: in behandeling bij leerplicht" in texts[refs[0]]
    for inside in ("BSN", "register", "disagree", SCHOOL_A):
        assert inside not in texts[refs[0]]


async def test_follow_up_does_not_tell_whether_a_bsn_is_in_the_register(
        harness_factory: HarnessFactory) -> None:
    """Two children held for different reasons (BSN and name disagree; not in the register)
    and then dropped get follow-ups that read the same apart from the references: no school
    code, no hold reason, no drop reason."""
    h = await harness_factory()
    relay = await start_relay(h)
    minute = h.clock().replace(second=0)
    refs = []
    for case, bsn in (("VT-VERVOLG-1", "123456782"), ("VT-VERVOLG-2", "111222333")):
        h.clock.set(minute)
        reply = await h.send(h.signal(json_payload(
            [{"name": "Noor Bakker", "birthdate": SANNE_BIRTH.isoformat(), "bsn": bsn}],
            reference=case)))
        assert reply.code == 250, reply
        refs.append(reply.text.rsplit(" ", 1)[1])
    await h.drain()
    for ref, why in zip(refs, ("BSN klopt niet bij de naam", "onbekend kind"), strict=True):
        h.clock.set(minute + dt.timedelta(minutes=5))
        await held_drop(h.ctx, f"{ref}-1", why)
    await h.drain()
    follow_ups = {}
    for mail in relay.received:
        text, result = read_notice(mail, h.ids.sender)
        assert result.valid
        if text.startswith("Vervolg"):
            [ref] = set(_OUR_REF.findall(text))
            follow_ups[ref] = _OUR_REF.sub("<ref>", text)
    assert set(follow_ups) == set(refs)
    assert follow_ups[refs[0]] == follow_ups[refs[1]]
    assert "afgehandeld door leerplicht, niet doorgestuurd naar een school" in follow_ups[refs[0]]
    for inside in ("BSN", "register", "disagree", "klopt", "onbekend", SCHOOL_A):
        assert inside not in follow_ups[refs[0]]


def test_signal_repr_hides_the_case_reference() -> None:
    """A Signal's repr (what a log or a traceback would show) says whether it has a case
    reference, never the reference, nor a child's name."""
    signal = Signal(children=(Child("Sanne de Vries", dt.date(2016, 4, 12)),),
                    reference="VT-HVB-2026-000123")
    text = repr(signal)
    assert "VT-HVB" not in text and "Sanne" not in text
    assert text == "Signal(children=1, reference=<redacted>)"
