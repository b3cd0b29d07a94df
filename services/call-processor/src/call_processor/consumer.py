"""The call processor's consumer: batches from the quorum queue, and what becomes of each.

Acknowledgement policy, in full:
- applied (or kept aside as unassigned): acknowledged after the transaction commits;
- can never be processed (bad JSON, call event without call id, call id of another
  organization, a value the database refuses): published to the dead-letter queue with its
  reason, then acknowledged;
- the database is unreachable or the transaction hit a deadlock or serialization
  failure: nothing is acknowledged, the batch is retried in place with back-off (processing
  pauses; nothing is lost, nothing spins);
- any other failure: the batch is re-run one message at a time to find the one at fault; that
  message goes to a retry queue (1 s, 5 s, 30 s, 2 min) and, after the last, to the
  dead-letter queue with the error as its reason.
If the process dies, unacknowledged messages return to the queue; the quorum queue's
delivery limit dead-letters a message that keeps killing its consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from call_processor.handlers import (
    BatchOutcome,
    Delivery,
    PreparedBatch,
    apply_batch,
    join_prepared,
    prepare_batch,
)
from call_processor.metrics import ProcessorMetrics
from call_processor.repository import prune_events
from calltrail_common import broker
from calltrail_common.db import create_pool
from calltrail_common.logging import get_logger
from calltrail_common.topology import (
    CALL_PROCESSOR,
    HEADER_DEAD_LETTER_REASON,
    HEADER_RECEIVED_AT,
    Topology,
    declare_topology,
)

log = get_logger("call_processor")

HEADER_RETRIES = "x-retries"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"
TRANSIENT_DATABASE_ERRORS = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)
# The database refused a value of the one message at fault (SQLSTATE class 22, or an index
# row past its limit): it fails the same way every time, so it is poison, not retried.
REFUSED_BY_DATABASE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)
# Pauses stay short so that processing resumes within seconds of an outage's end.
_PAUSE_MAX_SECONDS = 5.0
_RECONNECT_MAX_SECONDS = 5.0
_PRUNE_EVERY_SECONDS = 3600.0
_BATCHES_IN_FLIGHT = 2
_PREPARE_CHUNK = 25  # deliveries parsed between two chances for the other batch to go on
# Bounds on every wait on the broker: a peer that is gone never holds the consumer.
_BROKER_CALL_TIMEOUT_SECONDS = 10.0
_POOL_ACQUIRE_TIMEOUT_SECONDS = 10.0


class CallProcessor:
    def __init__(self, *, database_url: str, amqp_url: str, topology: Topology,
                 batch_size: int, batch_wait_seconds: float, retention_days: int,
                 heartbeat_seconds: int = 3, command_timeout_seconds: float = 30.0,
                 shutdown_grace_seconds: float = 10.0,
                 metrics: ProcessorMetrics | None = None) -> None:
        self._database_url = database_url
        self._amqp_url = amqp_url
        self._topology = topology
        self._batch_size = batch_size
        self._batch_wait = batch_wait_seconds
        self._retention_days = retention_days
        self._heartbeat = heartbeat_seconds
        self._command_timeout = command_timeout_seconds
        self._shutdown_grace = shutdown_grace_seconds
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        # The batches in flight are applied in turns: consecutive batches share calls, so the
        # second would only wait on the first's row locks (and could deadlock with it).
        self._applying = asyncio.Lock()
        self._consuming = False
        self._database_paused = False
        self.metrics = metrics or ProcessorMetrics()

    def stop(self) -> None:
        self._stopping.set()

    def not_ready(self) -> list[str]:
        """Why this consumer cannot do its work now; empty when it can (`/readyz`)."""
        reasons = []
        if not self._consuming:
            reasons.append("not consuming from the broker")
        if self._database_paused:
            reasons.append("database unreachable: processing paused")
        return reasons

    async def run(self) -> None:
        """Consume until `stop()`; reconnect with back-off whenever the link is lost.

        Whatever ends a connection (reset, broker restart, missed heartbeats, a channel the
        broker closed, a cancelled consumer, an unexpected error) ends in a reconnect, never
        in an idle or dead consumer: the unacknowledged messages return to the queue.
        """
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                await self._consume_once()
                backoff = 0.2
            except Exception as error:
                log.warning("broker_link_lost", error=type(error).__name__,
                            retry_in=round(backoff, 2))
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX_SECONDS)
        if self._pool is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pool.close(), 5)

    async def _database(self) -> asyncpg.Pool:
        backoff = 0.25
        while self._pool is None:
            try:
                self._pool = await create_pool(self._database_url, min_size=1,
                                               max_size=_BATCHES_IN_FLIGHT + 1,
                                               command_timeout=self._command_timeout)
            except TRANSIENT_DATABASE_ERRORS as error:
                self._set_paused(True)
                log.warning("database_unavailable", error=type(error).__name__,
                            retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _PAUSE_MAX_SECONDS)
        return self._pool

    def _set_paused(self, paused: bool) -> None:
        self._database_paused = paused
        self.metrics.paused.set(int(paused))

    async def _consume_once(self) -> None:
        connection = await broker.connect(self._amqp_url, heartbeat_seconds=self._heartbeat)
        in_flight: set[asyncio.Task[None]] = set()
        previous: asyncio.Task[None] | None = None
        acks = _AckCursor()
        lost: asyncio.Future[str] | None = None
        pruner: asyncio.Task[None] | None = None
        try:
            channel = await connection.channel(publisher_confirms=True)
            await declare_topology(channel, self._topology)
            await channel.set_qos(prefetch_count=self._batch_size * 2)
            dead_letters = await channel.get_exchange(self._topology.dead_letter_exchange)
            queue = await channel.get_queue(self._topology.queue(CALL_PROCESSOR), ensure=False)
            lost = await broker.watch(connection, channel)
            self._inbox = asyncio.Queue()
            tag = await queue.consume(self._inbox.put)
            self._consuming = True
            self.metrics.broker_connected.set(1)
            log.info("consuming", queue=queue.name)
            pruner = asyncio.create_task(self._prune_forever())
            while not self._stopping.is_set() and not lost.done():
                batch = await self._next_batch(lost)
                if not batch:
                    continue
                # Two batches in flight: one is parsed (and acknowledged, dead-lettered) while
                # the other is applied; they are applied in turns, in delivery order.
                while len(in_flight) >= _BATCHES_IN_FLIGHT and not lost.done():
                    waiting: list[asyncio.Future[Any]] = [*in_flight, lost]
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    for task in in_flight & done:
                        in_flight.discard(task)
                        task.result()  # a broker failure ends this connection
                if lost.done():
                    break
                previous = asyncio.create_task(
                    self._handle(channel, dead_letters, batch, previous, acks))
                in_flight.add(previous)
            self._consuming = False
            if lost.done():
                raise ConnectionError(f"broker link lost: {lost.result()}")
            # Stopping: no more deliveries; finish (commit, ack) what is in hand, within
            # the grace period; what is left is handed back unacknowledged.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(queue.cancel(tag), _BROKER_CALL_TIMEOUT_SECONDS)
            if in_flight:
                finishing: asyncio.Future[Any] = asyncio.gather(*in_flight,
                                                                return_exceptions=True)
                await asyncio.wait([finishing, lost], timeout=self._shutdown_grace,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._consuming = False
            self.metrics.broker_connected.set(0)
            # Batches still running are abandoned: their messages are redelivered (the
            # channel is gone or about to be) and applying them again is idempotent.
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
            if pruner is not None:
                pruner.cancel()
            if lost is not None:
                lost.cancel()
            await broker.close_quietly(connection, 5)

    async def _next_batch(self, lost: asyncio.Future[str]) -> list[AbstractIncomingMessage]:
        stop: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        first: asyncio.Future[Any] = asyncio.ensure_future(self._inbox.get())
        try:
            await asyncio.wait([first, stop, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not first.done():
            first.cancel()
            return []
        batch = [first.result()]
        deadline = time.monotonic() + self._batch_wait
        while len(batch) < self._batch_size:
            try:
                batch.append(self._inbox.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._inbox.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _handle(self, channel: AbstractChannel, dead_letters: AbstractExchange,
                      messages: Sequence[AbstractIncomingMessage],
                      previous: asyncio.Task[None] | None, acks: _AckCursor) -> None:
        started = time.perf_counter()
        outcome = await self._apply_with_retries(channel, messages)
        committed = {*outcome.applied, *outcome.unassigned}
        self.metrics.batch_committed((m.headers or {}).get(HEADER_RECEIVED_AT)
                                     for m in messages if m.delivery_tag in committed)
        by_tag = {m.delivery_tag: m for m in messages}
        for tag, reason in outcome.dead.items():
            await self._dead_letter(dead_letters, by_tag[tag], reason)
        if previous is not None:
            await previous  # acknowledge in delivery order (a failed one ends the connection)
        with contextlib.suppress(Exception):  # a closed channel redelivers: idempotent
            await acks.ack(messages, [*outcome.applied, *outcome.unassigned])
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        for outcome_name, count in (("applied", len(outcome.applied)),
                                    ("unassigned", len(outcome.unassigned)),
                                    ("dead_lettered", len(outcome.dead))):
            if count:
                self.metrics.events.labels(outcome_name).inc(count)
        log.info("batch_applied", events=len(messages), applied=len(outcome.applied),
                 unassigned=len(outcome.unassigned), dead_lettered=len(outcome.dead),
                 ms=round((time.perf_counter() - started) * 1000, 1))

    async def _apply_with_retries(self, channel: AbstractChannel,
                                  messages: Sequence[AbstractIncomingMessage]) -> BatchOutcome:
        deliveries = [Delivery(m.delivery_tag or 0, _message_id(m), m.headers or {}, m.body)
                      for m in messages]
        batch: PreparedBatch | None = None
        attempt = 0
        while True:
            pool = await self._database()
            try:
                if batch is None:  # outside the turn: parsing needs no connection
                    batch = await _prepare(deliveries)
                async with self._applying, \
                        pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    outcome = await apply_batch(connection, batch)
                self._set_paused(False)
                return outcome
            except TRANSIENT_DATABASE_ERRORS as error:
                self._set_paused(True)
                attempt += 1
                pause = min(0.25 * 2 ** attempt, _PAUSE_MAX_SECONDS)
                log.warning("batch_paused", error=type(error).__name__, attempt=attempt,
                            retry_in=pause, events=len(deliveries))
                await asyncio.sleep(pause)
            except Exception as error:
                if len(messages) > 1:
                    log.warning("batch_failed_isolating", error=type(error).__name__,
                                events=len(messages))
                    return await self._apply_one_by_one(channel, messages)
                if isinstance(error, REFUSED_BY_DATABASE):  # the reason names no value
                    return BatchOutcome(dead={messages[0].delivery_tag or 0:
                                              f"database refused a value: {type(error).__name__}"})
                await self._retry_later(channel, messages[0], error)
                return BatchOutcome()

    async def _apply_one_by_one(self, channel: AbstractChannel,
                                messages: Sequence[AbstractIncomingMessage]) -> BatchOutcome:
        total = BatchOutcome()
        for message in messages:
            outcome = await self._apply_with_retries(channel, [message])
            total.applied += outcome.applied
            total.unassigned += outcome.unassigned
            total.dead.update(outcome.dead)
        return total

    async def _retry_later(self, channel: AbstractChannel, message: AbstractIncomingMessage,
                           error: Exception) -> None:
        retries = _retries(message)
        delays = CALL_PROCESSOR.retry_delays_ms
        reason = f"{type(error).__name__}: {error}"[:500]
        if retries >= len(delays):
            dead_letters = await channel.get_exchange(self._topology.dead_letter_exchange)
            await self._dead_letter(dead_letters, message, reason,
                                    log_reason=type(error).__name__)
            return
        retry_queue = self._topology.retry_queue(CALL_PROCESSOR, delays[retries])
        headers = {**(message.headers or {}), HEADER_RETRIES: retries + 1}
        await channel.default_exchange.publish(
            _copy(message, headers), routing_key=retry_queue, mandatory=True,
            timeout=_BROKER_CALL_TIMEOUT_SECONDS)
        await _ack(message)
        self.metrics.events.labels("retried").inc()
        log.warning("event_retry_scheduled", message_id=_message_id(message),
                    retries=retries + 1, delay_ms=delays[retries], error=type(error).__name__)

    async def _dead_letter(self, dead_letters: AbstractExchange,
                           message: AbstractIncomingMessage, reason: str,
                           log_reason: str | None = None) -> None:
        """Publish to the DLQ with `reason` (for operators), then ack. The log gets
        `log_reason` when the reason may quote data (a database error can quote a value)."""
        headers = {**(message.headers or {}), HEADER_DEAD_LETTER_REASON: reason,
                   HEADER_ORIGINAL_ROUTING_KEY: message.routing_key or ""}
        await dead_letters.publish(_copy(message, headers),
                                   routing_key=self._topology.queue(CALL_PROCESSOR),
                                   mandatory=True, timeout=_BROKER_CALL_TIMEOUT_SECONDS)
        await _ack(message)
        log.warning("event_dead_lettered", message_id=_message_id(message),
                    reason=log_reason or reason)

    async def _prune_forever(self) -> None:
        while True:
            try:
                pool = await self._database()
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    deleted = await prune_events(connection, self._retention_days)
                if deleted:
                    log.info("events_pruned", deleted=deleted)
            except TRANSIENT_DATABASE_ERRORS as error:
                log.warning("prune_failed", error=type(error).__name__)
            await asyncio.sleep(_PRUNE_EVERY_SECONDS)


async def _prepare(deliveries: Sequence[Delivery]) -> PreparedBatch:
    """`prepare_batch` a few deliveries at a time, letting the batch being applied go on
    between them (its transaction would otherwise sit idle while a whole batch is parsed)."""
    parts = []
    for start in range(0, len(deliveries), _PREPARE_CHUNK):
        parts.append(prepare_batch(deliveries[start:start + _PREPARE_CHUNK]))
        await asyncio.sleep(0)
    return join_prepared(parts)


def _message_id(message: AbstractIncomingMessage) -> str:
    return message.message_id or f"tag-{message.delivery_tag}"


def _retries(message: AbstractIncomingMessage) -> int:
    """How often the message went through a retry queue (a header nobody else should set)."""
    value = (message.headers or {}).get(HEADER_RETRIES, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


async def _ack(message: AbstractIncomingMessage) -> None:
    await asyncio.wait_for(message.ack(), _BROKER_CALL_TIMEOUT_SECONDS)


class _AckCursor:
    """The deliveries of one channel, acknowledged batch after batch in delivery order.

    A batch's committed messages are acknowledged with one multiple ack (one frame instead of
    one per message: that was most of the broker's and much of the processor's work at a few
    thousand events/s) when that acknowledges nothing else: every delivery before the batch is
    settled and the batch holds exactly the next delivery tags (the broker numbers each
    channel's deliveries 1, 2, 3, ...). Its other messages are settled already (dead-lettered
    or sent to a retry queue, each acknowledged on its own). Otherwise, one ack per message.
    """

    def __init__(self) -> None:
        self.settled_through = 0  # every delivery tag up to this one is settled

    async def ack(self, messages: Sequence[AbstractIncomingMessage],
                  committed: Sequence[int]) -> None:
        tags = sorted(m.delivery_tag or 0 for m in messages)
        by_tag = {m.delivery_tag: m for m in messages}
        try:
            if committed and tags == list(range(self.settled_through + 1,
                                                self.settled_through + 1 + len(tags))):
                await asyncio.wait_for(by_tag[max(committed)].ack(multiple=True),
                                       _BROKER_CALL_TIMEOUT_SECONDS)
            else:
                for tag in committed:
                    await _ack(by_tag[tag])
        finally:
            self.settled_through = max(self.settled_through, tags[-1] if tags else 0)


def _copy(message: AbstractIncomingMessage, headers: dict) -> aio_pika.Message:
    return aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message.message_id)
