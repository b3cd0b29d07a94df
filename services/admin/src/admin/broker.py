"""The admin CLI's side of RabbitMQ: read and replay dead letters (handing archived events
back to the processor is `calltrail_common.handback`, shared with metrics-sync)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from calltrail_common import broker
from calltrail_common.topology import (
    CALL_PROCESSOR,
    HEADER_DEAD_LETTER_REASON,
    HEADER_DEDUPE_KEY,
    HEADER_MESSAGE_TYPE,
    Topology,
    declare_topology,
)

# Headers a replay drops: they describe the failed attempt, not the event.
_ATTEMPT_HEADERS = {HEADER_DEAD_LETTER_REASON, "x-retries", "x-death", "x-first-death-exchange",
                    "x-first-death-queue", "x-first-death-reason", "x-original-routing-key",
                    "x-delivery-count"}


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
    connection = await broker.connect(amqp_url, heartbeat_seconds=COMMAND_HEARTBEAT_SECONDS)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)
        yield channel
    finally:
        await connection.close()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _reason(headers: dict[str, Any]) -> str:
    if HEADER_DEAD_LETTER_REASON in headers:
        return str(headers[HEADER_DEAD_LETTER_REASON])
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):  # dead-lettered by the broker itself
        return f"broker: {deaths[0].get('reason')}"
    return "unknown"


async def dead_letters(channel: AbstractChannel, topology: Topology, *, replay: bool
                       ) -> list[DeadLetter]:
    """Every message in the dead-letter queue; with `replay`, each is handed back to the
    processor and removed once the broker confirmed the copy. Without it, all stay."""
    queue = await channel.get_queue(topology.dead_letter_queue(CALL_PROCESSOR), ensure=False)
    seen: list[DeadLetter] = []
    held = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        headers = dict(message.headers or {})
        seen.append(DeadLetter(message.message_id, _reason(headers),
                               _text(headers.get(HEADER_MESSAGE_TYPE)),
                               _text(headers.get(HEADER_DEDUPE_KEY))))
        if replay:
            clean = {k: v for k, v in headers.items() if k not in _ATTEMPT_HEADERS}
            await channel.default_exchange.publish(
                aio_pika.Message(message.body, headers=clean, content_type="application/json",
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 message_id=message.message_id),
                routing_key=topology.queue(CALL_PROCESSOR), mandatory=True)
            await message.ack()
        else:
            held.append(message)
    for message in held:  # listing only: put every one back
        await message.nack(requeue=True)
    return seen
