"""The call processor's Prometheus metrics, served with its probes on PROCESSOR_METRICS_PORT."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProcessorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "calltrail_processor_events", "Events handled, by outcome.", ["outcome"],
            registry=self.registry)
        self.batch_seconds = Histogram(
            "calltrail_processor_batch_seconds", "Time to apply one batch, commit included.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry)
        self.broker_connected = Gauge(
            "calltrail_processor_broker_connected", "1 while consuming.",
            registry=self.registry)
        self.paused = Gauge(
            "calltrail_processor_paused", "1 while the database is unreachable.",
            registry=self.registry)
        self.partitions = Gauge(
            "calltrail_processor_partitions",
            "Partition queues this replica consumes now.", registry=self.registry)
        self.members = Gauge(
            "calltrail_processor_members",
            "Processor replicas alive, as this one last saw them.", registry=self.registry)
        self.lag_seconds = Gauge(
            "calltrail_processor_lag_seconds",
            "Age of the newest event of the last committed batch (now minus its x-received-at).",
            registry=self.registry)
        self.live_published = Counter(
            "calltrail_processor_live_published",
            "Live-board messages published (one per committed batch that changed calls).",
            registry=self.registry)
        self.live_dropped = Counter(
            "calltrail_processor_live_dropped",
            "Live-board messages dropped, by reason (broker_down, backlog, publish_failed): "
            "the boards resync from the database.", ["reason"], registry=self.registry)

    def batch_committed(self, received_at_ms: Iterable[object]) -> None:
        """Set the lag from the `x-received-at` headers (epoch ms) of the events a batch
        committed; values that are not a number are left out (the header is another
        producer's word)."""
        stamps = [v for v in received_at_ms
                  if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)]
        if stamps:
            # Clocks of ingest and processor hosts may differ a little: never below zero.
            self.lag_seconds.set(max(0.0, time.time() - max(stamps) / 1000))
