"""Several processor replicas on real RabbitMQ and Postgres: they share the partitions out,
hand them over as replicas come, stop or die, and the state stays exact throughout."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from call_processor.consumer import CallProcessor
from calltrail_common import db
from calltrail_common.envelope import webhook_partition
from calltrail_common.topology import CALL_PROCESSOR, Topology
from calltrail_testkit.state import assert_invariants
from tests.call_processor.test_consumer import INBOUND, fetchval, with_call_id
from tests.conftest import AMQP_URL
from tests.support.processor import eventually, publish, queue_depth, running_processor

PARTITIONS = frozenset(range(CALL_PROCESSOR.partitions))


def calls_of_callers(calls: int, callers: int) -> tuple[list[str], list[dict]]:
    """Lifecycles of `calls` calls from `callers` callers (their numbers spread the calls
    over the partitions); the call ids, and every webhook in Vapi's order per call."""
    ids = [str(uuid.uuid4()) for _ in range(calls)]
    bodies = []
    for index, call_id in enumerate(ids):
        number = f"+1415555{index % callers:04d}"
        for name in INBOUND:
            body = with_call_id(name, call_id)
            message = body["message"]
            message["call"].setdefault("customer", {})["number"] = number
            message.setdefault("customer", {})["number"] = number
            bodies.append(body)
    return ids, bodies


def shared_out(processors: Sequence[CallProcessor]) -> bool:
    """Every partition has exactly one of `processors`, and their shares are even."""
    shares = [p.partitions for p in processors]
    return (frozenset().union(*shares) == PARTITIONS
            and sum(map(len, shares)) == len(PARTITIONS)
            and max(map(len, shares)) - min(map(len, shares)) <= 1)


async def reported(database_url: str, count: int) -> bool:
    return bool(await fetchval(database_url,
                               "SELECT count(*) = $1 FROM calls WHERE report_received", count))


async def _is_zero(depth) -> bool:
    return await depth == 0


async def deadlocks(database_url: str) -> int:
    """Deadlocks Postgres counted in the test's database (the backends that saw one report
    it as they exit)."""
    await asyncio.sleep(0.5)
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"))
    finally:
        await connection.close()


async def test_replicas_share_the_partitions_out_and_hand_them_over_as_they_come_and_go(
        database_url: str, topology: Topology, org) -> None:
    ids, bodies = calls_of_callers(120, callers=60)
    half = len(bodies) // 2
    assert len({webhook_partition(b["message"], "") for b in bodies}) == len(PARTITIONS)
    async with running_processor(database_url, AMQP_URL, topology) as first, \
            running_processor(database_url, AMQP_URL, topology) as second:
        await eventually(lambda: shared_out([first, second]), 10)
        await publish(AMQP_URL, topology, bodies[:half], org.org_id)
        async with running_processor(database_url, AMQP_URL, topology) as third:
            # A replica joins mid-drain: it takes its share, the others hand it over.
            await eventually(lambda: shared_out([first, second, third]), 10)
            await publish(AMQP_URL, topology, bodies[half:], org.org_id)
            await eventually(lambda: reported(database_url, len(ids)), 60)
        # One stops (SIGTERM's path): it leaves at once, the others take its share.
        await eventually(lambda: shared_out([first, second]), 3)
        more_ids, more = calls_of_callers(32, callers=32)
        await publish(AMQP_URL, topology, more, org.org_id)
        await eventually(lambda: reported(database_url, len(ids) + len(more_ids)), 60)
        await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)), 20)
        for processor in (first, second, third):  # each did its share of the work
            assert processor.metrics.events.labels("applied")._value.get() > 0
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
        assert await connection.fetchval("SELECT count(*) FROM events") == \
            len(bodies) + len(more)
        assert await connection.fetchval("SELECT count(*) FROM leads") == 60
    finally:
        await connection.close()
    assert await deadlocks(database_url) == 0


def _processor(database_url: str, topology: Topology, log: Path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "AMQP_URL": AMQP_URL,
           "AMQP_PREFIX": topology.prefix, "PROCESSOR_BATCH_SIZE": "20",
           "LOG_LEVEL": "info", "PROCESSOR_METRICS_PORT": "0",
           "PROCESSOR_MEMBER_HEARTBEAT_SECONDS": "0.2", "PROCESSOR_MEMBER_TTL_SECONDS": "1"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "call_processor"], env=env,
                                stdout=out, stderr=out)


async def test_a_killed_replicas_partitions_are_taken_over_and_nothing_is_lost_or_doubled(
        database_url: str, topology: Topology, org, tmp_path: Path) -> None:
    ids, bodies = calls_of_callers(200, callers=100)
    await publish(AMQP_URL, topology, bodies, org.org_id)
    replicas = [_processor(database_url, topology, tmp_path / f"p{i}.log") for i in range(3)]
    try:
        await eventually(lambda: fetchval(
            database_url, "SELECT count(DISTINCT member_id) = 3 FROM processor_members"), 20)
        await eventually(lambda: fetchval(database_url,
                                          "SELECT count(*) > 200 FROM events"), 60, 0.01)
        replicas[0].send_signal(signal.SIGKILL)  # mid-drain, batches in hand
        replicas[0].wait(10)
        assert not await reported(database_url, len(ids)), "killed too late to prove anything"
        # Its partitions wait for its row to age out (1 s here), then move to the others;
        # what it held unacknowledged is delivered again.
        more_ids, more = calls_of_callers(48, callers=48)
        await publish(AMQP_URL, topology, more, org.org_id)
        await eventually(lambda: reported(database_url, len(ids) + len(more_ids)), 60)
        await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)), 20)
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.send_signal(signal.SIGTERM)
        assert [r.wait(20) for r in replicas[1:]] == [0, 0]
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
        assert await connection.fetchval("SELECT count(*) FROM events") == \
            len(bodies) + len(more)
        assert await connection.fetchval("SELECT sum(calls) FROM daily_stats") == \
            len(ids) + len(more_ids)
        # The stopped replicas left; the killed one's row is what remains.
        assert await connection.fetchval("SELECT count(*) FROM processor_members") == 1
    finally:
        await connection.close()
    logs = "".join((tmp_path / f"p{i}.log").read_text() for i in range(3))
    assert "partitions_assigned" in logs
    assert await deadlocks(database_url) == 0
