"""`calltrail-processor`: the one place that starts the call processor."""

from __future__ import annotations

import asyncio
import signal
import sys

from call_processor.consumer import CallProcessor
from call_processor.metrics import ProcessorMetrics
from calltrail_common.logging import configure_logging, get_logger
from calltrail_common.probes import ProbeServer
from calltrail_common.process import run_worker
from calltrail_common.settings import SettingsError, load_settings
from calltrail_common.topology import Topology


async def _run() -> None:
    settings = load_settings()
    configure_logging(settings)
    metrics = ProcessorMetrics()
    processor = CallProcessor(
        database_url=settings.database_url,
        amqp_url=settings.amqp_url.get_secret_value(),
        topology=Topology(settings.amqp_prefix),
        batch_size=settings.processor_batch_size,
        batch_wait_seconds=settings.processor_batch_wait_ms / 1000,
        retention_days=settings.event_retention_days,
        heartbeat_seconds=settings.amqp_heartbeat_seconds,
        command_timeout_seconds=settings.database_command_timeout_seconds,
        shutdown_grace_seconds=settings.processor_shutdown_grace_seconds,
        batches_in_flight=settings.processor_batches_in_flight,
        member_heartbeat_seconds=settings.processor_member_heartbeat_seconds,
        member_ttl_seconds=settings.processor_member_ttl_seconds,
        metrics=metrics,
    )
    probes = ProbeServer(metrics.registry, processor.not_ready)
    if settings.processor_metrics_port:
        await probes.start(settings.processor_host, settings.processor_metrics_port)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Finish the batch in hand (commit, ack), hand back the rest, then exit.
        loop.add_signal_handler(sig, processor.stop)
    get_logger("call_processor").info("processor_started")
    try:
        await processor.run()
    finally:
        await probes.close()
    get_logger("call_processor").info("processor_stopped")


def main() -> None:
    try:
        run_worker(_run())
    except SettingsError as error:
        sys.exit(f"calltrail-processor: {error}")


if __name__ == "__main__":
    main()
