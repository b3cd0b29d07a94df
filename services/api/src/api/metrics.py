"""The api's Prometheus metrics, on a registry of its own (one per app instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "calltrail_api_requests", "Requests answered, by route and HTTP status.",
            ["route", "status"], registry=self.registry)
        self.seconds = Histogram(
            "calltrail_api_request_seconds", "Time to answer a request, by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
            registry=self.registry)
        self.live_boards = Gauge(
            "calltrail_api_live_boards", "Live boards (Server-Sent Event streams) open now.",
            registry=self.registry)
        self.live_dropped = Counter(
            "calltrail_api_live_boards_dropped",
            "Live boards dropped, by reason: slow (the browser did not keep up) or resync "
            "(the feed may have missed changes); each reconnects and resyncs.", ["reason"],
            registry=self.registry)
