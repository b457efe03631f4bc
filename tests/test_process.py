"""The real daemon as systemd runs it: `hwc-gateway serve` in its own process.

Covers what only a separate process can show: a `kill -9` with a notice waiting loses nothing,
SIGTERM stops cleanly, personal data never reaches the logs, the database or temp files, and
what keeps `serve` from starting (its port in use, a second daemon on the same state, state it
cannot use) is one line and exit 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
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

from gateway.core.config import Config, load_config
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


async def test_kill_9_with_notice_waiting_loses_nothing(
        process_setup: tuple[Path, int, int, int, Process], identities: Identities,
        template: Template) -> None:
    """After a 250, kill -9 and a restart: the waiting notice is delivered exactly once; and no
    canary name, date, BSN, case reference or incident text is left in any log, reply,
    receipt, database or temp file, through every path: delivered, held, failed, duplicate
    and rejected."""
    config_path, listen, school_port, other_port, proc = process_setup
    db = config_path.parent / "var" / "hwc-gateway.sqlite3"
    con = sqlite3.connect(db)
    gateway_fpr = con.execute(
        "SELECT fingerprint FROM gateway_keys WHERE state = 'current'").fetchone()[0]
    con.close()
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

    # The canary sweep: replies, logs, database (with WAL), temp dir, key and state directories.
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


# -- faults an operator meets at start: one line each, exit 1, never a traceback (issue 12) -----

def run_serve(config: Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """`hwc-gateway serve` expected to refuse: its exit code and output once it has ended."""
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), "serve"],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def one_line_refusal(result: subprocess.CompletedProcess[str], *names: str) -> str:
    """Exit 1, exactly one line on stderr naming each of `names`, no traceback anywhere."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "gateway.started" not in output, output
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, result.stderr
    for name in names:
        assert name in result.stderr, result.stderr
    return result.stderr


def gateway_state(template: Template, base: Path, storage: Path | None = None) -> Config:
    """A gateway home whose `[storage] path` is `storage` (default: its own var/)."""
    config = copy_gateway_state(template, base, listen=free_port())
    if storage is not None:
        text = config.path.read_text().replace(str(config.storage.path), str(storage))
        config.path.write_text(text)
    (base / "tmp").mkdir()
    return load_config(config.path)


