"""`calltrail-dispatcher`: the one place that starts the outbound webhooks' dispatcher."""

from __future__ import annotations

import asyncio
import signal
import sys

from calltrail_common.logging import configure_logging, get_logger
from calltrail_common.probes import ProbeServer
from calltrail_common.process import run_worker
from calltrail_common.settings import SettingsError, load_settings
from dispatcher.metrics import DispatcherMetrics
from dispatcher.worker import Dispatcher


async def _run() -> None:
    settings = load_settings()
    configure_logging(settings)
    metrics = DispatcherMetrics()
    dispatcher = Dispatcher(settings, metrics=metrics)
    probes = ProbeServer(metrics.registry, dispatcher.not_ready)
    if settings.dispatcher_metrics_port:
        await probes.start(settings.dispatcher_host, settings.dispatcher_metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Let the attempts in flight end and be settled, hand back the rest, then exit.
        loop.add_signal_handler(sig, dispatcher.stop)
    get_logger("dispatcher").info("dispatcher_started", prefix=dispatcher.topology.prefix)
    try:
        await dispatcher.run()
    finally:
        await probes.close()
    get_logger("dispatcher").info("dispatcher_stopped")


def main() -> None:
    try:
        run_worker(_run())
    except SettingsError as error:
        sys.exit(f"calltrail-dispatcher: {error}")


if __name__ == "__main__":
    main()
