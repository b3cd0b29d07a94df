"""The relay: from the outbox to the dispatcher's queue.

Every replica polls the deliveries nobody has published yet (`queued_at IS NULL`: new ones
from the processor's outbox, and "send again"), a batch at a time, with `FOR UPDATE SKIP
LOCKED` so replicas share them out without waiting on each other; it publishes each on the
link's confirming channel, then marks the batch queued in the same transaction. It looks
again at once while it finds full batches, else after WEBHOOKS_RELAY_IDLE_MS. Polling, not
LISTEN: it works through PgBouncer's transaction pooling (decision 40).

A crash (or a lost broker) between the broker's confirm and the commit publishes those
deliveries again later: a receiver then sees the same `webhook-id` twice (at-least-once;
receivers deduplicate by it). Nothing is marked queued that the broker did not confirm.
Confirms that come late (a busy broker or process) pause the relay and the batch is
published again; a refused publish or a failed channel renews the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

import aiormq
import asyncpg
from aio_pika.abc import AbstractChannel
from pamqp.commands import Basic

from calltrail_common.db import TRANSIENT_ERRORS
from calltrail_common.logging import get_logger
from calltrail_common.settlement import BROKER_CALL_TIMEOUT_SECONDS
from calltrail_common.topology import WEBHOOK_DELIVERY_ROUTING_KEY, Topology
from dispatcher.messages import DeliveryMessage, webhook_body
from dispatcher.metrics import DispatcherMetrics
from dispatcher.repository import Unqueued, claim_unqueued, mark_queued

log = get_logger("dispatcher")

_PAUSE_MAX_SECONDS = 5.0
_POOL_ACQUIRE_TIMEOUT_SECONDS = 10.0


class RelayPublishFailed(Exception):
    """The broker refused a delivery or its channel failed: the batch stays unqueued and the
    link is renewed (declaring the topology again)."""


class RelayConfirmLate(RelayPublishFailed):
    """The broker's confirms did not all come in time (a busy broker or process): the batch
    stays unqueued and is published again after a pause, on the same link."""


# What pauses the relay (and retries the batch) rather than renewing the link.
_PAUSE_ON: tuple[type[BaseException], ...] = (RelayConfirmLate, *TRANSIENT_ERRORS)


class Relay:
    def __init__(self, database: Callable[[], Awaitable[asyncpg.Pool]], topology: Topology, *,
                 batch_size: int, idle_seconds: float, metrics: DispatcherMetrics,
                 on_paused: Callable[[bool], None]) -> None:
        self._database = database
        self._topology = topology
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._metrics = metrics
        self._on_paused = on_paused

    async def run(self, channel: AbstractChannel, stopping: asyncio.Event) -> None:
        """Relay until `stopping`; raises `RelayPublishFailed` when the broker fails."""
        attempt = 0
        while not stopping.is_set():
            try:
                found = await self.relay_once(channel)
                attempt = 0
                self._on_paused(False)
            except _PAUSE_ON as error:
                if not isinstance(error, RelayConfirmLate):
                    self._on_paused(not isinstance(error, asyncpg.PostgresError))
                attempt += 1
                pause = min(0.1 * 2 ** attempt, _PAUSE_MAX_SECONDS)
                log.warning("relay_paused", error=type(error).__name__, attempt=attempt,
                            retry_in=pause)
                await _sleep_unless(stopping, pause)
                continue
            if found < self._batch_size:
                await _sleep_unless(stopping, self._idle)

    async def relay_once(self, channel: AbstractChannel) -> int:
        """Publish one batch of unqueued deliveries and mark them queued; how many."""
        pool = await self._database()
        async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection, \
                connection.transaction():
            rows = await claim_unqueued(connection, self._batch_size)
            if not rows:
                self._metrics.relay_lag_seconds.set(0)
                return 0
            await self._publish(channel, rows)
            await mark_queued(connection, [row.delivery_id for row in rows])
        oldest = min(row.created_at for row in rows)
        self._metrics.relay_lag_seconds.set(
            max(0.0, (dt.datetime.now(dt.UTC) - oldest).total_seconds()))
        self._metrics.relayed.inc(len(rows))
        log.debug("deliveries_relayed", deliveries=len(rows))
        return len(rows)

    async def _publish(self, channel: AbstractChannel, rows: Sequence[Unqueued]) -> None:
        try:
            wire = await channel.get_underlay_channel()
            assert isinstance(wire, aiormq.Channel)  # its basic_publish takes `wait`
            confirmations = await asyncio.gather(*(
                wire.basic_publish(
                    message.body, exchange=self._topology.webhooks_exchange,
                    routing_key=WEBHOOK_DELIVERY_ROUTING_KEY, properties=message.properties(),
                    # Not waiting for each frame to be written before the next: aiormq
                    # holds the channel's lock until then, a loop turn per message, which
                    # under load took longer than the timeout. The confirm is what counts.
                    mandatory=True, timeout=BROKER_CALL_TIMEOUT_SECONDS, wait=False)
                for message in map(delivery_message, rows)))
        except aiormq.exceptions.PublishError:
            failure = RelayPublishFailed("returned: no queue is bound to its route")
        except TimeoutError:
            failure = RelayConfirmLate(f"not confirmed within {BROKER_CALL_TIMEOUT_SECONDS} s")
        except Exception as error:
            failure = RelayPublishFailed(f"{type(error).__name__}: {error}"[:200])
        else:
            if all(isinstance(c, Basic.Ack) for c in confirmations):
                return
            failure = RelayPublishFailed("not confirmed")
        log.warning("relay_publish_failed", reason=str(failure), deliveries=len(rows))
        raise failure


def delivery_message(row: Unqueued) -> DeliveryMessage:
    return DeliveryMessage(row.delivery_id, row.endpoint_id, row.event_id,
                           webhook_body(row.event_type, row.occurred_at, row.data_json))


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
