"""The processor's side of the live board (decision 46): after a batch commits, one
transient message names the calls it changed; an event that changes nothing sends none;
and when live messages cannot go out, the batches go on and the loss is counted."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import asyncpg

from call_processor.live import MAX_PENDING, LivePublisher
from call_processor.metrics import ProcessorMetrics
from calltrail_common.live import decode_changes
from calltrail_common.topology import Topology, declare_topology
from tests.conftest import AMQP_URL
from tests.support.live import now_ms, status_update
from tests.support.processor import eventually, publish, running_processor


def _dropped(metrics: ProcessorMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("calltrail_processor_live_dropped_total",
                                             {"reason": reason}) or 0.0


async def test_committed_changes_are_published_after_the_commit(
        database_url: str, topology: Topology, org) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    database = await asyncpg.connect(database_url)
    try:
        channel = await connection.channel()
        await declare_topology(channel, topology)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(topology.live_exchange)
        call_id = f"live-{uuid.uuid4().hex[:8]}"
        ringing = status_update(call_id, "ringing", created_ms=now_ms())
        async with running_processor(database_url, AMQP_URL, topology) as processor:
            await publish(AMQP_URL, topology, [ringing], org.org_id)
            message = await eventually(lambda: queue.get(fail=False))
            assert message.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
            assert decode_changes(message.body) == [(org.org_id, call_id)]
            # Sent after the commit: the row is there for whoever reads it now.
            assert await database.fetchval("SELECT status FROM calls WHERE id = $1",
                                           call_id) == "ringing"
            # The same event again changes nothing: no message.
            await publish(AMQP_URL, topology, [ringing], org.org_id)
            await eventually(lambda: database.fetchval("SELECT count(*) = 2 FROM events"))
            await asyncio.sleep(0.5)
            assert await queue.get(timeout=1, fail=False) is None
            published = processor.metrics.registry.get_sample_value(
                "calltrail_processor_live_published_total")
            assert published == 1
    finally:
        await database.close()
        await connection.close()


async def test_batches_go_on_when_live_messages_cannot_be_published(
        database_url: str, topology: Topology, org) -> None:
    """The live exchange missing under a running processor: each publish fails its channel;
    every event is still applied, the drops are counted, the session is never renewed."""
    database = await asyncpg.connect(database_url)
    try:
        async with running_processor(database_url, AMQP_URL, topology) as processor:
            await eventually(lambda: not processor.not_ready())
            # An exchange that is not there (publishing events as ingest does declares the
            # topology again, so the real one cannot stay deleted): the broker closes the
            # channel of each live publish.
            processor.live._exchange = f"{topology.live_exchange}.gone"
            ids = [f"live-{uuid.uuid4().hex[:8]}" for _ in range(4)]
            for call_id in ids:
                await publish(AMQP_URL, topology, [status_update(call_id, "ringing",
                                                                 created_ms=now_ms())],
                              org.org_id)
                await eventually(lambda call_id=call_id: database.fetchval(
                    "SELECT true FROM calls WHERE id = $1", call_id))
                await asyncio.sleep(0.3)
            assert await database.fetchval("SELECT count(*) FROM calls") == len(ids)
            await eventually(lambda: _dropped(processor.metrics, "publish_failed") >= 1)
            assert processor.metrics.registry.get_sample_value(
                "calltrail_processor_broker_connected") == 1
            assert not processor.not_ready()
    finally:
        await database.close()


async def test_handing_over_changes_never_waits_nor_raises(topology: Topology) -> None:
    metrics = ProcessorMetrics()
    publisher = LivePublisher(topology, metrics)
    org = uuid.uuid4()
    publisher.changed([(org, "a")])  # no broker session: dropped, counted
    assert _dropped(metrics, "broker_down") == 1
    publisher._serving = True  # a session whose publisher is stuck: the backlog is bounded
    for index in range(MAX_PENDING + 5):
        publisher.changed([(org, f"c{index}")])
    assert _dropped(metrics, "backlog") == 5
    publisher.changed([])  # nothing changed: nothing to send, nothing counted
    assert len(publisher._pending) == MAX_PENDING
