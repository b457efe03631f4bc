"""The daemon as `kill -9` tests run it: a gateway home with its own `hwc-gateway serve`
process, school inboxes on free ports, and the checks after a restart (tests/test_crash.py,
tests/test_crash_leases.py)."""

from __future__ import annotations

import asyncio
import json
import os
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
    Identities,
    Template,
    copy_gateway_state,
    onboard,
)
from test_process import Process, free_port

from gateway.admin.receipts import receipts_verify
from gateway.core import faults
from gateway.core.config import Config
from gateway.crypto.keyadmin import stop_agent
from gateway.crypto.vault import Vault
from gateway.devkit.demokit import (
    Received,
    Reply,
    SchoolInbox,
    build_signal,
    json_payload,
    submit,
)
from gateway.pipeline.context import open_context
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
            count, problems = await receipts_verify(store)
        finally:
            await store.close()
        assert count > 0 and problems == []


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture(name="gateway_home")
async def gateway_home_fixture(identities: Identities, template: Template,
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


@dataclass
class HangingInbox(SchoolInbox):
    """A school server that takes the whole message and then never answers."""

    entered: int = 0
    never: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.entered += 1
        await self.never.wait()  # never set: the attempt hangs until the daemon dies
        return "250 2.0.0 never said"
