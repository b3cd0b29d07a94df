"""The call processor's Prometheus metrics, served on PROCESSOR_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from calltrail_common.logging import get_logger

log = get_logger("call_processor")


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

    def serve(self, port: int) -> None:
        if not port:
            return
        try:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)  # noqa: S104
        except OSError as error:  # another replica on this host has the port: run without
            log.warning("metrics_port_unavailable", port=port, error=str(error))
