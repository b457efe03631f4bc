"""The daemon as systemd runs it: notify, watchdog, SIGTERM draining, SIGHUP reloading."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from test_crash import GatewayFactory, gateway_home  # noqa: F401 - the fixture is used below
from test_process import _wait_for
from test_smtp_limits import RawClient

from gateway.config import load_config
from gateway.daemon import reloaded_config

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


async def test_ready_watchdog_and_stopping_are_sent(gateway_home: GatewayFactory,  # noqa: F811
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
        gateway_home: GatewayFactory) -> None:  # noqa: F811
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
        gateway_home: GatewayFactory) -> None:  # noqa: F811
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
