"""Metrics: the Prometheus endpoint on loopback, and what it counts."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import pytest
from conftest import SANNE_BIRTH, HarnessFactory
from test_process import free_port

from gateway import metrics, watch
from gateway.config import ConfigError, load_config
from gateway.demokit import json_payload


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
