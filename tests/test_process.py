"""The real daemon as systemd runs it: `hwc-gateway serve` in its own process.

Covers what only a separate process can show: a `kill -9` with a notice waiting loses nothing,
SIGTERM stops cleanly, personal data never reaches the logs, the database or temp files, and a
second daemon on the same state is refused beside the first. The other faults that keep `serve`
from starting are in tests/test_start_faults.py. Other tests of separate processes import
`Process`, `_wait_for` and `free_port` from here."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import (
    GATEWAY,
    PASSWORD,
    SCHOOL_A,
    SCHOOL_B,
    SENDER,
    SENDER_ADDRESS,
    Identities,
    Template,
    copy_gateway_state,
    onboard,
)
from conftest import free_port as free_port  # re-exported: other tests import it from here
from daemon_cli import one_line_refusal, run_serve, run_verb

from gateway.core.config import load_config
from gateway.crypto.keyadmin import stop_agent
from gateway.devkit.demokit import SchoolInbox, build_signal, json_payload, read_notice, submit
from gateway.pipeline.context import open_context

# A name, a birth date and a BSN that occur nowhere else, to be searched for everywhere.
CANARY_NAME = "Kanarie Zwaluwstaart"
CANARY_BIRTH = dt.date(dt.date.today().year - 8, 2, 28)
CANARY_BSN = "111222333"
CANARY_STRINGS = ["Kanarie", "Zwaluwstaart", "Merelzang", "Roodborst", "Zanglijster", "kanarie",
                  "zwaluwstaart", "aangehouden", "VT-CANARY", CANARY_BSN,
                  CANARY_BIRTH.isoformat(), f"{CANARY_BIRTH:%d-%m-%Y}", f"{CANARY_BIRTH:%Y%m%d}"]


class Process:
    """`hwc-gateway serve` with its output going to a file we can search afterwards."""

    def __init__(self, config: Path, log: Path, tmpdir: Path) -> None:
        self.config, self.log, self.tmpdir = config, log, tmpdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        env = {**os.environ, "TMPDIR": str(self.tmpdir), "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "--config", str(self.config), "serve"],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the daemon did not start listening")

    def kill(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)


@pytest.fixture
def process_setup(identities: Identities, template: Template,
                  tmp_path: Path) -> Iterator[tuple[Path, int, int, int, Process]]:
    listen, school_port, other_port = free_port(), free_port(), free_port()
    config = copy_gateway_state(template, tmp_path / "gw", listen=listen, retry_min=1)
    register = ("bsn;naam;geboortedatum;vestigingscode\n"
                f"{CANARY_BSN};{CANARY_NAME};{CANARY_BIRTH:%d-%m-%Y};{SCHOOL_A}\n")

    async def setup() -> None:
        ctx = await open_context(config)
        try:
            await onboard(ctx, identities, {SCHOOL_A: school_port, SCHOOL_B: other_port},
                          pupils_csv=register)
        finally:
            await ctx.close()

    asyncio.run(setup())
    stop_agent(config.gnupg_home)
    (tmp_path / "tmp").mkdir()
    proc = Process(config.path, tmp_path / "daemon.log", tmp_path / "tmp")
    yield config.path, listen, school_port, other_port, proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill(signal.SIGKILL)
    stop_agent(config.gnupg_home)


def _receipt_events(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in con.execute("SELECT event FROM receipts ORDER BY seq")]
    finally:
        con.close()


async def _wait_for(condition: Callable[[], bool]) -> None:
    """Poll a condition about the other process's effects; fail after 30 seconds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _current_gateway_fpr(db: Path) -> str:
    """The fingerprint of the gateway's current key, read from its database."""
    con = sqlite3.connect(db)
    gateway_fpr = con.execute(
        "SELECT fingerprint FROM gateway_keys WHERE state = 'current'").fetchone()[0]
    con.close()
    return str(gateway_fpr)


def _assert_no_canary_anywhere(replies: list[str], proc: Process, config_path: Path,
                               db: Path) -> None:
    """No canary string in any reply, the daemon's log, its state and key directories (the
    database with its WAL included) or its temp dir; one child held, one failed, and each path's
    event logged."""
    for reply in replies:
        for canary in CANARY_STRINGS:
            assert canary not in reply, f"{canary!r} in the reply {reply!r}"
    searched = [proc.log, *config_path.parent.joinpath("var").iterdir(), *proc.tmpdir.rglob("*")]
    searched += [p for p in config_path.parent.joinpath("keys").rglob("*")
                 if p.is_file() and not p.name.startswith("S.")]
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM children WHERE state = 'held'").fetchone()[0] == 1
    assert con.execute("SELECT count(*) FROM children WHERE state = 'failed'").fetchone()[0] == 1
    con.close()
    log_text = proc.log.read_text()
    for event in ("signal.accepted", "signal.duplicate", "signal.rejected", "notice.failed",
                  "notice.delivered"):
        assert event in log_text
    for path in searched:
        if path.is_file():
            data = path.read_bytes()
            for canary in CANARY_STRINGS:
                assert canary.encode() not in data, f"{canary!r} found in {path}"


