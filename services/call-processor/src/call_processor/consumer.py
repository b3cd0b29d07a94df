"""The call processor's consumer: which queues it reads, how batches form, and what becomes
of each message.

Queues. The events are spread over `CALL_PROCESSOR.partitions` partition queues by caller
(calltrail_common.envelope). Every replica renews its row in `processor_members` each
`PROCESSOR_MEMBER_HEARTBEAT_SECONDS` and consumes the partitions `partitions.share_out`
gives it among the members renewed within `PROCESSOR_MEMBER_TTL_SECONDS`; each partition
queue has a single active consumer, so a partition's events go to one replica at a time
even while two briefly disagree. When a replica joins or leaves (KEDA adds or removes one,
or one stops on SIGTERM and deletes its row), the others see it at their next heartbeat:
a replica losing a partition cancels its consumer there and finishes the batch it holds,
the one gaining it subscribes. A killed replica's partitions wait until its row ages out
(the TTL), then move; its unacknowledged messages go back to their queue. Every replica
also consumes the overflow queue (retries, events without a partition).

Batches. A batch takes the waiting messages of the partitions that have no batch in flight,
up to `PROCESSOR_BATCH_SIZE`, waiting at most `PROCESSOR_BATCH_WAIT_MS` to fill; up to
`PROCESSOR_BATCHES_IN_FLIGHT` batches are applied at once, each on its own connection, so
database round trips overlap. Two batches in flight never share a partition, so they never
share a caller, and each adds to its own shard of the daily figures: they do not wait on
each other's rows.

Acknowledgement policy (calltrail_common.settlement), in full:
- applied (or kept aside as unassigned): acknowledged after the transaction commits;
- can never be processed (bad JSON, call event without call id, call id of another
  organization, a value the database refuses): dead-lettered with its reason;
- the database is unreachable or the transaction hit a transient error: nothing is
  acknowledged, the batch is retried in place with back-off (processing pauses; nothing
  is lost, nothing spins);
- any other failure: the batch is re-run one message at a time to find the one at fault;
  that message goes to a retry queue (1 s, 5 s, 30 s, 2 min) and, after the last, to the
  dead-letter queue with the error as its reason.
If the process dies, unacknowledged messages return to their queue; the quorum queue's
delivery limit dead-letters a message that keeps killing its consumer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import socket
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel
from aiormq.abc import DeliveredMessage

from call_processor.deliveries import (
    BatchOutcome,
    Delivery,
    PreparedBatch,
    join_prepared,
    prepare_batch,
)
from call_processor.handlers import apply_batch, record_closed_days
from call_processor.live import LivePublisher
from call_processor.metrics import ProcessorMetrics
from call_processor.partitions import partitions_of
from call_processor.rebuild import rebuild_waiting_figures
from call_processor.repository import heartbeat, leave, prune_events, prune_outbound
from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.db import TRANSIENT_ERRORS, create_pool
from calltrail_common.envelope import HEADER_RECEIVED_AT
from calltrail_common.erasure import purge_expired_content
from calltrail_common.logging import get_logger
from calltrail_common.settlement import (
    BROKER_CALL_TIMEOUT_SECONDS,
    AckCursor,
    Settlement,
    WireMessage,
)
from calltrail_common.topology import CALL_PROCESSOR, Topology

log = get_logger("call_processor")

# The database refused a value of the one message at fault (SQLSTATE class 22, or an index
# row past its limit): it fails the same way every time, so it is poison, not retried.
REFUSED_BY_DATABASE = (asyncpg.DataError, asyncpg.ProgramLimitExceededError)
# Pauses stay short so that processing resumes within seconds of an outage's end.
_PAUSE_MAX_SECONDS = 5.0
_PRUNE_EVERY_SECONDS = 3600.0
# Each organization's retention of call content (calltrail_common.erasure): once a day,
# and at start, in batches of this many rows per statement.
_PURGE_CONTENT_EVERY_SECONDS = 86_400.0
_PURGE_CONTENT_BATCH = 1000
_CLOSE_DAYS_EVERY_SECONDS = 300.0  # a day closes within 5 minutes of its grace's end
_REBUILD_EVERY_SECONDS = 5.0  # a new time zone's figures start rebuilding within seconds
_PREPARE_CHUNK = 25  # deliveries parsed between two chances for the other batches to go on
_POOL_ACQUIRE_TIMEOUT_SECONDS = 10.0


def member_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class CallProcessor:
    def __init__(self, *, database_url: str, amqp_url: str, topology: Topology,
                 batch_size: int, batch_wait_seconds: float, retention_days: int,
                 heartbeat_seconds: int = 3, command_timeout_seconds: float = 30.0,
                 shutdown_grace_seconds: float = 10.0, batches_in_flight: int = 4,
                 member_heartbeat_seconds: float = 1.0, member_ttl_seconds: float = 5.0,
                 metrics: ProcessorMetrics | None = None) -> None:
        self._database_url = database_url
        self._topology = topology
        self._batch_size = batch_size
        self._batch_wait = batch_wait_seconds
        self._retention_days = retention_days
        self._command_timeout = command_timeout_seconds
        self._shutdown_grace = shutdown_grace_seconds
        self._in_flight = batches_in_flight
        self._member_heartbeat = member_heartbeat_seconds
        self._member_ttl = member_ttl_seconds
        self.member = member_name()
        self._link = BrokerLink(amqp_url, topology, heartbeat_seconds=heartbeat_seconds,
                                name="call-processor")
        self._stopping = asyncio.Event()
        self._pool: asyncpg.Pool | None = None
        self.partitions: frozenset[int] = frozenset()  # this replica's share, lately
        self._partitions_changed = False
        self._consumption: _Consumption | None = None
        self._consuming = False
        self._database_paused = False
        self.metrics = metrics or ProcessorMetrics()
        self.live = LivePublisher(topology, self.metrics)

    def stop(self) -> None:
        self._stopping.set()
        self._link.stop()
        if self._consumption is not None:
            self._consumption.wake()

    def not_ready(self) -> list[str]:
        """Why this consumer cannot do its work now; empty when it can (`/readyz`)."""
        reasons = []
        if not self._consuming:
            reasons.append("not consuming from the broker")
        if self._database_paused:
            reasons.append("database unreachable: processing paused")
        return reasons

    async def run(self) -> None:
        """Consume until `stop()`; the link reconnects with back-off whenever it is lost.

        Whatever ends a connection (reset, broker restart, missed heartbeats, a channel the
        broker closed, a cancelled consumer, an unexpected error) ends in a reconnect, never
        in an idle or dead consumer: the unacknowledged messages return to their queues.
        """
        membership = asyncio.create_task(self._membership_forever(), name="membership")
        pruner = asyncio.create_task(self._prune_forever(), name="prune")
        rebuilder = asyncio.create_task(self._rebuild_forever(), name="rebuild")
        try:
            await self._link.run(self._consume, drains=True)
        finally:
            for task in (membership, pruner, rebuilder):
                task.cancel()
            await asyncio.gather(membership, pruner, rebuilder, return_exceptions=True)
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    async with self._pool.acquire(timeout=2) as connection:
                        await asyncio.wait_for(leave(connection, self.member), 2)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), 5)

    async def _consume(self, link: LinkSession) -> None:
        consumption = self._consumption = _Consumption(self, link)
        live = asyncio.create_task(self.live.serve(link), name="live-publisher")
        try:
            self._consuming = True
            self.metrics.broker_connected.set(1)
            await consumption.run()
        finally:
            self._consuming = False
            self.metrics.broker_connected.set(0)
            self.metrics.partitions.set(0)
            self._consumption = None
            await consumption.abandon()
            live.cancel()
            await asyncio.gather(live, return_exceptions=True)

    # --- the database ---------------------------------------------------------------------

    async def _database(self) -> asyncpg.Pool:
        backoff = 0.25
        while self._pool is None:
            try:
                self._pool = await create_pool(self._database_url, min_size=1,
                                               max_size=self._in_flight + 2,
                                               command_timeout=self._command_timeout)
            except TRANSIENT_ERRORS as error:
                self._set_paused(True)
                log.warning("database_unavailable", error=type(error).__name__,
                            retry_in=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _PAUSE_MAX_SECONDS)
        return self._pool

    def _set_paused(self, paused: bool) -> None:
        self._database_paused = paused
        self.metrics.paused.set(int(paused))

    async def _membership_forever(self) -> None:
        """Renew this replica's row; recompute its partitions from the live members. While
        the database is unreachable, the partitions stay as they were."""
        failing = False
        while True:
            try:
                pool = await self._database()
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    members = await heartbeat(connection, self.member, self._member_ttl)
                failing = False
            except TRANSIENT_ERRORS as error:
                if not failing:
                    log.warning("membership_not_renewed", error=type(error).__name__)
                failing = True
            else:
                self.metrics.members.set(len(members))
                mine = partitions_of(self.member, CALL_PROCESSOR.partitions, members)
                if mine != self.partitions:
                    log.info("partitions_assigned", partitions=sorted(mine),
                             members=len(members))
                    self.partitions = mine
                    self._partitions_changed = True
                    if self._consumption is not None:
                        self._consumption.wake()
            await asyncio.sleep(self._member_heartbeat)

    async def _prune_forever(self) -> None:
        """The periodic job: close the days outbound endpoints want closed (every few
        minutes), prune the archive and the delivered outbox (every hour), and purge the
        call content past each organization's retention (every day)."""
        pruned_at: float | None = None
        purged_at: float | None = None
        while True:
            try:
                pool = await self._database()
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    closed = await record_closed_days(connection)
                    if closed:
                        log.info("days_closed", days=closed)
                    if pruned_at is None or \
                            time.monotonic() - pruned_at >= _PRUNE_EVERY_SECONDS:
                        deleted = await prune_events(connection, self._retention_days)
                        outbox = await prune_outbound(connection, self._retention_days)
                        pruned_at = time.monotonic()
                        if deleted or outbox:
                            log.info("events_pruned", deleted=deleted, outbox_deleted=outbox)
                    if purged_at is None or \
                            time.monotonic() - purged_at >= _PURGE_CONTENT_EVERY_SECONDS:
                        calls, events = await purge_expired_content(
                            connection, _PURGE_CONTENT_BATCH)
                        purged_at = time.monotonic()
                        if calls or events:
                            log.info("content_purged", calls=calls, events=events)
            except TRANSIENT_ERRORS as error:
                log.warning("housekeeping_failed", error=type(error).__name__)
            await asyncio.sleep(_CLOSE_DAYS_EVERY_SECONDS)

    async def _rebuild_forever(self) -> None:
        """Rebuild the daily figures of the organizations whose time zone changed
        (`rebuild`, decision 45); batches of such an organization wait while it runs."""
        while True:
            try:
                pool = await self._database()
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    await rebuild_waiting_figures(connection)
            except TRANSIENT_ERRORS as error:
                log.warning("figures_rebuild_failed", error=type(error).__name__)
            except asyncpg.PostgresError as error:  # e.g. a zone Postgres does not know
                log.error("figures_rebuild_refused", error=type(error).__name__)
            await asyncio.sleep(_REBUILD_EVERY_SECONDS)

    # --- applying a batch -------------------------------------------------------------------

    async def apply(self, settlement: Settlement, messages: Sequence[WireMessage],
                    shard: int) -> BatchOutcome:
        """Apply `messages` (Delivery tags are their indexes) until it is done: committed,
        or settled one by one. Transient database errors pause and retry in place."""
        deliveries = [Delivery.received(index, m.message_id, m.headers, m.body)
                      for index, m in enumerate(messages)]
        batch: PreparedBatch | None = None
        attempt = 0
        while True:
            pool = await self._database()
            try:
                if batch is None:  # outside the connection: parsing needs none
                    batch = await _prepare(deliveries)
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    outcome = await apply_batch(connection, batch, shard)
                self._set_paused(False)
                return outcome
            except TRANSIENT_ERRORS as error:
                self._set_paused(not isinstance(error, asyncpg.PostgresError))
                attempt += 1
                pause = min(0.25 * 2 ** attempt, _PAUSE_MAX_SECONDS)
                log.warning("batch_paused", error=type(error).__name__, attempt=attempt,
                            retry_in=pause, events=len(deliveries))
                await asyncio.sleep(pause)
            except Exception as error:
                if len(messages) > 1:
                    log.warning("batch_failed_isolating", error=type(error).__name__,
                                events=len(messages))
                    return await self._apply_one_by_one(settlement, messages, shard)
                if isinstance(error, REFUSED_BY_DATABASE):  # the reason names no value
                    return BatchOutcome(dead={0: "database refused a value: "
                                                 f"{type(error).__name__}"})
                if await settlement.retry_later(messages[0], error):
                    self.metrics.events.labels("retried").inc()
                else:
                    self.metrics.events.labels("dead_lettered").inc()
                return BatchOutcome()

    async def _apply_one_by_one(self, settlement: Settlement,
                                messages: Sequence[WireMessage], shard: int
                                ) -> BatchOutcome:
        total = BatchOutcome()
        for index, message in enumerate(messages):
            outcome = await self.apply(settlement, [message], shard)
            total.applied += [index for _ in outcome.applied]
            total.unassigned += [index for _ in outcome.unassigned]
            for reason in outcome.dead.values():
                total.dead[index] = reason
            total.changed += outcome.changed
        return total


