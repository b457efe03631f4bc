"""Metrics: the Prometheus endpoint on loopback, what it counts, and what it shows at start."""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import SANNE_BIRTH, HarnessFactory
from crash_gateway import (
    GatewayFactory,
    gateway_home_fixture,  # noqa: F401  (the fixture gateway_home)
)
from test_process import free_port

from gateway.core.config import ConfigError, load_config
from gateway.devkit.demokit import json_payload
from gateway.observe import metrics
from gateway.service import watch


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


async def test_endpoint_counts_signals_notices_and_gpg(harness_factory: HarnessFactory) -> None:
    """A scrape shows signals by outcome, delivery attempts, gpg durations and the gauges."""
    port = free_port()
    h = await harness_factory(extra_config=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    accepted = sample("hwc_signals_total", outcome="accepted")
    rejected = sample("hwc_signals_total", outcome="bad_signature")
    delivered = sample("hwc_notice_attempts_total", result="delivered")
    payload = json_payload([{"name": "Sanne de Vries", "birthdate": SANNE_BIRTH.isoformat()}])
    assert (await h.send(h.signal(payload))).code == 250
    assert (await h.send(h.signal(payload, signer=h.ids.stranger))).code == 554
    await h.drain()
    await watch.update_metrics(h.ctx, h.clock(), with_keys=True)
    assert sample("hwc_signals_total", outcome="accepted") == accepted + 1
    assert sample("hwc_signals_total", outcome="bad_signature") == rejected + 1
    assert sample("hwc_notice_attempts_total", result="delivered") == delivered + 1
    assert sample("hwc_gpg_call_seconds_count", operation="decrypt") >= 2
    assert sample("hwc_queue_notices", state="delivered") == 1
    assert sample("hwc_key_expiry_days", key_class="gateway") > 300
    body = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read())
    text = body.decode()
    assert 'hwc_signals_total{outcome="accepted"}' in text and "hwc_gpg_call_seconds" in text
    assert "Sanne" not in text and "12AB00" not in text


def test_metrics_must_listen_on_loopback(tmp_path: Path) -> None:
    """An unauthenticated endpoint on a network address is a configuration error."""
    (tmp_path / "c.toml").write_text('[gateway]\naddress = "a@b.nl"\n'
                                     '[metrics]\nlisten = "0.0.0.0:9464"\n')
    with pytest.raises(ConfigError, match="loopback"):
        load_config(tmp_path / "c.toml")


def scrape(port: int) -> str:
    """The endpoint's text, once it answers (at most 20 seconds after the daemon listens)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
                return str(reply.read().decode())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


async def test_a_fresh_daemon_exports_every_counter_at_zero_and_no_deadline(
        gateway_home: GatewayFactory) -> None:
    """Scraped at start, the real daemon shows each counter at 0 for every label value it can
    take (so rates and alerts work before the first event), and no next-deadline sample while
    nothing waits (0 would read as a deadline now)."""
    gw = await gateway_home()
    port = free_port()
    gw.config.path.write_text(gw.config.path.read_text()
                              + f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
    await gw.proc.launch(gw.listen)
    text = await asyncio.to_thread(scrape, port)
    for outcome in ("accepted", "duplicate", "deferred", "not_encrypted", "bad_signature",
                    "invalid_signal", "too_large"):
        assert f'hwc_signals_total{{outcome="{outcome}"}} 0.0' in text, text
    for result in ("delivered", "deferred", "failed"):
        assert f'hwc_notice_attempts_total{{result="{result}"}} 0.0' in text, text
    assert "hwc_children_held_total 0.0" in text
    assert 'hwc_gpg_call_seconds_count{operation="decrypt"} 0.0' in text
    assert "hwc_next_deadline_seconds" not in text
    assert await gw.proc.stop(signal.SIGTERM) == 0


def test_next_deadline_is_absent_while_nothing_waits() -> None:
    """The deadline gauge has a sample while a signal waits (negative once past) and none
    after: not a 0 that would read as "due now"."""
    metrics.set_gauges(counts={}, oldest=None, next_deadline=dt.timedelta(seconds=-30),
                       key_expiry=[])
    assert metrics.REGISTRY.get_sample_value("hwc_next_deadline_seconds") == -30
    metrics.set_gauges(counts={}, oldest=None, next_deadline=None, key_expiry=[])
    assert metrics.REGISTRY.get_sample_value("hwc_next_deadline_seconds") is None
