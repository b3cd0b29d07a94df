"""The topology on a real broker: where each event lands, and one consumer per partition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from calltrail_common.envelope import EventEnvelope
from calltrail_common.topology import (
    CALL_PROCESSOR,
    DISPATCHER,
    WEBHOOK_DELIVERY_ROUTING_KEY,
    Topology,
    declare_topology,
)
from tests.conftest import AMQP_URL


@pytest.fixture
async def channel(topology: Topology) -> AsyncIterator[AbstractChannel]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await declare_topology(channel, topology)
        yield channel
    finally:
        await connection.close()


async def depths(channel: AbstractChannel, topology: Topology) -> dict[str, int]:
    found = {}
    for name in topology.work_queues(CALL_PROCESSOR):
        queue = await channel.declare_queue(name, passive=True)
        if queue.declaration_result.message_count:
            found[name] = queue.declaration_result.message_count
    return found


async def test_an_event_lands_on_its_partition_and_one_without_on_the_overflow(
        channel: AbstractChannel, topology: Topology) -> None:
    events = await channel.get_exchange(topology.events_exchange)
    envelope = EventEnvelope("m1", "status-update", 1, "shared", partition=11)
    await events.publish(envelope.message(b"{}"), envelope.routing_key, mandatory=True)
    # An older publisher's event (no partition header) is not lost: the overflow takes it.
    await events.publish(aio_pika.Message(b"{}"), "vapi.status-update", mandatory=True)
    await asyncio.sleep(0.2)
    assert await depths(channel, topology) == {
        topology.partition_queue(CALL_PROCESSOR, 11): 1, topology.queue(CALL_PROCESSOR): 1}


async def test_declaring_again_moves_an_older_topologys_binding_off_the_overflow_queue(
        channel: AbstractChannel, topology: Topology) -> None:
    events = await channel.get_exchange(topology.events_exchange)
    overflow = await channel.get_queue(topology.queue(CALL_PROCESSOR))
    await overflow.bind(events, "vapi.#")  # as the release before partitions bound it
    await declare_topology(channel, topology)  # what every process does at start
    envelope = EventEnvelope("m2", "status-update", 1, "shared", partition=4)
    await events.publish(envelope.message(b"{}"), envelope.routing_key, mandatory=True)
    await asyncio.sleep(0.2)
    assert await depths(channel, topology) == {topology.partition_queue(CALL_PROCESSOR, 4): 1}


async def test_a_partition_gives_its_events_to_one_consumer_at_a_time(
        channel: AbstractChannel, topology: Topology) -> None:
    """Two replicas that both believe they own a partition (their views of the members
    differ for a moment) never apply its events side by side."""
    name = topology.partition_queue(CALL_PROCESSOR, 2)
    received: dict[str, list[AbstractIncomingMessage]] = {"first": [], "second": []}
    connection = await aio_pika.connect(AMQP_URL)
    try:
        tags = {}
        channels = {}
        for who in received:
            channels[who] = await connection.channel()
            await channels[who].set_qos(prefetch_count=50)
            queue = await channels[who].get_queue(name, ensure=False)

            async def take(message: AbstractIncomingMessage, who: str = who) -> None:
                received[who].append(message)

            tags[who] = await queue.consume(take)
        events = await channel.get_exchange(topology.events_exchange)
        for n in range(10):
            envelope = EventEnvelope(f"a{n}", "status-update", 1, "shared", partition=2)
            await events.publish(envelope.message(b"{}"), envelope.routing_key)
        await asyncio.sleep(0.3)
        assert (len(received["first"]), len(received["second"])) == (10, 0)
        # The first hands the partition over (it cancels): the second gets what follows.
        queue = await channels["first"].get_queue(name, ensure=False)
        await queue.cancel(tags["first"])
        for n in range(5):
            envelope = EventEnvelope(f"b{n}", "status-update", 1, "shared", partition=2)
            await events.publish(envelope.message(b"{}"), envelope.routing_key)
        await asyncio.sleep(0.3)
        assert (len(received["first"]), len(received["second"])) == (10, 5)
    finally:
        await connection.close()


async def test_shortened_retry_delays_have_queues_of_their_own_beside_the_usual_ones(
        channel: AbstractChannel, topology: Topology) -> None:
    """A test's dispatcher retries after milliseconds on the same prefix as processes that
    declare the usual delays: the queues are named by their delay, so neither declaration
    clashes with the other, and a delivery comes back to the dispatcher's queue."""
    shortened = topology.with_retry_delays(DISPATCHER, (50, 80))
    assert shortened.consumer(DISPATCHER).retry_delays_ms == (50, 80)
    assert shortened.consumer(CALL_PROCESSOR) == CALL_PROCESSOR
    assert topology.consumer(DISPATCHER) == DISPATCHER  # the usual ones, unchanged
    await declare_topology(channel, shortened)  # beside the usual declaration: no clash
    try:
        webhooks = await channel.get_exchange(topology.webhooks_exchange)
        await webhooks.publish(aio_pika.Message(b"{}", message_id="d1"),
                               WEBHOOK_DELIVERY_ROUTING_KEY, mandatory=True)
        queue = await channel.get_queue(topology.queue(DISPATCHER))
        message = await _get(queue)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", message_id="d1"),
            shortened.retry_queue(DISPATCHER, 50), mandatory=True)
        await message.ack()
        assert (await _get(queue)).message_id == "d1"  # back after its 50 ms
    finally:
        for delay in (50, 80):
            await channel.queue_delete(shortened.retry_queue(DISPATCHER, delay))
    with pytest.raises(ValueError, match="positive"):
        topology.with_retry_delays(DISPATCHER, (0,))
    assert set(shortened.all_queues()) - set(topology.all_queues()) == {
        shortened.retry_queue(DISPATCHER, 50), shortened.retry_queue(DISPATCHER, 80)}


async def _get(queue: aio_pika.abc.AbstractQueue) -> AbstractIncomingMessage:
    for _ in range(100):
        message = await queue.get(fail=False)
        if message is not None:
            return message
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing arrived on {queue.name}")
