"""`calltrail-metrics-sync`: the one place that starts metrics-sync."""

from __future__ import annotations

import asyncio
import signal
import sys

from calltrail_common.crypto import KeyRing
from calltrail_common.logging import configure_logging, get_logger
from calltrail_common.probes import ProbeServer
from calltrail_common.process import run_worker
from calltrail_common.settings import SettingsError, load_settings
from metrics_sync.metrics import SyncMetrics
from metrics_sync.worker import MetricsSync


async def _run() -> None:
    settings = load_settings()
    keyring = KeyRing.from_settings(settings)  # a missing or short key stops start-up here
    configure_logging(settings)
    metrics = SyncMetrics()
    service = MetricsSync(settings=settings, keyring=keyring, metrics=metrics)
    probes = ProbeServer(metrics.registry, service.not_ready)
    if settings.metrics_sync_metrics_port:
        await probes.start(settings.metrics_sync_host, settings.metrics_sync_metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish the runs in progress (or queue them again), then exit.
        loop.add_signal_handler(sig, service.stop)
    get_logger("metrics_sync").info("metrics_sync_started", worker=service.worker)
    try:
        await service.run()
    finally:
        await probes.close()
    get_logger("metrics_sync").info("metrics_sync_stopped")


def main() -> None:
    try:
        run_worker(_run())
    except SettingsError as error:
        sys.exit(f"calltrail-metrics-sync: {error}")


if __name__ == "__main__":
    main()
