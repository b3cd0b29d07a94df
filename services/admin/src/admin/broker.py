"""The admin CLI's side of RabbitMQ: read and replay dead letters (handing archived events
back to the processor is `calltrail_common.handback`, shared with metrics-sync)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel

from calltrail_common.broker import BrokerLink
from calltrail_common.envelope import (
    HEADER_DEDUPE_KEY,
    HEADER_MESSAGE_TYPE,
    dead_letter_reason,
    header_text,
    replay_headers,
)
from calltrail_common.topology import CALL_PROCESSOR, Topology


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    reason: str
    message_type: str | None
    dedupe_key: str | None


# A command's connection lives for seconds; heartbeats only need to outlast a slow step.
COMMAND_HEARTBEAT_SECONDS = 30


@contextlib.asynccontextmanager
async def confirmed_channel(amqp_url: str, topology: Topology) -> AsyncIterator[AbstractChannel]:
    """A confirming channel with the topology declared, for one command."""
    link = BrokerLink(amqp_url, topology, heartbeat_seconds=COMMAND_HEARTBEAT_SECONDS,
                      name="cli")
    async with link.session_once() as session:
        yield session.publisher


async def dead_letters(channel: AbstractChannel, topology: Topology, *, replay: bool
                       ) -> list[DeadLetter]:
    """Every message in the dead-letter queue; with `replay`, each is handed back to the
    processor (its partition, by its own header) and removed once the broker confirmed the
    copy. Without it, all stay."""
    queue = await channel.get_queue(topology.dead_letter_queue(CALL_PROCESSOR), ensure=False)
    partitions = await channel.get_exchange(topology.partitions_exchange(CALL_PROCESSOR),
                                            ensure=False)
    seen: list[DeadLetter] = []
    held = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        headers = dict(message.headers or {})
        seen.append(DeadLetter(message.message_id, dead_letter_reason(headers),
                               header_text(headers, HEADER_MESSAGE_TYPE),
                               header_text(headers, HEADER_DEDUPE_KEY)))
        if replay:
            await partitions.publish(
                aio_pika.Message(message.body, headers=replay_headers(headers),
                                 content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 message_id=message.message_id),
                routing_key="", mandatory=True)
            await message.ack()
        else:
            held.append(message)
    for message in held:  # listing only: put every one back
        await message.nack(requeue=True)
    return seen
