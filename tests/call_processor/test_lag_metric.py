"""`calltrail_processor_lag_seconds`: how far behind the processor is, set at each commit
from the newest committed event's `x-received-at` (ingest's receive time, epoch ms)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable

import aio_pika
import orjson
from aio_pika.abc import FieldValue
from prometheus_client import CollectorRegistry

from call_processor.metrics import ProcessorMetrics
from calltrail_common.envelope import (
    HEADER_ENDPOINT_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_ORG_ID,
    HEADER_RECEIVED_AT,
)
from calltrail_common.topology import Topology, declare_topology, event_routing_key
from tests.call_processor.test_consumer import with_call_id
from tests.conftest import AMQP_URL
from tests.support.processor import eventually, queue_depth, running_processor

LAG = "calltrail_processor_lag_seconds"


def _lag(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(LAG)
    assert value is not None, f"{LAG} is not exported"
    return value


async def _publish_received(topology: Topology, org_id: object,
                            events: list[tuple[bytes, str, float]]) -> None:
    """Publish (body, message type, seconds ago) as ingest would, received that long ago."""
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_topology(channel, topology)
        for body, message_type, ago in events:
            headers: dict[str, FieldValue] = {HEADER_RECEIVED_AT: int((time.time() - ago) * 1000),
                       HEADER_ENDPOINT_ID: "ep_test", HEADER_ORG_ID: str(org_id),
                       HEADER_MESSAGE_TYPE: message_type}
            await exchange.publish(
                aio_pika.Message(body, headers=headers, message_id=uuid.uuid4().hex,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=event_routing_key(message_type))
    finally:
        await connection.close()


def _report(ago: float) -> tuple[bytes, str, float]:
    body = with_call_id("inbound-7-end-of-call-report", str(uuid.uuid4()))
    return orjson.dumps(body), "end-of-call-report", ago


async def test_the_lag_is_the_age_of_the_newest_committed_event(
        database_url: str, topology: Topology, org) -> None:
    async with running_processor(database_url, AMQP_URL, topology) as processor:
        registry = processor.metrics.registry
        assert _lag(registry) == 0.0  # nothing committed yet

        await _publish_received(topology, org.org_id, [_report(ago=120)])
        await eventually(lambda: _lag(registry) >= 120)
        assert _lag(registry) < 150

        await _publish_received(topology, org.org_id, [_report(ago=0)])
        await eventually(lambda: _lag(registry) < 10)

        # A dead-lettered event commits nothing: its age does not move the lag.
        await _publish_received(topology, org.org_id, [(b"{not json", "status-update", 600)])
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology, dead=True), 1))
        assert _lag(registry) < 10


async def _equals(depth: Awaitable[int], expected: int) -> bool:
    return await depth == expected


def test_a_batch_sets_the_lag_from_its_newest_event_and_ignores_what_is_not_a_time() -> None:
    metrics = ProcessorMetrics()
    now_ms = time.time() * 1000
    metrics.batch_committed([now_ms - 300_000, now_ms - 30_000, "soon", True, float("nan"), None])
    assert 30 <= _lag(metrics.registry) < 40
    metrics.batch_committed([])  # nothing committed: the last value stands
    assert 30 <= _lag(metrics.registry) < 40
    metrics.batch_committed([now_ms + 5_000])  # a clock ahead of ours
    assert _lag(metrics.registry) == 0.0