async def test_kill_9_with_notice_waiting_loses_nothing(
        process_setup: tuple[Path, int, int, int, Process], identities: Identities,
        template: Template) -> None:
    """After a 250, kill -9 and a restart: the waiting notice is delivered exactly once; and no
    canary name, date, BSN, case reference or incident text is left in any log, reply,
    receipt, database or temp file, through every path: delivered, held, failed, duplicate
    and rejected."""
    config_path, listen, school_port, other_port, proc = process_setup
    db = config_path.parent / "var" / "hwc-gateway.sqlite3"
    gateway_fpr = _current_gateway_fpr(db)
    ca = config_path.parent / "keys" / "tls" / "ca.pem"

    async def send(children: list[dict[str, str]], reference: str) -> str:
        message = build_signal(
            json_payload(children, reference=reference,
                         incident="Kanarie-incident: politie ter plaatse, vader aangehouden"),
            identities.sender, gateway_fpr, mail_from=SENDER_ADDRESS, rcpt=GATEWAY)
        reply = await submit("127.0.0.1", listen, user=SENDER, password=PASSWORD,
                             mail_from=SENDER_ADDRESS, rcpt=GATEWAY, message=message,
                             ca_file=ca)
        replies.append(str(reply))
        return str(reply)

    replies: list[str] = []
    failing = SchoolInbox()  # school B answers every delivery with a permanent refusal
    failing.fail_next("554 5.7.1 Mailbox disabled", times=10)
    await failing.start(template.school_cert, port=other_port)
    proc.start(listen)
    try:
        signal_children = [
            {"name": CANARY_NAME, "birthdate": CANARY_BIRTH.isoformat(), "bsn": CANARY_BSN},
            # Not in the register and no school named: held, and kept at rest.
            {"name": "Kanarie Merelzang", "birthdate": CANARY_BIRTH.isoformat()},
            # Named for school B, whose server refuses: the notice fails.
            {"name": "Kanarie Roodborst", "birthdate": CANARY_BIRTH.isoformat(),
             "school": SCHOOL_B},
        ]
        assert (await send(signal_children, "VT-CANARY-1")).startswith("250 2.0.0 Signal acc")
        assert "already accepted" in await send(signal_children, "VT-CANARY-1")
        rejected = await send([{"name": "Kanarie Zanglijster", "birthdate": "31-02-2016"}],
                              "VT-CANARY-2")
        assert rejected.startswith("554 5.6.0")
        # School A's server is down: the daemon defers its notice. Then it dies hard.
        await _wait_for(lambda: "deferred" in _receipt_events(db))
        await _wait_for(lambda: "failed" in _receipt_events(db))
        assert proc.kill(signal.SIGKILL) == -signal.SIGKILL
    finally:
        await failing.stop()

    inbox = SchoolInbox()
    await inbox.start(template.school_cert, port=school_port)
    try:
        proc.start(listen)
        await _wait_for(lambda: len(inbox.received) >= 1)
        await _wait_for(lambda: "delivered" in _receipt_events(db))
        # A second resend would show up here: give the daemon a moment to misbehave.
        await asyncio.sleep(1.5)
        assert len(inbox.received) == 1
        text, result = read_notice(inbox.received[0], identities.school_a)
        assert f"Naam: {CANARY_NAME}" in text and result.valid
        assert "Merelzang" not in text and "Roodborst" not in text and "incident" not in text
        assert proc.kill(signal.SIGTERM) == 0
    finally:
        await inbox.stop()

    _assert_no_canary_anywhere(replies, proc, config_path, db)


def test_second_daemon_on_the_same_state_is_refused_beside_the_first(
        process_setup: tuple[Path, int, int, int, Process], tmp_path: Path) -> None:
    """A second `serve` on the same state with another port: one line naming the lock file and
    the first daemon's pid, exit 1; the first keeps serving, the other verbs still work,
    `status` sees this state's daemon up and check-config says the port is the gateway's own."""
    config_path, listen, _, _, proc = process_setup
    proc.start(listen)
    assert proc.proc is not None
    other = config_path.with_name("other.toml")
    other.write_text(config_path.read_text().replace(f"127.0.0.1:{listen}",
                                                     f"127.0.0.1:{free_port()}"))
    lock = load_config(config_path).storage.path.with_name("hwc-gateway.sqlite3.lock")
    one_line_refusal(run_serve(other, proc.tmpdir), str(lock), f"pid {proc.proc.pid}")
    assert proc.proc.poll() is None
    verify = subprocess.run([sys.executable, "-m", "gateway", "--config", str(other), "receipts",
                             "verify"], capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0 and "intact" in verify.stdout, verify.stderr
    status = run_verb(config_path, "status", "--json")
    assert json.loads(status.stdout)["listener"]["up"] is True, status.stdout
    checked = run_verb(config_path, "check-config")
    assert checked.returncode == 0, checked.stderr
    assert f"by the running gateway of this state (pid {proc.proc.pid})" in checked.stdout
    assert proc.kill(signal.SIGTERM) == 0
    # The lock went with the daemon: the same state starts again.
    proc.start(listen)
    assert proc.kill(signal.SIGTERM) == 0
