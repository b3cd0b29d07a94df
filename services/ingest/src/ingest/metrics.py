"""Ingest's Prometheus metrics, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "calltrail_ingest_requests", "Webhook requests answered, by HTTP status.",
            ["status"], registry=self.registry)
        self.events = Counter(
            "calltrail_ingest_events", "Accepted events, by where they were made durable.",
            ["kept"], registry=self.registry)
        self.publish_seconds = Histogram(
            "calltrail_ingest_publish_seconds",
            "Time from publish to the broker's confirm.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry)
        self.broker_connected = Gauge(
            "calltrail_ingest_broker_connected", "1 while the broker connection is up.",
            registry=self.registry)
        self.spool_depth = Gauge(
            "calltrail_ingest_spool_depth", "Events in the spool not yet re-published.",
            registry=self.registry)
        # Bound once: the hot path should not look label values up per request.
        self._accepted = self.requests.labels("200")
        self._kept = {kept: self.events.labels(kept) for kept in ("published", "spooled")}

    def accepted(self, kept: str) -> None:
        self._accepted.inc()
        self._kept[kept].inc()
