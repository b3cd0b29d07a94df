"""Making an accepted webhook durable: the broker's confirm, or else an fsync in the spool.

Rule: while the spool holds events of a processor partition not yet re-published, that
partition's new events are spooled too, so the broker receives each partition's events in
the order ingest accepted them (the processor consumes partitions side by side: there is no
order across them). Other partitions' events go straight to the broker, so a partition whose
queue cannot confirm (its leader node frozen) holds back only its own events. Only when the
spool cannot take an event is it published directly, out of order, rather than refused.
The replayer drains the spool (this process's slot first, then slots left behind by dead
processes) whenever the broker is connected, committing its read position only after the
broker confirmed each batch.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
from pathlib import Path
from typing import Any

from calltrail_common.logging import get_logger
from ingest.broker import BrokerPublisher, BrokerUnavailable
from ingest.errors import Unavailable
from ingest.payload import AcceptedEvent
from ingest.spool import Spool, SpoolUnavailable, adopt_orphans

log = get_logger(__name__)

_REPLAY_BATCH = 256
# Batches published and awaiting their confirms at once: the next is read and sent while
# the broker confirms the last (one at a time, a replay took ~2,800 events/s here).
_REPLAY_BATCHES_IN_FLIGHT = 4
_REPLAY_IDLE_SECONDS = 1.0
_ORPHAN_SCAN_SECONDS = 10.0
# On stop, how long the spool may take to reach a connected broker (within the grace a
# process is given: Kubernetes' 30 s, uvicorn's own drain first).
_CLOSE_DRAIN_SECONDS = 5.0


class Kept(enum.Enum):
    PUBLISHED = "published"
    SPOOLED = "spooled"


class Outbox:
    def __init__(self, broker: BrokerPublisher, spool: Spool, spool_root: Path) -> None:
        self._broker = broker
        self._spool = spool
        self._spool_root = spool_root
        self._orphans: list[Spool] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        broker.on_connected = self.wake

    @property
    def spool_depth(self) -> int:
        return self._spool.backlog + sum(o.backlog for o in self._orphans)

    def ready(self) -> bool:
        return self._broker.connected or self._spool.is_writable()

    def _backlog_of(self, partition: int) -> int:
        return self._spool.backlog_of(partition) + sum(o.backlog_of(partition)
                                                       for o in self._orphans)

    async def keep(self, event: AcceptedEvent) -> Kept:
        """Return once `event` is durable; raise `Unavailable` when it cannot be made so."""
        if self._backlog_of(event.envelope.partition) == 0 and self._broker.connected:
            try:
                await self._broker.publish(event)
                return Kept.PUBLISHED
            except BrokerUnavailable as error:
                log.warning("publish_failed_spooling", reason=str(error),
                            message_id=event.message_id)
        try:
            await self._spool.append(event)
        except SpoolUnavailable as error:
            # The spool is full or broken while it still holds a backlog: a broker that takes
            # the event now beats a 503 (the processor does not depend on order).
            if self._broker.connected:
                with contextlib.suppress(BrokerUnavailable):
                    await self._broker.publish(event)
                    return Kept.PUBLISHED
            log.error("event_not_durable", reason=str(error), message_id=event.message_id)
            raise Unavailable from None
        self._wake.set()
        return Kept.SPOOLED

    def wake(self) -> None:
        """The broker (re)connected: drain now rather than at the next tick."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._replay_forever(), name="spool-replay")

    async def close(self, drain_seconds: float = _CLOSE_DRAIN_SECONDS) -> None:
        """Stop replaying. First, while the broker is connected, give the spool up to
        `drain_seconds` to reach it: a replica stopped under load (events spooled when a
        confirm was late) leaves nothing behind when it can. What remains stays on disk for
        the next process on this slot, or for another replica's adoption."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_seconds
        while (self._task is not None and not self._task.done() and self._spool.backlog
               and self._broker.connected and loop.time() < deadline):
            self._wake.set()
            await asyncio.sleep(0.02)
        if self._spool.backlog:
            log.info("spool_left_for_next_start", backlog=self._spool.backlog)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for orphan in self._orphans:
            orphan.close()
        self._orphans.clear()

    async def _replay_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_orphan_scan = 0.0
        while True:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _REPLAY_IDLE_SECONDS)
            self._wake.clear()
            if loop.time() >= next_orphan_scan:
                next_orphan_scan = loop.time() + _ORPHAN_SCAN_SECONDS
                try:
                    self._orphans.extend(adopt_orphans(self._spool_root, self._spool))
                except OSError as error:
                    log.warning("spool_orphan_scan_failed", error=str(error))
            if not self._broker.connected:
                continue
            try:
                await self._drain(self._spool)
                for orphan in list(self._orphans):
                    await self._drain(orphan)
                    self._orphans.remove(orphan)
                    orphan.close()
                    log.info("spool_orphan_drained", slot=orphan.directory.name)
            except BrokerUnavailable as error:
                log.warning("spool_replay_paused", reason=str(error))
            except OSError as error:
                log.error("spool_replay_failed", error=str(error))

    async def _drain(self, spool: Spool) -> None:
        """Publish what `spool` holds, in order, several batches awaiting their confirms at
        once; commit each batch's position once it and every batch before it is confirmed.
        A failure stops the drain: what was not committed is published again next time
        (the processor dedupes)."""
        in_flight: collections.deque[
            tuple[asyncio.Future[list[Any]], list[AcceptedEvent], Any]] = collections.deque()
        read_to = spool.read_position
        ahead = 0  # events read and published, not yet committed
        try:
            while spool.backlog > 0:
                while len(in_flight) < _REPLAY_BATCHES_IN_FLIGHT and spool.backlog > ahead:
                    events, position = spool.read_batch(_REPLAY_BATCH, start=read_to)
                    if not events:
                        break  # appends in flight are not readable until their fsync returns
                    # Publishes issued in order reach the channel in order; confirms overlap.
                    in_flight.append((asyncio.gather(
                        *(self._broker.publish(event) for event in events),
                        return_exceptions=True), events, position))
                    read_to, ahead = position, ahead + len(events)
                if not in_flight:
                    await asyncio.sleep(0.005)
                    continue
                publishing, published, position = in_flight.popleft()
                results = await publishing
                failure = next((r for r in results if isinstance(r, BaseException)), None)
                if failure is not None:
                    raise failure if isinstance(failure, BrokerUnavailable) \
                        else BrokerUnavailable(repr(failure))
                spool.commit(published, position)
                ahead -= len(published)
                log.info("spool_replayed", events=len(published), backlog=spool.backlog,
                         slot=spool.directory.name)
        finally:
            for publishing, _, _ in in_flight:  # after a failure: not committed, retried
                publishing.cancel()
            await asyncio.gather(*(p for p, _, _ in in_flight), return_exceptions=True)
