"""The daemon as systemd runs it: notify, watchdog, SIGTERM draining (and the 421 at its end,
the gpg-agent stopped with it), SIGHUP reloading."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import structlog
from conftest import SANNE_BIRTH, SCHOOL_A, Harness
from crash_gateway import (
    GatewayFactory,
    HangingInbox,
    gateway_home_fixture,  # noqa: F401  (the fixture gateway_home)
)
from test_process import _wait_for
from test_smtp_limits import RawClient

from gateway.core.config import load_config
from gateway.devkit.demokit import json_payload
from gateway.observe.pulse import Pulse
from gateway.observe.sdnotify import notify
from gateway.service import runner
from gateway.service.daemon import reloaded_config

UNIT = Path(__file__).parent.parent / "systemd" / "hwc-gateway.service"


def notify_socket(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    return sock


async def messages(sock: socket.socket, until: str) -> list[str]:
    """Datagrams from the daemon until one contains `until` (at most 20 seconds)."""
    loop = asyncio.get_running_loop()
    got: list[str] = []
    async with asyncio.timeout(20):
        while not any(until in m for m in got):
            got.append((await loop.sock_recv(sock, 4096)).decode())
    return got


async def test_ready_watchdog_and_stopping_are_sent(gateway_home: GatewayFactory,
                                                    tmp_path: Path) -> None:
    """systemd hears READY=1 once listening, WATCHDOG=1 from the loop, STOPPING=1; exit 0."""
    gw = await gateway_home()
    sock = notify_socket(tmp_path / "notify")
    try:
        await gw.proc.launch(gw.listen, env={"NOTIFY_SOCKET": str(tmp_path / "notify"),
                                             "WATCHDOG_USEC": "2000000"})
        got = await messages(sock, "WATCHDOG=1")
        assert any(m.startswith("READY=1") for m in got)
        assert gw.proc.proc is not None
        gw.proc.proc.send_signal(signal.SIGTERM)
        assert any("STOPPING=1" in m for m in await messages(sock, "STOPPING=1"))
        assert await gw.proc.exited() == 0
    finally:
        sock.close()


async def test_sigterm_turns_new_sessions_away_and_lets_open_ones_finish(
        gateway_home: GatewayFactory) -> None:
    """After SIGTERM a new session gets 421 4.3.2; an open one still works; then exit 0."""
    gw = await gateway_home()
    await gw.proc.launch(gw.listen)
    client, greeting = await RawClient.connect(gw.listen)
    assert greeting.startswith("220")
    assert gw.proc.proc is not None
    gw.proc.proc.send_signal(signal.SIGTERM)
    # The daemon takes the signal in its own time: poll for its effect on a new session.
    async with asyncio.timeout(20):
        while True:
            late, greeting = await RawClient.connect(gw.listen)
            await late.close()
            if greeting.startswith("421"):
                break
    assert greeting.startswith("421 4.3.2")
    assert (await client.cmd("NOOP")).startswith("250"), "the open session was cut"
    assert (await client.cmd("QUIT")).startswith("221")
    await client.close()
    assert await gw.proc.exited() == 0
    assert "gateway.stopped" in gw.proc.log.read_text()


async def test_sighup_applies_what_it_can_and_names_the_rest(
        gateway_home: GatewayFactory) -> None:
    """SIGHUP reloads the teacher text and says the listener needs a restart."""
    gw = await gateway_home()
    await gw.proc.launch(gw.listen)
    text = gw.config.path.read_text()
    text = text.replace("[gateway]\n", '[gateway]\nteacher_text = "Nieuwe tekst."\n', 1)
    text = text.replace(f"127.0.0.1:{gw.listen}", "127.0.0.1:2599", 1)
    gw.config.path.write_text(text)
    assert gw.proc.proc is not None
    gw.proc.proc.send_signal(signal.SIGHUP)
    await _wait_for(lambda: any(e.get("event") == "gateway.reloaded"
                                for e in gw.proc.events()))
    [event] = [e for e in gw.proc.events() if e.get("event") == "gateway.reloaded"]
    assert event["applied"] == ["gateway.teacher_text"] and event["needs_restart"] == ["smtp"]
    assert await gw.proc.stop(signal.SIGTERM) == 0


def test_reloaded_config_keeps_what_needs_a_restart(tmp_path: Path) -> None:
    """Only delivery, schedule, alerts, retention and the teacher text change while running."""
    (tmp_path / "a.toml").write_text('[gateway]\naddress = "a@b.nl"\n')
    (tmp_path / "b.toml").write_text('[gateway]\naddress = "a@b.nl"\nteacher_text = "x"\n'
                                     '[smtp]\nlisten = "127.0.0.1:2600"\n'
                                     '[retention]\nheld_days = 3\n')
    old, new = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    config, applied, restart = reloaded_config(old, new)
    assert config.retention.held_days == 3 and config.gateway.teacher_text == "x"
    assert config.smtp == old.smtp and dataclasses.replace(config, retention=old.retention,
                                                           gateway=old.gateway) == old
    assert sorted(applied) == ["gateway.teacher_text", "retention"] and restart == ["smtp"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_file_verifies(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit (with ExecStart pointed at this checkout)."""
    executable = shutil.which("hwc-gateway") or str(Path(__file__).parent.parent / ".venv" /
                                                    "bin" / "hwc-gateway")
    unit = tmp_path / "hwc-gateway.service"
    unit.write_text(UNIT.read_text().replace("/opt/hwc-gateway/.venv/bin/hwc-gateway",
                                             executable))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_notify_never_blocks_on_a_reader_that_does_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With systemd's queue full, a notification is dropped (False) at once: the daemon's event
    loop never waits for it."""
    sock = notify_socket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    sent = 0
    while notify("WATCHDOG=1"):  # blocked here for ever, without the fix
        sent += 1
        assert sent < 100_000
    assert sent > 0
    sock.recv(4096)
    assert notify("WATCHDOG=1")
    sock.close()


def test_pulse_calls_a_loop_stuck_only_when_busy_without_progress() -> None:
    """A loop is stuck after `after` seconds busy without a beat; a beat starts the count again,
    a loop that rests is never stuck, and beats outside the loops count for nothing."""
    pulse = Pulse()
    pulse.beat()  # outside any loop: nothing to remember
    assert pulse.stuck(10**9, 1.0) == []

    async def loop(name: str, rest: bool) -> None:
        pulse.enter(name)
        pulse.beat()
        if rest:
            pulse.rest()

    async def both() -> None:
        await asyncio.gather(loop("sealing", rest=True), loop("delivery", rest=False))

    asyncio.run(both())
    now = time.monotonic()
    assert pulse.stuck(now, 60.0) == []
    assert pulse.stuck(now + 61.0, 60.0) == ["delivery"]


async def test_watchdog_is_not_fed_while_a_delivery_hangs(
        harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's loops feed systemd's watchdog only while both make progress: a delivery
    hanging past the stuck limit stops WATCHDOG=1 (so systemd restarts the service) and says
    `runner.stuck` once, naming the delivery loop; once it moves on, the pings come back."""
    sock = notify_socket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    monkeypatch.setattr(runner, "stuck_after", lambda config: 1.0)
    port = harness.inboxes[SCHOOL_A].port
    await harness.inboxes[SCHOOL_A].stop()
    hanging = HangingInbox()
    await hanging.start(harness.template.school_cert, port=port)
    harness.inboxes[SCHOOL_A] = hanging
    stop = asyncio.Event()

    async def pings(seconds: float) -> int:
        loop = asyncio.get_running_loop()
        count = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while True:
                    count += (await loop.sock_recv(sock, 4096)).decode().count("WATCHDOG=1")
        return count

    def queued() -> None:
        with contextlib.suppress(BlockingIOError):
            while sock.recv(4096):
                pass

    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(runner.run(harness.ctx, stop))
        try:
            assert await pings(0.5) > 0
            payload = json_payload([{"name": "Sanne de Vries",
                                     "birthdate": SANNE_BIRTH.isoformat()}])
            assert (await harness.send(harness.signal(payload))).code == 250
            await _wait_for(lambda: hanging.entered == 1)
            await asyncio.sleep(1.5)
            queued()  # sent before the loop was a second without progress
            assert await pings(0.5) == 0
            stuck = [e for e in logs if e["event"] == "runner.stuck"]
            assert [e["loops"] for e in stuck] == [["delivery"]]
            hanging.never.set()
            await _wait_for(lambda: not harness.ctx.pulse.stuck(time.monotonic(), 1.0))
            assert await pings(0.5) > 0
        finally:
            hanging.never.set()
            stop.set()
            await task
            sock.close()


