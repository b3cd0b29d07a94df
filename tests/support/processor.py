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
from calltrail_common.topology import (
    CALL_PROCESSOR,
    Topology,
    declare_topology,
    event_routing_key,
)


@contextlib.asynccontextmanager
async def running_processor(database_url: str, amqp_url: str, topology: Topology,
                            batch_size: int = 50, heartbeat_seconds: int = 3
                            ) -> AsyncIterator[CallProcessor]:
    processor = CallProcessor(database_url=database_url, amqp_url=amqp_url, topology=topology,
                              batch_size=batch_size, batch_wait_seconds=0.01,
                              retention_days=30, heartbeat_seconds=heartbeat_seconds)
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
            kind = message_type
            if kind is None:
                try:
                    kind = orjson.loads(raw)["message"]["type"]
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    kind = "unknown"
            headers: dict[str, Any] = {"x-received-at": int(time.time() * 1000),
                                       "x-endpoint-id": "shared",
                                       "x-message-type": kind}
            if org_id is not None:
                headers["x-org-id"] = str(org_id)
                headers["x-endpoint-id"] = "ep_test"
            message_id = message_ids[index] if message_ids else uuid.uuid4().hex
            ids.append(message_id)
            await exchange.publish(
                aio_pika.Message(raw, headers=headers, message_id=message_id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                 content_type="application/json"),
                routing_key=event_routing_key(kind))
    finally:
        await connection.close()
    return ids


async def queue_depth(amqp_url: str, topology: Topology, *, dead: bool = False) -> int:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        name = (topology.dead_letter_queue(CALL_PROCESSOR) if dead
                else topology.queue(CALL_PROCESSOR))
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count
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
