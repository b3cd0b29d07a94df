"""The call processor's Prometheus metrics, served with its probes on PROCESSOR_METRICS_PORT."""

from __future__ import annotations

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
