"""The dispatcher's Prometheus metrics, served with its probes on DISPATCHER_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DispatcherMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.deliveries = Counter(
            "calltrail_dispatcher_deliveries",
            "Delivery messages handled, by outcome: succeeded, failed (to be retried), dead "
            "(retries exhausted), skipped (endpoint disabled), deferred (endpoint's slots "
            "full), dropped (endpoint or delivery gone), invalid (no delivery named).",
            ["outcome"], registry=self.registry)
        self.attempt_seconds = Histogram(
            "calltrail_dispatcher_attempt_seconds",
            "One attempt's time, connect to the end of the answer read.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry)
        self.in_flight = Gauge(
            "calltrail_dispatcher_in_flight", "Attempts in flight in this replica.",
            registry=self.registry)
        self.relayed = Counter(
            "calltrail_dispatcher_relayed",
            "Deliveries published from the outbox to the dispatcher's queue.",
            registry=self.registry)
        self.relay_lag_seconds = Gauge(
            "calltrail_dispatcher_relay_lag_seconds",
            "Age of the oldest delivery the last relay pass published (0: it found none).",
            registry=self.registry)
        self.endpoints_disabled = Counter(
            "calltrail_dispatcher_endpoints_disabled",
            "Endpoints this replica disabled for failing longer than "
            "WEBHOOKS_DISABLE_AFTER_HOURS.", registry=self.registry)
        self.broker_connected = Gauge(
            "calltrail_dispatcher_broker_connected", "1 while consuming.",
            registry=self.registry)
        self.paused = Gauge(
            "calltrail_dispatcher_paused", "1 while the database is unreachable.",
            registry=self.registry)