async def _prepare(deliveries: Sequence[Delivery]) -> PreparedBatch:
    """`prepare_batch` a few deliveries at a time, letting the batches being applied go on
    between them (their transactions would otherwise sit idle while a batch is parsed)."""
    parts = []
    for start in range(0, len(deliveries), _PREPARE_CHUNK):
        parts.append(prepare_batch(deliveries[start:start + _PREPARE_CHUNK]))
        await asyncio.sleep(0)
    return join_prepared(parts)


@dataclass(eq=False)
class _Source:
    """A queue this replica consumes on a channel of its own: a partition or the overflow."""

    queue: str
    shard: int  # the daily-figure rows its batches add to
    channel: AbstractChannel
    partition: int | None
    tag: str | None = None  # the consumer tag while subscribed
    inbox: collections.deque[WireMessage] = field(
        default_factory=collections.deque)
    waiting_since: float = 0.0  # when the oldest message in the inbox arrived
    busy: bool = False  # a batch of its messages is in flight
    acks: AckCursor = field(default_factory=AckCursor)


class _Consumption:
    """One broker session of the processor: its sources, the batches in flight."""

    def __init__(self, processor: CallProcessor, link: LinkSession) -> None:
        self._processor = processor
        self._link = link
        self._topology = processor._topology
        self._settlement = Settlement(link.publisher, self._topology, CALL_PROCESSOR)
        self._sources: dict[str, _Source] = {}
        self._leaving: list[_Source] = []
        self._in_flight: set[asyncio.Task[None]] = set()
        self._waker: asyncio.Future[None] | None = None
        self._next = 0  # where the next batch starts looking, round robin over sources
        self._failure: BaseException | None = None
        # Overflow batches of different replicas share a shard only by chance.
        partitions = CALL_PROCESSOR.partitions
        self._overflow_shard = partitions + zlib.crc32(processor.member.encode()) % partitions

    async def run(self) -> None:
        processor = self._processor
        loop = asyncio.get_running_loop()
        await self._subscribe(self._topology.queue(CALL_PROCESSOR), None)
        processor._partitions_changed = False
        await self._rebalance(processor.partitions)
        log.info("consuming", member=processor.member)
        while not processor._stopping.is_set():
            if processor._partitions_changed:
                processor._partitions_changed = False
                await self._rebalance(processor.partitions)
            await self._close_left()
            deadline = self._dispatch()
            if self._failure is not None:
                raise self._failure
            # Sleep until woken (a batch can start, a batch ended, the partitions changed,
            # stop) or a partial batch is due. No await between `_dispatch` and here: a
            # wake-up cannot slip in unseen.
            self._waker = loop.create_future()
            timer = loop.call_later(deadline, self.wake) if deadline is not None else None
            try:
                await self._waker
            finally:
                self._waker = None
                if timer is not None:
                    timer.cancel()
        await self._finish()

    def wake(self) -> None:
        if self._waker is not None and not self._waker.done():
            self._waker.set_result(None)

    # -- which queues ------------------------------------------------------------------------

    async def _subscribe(self, queue_name: str, partition: int | None) -> None:
        # A channel of its own, also for a partition given back before its old channel closed
        # (that one returns what it held when it closes).
        channel = await self._link.channel(prefetch=2 * self._processor._batch_size)
        source = _Source(queue_name, self._overflow_shard if partition is None else partition,
                         channel, partition)
        self._sources[queue_name] = source
        batch_size = self._processor._batch_size

        async def arrived(message: DeliveredMessage, source: _Source = source) -> None:
            inbox = source.inbox
            inbox.append(WireMessage(message))
            if len(inbox) == 1:
                source.waiting_since = time.monotonic()
            # Wake the loop only when a batch may start: its first message (the batch wait
            # begins) or a full batch; a busy source is looked at when its batch ends.
            if not source.busy and (len(inbox) == 1 or len(inbox) == batch_size):
                self.wake()

        wire = await source.channel.get_underlay_channel()
        source.tag = (await wire.basic_consume(queue_name, arrived)).consumer_tag

    async def _rebalance(self, partitions: frozenset[int]) -> None:
        wanted = {self._topology.partition_queue(CALL_PROCESSOR, p): p for p in partitions}
        for name, partition in sorted(wanted.items()):
            if name not in self._sources:
                await self._subscribe(name, partition)
        for name, source in list(self._sources.items()):
            if source.partition is not None and name not in wanted:
                await self._unsubscribe(source)
                del self._sources[name]
                # Its batch in flight finishes; what waits in its inbox goes back to the
                # queue, for the new owner, when the channel closes after that batch (the
                # two replicas then apply no more than that one batch side by side).
                source.inbox.clear()
                self._leaving.append(source)
        self._processor.metrics.partitions.set(len(wanted))

    async def _unsubscribe(self, source: _Source) -> None:
        if source.tag is None:
            return
        wire = await source.channel.get_underlay_channel()
        tag, source.tag = source.tag, None
        await asyncio.wait_for(wire.basic_cancel(tag), BROKER_CALL_TIMEOUT_SECONDS)

    async def _close_left(self) -> None:
        for source in list(self._leaving):
            if not source.busy and not source.inbox:
                self._leaving.remove(source)
                await self._link.close_channel(source.channel)

    # -- batches -----------------------------------------------------------------------------

    def _dispatch(self) -> float | None:
        """Start batches while there is room; the seconds until a partial batch is due."""
        processor = self._processor
        while len(self._in_flight) < processor._in_flight:
            sources = [*self._sources.values(), *self._leaving]
            start = self._next % len(sources) if sources else 0
            ready = [s for s in sources[start:] + sources[:start] if s.inbox and not s.busy]
            if not ready:
                return None
            waiting = sum(len(s.inbox) for s in ready)
            due = min(s.waiting_since for s in ready) + processor._batch_wait
            if waiting < processor._batch_size and time.monotonic() < due \
                    and not processor._stopping.is_set():
                return max(0.0, due - time.monotonic())
            parts: list[tuple[_Source, list[WireMessage]]] = []
            room = processor._batch_size
            for source in ready:
                taken = [source.inbox.popleft()
                         for _ in range(min(room, len(source.inbox)))]
                source.busy = True
                parts.append((source, taken))
                room -= len(taken)
                if source.inbox:
                    source.waiting_since = time.monotonic()
                if not room:
                    break
            self._next = start + 1
            task = asyncio.create_task(self._handle(parts))
            self._in_flight.add(task)
            task.add_done_callback(self._batch_done)
        return None

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()  # a broker failure ends this session
        self.wake()

    async def _handle(self, parts: Sequence[tuple[_Source, list[WireMessage]]]
                      ) -> None:
        processor = self._processor
        started = time.perf_counter()
        messages = [m for _, taken in parts for m in taken]
        shard = min(source.shard for source, _ in parts)
        try:
            outcome = await processor.apply(self._settlement, messages, shard)
            processor.live.changed(outcome.changed)  # committed: the boards may show it
            committed = {*outcome.applied, *outcome.unassigned}
            processor.metrics.batch_committed(
                (messages[i].headers or {}).get(HEADER_RECEIVED_AT) for i in committed)
            for index, reason in outcome.dead.items():
                await self._settlement.dead_letter(messages[index], reason)
            index = 0
            for source, taken in parts:
                mine = [m.delivery_tag or 0 for offset, m in enumerate(taken)
                        if index + offset in committed]
                index += len(taken)
                await source.acks.ack(taken, mine)
        finally:
            for source, _ in parts:
                source.busy = False
        processor.metrics.batch_seconds.observe(time.perf_counter() - started)
        for outcome_name, count in (("applied", len(outcome.applied)),
                                    ("unassigned", len(outcome.unassigned)),
                                    ("dead_lettered", len(outcome.dead))):
            if count:
                processor.metrics.events.labels(outcome_name).inc(count)
        log.info("batch_applied", events=len(messages), applied=len(outcome.applied),
                 unassigned=len(outcome.unassigned), dead_lettered=len(outcome.dead),
                 shard=shard, ms=round((time.perf_counter() - started) * 1000, 1))

    async def _finish(self) -> None:
        """Stopping: no more deliveries; finish (commit, ack) the batches in flight within
        the grace period. What is left is handed back unacknowledged."""
        for source in self._sources.values():
            with contextlib.suppress(Exception):
                await self._unsubscribe(source)
        if self._in_flight:
            finishing: asyncio.Future[Any] = asyncio.gather(*self._in_flight,
                                                            return_exceptions=True)
            await asyncio.wait([finishing, self._link.lost],
                               timeout=self._processor._shutdown_grace,
                               return_when=asyncio.FIRST_COMPLETED)

    async def abandon(self) -> None:
        """Batches still running are abandoned: their messages are redelivered (the channel
        is gone or about to be) and applying them again is idempotent."""
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
