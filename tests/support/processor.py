"""Running the call processor in tests, publishing events as ingest does, and waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import aio_pika
import orjson

from call_processor.consumer import CallProcessor
from calltrail_common.envelope import EventEnvelope, webhook_partition
from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology


@contextlib.asynccontextmanager
async def running_processor(database_url: str, amqp_url: str, topology: Topology,
                            batch_size: int = 50, heartbeat_seconds: int = 3,
                            batches_in_flight: int = 4) -> AsyncIterator[CallProcessor]:
    processor = CallProcessor(database_url=database_url, amqp_url=amqp_url, topology=topology,
                              batch_size=batch_size, batch_wait_seconds=0.01,
                              retention_days=30, heartbeat_seconds=heartbeat_seconds,
                              batches_in_flight=batches_in_flight,
                              member_heartbeat_seconds=0.2, member_ttl_seconds=1.0)
    task = asyncio.create_task(processor.run())
    try:
        yield processor
    finally:
        processor.stop()
        await asyncio.wait_for(task, 20)


async def publish(amqp_url: str, topology: Topology, bodies: Sequence[dict | bytes],
                  org_id: object | None = None, *, message_ids: Sequence[str] | None = None,
                  message_type: str | None = None) -> list[str]:
    """Publish webhook bodies to the events exchange exactly as ingest would."""
    connection = await aio_pika.connect(amqp_url)
    ids = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_topology(channel, topology)
        for index, body in enumerate(bodies):
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            message_id = message_ids[index] if message_ids else uuid.uuid4().hex
            message: Any = {}
            with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                message = orjson.loads(raw)["message"]
            kind = message_type
            if kind is None:
                kind = message.get("type") if isinstance(message, dict) else None
                kind = kind if isinstance(kind, str) else "unknown"
            envelope = EventEnvelope(
                message_id=message_id, message_type=kind,
                received_at_ms=int(time.time() * 1000),
                endpoint_id="shared" if org_id is None else "ep_test",
                partition=webhook_partition(message if isinstance(message, dict) else {},
                                            message_id),
                org_id=None if org_id is None else str(org_id))
            ids.append(message_id)
            await exchange.publish(envelope.message(raw), routing_key=envelope.routing_key)
    finally:
        await connection.close()
    return ids


async def queue_depth(amqp_url: str, topology: Topology, *, dead: bool = False) -> int:
    """Messages ready in the processor's dead-letter queue, or in all its work queues (the
    partitions and the overflow)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        names = ([topology.dead_letter_queue(CALL_PROCESSOR)] if dead
                 else topology.work_queues(CALL_PROCESSOR))
        total = 0
        for name in names:
            queue = await channel.declare_queue(name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total
    finally:
        await connection.close()


async def eventually(check: Callable[[], Any], timeout: float = 30.0,
                     interval: float = 0.1) -> Any:
    """Await `check()` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)
