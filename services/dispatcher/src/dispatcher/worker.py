"""The dispatcher (decision 40): the relay and the senders of one replica, on one broker link.

Any number of replicas run side by side: the relay's `SKIP LOCKED` shares the outbox out,
and the queue shares the deliveries. A replica is ready while it consumes from the broker
and reaches Postgres.

SIGTERM: the relay stops after its batch, no more deliveries are taken, the attempts in
flight get WEBHOOKS_TIMEOUT_SECONDS (plus a little) to end, be logged and settled; the rest
are left unacknowledged, so the broker delivers them again (to another replica, or this one
when it is back). Then the delivery log's last batch is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import asyncpg

from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.db import TRANSIENT_ERRORS, create_pool
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings
from calltrail_common.settlement import Settlement
from calltrail_common.topology import DISPATCHER, Topology
from dispatcher import repository
from dispatcher.consumer import Consumption, EndpointSlots, Senders, SettlementFailed
from dispatcher.endpoints import EndpointCache
from dispatcher.metrics import DispatcherMetrics
from dispatcher.recorder import OutcomeRecorder
from dispatcher.relay import Relay
from dispatcher.repository import EndpointRow
from dispatcher.sender import CheckedNetwork, Sender

log = get_logger("dispatcher")

RELAY_BATCH_SIZE = 500
# A rotated secret, an edited URL or a disabled endpoint takes effect within this.
ENDPOINT_CACHE_SECONDS = 2.0
# After SIGTERM: the delivery log's last batch is written within this, after the drain.
RECORDER_CLOSE_SECONDS = 5.0
_PAUSE_MAX_SECONDS = 5.0
_POOL_ACQUIRE_TIMEOUT_SECONDS = 10.0


def shutdown_grace_seconds(settings: Settings) -> float:
    """How long attempts in flight may take to end after SIGTERM: one attempt's whole time,
    and a little to write and settle it."""
    return settings.webhooks_timeout_seconds + 2.0


def dispatcher_topology(settings: Settings) -> Topology:
    """The topology under AMQP_PREFIX, with WEBHOOKS_RETRY_DELAYS_MS when set."""
    topology = Topology(settings.amqp_prefix)
    if settings.webhooks_retry_delays_ms:
        topology = topology.with_retry_delays(DISPATCHER, settings.webhooks_retry_delays_ms)
    return topology


class Dispatcher:
    def __init__(self, settings: Settings, *, metrics: DispatcherMetrics | None = None,
                 network: CheckedNetwork | None = None,
                 relay_batch_size: int = RELAY_BATCH_SIZE,
                 endpoint_cache_seconds: float = ENDPOINT_CACHE_SECONDS) -> None:
        self.metrics = metrics or DispatcherMetrics()
        self.topology = dispatcher_topology(settings)
        self._database_url = settings.database_url
        self._command_timeout = settings.database_command_timeout_seconds
        self._concurrency = settings.webhooks_concurrency
        self._grace = shutdown_grace_seconds(settings)
        self._link = BrokerLink(settings.amqp_url.get_secret_value(), self.topology,
                                heartbeat_seconds=settings.amqp_heartbeat_seconds,
                                name="dispatcher")
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self._consuming = False
        self._database_paused = False
        self._sender = Sender(timeout_seconds=settings.webhooks_timeout_seconds,
                              max_response_bytes=settings.webhooks_max_response_bytes,
                              allow_private=settings.webhooks_allow_private_targets,
                              max_connections=settings.webhooks_concurrency, network=network)
        self.endpoints = EndpointCache(self._load_endpoint, ttl_seconds=endpoint_cache_seconds)
        self._recorder = OutcomeRecorder(
            self._database, disable_after_seconds=settings.webhooks_disable_after_hours * 3600,
            on_disabled=self._disabled, on_paused=self._set_paused)
        self._relay = Relay(self._database, self.topology, batch_size=relay_batch_size,
                            idle_seconds=settings.webhooks_relay_idle_ms / 1000,
                            metrics=self.metrics, on_paused=self._set_paused)
        self._senders = Senders(
            sender=self._sender, endpoints=self.endpoints, recorder=self._recorder,
            slots=EndpointSlots(settings.webhooks_endpoint_concurrency),
            attempts=asyncio.Semaphore(settings.webhooks_concurrency), metrics=self.metrics,
            retry_delays=len(self.topology.consumer(DISPATCHER).retry_delays_ms),
            on_paused=self._set_paused)

    def stop(self) -> None:
        self._stopping.set()
        self._link.stop()

    def not_ready(self) -> list[str]:
        """Why this replica cannot do its work now; empty when it can (`/readyz`)."""
        reasons = []
        if not self._consuming:
            reasons.append("not consuming from the broker")
        if self._database_paused:
            reasons.append("database unreachable: deliveries paused")
        return reasons

    async def run(self) -> None:
        """Relay and send until `stop()`; the link reconnects with back-off when lost."""
        recorder = asyncio.create_task(self._recorder.run(), name="delivery-log")
        try:
            await self._link.run(self._session, drains=True)
        finally:
            self._recorder.close()
            try:
                await asyncio.wait_for(recorder, RECORDER_CLOSE_SECONDS)
            except Exception as error:
                log.warning("delivery_log_not_drained", error=type(error).__name__)
            await self._sender.aclose()
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), 5)

    async def _session(self, link: LinkSession) -> None:
        consumption = Consumption(
            self._senders, link, Settlement(link.publisher, self.topology, DISPATCHER),
            queue=self.topology.queue(DISPATCHER), prefetch=2 * self._concurrency)
        relay = asyncio.create_task(self._relay.run(link.publisher, self._stopping),
                                    name="relay")
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        try:
            await consumption.start()
            self._consuming = True
            self.metrics.broker_connected.set(1)
            log.info("dispatcher_consuming", queue=self.topology.queue(DISPATCHER))
            waiting: list[asyncio.Future[Any]] = [relay, consumption.failed, stopping]
            await asyncio.wait(waiting,
                               return_when=asyncio.FIRST_COMPLETED)
            # The broker failed: a new link.
            error = relay.exception() if relay.done() and not relay.cancelled() else None
            if error is not None:
                raise error
            if consumption.failed.done():
                raise SettlementFailed(consumption.failed.result())
        finally:
            self._consuming = False
            self.metrics.broker_connected.set(0)
            stopping.cancel()
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            await consumption.finish(self._grace if self._stopping.is_set() else 0)

    # -- the database ------------------------------------------------------------------

    async def _database(self) -> asyncpg.Pool:
        backoff = 0.25
        while self._pool is None:
            try:
                self._pool = await create_pool(self._database_url, min_size=1, max_size=10,
                                               command_timeout=self._command_timeout)
            except TRANSIENT_ERRORS as error:
                self._set_paused(True)
                log.warning("database_unavailable", error=type(error).__name__,
                            retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _PAUSE_MAX_SECONDS)
        return self._pool

    async def _load_endpoint(self, endpoint_id: uuid.UUID) -> EndpointRow | None:
        pool = await self._database()
        async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
            return await repository.endpoint(connection, endpoint_id)

    def _set_paused(self, paused: bool) -> None:
        self._database_paused = paused
        self.metrics.paused.set(int(paused))

    def _disabled(self, endpoint_ids: list[uuid.UUID]) -> None:
        for endpoint_id in endpoint_ids:
            self.endpoints.mark_disabled(endpoint_id)
            self.metrics.endpoints_disabled.inc()
            log.warning("endpoint_disabled", endpoint_id=str(endpoint_id), reason="failing")
