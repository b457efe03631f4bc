"""Metrics for the dashboard: a Prometheus endpoint on a loopback address (`[metrics] listen`).

Takes events from the stages (counters, gpg durations) and, every few seconds from the runner's
loop, the state of the store (gauges); produces the text format prometheus-client serves from
its own thread. Only counts, ages, school-free totals and key expiry per key class: nothing
about any child, sender case or school. The registry is the process's own, so tests can read it.

Every counter is exported from the start, at 0, for each label value it can take: a rate or an
alert on `hwc_signals_total{outcome="bad_signature"}` then works before the first one happens,
not from its first increase on. `hwc_next_deadline_seconds` has no sample while nothing waits:
0 would read as "a deadline now"; nor has `hwc_pickup_next_expiry_seconds` while no pickup
notice waits to be read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from gateway.core.model import RejectClass
from gateway.core.validate import HostPort

REGISTRY = CollectorRegistry()

SIGNALS = Counter("hwc_signals_total", "Signals received, by outcome (accepted, duplicate, "
                  "or the rejection class)", ["outcome"], registry=REGISTRY)
NOTICES = Counter("hwc_notice_attempts_total", "Delivery attempts, by result (delivered, "
                  "deferred, failed)", ["result"], registry=REGISTRY)
HELD = Counter("hwc_children_held_total", "Children held for an administrator",
               registry=REGISTRY)
GPG_SECONDS = Histogram("hwc_gpg_call_seconds", "Duration of gpg calls, by operation",
                        ["operation"], registry=REGISTRY,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
QUEUE = Gauge("hwc_queue_notices", "Notices by state", ["state"], registry=REGISTRY)
HELD_NOW = Gauge("hwc_held_children", "Children held right now", registry=REGISTRY)
OLDEST = Gauge("hwc_queue_oldest_seconds", "Age of the oldest notice not yet delivered",
               registry=REGISTRY)


class OptionalGauge:
    """A gauge without labels that has no sample at all while its value is None."""

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.value: float | None = None
        registry.register(self)

    def set(self, value: float | None) -> None:
        self.value = value

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> list[GaugeMetricFamily]:
        value = self.value
        if value is None:
            return []
        return [GaugeMetricFamily(self.name, self.documentation, value=value)]


DEADLINE = OptionalGauge("hwc_next_deadline_seconds", "Seconds until the earliest deadline of a "
                         "signal not yet delivered (negative: past); absent while none waits",
                         REGISTRY)
PICKUP_WAITING = Gauge("hwc_pickup_waiting", "Pickup notices delivered and not yet read on "
                       "the pickup page", registry=REGISTRY)
PICKUP_EXPIRY = OptionalGauge("hwc_pickup_next_expiry_seconds", "Seconds until the first link "
                              "of a pickup notice not yet read expires (negative: past); "
                              "absent while none waits", REGISTRY)
KEY_DAYS = Gauge("hwc_key_expiry_days", "Days until the first pinned key of each class expires",
                 ["key_class"], registry=REGISTRY)

STATES = ("queued", "delivered", "failed", "parked")
OUTCOMES = ("accepted", "duplicate", "deferred", *(kind.value for kind in RejectClass))
RESULTS = ("delivered", "deferred", "failed")
GPG_OPERATIONS = ("decrypt", "verify", "sign_encrypt", "other")

for _outcome in OUTCOMES:
    SIGNALS.labels(_outcome)
for _result in RESULTS:
    NOTICES.labels(_result)
for _operation in GPG_OPERATIONS:
    GPG_SECONDS.labels(_operation)


def serve(listen: HostPort) -> Any:
    """Start the endpoint in prometheus-client's own thread; returns its server."""
    server, _thread = start_http_server(listen.port, addr=listen.host, registry=REGISTRY)
    return server


def set_gauges(*, counts: dict[str, int], oldest: dt.timedelta | None,
               next_deadline: dt.timedelta | None,
               key_expiry: Iterable[tuple[str, dt.timedelta]], pickup_waiting: int = 0,
               pickup_expiry: dt.timedelta | None = None) -> None:
    """Pure over its arguments: the gauges from one look at the store and the keyring."""
    PICKUP_WAITING.set(pickup_waiting)
    PICKUP_EXPIRY.set(pickup_expiry.total_seconds() if pickup_expiry is not None else None)
    for state in STATES:
        QUEUE.labels(state).set(counts.get(f"notice.{state}", 0))
    HELD_NOW.set(counts.get("child.held", 0))
    OLDEST.set(oldest.total_seconds() if oldest else 0)
    DEADLINE.set(next_deadline.total_seconds() if next_deadline is not None else None)
    soonest: dict[str, float] = {}
    for key_class, left in key_expiry:
        days = left.total_seconds() / 86400
        soonest[key_class] = min(days, soonest.get(key_class, days))
    for key_class, days in soonest.items():
        KEY_DAYS.labels(key_class).set(days)
