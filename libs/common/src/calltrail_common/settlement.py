"""What becomes of a delivered message: the one policy of every Calltrail consumer.

- done (its effects are committed): acknowledged, in delivery order (`AckCursor`);
- failed in a way that may pass (`retry_later`): a copy goes to the consumer's retry queue
  for the next delay of `ConsumerQueue.retry_delays_ms` (it comes back to the consumer's
  queue when the delay is over), then the message is acknowledged; past the last delay it
  is dead-lettered with the error as its reason;
- can never be processed (`dead_letter`): a copy goes to the dead-letter queue with the
  reason in a header, then the message is acknowledged;
- not tried now (`defer`): a copy goes through the shortest retry delay, no retry counted.

A copy is published on a confirming channel and the original acknowledged only after the
broker confirmed the copy, so a crash in between leaves a duplicate (harmless: processing
is idempotent), never a loss. What a consumer does while its database is down (hold the
batch, retry it in place) is its own: nothing is settled then.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aio_pika
from aio_pika.abc import AbstractChannel
from aiormq.abc import AbstractChannel as WireChannel
from aiormq.abc import DeliveredMessage

from calltrail_common.envelope import dead_letter_headers, retry_count, retry_headers
from calltrail_common.logging import get_logger
from calltrail_common.topology import ConsumerQueue, Topology

log = get_logger("settlement")

# Bound on every wait on the broker: a peer that is gone never holds the consumer.
BROKER_CALL_TIMEOUT_SECONDS = 10.0


class Delivered(Protocol):
    """What settling a message needs of it: aio-pika's `IncomingMessage` is one, and so is
    `WireMessage`, a lighter one for a consumer that takes messages off aiormq's channel."""

    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> Mapping[str, Any] | None: ...
    @property
    def message_id(self) -> str | None: ...
    @property
    def delivery_tag(self) -> int | None: ...
    @property
    def routing_key(self) -> str | None: ...
    @property
    def content_type(self) -> str | None: ...
    async def ack(self, multiple: bool = False) -> None: ...


@dataclass(frozen=True, slots=True)
class WireMessage:
    """A message as aiormq delivers it: no aio-pika object per message (building one was a
    tenth of the processor's time at a few thousand events/s)."""

    message: DeliveredMessage

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def headers(self) -> Mapping[str, Any] | None:
        return self.message.header.properties.headers

    @property
    def message_id(self) -> str | None:
        return self.message.header.properties.message_id

    @property
    def delivery_tag(self) -> int | None:
        return self.message.delivery_tag

    @property
    def routing_key(self) -> str | None:
        return self.message.routing_key

    @property
    def content_type(self) -> str | None:
        return self.message.header.properties.content_type

    async def ack(self, multiple: bool = False) -> None:
        channel: WireChannel = self.message.channel
        await channel.basic_ack(self.message.delivery_tag or 0, multiple=multiple)


def message_id(message: Delivered) -> str:
    return message.message_id or f"tag-{message.delivery_tag}"


async def ack(message: Delivered) -> None:
    await asyncio.wait_for(message.ack(), BROKER_CALL_TIMEOUT_SECONDS)


class Settlement:
    """Dead-lettering and retrying for one consumer queue, through `publisher` (a channel
    with publisher confirms)."""

    def __init__(self, publisher: AbstractChannel, topology: Topology,
                 consumer: ConsumerQueue) -> None:
        self._publisher = publisher
        self._topology = topology
        self._consumer = topology.consumer(consumer)  # its retry delays as declared

    async def dead_letter(self, message: Delivered, reason: str, *,
                          log_reason: str | None = None) -> None:
        """Publish to the dead-letter queue with `reason` (for operators), then ack. The log
        gets `log_reason` when the reason may quote data (a database error can quote a
        value)."""
        exchange = await self._publisher.get_exchange(self._topology.dead_letter_exchange,
                                                      ensure=False)
        headers = dead_letter_headers(message.headers, reason, message.routing_key)
        await exchange.publish(_copy(message, headers),
                               routing_key=self._topology.queue(self._consumer),
                               mandatory=True, timeout=BROKER_CALL_TIMEOUT_SECONDS)
        await ack(message)
        log.warning("event_dead_lettered", queue=self._consumer.name,
                    message_id=message_id(message), reason=log_reason or reason)

    async def retry_later(self, message: Delivered, error: BaseException) -> bool:
        """Send `message` to its next retry queue and ack it; True. Out of retries: dead-letter
        it with the error as its reason; False."""
        retries = retry_count(message.headers)
        delays = self._consumer.retry_delays_ms
        if retries >= len(delays):
            await self.dead_letter(message, f"{type(error).__name__}: {error}"[:500],
                                   log_reason=type(error).__name__)
            return False
        await self._publisher.default_exchange.publish(
            _copy(message, retry_headers(message.headers)),
            routing_key=self._topology.retry_queue(self._consumer, delays[retries]),
            mandatory=True, timeout=BROKER_CALL_TIMEOUT_SECONDS)
        await ack(message)
        log.warning("event_retry_scheduled", queue=self._consumer.name,
                    message_id=message_id(message), retries=retries + 1,
                    delay_ms=delays[retries], error=type(error).__name__)
        return True

    async def defer(self, message: Delivered) -> None:
        """Send `message` through the shortest retry delay without counting a retry (it was
        not tried: the dispatcher's slots for its endpoint were full), then ack it."""
        delay_ms = self._consumer.retry_delays_ms[0]
        await self._publisher.default_exchange.publish(
            _copy(message, dict(message.headers or {})),
            routing_key=self._topology.retry_queue(self._consumer, delay_ms),
            mandatory=True, timeout=BROKER_CALL_TIMEOUT_SECONDS)
        await ack(message)


class AckCursor:
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

    async def ack(self, messages: Sequence[Delivered],
                  committed: Sequence[int]) -> None:
        tags = sorted(m.delivery_tag or 0 for m in messages)
        by_tag = {m.delivery_tag: m for m in messages}
        try:
            if committed and tags == list(range(self.settled_through + 1,
                                                self.settled_through + 1 + len(tags))):
                await asyncio.wait_for(by_tag[max(committed)].ack(multiple=True),
                                       BROKER_CALL_TIMEOUT_SECONDS)
            else:
                for tag in committed:
                    await ack(by_tag[tag])
        finally:
            self.settled_through = max(self.settled_through, tags[-1] if tags else 0)


def _copy(message: Delivered, headers: dict) -> aio_pika.Message:
    return aio_pika.Message(message.body, headers=headers, content_type=message.content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            message_id=message.message_id)
