"""The senders: the dispatcher's queue, one attempt per message, and what becomes of it.

Acknowledgement policy (calltrail_common.settlement), in full; every outcome is written to
the delivery log (`recorder`) before its message is settled:
- answered 2xx: marked succeeded, acknowledged;
- a failed attempt (another status, a redirect, a timeout, a refused target, a connection
  error): sent to the next retry queue (5 s, 30 s, 2 min, ... 10 h: `topology.DISPATCHER`);
  after the last, marked dead and dead-lettered with the last error as its reason;
- its endpoint disabled: marked skipped, acknowledged, not attempted;
- its endpoint gone (deleted, with its deliveries): acknowledged, nothing to send;
- no slot free for its endpoint within `SLOT_WAIT_SECONDS` (or as many waiting already as
  it can serve in that time: `EndpointSlots`): deferred through the shortest retry delay
  without counting an attempt, so a receiver that hangs holds at most
  WEBHOOKS_ENDPOINT_CONCURRENCY requests of this replica (and as many messages waiting)
  and delays only its own deliveries;
- names no delivery: dead-lettered with the reason;
- Postgres unreachable (reading the endpoint, writing the log): held unacknowledged and
  tried again with back-off.
A settlement the broker does not take ends the link (the message is delivered again on the
next one); if the process dies, unacknowledged messages return to the queue.

Concurrency: at most WEBHOOKS_CONCURRENCY attempts in flight per replica, at most
WEBHOOKS_ENDPOINT_CONCURRENCY to one endpoint; twice WEBHOOKS_CONCURRENCY messages are
prefetched, so messages waiting for their endpoint's slot never leave the others idle.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiormq.abc import DeliveredMessage

from calltrail_common.broker import LinkSession
from calltrail_common.db import TRANSIENT_ERRORS
from calltrail_common.envelope import retry_count
from calltrail_common.logging import get_logger
from calltrail_common.settlement import BROKER_CALL_TIMEOUT_SECONDS, Settlement, WireMessage, ack
from dispatcher.attempts import Outcome, State, state_after
from dispatcher.endpoints import Endpoint, EndpointCache
from dispatcher.messages import DeliveryMessage, NotADelivery
from dispatcher.metrics import DispatcherMetrics
from dispatcher.recorder import OutcomeRecorder
from dispatcher.sender import Sender

log = get_logger("dispatcher")

# How long a delivery waits for a slot of its endpoint before it is deferred: long enough
# that a burst to a healthy receiver queues here instead of going round the retry queue
# (its slots free up in milliseconds), short enough that a hanging one holds little.
SLOT_WAIT_SECONDS = 1.0
# How an endpoint's pace is measured: slots that came free per window.
RATE_WINDOW_SECONDS = 1.0
_PAUSE_MAX_SECONDS = 5.0


class AttemptFailed(Exception):
    """A failed attempt, as the retry and dead-letter headers name it."""


class SettlementFailed(Exception):
    """The broker did not take a settlement (an ack, a retry, a dead letter): the link is
    renewed and the message, unacknowledged, is delivered again."""


class EndpointSlots:
    """At most `per_endpoint` attempts in flight to one endpoint, each delivery waiting at
    most `wait_seconds` for one, and no more waiting than the endpoint can serve within a
    wait: as many as it answered in the last second (scaled to the wait), at least
    `per_endpoint`, and any number in the first second (nothing is known of it yet).

    So a busy, healthy receiver's deliveries queue here, milliseconds each, instead of going
    round the 5 s retry delay (which at 500/s was most of the p99: bench.dispatch), while a
    slow receiver's, or one that hangs, are held to `per_endpoint` waiting and the rest are
    deferred at once: it holds no more than twice its share of the replica's prefetched
    messages."""

    def __init__(self, per_endpoint: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_endpoint = per_endpoint
        self._clock = clock
        self._slots: dict[uuid.UUID, _Slot] = {}

    async def acquire(self, endpoint_id: uuid.UUID, wait_seconds: float) -> bool:
        """True with a slot held (give it back with `release`); False when none came free
        within `wait_seconds`, or at once when as many wait already as the endpoint can
        serve."""
        now = self._clock()
        slot = self._slots.get(endpoint_id)
        if slot is None:
            slot = self._slots[endpoint_id] = _Slot(
                asyncio.Semaphore(self._per_endpoint), since=now, window_start=now)
        if not slot.semaphore.locked():
            slot.users += 1
            await slot.semaphore.acquire()  # free: taken without waiting
            return True
        if slot.waiting >= self._wait_limit(slot, now, wait_seconds):
            return False  # as many wait already as it can serve within a wait
        slot.users += 1
        slot.waiting += 1
        try:
            await asyncio.wait_for(slot.semaphore.acquire(), wait_seconds)
        except TimeoutError:
            self._leave(endpoint_id, slot)
            return False
        except BaseException:
            self._leave(endpoint_id, slot)
            raise
        finally:
            slot.waiting -= 1
        return True

    def release(self, endpoint_id: uuid.UUID) -> None:
        slot = self._slots[endpoint_id]
        slot.count_freed(self._clock())
        slot.semaphore.release()
        self._leave(endpoint_id, slot)

    def _wait_limit(self, slot: _Slot, now: float, wait_seconds: float) -> float:
        if now - slot.since < RATE_WINDOW_SECONDS:
            return math.inf
        freed = slot.freed_per_window(now)
        return max(self._per_endpoint, freed * wait_seconds / RATE_WINDOW_SECONDS)

    def _leave(self, endpoint_id: uuid.UUID, slot: _Slot) -> None:
        slot.users -= 1
        if slot.users == 0:
            del self._slots[endpoint_id]


@dataclass(eq=False)
class _Slot:
    semaphore: asyncio.Semaphore
    since: float  # when its first slot was taken
    window_start: float
    freed: int = 0  # slots that came free since window_start
    freed_before: int = 0  # in the window before it
    users: int = 0  # holding or waiting for a slot
    waiting: int = 0

    def count_freed(self, now: float) -> None:
        self._roll(now)
        self.freed += 1

    def freed_per_window(self, now: float) -> int:
        """Slots freed in the last window (or this one, when more)."""
        self._roll(now)
        return max(self.freed, self.freed_before)

    def _roll(self, now: float) -> None:
        elapsed = now - self.window_start
        if elapsed >= RATE_WINDOW_SECONDS:
            self.freed_before = self.freed if elapsed < 2 * RATE_WINDOW_SECONDS else 0
            self.freed = 0
            self.window_start = now


@dataclass(eq=False)
class Senders:
    """What sending needs, for the life of the service (broker links come and go)."""

    sender: Sender
    endpoints: EndpointCache
    recorder: OutcomeRecorder
    slots: EndpointSlots
    attempts: asyncio.Semaphore  # WEBHOOKS_CONCURRENCY
    metrics: DispatcherMetrics
    retry_delays: int  # how many retry delays a delivery goes through before it is dead
    on_paused: Callable[[bool], None]


@dataclass(eq=False)
class Consumption:
    """One broker session's consumer of the dispatcher's queue and its attempts in flight."""

    senders: Senders
    link: LinkSession
    settlement: Settlement
    queue: str
    prefetch: int
    # Resolves with the error's name when a settlement failed.
    failed: asyncio.Future[str] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    _handling: set[asyncio.Task[None]] = field(default_factory=set)
    _tag: str | None = None
    _wire: Any = None

    async def start(self) -> None:
        channel = await self.link.channel(prefetch=self.prefetch)
        self._wire = await channel.get_underlay_channel()
        self._tag = (await self._wire.basic_consume(self.queue, self._arrived)).consumer_tag

    async def _arrived(self, message: DeliveredMessage) -> None:
        task = asyncio.create_task(self._handle(WireMessage(message)))
        self._handling.add(task)
        task.add_done_callback(self._handled)

    def _handled(self, task: asyncio.Task[None]) -> None:
        self._handling.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        if not self.failed.done():  # the broker refused a settlement: renew the link
            log.warning("settlement_failed", error=type(error).__name__)
            self.failed.set_result(type(error).__name__)

    async def finish(self, grace_seconds: float) -> None:
        """No more messages; the attempts in flight get `grace_seconds` to end and be
        settled, then the rest are abandoned (their messages are delivered again)."""
        if self._tag is not None and self._wire is not None:
            tag, self._tag = self._tag, None
            try:
                await asyncio.wait_for(self._wire.basic_cancel(tag),
                                       BROKER_CALL_TIMEOUT_SECONDS)
            except Exception as error:
                log.debug("consumer_not_cancelled", error=type(error).__name__)
        if self._handling and grace_seconds > 0:
            await asyncio.wait(list(self._handling), timeout=grace_seconds)
        for task in self._handling:
            task.cancel()
        await asyncio.gather(*self._handling, return_exceptions=True)
        self.failed.cancel()

    # -- one message -----------------------------------------------------------------------

    async def _handle(self, message: WireMessage) -> None:
        senders = self.senders
        metrics = senders.metrics
        try:
            delivery = DeliveryMessage.read(message.message_id, message.headers, message.body)
        except NotADelivery as error:
            await self.settlement.dead_letter(message, f"not a delivery: {error}")
            metrics.deliveries.labels("invalid").inc()
            return
        endpoint = await self._endpoint(delivery.endpoint_id)
        if endpoint is None:
            await ack(message)
            metrics.deliveries.labels("dropped").inc()
            log.info("delivery_dropped", delivery_id=str(delivery.delivery_id),
                     endpoint_id=str(delivery.endpoint_id), reason="endpoint gone")
            return
        if endpoint.disabled:
            await self._record(Outcome(delivery.delivery_id, delivery.endpoint_id,
                                       State.SKIPPED, _now()))
            await ack(message)
            metrics.deliveries.labels("skipped").inc()
            return
        if not await senders.slots.acquire(endpoint.endpoint_id, SLOT_WAIT_SECONDS):
            await self.settlement.defer(message)
            metrics.deliveries.labels("deferred").inc()
            return
        try:
            async with senders.attempts:
                metrics.in_flight.inc()
                try:
                    at = _now()
                    answer = await senders.sender.send(endpoint.url, endpoint.signer, delivery)
                finally:
                    metrics.in_flight.dec()
        finally:
            senders.slots.release(endpoint.endpoint_id)
        metrics.attempt_seconds.observe(answer.latency_ms / 1000)
        retries = retry_count(message.headers)
        state = state_after(answer, retries, senders.retry_delays)
        await self._record(Outcome(delivery.delivery_id, delivery.endpoint_id, state, at,
                                   answer))
        if state is State.SUCCEEDED:
            await ack(message)
            metrics.deliveries.labels("succeeded").inc()
            log.debug("webhook_delivered", delivery_id=str(delivery.delivery_id),
                      status=answer.status, ms=answer.latency_ms)
            return
        log.info("webhook_attempt_failed", delivery_id=str(delivery.delivery_id),
                 endpoint_id=str(delivery.endpoint_id), status=answer.status,
                 error=answer.error, attempt=retries + 1, ms=answer.latency_ms)
        if state is State.DEAD:
            await self.settlement.dead_letter(
                message, f"{retries + 1} attempts failed, the last: {answer.error}")
            metrics.deliveries.labels("dead").inc()
        else:
            await self.settlement.retry_later(message, AttemptFailed(answer.error or ""))
            metrics.deliveries.labels("failed").inc()

    async def _endpoint(self, endpoint_id: uuid.UUID) -> Endpoint | None:
        """The endpoint, waiting out a database that is away."""
        attempt = 0
        while True:
            try:
                endpoint = await self.senders.endpoints.get(endpoint_id)
                if attempt:
                    self.senders.on_paused(False)
                return endpoint
            except TRANSIENT_ERRORS as error:
                self.senders.on_paused(True)
                attempt += 1
                pause = min(0.1 * 2 ** attempt, _PAUSE_MAX_SECONDS)
                log.warning("endpoint_unreadable", error=type(error).__name__,
                            endpoint_id=str(endpoint_id), retry_in=pause)
                await asyncio.sleep(pause)

    async def _record(self, outcome: Outcome) -> None:
        """Write the outcome; a write that failed for a reason other than the database being
        away (logged by the recorder) does not hold the delivery: it is settled as it went."""
        try:
            await self.senders.recorder.record(outcome)
        except Exception as error:
            log.error("outcome_not_recorded", delivery_id=str(outcome.delivery_id),
                      error=type(error).__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)