def test_serve_with_its_port_in_use_says_so_in_one_line(template: Template,
                                                         tmp_path: Path) -> None:
    """A port another program holds: one line naming the address, exit 1."""
    config = gateway_state(template, tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", config.smtp.listen.port))
        holder.listen()
        result = run_serve(config.path, tmp_path / "tmp")
    line = one_line_refusal(result, str(config.smtp.listen))
    assert "in use" in line
    stop_agent(config.gnupg_home)


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


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` where nothing can be created, for root too: immutable (chattr +i) as root,
    mode 0500 for anyone else. Skips where neither holds (a file system without chattr)."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(directory)], capture_output=True,
                              check=False) if shutil.which("chattr") else None
        if made is None or made.returncode != 0:
            pytest.skip("root, and chattr +i does not work here")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o500)
        try:
            yield
        finally:
            directory.chmod(0o700)


@pytest.mark.parametrize("fault", ["parent_is_a_file", "path_is_a_directory", "not_a_database",
                                   "read_only_directory"])
def test_serve_on_state_it_cannot_use_says_so_in_one_line(template: Template, tmp_path: Path,
                                                          fault: str) -> None:
    """A state directory that cannot be made (its parent is a file), a storage path that is a
    directory or a file that is not a database, a state directory nothing can be created in
    (immutable, as root): each is one line naming the path, exit 1. Every case fails for root
    as well: none relies on file modes alone."""
    database = {"parent_is_a_file": tmp_path / "state" / "var" / "hwc.sqlite3",
                "path_is_a_directory": tmp_path / "state",
                "not_a_database": tmp_path / "state",
                "read_only_directory": tmp_path / "state" / "hwc.sqlite3"}[fault]
    config = gateway_state(template, tmp_path / "gw", database)
    if fault == "parent_is_a_file":
        (tmp_path / "state").write_text("a file where the state directory should be\n")
    elif fault == "path_is_a_directory":
        (tmp_path / "state").mkdir()
    elif fault == "not_a_database":
        (tmp_path / "state").write_text("not a database\n" * 100)
    else:
        (tmp_path / "state").mkdir()
    guard = read_only(tmp_path / "state") if fault == "read_only_directory" \
        else contextlib.nullcontext()
    with guard:
        result = run_serve(config.path, tmp_path / "gw" / "tmp")
    line = one_line_refusal(result, str(tmp_path / "state"))
    assert {"parent_is_a_file": "is a file, not a directory",
            "path_is_a_directory": "is a directory, not a database file",
            "not_a_database": "is not a SQLite database",
            "read_only_directory": "is not writable"}[fault] in line
    stop_agent(config.gnupg_home)


@pytest.mark.parametrize("fault", ["path_is_a_directory", "not_a_database"])
@pytest.mark.parametrize("verb", [["status"], ["held", "list"], ["receipts", "verify"]])
def test_other_verbs_on_state_they_cannot_use_say_so_in_one_line(
        template: Template, tmp_path: Path, fault: str, verb: list[str]) -> None:
    """The verbs beside `serve` answer a storage path that is a directory or not a database
    in one line too, exit 1, never a traceback."""
    config = gateway_state(template, tmp_path / "gw", tmp_path / "state")
    if fault == "path_is_a_directory":
        (tmp_path / "state").mkdir()
    else:
        (tmp_path / "state").write_text("not a database\n" * 100)
    line = one_line_refusal(run_verb(config.path, *verb), str(tmp_path / "state"))
    assert ("is a directory" if fault == "path_is_a_directory" else "not a SQLite") in line


def run_verb(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, check=False)


class ForeignSmtp:
    """Another program on the gateway's port: a plain socket that greets and hangs up."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"220 other ESMTP\r\n")

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()


def test_status_tells_another_program_on_the_port_from_this_gateway(template: Template,
                                                                      tmp_path: Path) -> None:
    """Another SMTP server on the configured port is not this gateway: `status` says the
    listener is not up, and that another program answers there (it used to count any
    program on the port as the gateway)."""
    config = gateway_state(template, tmp_path)
    foreign = ForeignSmtp(config.smtp.listen.port)
    try:
        result = run_verb(config.path, "status", "--json")
        text = run_verb(config.path, "status")
    finally:
        foreign.stop()
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["listener"]["up"] is False
    assert "another program, not this gateway" in data["listener"]["problem"]
    assert any("220 other ESMTP" in a and "not this gateway" in a for a in data["attention"])
    assert "not answering" not in " ".join(data["attention"])
    assert "DOWN" in text.stdout and "not this gateway" in text.stdout
    stop_agent(config.gnupg_home)


def test_check_config_names_what_would_keep_serve_from_starting(template: Template,
                                                               tmp_path: Path) -> None:
    """check-config reports, before any start, a state directory that cannot be made and a
    listen port another program holds, each naming its path or address; exit 1."""
    config = gateway_state(template, tmp_path / "gw", tmp_path / "state" / "var" / "hwc.sqlite3")
    (tmp_path / "state").write_text("a file\n")
    with socket.create_server(("127.0.0.1", config.smtp.listen.port)):
        result = run_verb(config.path, "check-config")
    assert result.returncode == 1 and result.stdout == "", result.stdout
    assert f"{tmp_path / 'state'} is a file, not a directory" in result.stderr
    assert f"cannot listen on {config.smtp.listen}: the port is in use" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "state").unlink()
    result = run_verb(config.path, "check-config")
    assert result.returncode == 0 and "valid" in result.stdout, result.stderr
