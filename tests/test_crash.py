"""Crashes at the worst moments: `kill -9` of the real daemon, and a stage that keeps failing.

The daemon runs as `hwc-gateway serve` in its own process (as systemd runs it), on a copied
gateway state, with real SMTP on both sides and a real SQLite file. The fault-injection switch
(`gateway.core.faults`, env HWC_GATEWAY_CRASH_AT) makes it SIGKILL itself at a named point; the test
itself kills it with SIGKILL while submissions or a delivery are in flight. After each restart
docs/architecture.md's invariants must hold: what got a 250 is delivered (1), at most once a school
except for a resend after an unrecorded remote 250, which carries the same Message-ID (2), and
the receipt chain still verifies. Parking is tested in-process with the `harness`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DAAN_BIRTH,
    GATEWAY,
    PASSWORD,
    SANNE_BIRTH,
    SCHOOL_A,
    SCHOOL_B,
    SENDER,
    SENDER_ADDRESS,
    Harness,
    Identities,
    Template,
    copy_gateway_state,
    onboard,
)
from test_process import Process, _wait_for, free_port

from gateway.admin import verbs as admin
from gateway.core import faults
from gateway.core.config import Config
from gateway.core.policy import MAX_CRASHES
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.vault import Vault
from gateway.devkit.demokit import (
    Received,
    Reply,
    SchoolInbox,
    build_signal,
    json_payload,
    read_notice,
    submit,
)
from gateway.pipeline.context import open_context
from gateway.store.api import Tx
from gateway.store.chainkey import open_store

SANNE = {"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat(), "bsn": "123456782"}
DAAN = {"name": "Daan de Vries", "birthdate": DAAN_BIRTH.isoformat()}
DELIVERY_EVENTS = {"accepted", "resolved", "held", "sealed", "deferred", "delivered", "failed",
                   "parked"}


class DaemonProcess(Process):
    """`Process` with extra environment, and waits that keep the test's event loop serving
    the school inboxes (the daemon delivers to them while the test waits)."""

    def spawn(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `serve`; the crash switch only when `env` names it, never inherited."""
        base = {k: v for k, v in os.environ.items() if k != faults.ENV}
        full = {**base, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1", **(env or {})}
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(self.config), "serve"],
                stdout=out, stderr=subprocess.STDOUT, env=full)

    async def launch(self, port: int, env: dict[str, str] | None = None) -> None:
        """Start the daemon and wait until it accepts connections."""
        self.proc = self.spawn(env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise AssertionError("the daemon did not start listening")

    async def exited(self, timeout: float = 30) -> int:  # noqa: ASYNC109
        """The return code once the process has ended (by itself or by a signal we sent)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while (code := self.proc.poll()) is None:
            assert time.monotonic() < deadline, "the daemon did not exit"
            await asyncio.sleep(0.05)
        return code

    async def stop(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return await self.exited()

    def events(self) -> list[dict[str, Any]]:
        """The daemon's JSON log lines (other output, e.g. a traceback, is skipped)."""
        out = []
        for line in self.log.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out


@dataclass
class Gateway:
    """One gateway home on disk, onboarded, with its daemon process (not yet started)."""

    config: Config
    listen: int
    ports: dict[str, int]
    fingerprint: str
    ids: Identities
    proc: DaemonProcess
    inboxes: list[SchoolInbox] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.config.storage.path

    def signal(self, reference: str, child: dict[str, str]) -> bytes:
        return build_signal(json_payload([child], reference=reference), self.ids.sender,
                            self.fingerprint, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)

    async def send(self, message: bytes) -> Reply:
        return await submit("127.0.0.1", self.listen, user=SENDER, password=PASSWORD,
                            mail_from=SENDER_ADDRESS, rcpt=GATEWAY, message=message,
                            ca_file=self.config.smtp.tls_cert.parent / "ca.pem")

    async def inbox(self, template: Template, school: str,
                    inbox: SchoolInbox | None = None) -> SchoolInbox:
        """Start a school's server on the port its route names."""
        inbox = inbox or SchoolInbox()
        await inbox.start(template.school_cert, port=self.ports[school])
        self.inboxes.append(inbox)
        return inbox

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the daemon's database as it stands (read-only; the daemon may be writing)."""
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            return list(con.execute(sql, params))
        finally:
            con.close()

    def case_digest(self, sender_ref: str) -> str:
        """How the database knows a case reference: only by its keyed digest."""
        return Vault.load(self.config.secrets_dir).digest("sender-ref", sender_ref)

    def ref_of(self, sender_ref: str) -> str | None:
        found = self.rows("SELECT ref FROM signals WHERE sender_ref_digest = ?",
                          (self.case_digest(sender_ref),))
        return str(found[0][0]) if found else None

    def events(self, ref: str) -> list[str]:
        """The delivery receipts of one signal and its children, in order (what follows,
        such as the status mail to the sender, is another story)."""
        return [str(r[0]) for r in self.rows(
            "SELECT event FROM receipts WHERE ref = ? OR ref LIKE ? ORDER BY seq",
            (ref, ref + "-%")) if r[0] in DELIVERY_EVENTS]

    def delivered(self, sender_ref: str) -> int:
        ref = self.ref_of(sender_ref)
        return 0 if ref is None else self.events(ref).count("delivered")

    async def verify_receipts(self) -> None:
        """`receipts verify`, on the database opened read/write once the daemon has stopped."""
        assert self.proc.proc is None or self.proc.proc.poll() is not None
        store = await open_store(self.db, self.config.secrets_dir)
        try:
            count, problems = await admin.receipts_verify(store)
        finally:
            await store.close()
        assert count > 0 and problems == []


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def gateway_home(identities: Identities, template: Template,
                       tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Makes onboarded gateway homes; afterwards kills their daemons, inboxes and gpg agents."""
    made: list[Gateway] = []

    async def make(smtp_extra: str = "") -> Gateway:
        base = tmp_path / f"gw{len(made)}"
        listen = free_port()
        ports = {SCHOOL_A: free_port(), SCHOOL_B: free_port()}
        config = copy_gateway_state(template, base, listen=listen, retry_min=1,
                                    smtp_extra=smtp_extra)
        ctx = await open_context(config)
        try:
            await onboard(ctx, identities, ports)
            fingerprint = ctx.snapshot.signing_key
        finally:
            await ctx.close()
            stop_agent(config.gnupg_home)
        assert fingerprint is not None
        (base / "tmp").mkdir()
        proc = DaemonProcess(config.path, base / "daemon.log", base / "tmp")
        gw = Gateway(config, listen, ports, fingerprint, identities, proc)
        made.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in made:
            if gw.proc.proc is not None and gw.proc.proc.poll() is None:
                gw.proc.proc.kill()
                gw.proc.proc.wait(timeout=30)
            for inbox in gw.inboxes:
                await inbox.stop()
            stop_agent(gw.config.gnupg_home)


def by_message_id(received: list[Received]) -> dict[str, list[Received]]:
    groups: dict[str, list[Received]] = defaultdict(list)
    for item in received:
        groups[item.header("Message-ID")].append(item)
    return groups


def child_refs(text: str) -> list[str]:
    return [line.removeprefix("Referentie: ") for line in text.splitlines()
            if line.startswith("Referentie: ")]


@pytest.mark.parametrize("point", faults.POINTS)
async def test_crash_point_then_restart_delivers(point: str, gateway_home: GatewayFactory,
                                                 template: Template) -> None:
    """A SIGKILL at each crash point loses nothing: once, or twice with one Message-ID."""
    gw = await gateway_home()
    inbox = await gw.inbox(template, SCHOOL_A)
    message = gw.signal("VT-CRASH-1", SANNE)
    await gw.proc.launch(gw.listen, env={faults.ENV: point})
    reply = await gw.send(message)
    assert reply.code == 250, reply
    assert await gw.proc.exited() == -signal.SIGKILL  # it died by its own hand, at `point`
    received_before_restart = len(inbox.received)
    assert received_before_restart == (1 if point == "after-remote-250" else 0)

    await gw.proc.launch(gw.listen)  # without the switch
    await _wait_for(lambda: gw.delivered("VT-CRASH-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    ref = gw.ref_of("VT-CRASH-1")
    assert ref is not None
    # Everything is finished: no notice is waiting that could still be sent again.
    assert gw.rows("SELECT state FROM notices") == [("delivered",)]
    if point == "after-remote-250":
        # The resend after the unrecorded 250: the same bytes, so the same Message-ID (inv. 2).
        assert len(inbox.received) == 2
        first, second = inbox.received
        assert first.header("Message-ID") == second.header("Message-ID") != ""
        assert first.data == second.data
        recovered = [e for e in gw.proc.events() if e.get("event") == "notice.lease_recovered"]
        assert len(recovered) == 1
    else:
        assert len(inbox.received) == 1
    [(message_id,)] = gw.rows("SELECT message_id FROM notices")
    assert inbox.received[0].header("Message-ID") == message_id
    text, result = read_notice(inbox.received[0], gw.ids.school_a)
    assert result.valid and child_refs(text) == [f"{ref}-1"]
    # A crash leaves no receipt of its own: one seal, one delivery, no resend recorded.
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "delivered"]
    await gw.verify_receipts()


async def test_burst_killed_mid_flight_loses_and_duplicates_nothing(
        gateway_home: GatewayFactory, template: Template) -> None:
    """40 concurrent signals, kill -9 mid-flight, unanswered ones resent: each delivered once."""
    gw = await gateway_home(smtp_extra="max_sessions_per_client = 64")
    inbox_a = await gw.inbox(template, SCHOOL_A)
    inbox_b = await gw.inbox(template, SCHOOL_B)
    refs = [f"VT-BURST-{i:02d}" for i in range(40)]
    school_of = {r: SCHOOL_A if i % 2 == 0 else SCHOOL_B for i, r in enumerate(refs)}
    messages = {r: gw.signal(r, SANNE if school_of[r] == SCHOOL_A else DAAN) for r in refs}

    async def attempt(ref: str) -> tuple[str, Reply | OSError]:
        try:
            return ref, await gw.send(messages[ref])
        except OSError as exc:  # refused, reset, dropped: smtplib's errors are OSErrors too
            return ref, exc

    def unanswered(results: list[tuple[str, Reply | OSError]]) -> list[str]:
        """What a sender's MTA sends again: everything without a 250; never a 5xx refusal."""
        for ref, result in results:
            assert not (isinstance(result, Reply) and result.code >= 500), (ref, result)
        return [ref for ref, result in results
                if not (isinstance(result, Reply) and result.code == 250)]

    await gw.proc.launch(gw.listen)
    tasks = [asyncio.ensure_future(attempt(r)) for r in refs]
    in_flight_at_kill = 0
    for answered, next_done in enumerate(asyncio.as_completed(tasks), 1):
        await next_done
        if answered == 15:
            in_flight_at_kill = sum(not t.done() for t in tasks)
            assert await gw.proc.stop(signal.SIGKILL) == -signal.SIGKILL
    assert in_flight_at_kill > 0
    pending = unanswered([t.result() for t in tasks])
    assert pending, "the kill came too late to hit a submission in flight"

    await gw.proc.launch(gw.listen)
    for _ in range(5):
        if not pending:
            break
        pending = unanswered(list(await asyncio.gather(*(attempt(r) for r in pending))))
    assert pending == []

    # A resend of a signal stored before the kill was recognised, not stored again.
    case_of = {gw.case_digest(r): r for r in refs}
    stored = gw.rows("SELECT sender_ref_digest, ref FROM signals")
    assert sorted(case_of[d] for d, _ in stored) == refs
    ref_of = {case_of[d]: ref for d, ref in stored}
    await _wait_for(lambda: gw.rows("SELECT count(*) FROM notices WHERE state = 'delivered'")
                    == [(40,)])
    assert await gw.proc.stop(signal.SIGTERM) == 0
    assert gw.rows("SELECT count(*) FROM notices") == [(40,)]

    # Each signal reached its school under exactly one Message-ID; any extra copy is a resend
    # after a remote 250 the kill kept from being recorded: the same bytes.
    seen: dict[str, str] = {}
    for code, inbox, school in ((SCHOOL_A, inbox_a, gw.ids.school_a),
                                (SCHOOL_B, inbox_b, gw.ids.school_b)):
        for message_id, copies in by_message_id(inbox.received).items():
            assert all(c.data == copies[0].data for c in copies), message_id
            text, result = read_notice(copies[0], school)
            assert result.valid
            for child_ref in child_refs(text):
                assert child_ref not in seen, f"{child_ref} delivered twice"
                seen[child_ref] = code
    assert seen == {f"{ref_of[r]}-1": school_of[r] for r in refs}
    for r in refs:
        assert gw.events(ref_of[r]).count("delivered") == 1, r
    await gw.verify_receipts()


async def test_dropped_after_data_is_retried_with_the_same_message_id(
        gateway_home: GatewayFactory, template: Template) -> None:
    """A school that takes DATA and drops the line unanswered gets a resend, same Message-ID."""
    gw = await gateway_home()
    inbox = await gw.inbox(template, SCHOOL_A)
    inbox.drops = 1
    message = gw.signal("VT-DROP-1", SANNE)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(message)).code == 250
    await _wait_for(lambda: gw.delivered("VT-DROP-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    assert len(inbox.received) == 2
    first, second = inbox.received
    assert first.header("Message-ID") == second.header("Message-ID") != ""
    assert first.data == second.data
    ref = gw.ref_of("VT-DROP-1")
    assert ref is not None
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "deferred", "delivered"]
    assert gw.rows("SELECT state, attempts FROM notices") == [("delivered", 2)]
    await gw.verify_receipts()


@dataclass
class HangingInbox(SchoolInbox):
    """A school server that takes the whole message and then never answers."""

    entered: int = 0
    never: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.entered += 1
        await self.never.wait()  # never set: the attempt hangs until the daemon dies
        return "250 2.0.0 never said"


async def test_lease_of_an_attempt_killed_in_flight_is_recovered(
        gateway_home: GatewayFactory, template: Template) -> None:
    """kill -9 during a hanging delivery: on restart the lease is recovered and it is delivered."""
    gw = await gateway_home()
    hanging = await gw.inbox(template, SCHOOL_A, HangingInbox())
    assert isinstance(hanging, HangingInbox)
    message = gw.signal("VT-LEASE-1", SANNE)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(message)).code == 250
    await _wait_for(lambda: hanging.entered == 1)
    # The attempt is in flight: claimed under a lease, nothing recorded about its outcome.
    [(state, lease, attempts)] = gw.rows("SELECT state, lease_until, attempts FROM notices")
    assert (state, attempts) == ("queued", 1) and lease is not None
    assert await gw.proc.stop(signal.SIGKILL) == -signal.SIGKILL
    await hanging.stop()

    inbox = await gw.inbox(template, SCHOOL_A)  # the school is back, on the same port
    await gw.proc.launch(gw.listen)
    await _wait_for(lambda: gw.delivered("VT-LEASE-1") >= 1)
    assert await gw.proc.stop(signal.SIGTERM) == 0

    assert len(inbox.received) == 1 and hanging.received == []
    [(notice_id, state, crashes)] = gw.rows("SELECT id, state, crashes FROM notices")
    assert (state, crashes) == ("delivered", 1)
    recovered = [e for e in gw.proc.events() if e.get("event") == "notice.lease_recovered"]
    assert [e.get("notice") for e in recovered] == [notice_id]
    ref = gw.ref_of("VT-LEASE-1")
    assert ref is not None
    assert gw.events(ref) == ["accepted", "resolved", "sealed", "delivered"]
    await gw.verify_receipts()


async def test_second_serve_that_cannot_start_leaves_leases_alone(
        gateway_home: GatewayFactory, template: Template) -> None:
    """A second `serve` on the same state that fails to bind does not touch live leases."""
    gw = await gateway_home()
    hanging = await gw.inbox(template, SCHOOL_A, HangingInbox())
    assert isinstance(hanging, HangingInbox)
    await gw.proc.launch(gw.listen)
    assert (await gw.send(gw.signal("VT-TWICE-1", SANNE))).code == 250
    await _wait_for(lambda: hanging.entered == 1)
    second = DaemonProcess(gw.config.path, gw.proc.log.with_name("second.log"), gw.proc.tmpdir)
    second.proc = second.spawn()
    assert await second.exited() != 0  # the port is taken: it refuses to run
    assert gw.proc.proc is not None and gw.proc.proc.poll() is None
    [(lease, crashes)] = gw.rows("SELECT lease_until, crashes FROM notices")
    assert (lease is not None, crashes) == (True, 0), "the live attempt's lease was taken"


async def test_notice_that_keeps_crashing_is_parked_and_kept(harness: Harness) -> None:
    """A notice whose delivery stage keeps raising is parked after MAX_CRASHES, kept whole."""
    store = harness.ctx.store
    # A route the directory takes but no socket can (port 99999, as an old or hand-edited
    # database can hold): aiosmtplib raises OverflowError, which the deliver stage does not
    # classify, so every attempt of this notice crashes the delivery stage for real.
    async def body(tx: Tx) -> None:
        await tx.directory.set_school_route(SCHOOL_A, "127.0.0.1:99999")
        await tx.directory.bump_version()

    await store.write(body)
    reply = await harness.send(harness.signal(json_payload([SANNE], reference="VT-PARK-1")))
    assert reply.code == 250
    ref = reply.text.rsplit(" ", 1)[-1]

    await harness.drain()
    [first] = await store.notices.all()
    crashed_once = await store.notices.get(first.id)
    assert crashed_once is not None and crashed_once.crashes == 1, \
        "the bad route no longer crashes the delivery stage: this test needs another trigger"
    for _ in range(MAX_CRASHES - 1):
        harness.clock.advance(seconds=700)  # past the longest backoff (retry_max 600 s)
        await harness.drain()
    [notice] = await store.notices.all()
    assert notice.ref == ref and notice.state == "parked"
    assert notice.attempts == MAX_CRASHES and notice.lease_until is None
    row = await store.notices.get(notice.id)
    assert row is not None and row.crashes == MAX_CRASHES
    parked = [r for r in await store.receipts.all(ref=ref) if r.event == "parked"]
    assert len(parked) == 1 and parked[0].detail["notice"] == notice.id
    assert parked[0].school == SCHOOL_A

    # Parked means left alone: the runner claims it no more, however much time passes.
    harness.clock.advance(seconds=7200)
    assert await store.notices.due(harness.ctx.clock()) == []
    await harness.drain()
    row = await store.notices.get(notice.id)
    assert row is not None and (row.state, row.attempts) == ("parked", MAX_CRASHES)

    # Other notices still flow.
    other = await harness.send(harness.signal(json_payload([DAAN], reference="VT-PARK-2")))
    assert other.code == 250
    other_ref = other.text.rsplit(" ", 1)[-1]
    await harness.drain()
    [(text, result, _)] = harness.notices(SCHOOL_B)
    assert result.valid and child_refs(text) == [f"{other_ref}-1"]
    assert harness.inboxes[SCHOOL_A].received == []

    # Nothing was deleted: the parked notice keeps its sealed bytes, its child its vault blob.
    assert row.parcel and row.message_id and row.recipients
    [child] = await store.children.all(ref=ref)
    assert (child.state, child.notice_id) == ("sealed", notice.id)
    assert child.blob is not None
    assert await store.signals.get(ref) is not None
    assert (await admin.receipts_verify(store))[1] == []
