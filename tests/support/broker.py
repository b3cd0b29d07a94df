"""Reading what reached the broker, for assertions."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology


async def drain_queue(amqp_url: str, topology: Topology, *, expect: int,
                      timeout: float = 15.0) -> list[AbstractIncomingMessage]:
    """Take messages off the call-processor queue until `expect` arrived or `timeout`."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)  # idempotent: ingest may not have yet
        queue = await channel.get_queue(topology.queue(CALL_PROCESSOR), ensure=False)
        messages: list[AbstractIncomingMessage] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(messages) < expect and asyncio.get_running_loop().time() < deadline:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            messages.append(message)
        # Anything beyond `expect` is a bug too: give it a moment to show up.
        await asyncio.sleep(0.2)
        while (extra := await queue.get(no_ack=True, fail=False)) is not None:
            messages.append(extra)
        return messages
    finally:
        await connection.close()
