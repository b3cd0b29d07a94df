"""metrics-sync's Prometheus metrics, served with its probes on METRICS_SYNC_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class SyncMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = Counter(
            "calltrail_sync_runs", "Account sync runs ended, by outcome.", ["outcome"],
            registry=self.registry)
        self.failures = Counter(
            "calltrail_sync_failures", "Failed account sync runs, by reason.", ["reason"],
            registry=self.registry)
        self.run_seconds = Histogram(
            "calltrail_sync_run_seconds", "Duration of one account's sync run.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry)
        self.running = Gauge(
            "calltrail_sync_running", "Account syncs in progress in this replica.",
            registry=self.registry)
        self.lag_seconds = Gauge(
            "calltrail_sync_lag_seconds",
            "How far the most overdue connected account is behind its schedule.",
            registry=self.registry)
        self.calls_published = Counter(
            "calltrail_sync_calls_published", "Call snapshots published to the pipeline.",
            registry=self.registry)
