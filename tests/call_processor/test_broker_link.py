"""The processor keeps consuming whatever happens to its broker connection.

Each test cuts the link a different way (reset, silent partition, a cancelled consumer),
checks that `/readyz` says not ready while the processor cannot consume, and then, the
fault over, sends new events and asserts they are processed: recovery on its own, not only
nothing lost.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import aio_pika
import httpx

from calltrail_common.probes import ProbeServer
from calltrail_common.topology import CALL_PROCESSOR, Topology
from calltrail_testkit.tcp_proxy import TcpProxy
from tests.call_processor.test_consumer import fetchval, with_call_id
from tests.conftest import AMQP_URL, proxied_amqp_url
from tests.support.processor import eventually, publish, queue_depth, running_processor


async def _calls_with_report(database_url: str) -> int:
    return await fetchval(database_url, "SELECT count(*) FROM calls WHERE report_received")


async def _send_reports(topology: Topology, org_id: object, count: int) -> None:
    calls = [str(uuid.uuid4()) for _ in range(count)]
    await publish(AMQP_URL, topology,
                  [with_call_id("inbound-7-end-of-call-report", c) for c in calls], org_id)


async def test_after_a_6_s_broker_cut_the_processor_reconnects_and_processes_new_events(
        database_url: str, topology: Topology, org, broker_proxy: TcpProxy) -> None:
    async with running_processor(database_url, proxied_amqp_url(broker_proxy),
                                 topology) as processor:
        probes = ProbeServer(processor.metrics.registry, processor.not_ready)
        await probes.start("127.0.0.1", 0)
        readyz = f"http://127.0.0.1:{probes.port}/readyz"
        try:
            async with httpx.AsyncClient() as client:
                await _send_reports(topology, org.org_id, 5)
                await eventually(lambda: _equals(_calls_with_report(database_url), 5))
                assert (await client.get(readyz)).status_code == 200

                await broker_proxy.cut()
                answer = await eventually(lambda: _status(client, readyz, 503), 5)
                assert "not consuming" in answer.text
                await asyncio.sleep(6)
                await _send_reports(topology, org.org_id, 5)  # queued while it is away
                await broker_proxy.restore()

                await eventually(lambda: _status(client, readyz, 200), 15)
                await _send_reports(topology, org.org_id, 5)  # sent after the fault
                await eventually(lambda: _equals(_calls_with_report(database_url), 15), 20)
                await eventually(lambda: _equals(queue_depth(AMQP_URL, topology), 0))
        finally:
            await probes.close()


async def test_a_silent_partition_is_found_by_heartbeats_then_consuming_resumes(
        database_url: str, topology: Topology, org, broker_proxy: TcpProxy) -> None:
    # No RST, no FIN: only missed heartbeats can tell the connection is dead.
    async with running_processor(database_url, proxied_amqp_url(broker_proxy), topology,
                                 heartbeat_seconds=1) as processor:
        await _send_reports(topology, org.org_id, 3)
        await eventually(lambda: _equals(_calls_with_report(database_url), 3))
        assert processor.not_ready() == []

        await broker_proxy.stall()
        stalled_at = time.monotonic()
        await eventually(lambda: processor.not_ready(), 15, 0.1)
        noticed_after = time.monotonic() - stalled_at
        await broker_proxy.restore()

        await _send_reports(topology, org.org_id, 3)
        await eventually(lambda: _equals(_calls_with_report(database_url), 6), 30)
        await eventually(lambda: processor.not_ready() == [], 10)
    # aiormq allows three missed heartbeat intervals: about (1 + 1) * 3 s here.
    assert noticed_after < 12, noticed_after


async def test_a_consumer_cancelled_by_the_broker_redeclares_and_resumes(
        database_url: str, topology: Topology, org) -> None:
    async with running_processor(database_url, AMQP_URL, topology) as processor:
        await _send_reports(topology, org.org_id, 2)
        await eventually(lambda: _equals(_calls_with_report(database_url), 2))
        # An operator deletes the queue: the broker cancels the consumer (the channel and
        # connection stay open, so only the cancel notification tells).
        connection = await aio_pika.connect(AMQP_URL)
        try:
            channel = await connection.channel()
            await channel.queue_delete(topology.queue(CALL_PROCESSOR))
        finally:
            await connection.close()
        await eventually(lambda: processor.not_ready() == [], 15)
        await eventually(lambda: _queue_exists(topology), 15)
        await _send_reports(topology, org.org_id, 2)
        await eventually(lambda: _equals(_calls_with_report(database_url), 4), 20)


async def _equals(value: object, expected: int) -> bool:
    if asyncio.iscoroutine(value):
        value = await value
    return value == expected


async def _status(client: httpx.AsyncClient, url: str, status: int) -> httpx.Response | None:
    answer = await client.get(url)
    return answer if answer.status_code == status else None


async def _queue_exists(topology: Topology) -> bool:
    try:
        await queue_depth(AMQP_URL, topology)
    except aio_pika.exceptions.ChannelClosed:
        return False
    return True
