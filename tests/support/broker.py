"""Reading what reached the broker, for assertions."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology


async def drain_queue(amqp_url: str, topology: Topology, *, expect: int,
                      timeout: float = 15.0) -> list[AbstractIncomingMessage]:
    """Take messages off the call processor's queues (its partitions and its overflow)
    until `expect` arrived or `timeout`. (A consumer each: a partition queue has a single
    active consumer, and such a queue refuses basic.get.)"""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)  # idempotent: ingest may not have yet
        messages: list[AbstractIncomingMessage] = []
        enough = asyncio.Event()

        async def take(message: AbstractIncomingMessage) -> None:
            messages.append(message)
            if len(messages) >= expect:
                enough.set()

        for name in topology.work_queues(CALL_PROCESSOR):
            await (await channel.get_queue(name, ensure=False)).consume(take, no_ack=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(enough.wait(), timeout)
        # Anything beyond `expect` is a bug too: give it a moment to show up.
        await asyncio.sleep(0.2)
        return list(messages)
    finally:
        await connection.close()