async def test_sigterm_is_logged_at_once_and_sessions_left_after_the_grace_get_421(
        gateway_home: GatewayFactory) -> None:
    """SIGTERM is logged (`gateway.stopping`, naming the signal) when it arrives, before the
    grace runs out; a session still open at its end reads 421 4.3.2 and then the end of the
    connection, not a bare drop."""
    gw = await gateway_home(smtp_extra="shutdown_grace_seconds = 2")
    await gw.proc.launch(gw.listen)
    client, greeting = await RawClient.connect(gw.listen)
    assert greeting.startswith("220")
    assert (await client.cmd("EHLO sender.example")).startswith("250")
    assert gw.proc.proc is not None
    gw.proc.proc.send_signal(signal.SIGTERM)
    await _wait_for(lambda: any(e.get("event") == "gateway.stopping" for e in gw.proc.events()))
    assert gw.proc.proc.poll() is None, "the stop was logged only at the end of the grace"
    [stopping] = [e for e in gw.proc.events() if e.get("event") == "gateway.stopping"]
    assert stopping["signal"] == "SIGTERM" and stopping["grace_seconds"] == 2
    async with asyncio.timeout(20):
        assert (await client.reply()).startswith("421 4.3.2")
        assert await client.reader.read() == b""
    await client.close()
    assert await gw.proc.exited() == 0
    events = [e.get("event") for e in gw.proc.events()]
    assert events.index("gateway.stopping") < events.index("gateway.sessions_cut") \
        < events.index("gateway.stopped")


def agent_answers(home: Path) -> bool:
    """Whether a gpg-agent for `home` answers on its socket."""
    path = subprocess.run(["gpgconf", "--homedir", str(home), "--list-dirs", "agent-socket"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
        return sock.recv(64).startswith(b"OK")


async def test_the_gpg_agent_stops_with_the_daemon(
        gateway_home: GatewayFactory) -> None:
    """After SIGTERM no gpg-agent of the gateway's GnuPG home is left running."""
    gw = await gateway_home()
    await gw.proc.launch(gw.listen)
    home = gw.config.gnupg_home
    # What a first decryption does: gpg starts the home's agent, which then stays.
    await asyncio.to_thread(subprocess.run, ["gpg-connect-agent", "--homedir", str(home),
                                             "/bye"], capture_output=True, check=True)
    assert await asyncio.to_thread(agent_answers, home)
    assert await gw.proc.stop(signal.SIGTERM) == 0
    assert not await asyncio.to_thread(agent_answers, home)
