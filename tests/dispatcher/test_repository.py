"""The dispatcher's SQL on real Postgres (and the relay on real RabbitMQ): the delivery log,
an endpoint's health across batches and replicas, disabling, and relays sharing the outbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable

import aio_pika
import asyncpg
import pytest

from calltrail_common import db
from calltrail_common.topology import DISPATCHER, Topology, declare_topology
from dispatcher import repository
from dispatcher.attempts import Answer, Outcome, State, delivery_updates, endpoint_health
from dispatcher.metrics import DispatcherMetrics
from dispatcher.relay import Relay
from tests.conftest import AMQP_URL
from tests.support.dispatcher import Outbox

OK = Answer(200, None, 10)
FAILED = Answer(500, "HTTP 500", 10)
Ago = Callable[[float], dt.datetime]


@pytest.fixture
def ago() -> Ago:
    """Minutes before the test began (the SQL compares with the database's now())."""
    now = dt.datetime.now(dt.UTC)
    return lambda minutes: now - dt.timedelta(minutes=minutes)


async def _record(outbox: Outbox, endpoint: uuid.UUID, delivery: uuid.UUID,
                  *results: tuple[dt.datetime, Answer | None, State],
                  disable_after_seconds: float = 3600) -> list[uuid.UUID]:
    outcomes = [Outcome(delivery, endpoint, state, when, answer)
                for when, answer, state in results]
    return await repository.record(outbox.connection, delivery_updates(outcomes),
                                   endpoint_health(outcomes), disable_after_seconds)


async def _health(outbox: Outbox, endpoint: uuid.UUID) -> tuple[object, object]:
    row = await outbox.endpoint_row(endpoint)
    return row["last_success_at"], row["failing_since"]


async def test_an_endpoint_fails_since_its_first_failure_after_its_last_success(
        outbox: Outbox, ago: Ago) -> None:
    endpoint, _ = await outbox.endpoint("https://example.com/hook")
    await outbox.events([endpoint], 1)
    [row] = await outbox.deliveries(endpoint)
    delivery = row["id"]
    await _record(outbox, endpoint, delivery, (ago(50), FAILED, State.PENDING))
    assert await _health(outbox, endpoint) == (None, ago(50))
    await _record(outbox, endpoint, delivery, (ago(40), FAILED, State.PENDING))
    assert await _health(outbox, endpoint) == (None, ago(50))  # still since the first
    await _record(outbox, endpoint, delivery, (ago(30), OK, State.SUCCEEDED))
    assert await _health(outbox, endpoint) == (ago(30), None)  # a success clears it
    # Another replica's batch, written late, with a failure from before that success.
    await _record(outbox, endpoint, delivery, (ago(35), FAILED, State.PENDING))
    assert await _health(outbox, endpoint) == (ago(30), None)
    await _record(outbox, endpoint, delivery, (ago(20), FAILED, State.PENDING),
                  (ago(10), FAILED, State.PENDING))
    assert await _health(outbox, endpoint) == (ago(30), ago(20))
    # A batch with a success then a failure: failing since that failure.
    await _record(outbox, endpoint, delivery, (ago(5), OK, State.SUCCEEDED),
                  (ago(4), FAILED, State.PENDING))
    assert await _health(outbox, endpoint) == (ago(5), ago(4))


async def test_an_endpoint_failing_longer_than_the_limit_is_disabled_once(
        outbox: Outbox, ago: Ago) -> None:
    endpoint, _ = await outbox.endpoint("https://example.com/hook")
    healthy, _ = await outbox.endpoint("https://example.org/hook")
    await outbox.events([endpoint, healthy], 1)
    [failing_delivery] = [r["id"] for r in await outbox.deliveries(endpoint)]
    [healthy_delivery] = [r["id"] for r in await outbox.deliveries(healthy)]
    # Failing for 50 minutes, limit an hour: not yet.
    assert await _record(outbox, endpoint, failing_delivery,
                         (ago(50), FAILED, State.PENDING)) == []
    assert await _record(outbox, healthy, healthy_delivery, (ago(70), FAILED, State.PENDING),
                         (ago(1), OK, State.SUCCEEDED)) == []
    # Ten minutes later (the limit now 45 minutes): disabled, once.
    assert await _record(outbox, endpoint, failing_delivery, (ago(1), FAILED, State.PENDING),
                         disable_after_seconds=45 * 60) == [endpoint]
    assert await _record(outbox, endpoint, failing_delivery, (ago(0), FAILED, State.PENDING),
                         disable_after_seconds=45 * 60) == []
    row = await outbox.endpoint_row(endpoint)
    assert row["disabled_reason"] == "failing" and row["disabled_at"] is not None
    assert (await outbox.endpoint_row(healthy))["disabled_at"] is None


async def test_the_log_keeps_a_success_and_a_skip_leaves_the_last_attempt(
        outbox: Outbox, ago: Ago) -> None:
    endpoint, _ = await outbox.endpoint("https://example.com/hook")
    await outbox.events([endpoint], 1)
    [row] = await outbox.deliveries(endpoint)
    await _record(outbox, endpoint, row["id"], (ago(3), OK, State.SUCCEEDED))
    # A copy published twice fails later: the delivery stays delivered.
    await _record(outbox, endpoint, row["id"], (ago(2), FAILED, State.PENDING))
    [row] = await outbox.deliveries(endpoint)
    assert (row["state"], row["attempts"], row["delivered_at"], row["last_status"]) == (
        "succeeded", 2, ago(3), 500)
    await outbox.connection.execute(  # "send again"
        "UPDATE outbound_deliveries SET state = 'pending', queued_at = NULL WHERE id = $1",
        row["id"])
    await _record(outbox, endpoint, row["id"], (ago(1), None, State.SKIPPED))
    [row] = await outbox.deliveries(endpoint)
    assert (row["state"], row["attempts"], row["last_attempt_at"], row["last_status"]) == (
        "skipped", 2, ago(2), 500)


async def test_two_relays_share_the_outbox_and_publish_each_delivery_once(
        database_url: str, outbox: Outbox, prefix: str) -> None:
    endpoint, _ = await outbox.endpoint("https://example.com/hook")
    await outbox.events([endpoint], 400)
    topology = Topology(prefix)
    pool = await db.create_pool(database_url, max_size=4)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)

        async def database() -> asyncpg.Pool:
            return pool

        async def relay_all(relay: Relay) -> int:
            total = 0
            while found := await relay.relay_once(channel):
                total += found
                await asyncio.sleep(0)
            return total

        relays = [Relay(database, topology, batch_size=50, idle_seconds=0.01,
                        metrics=DispatcherMetrics(), on_paused=lambda _: None)
                  for _ in range(2)]
        counts = await asyncio.gather(*(relay_all(relay) for relay in relays))
        assert sum(counts) == 400 and all(counts)  # both took a share
        queue = await channel.declare_queue(topology.queue(DISPATCHER), passive=True)
        ids = []
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            ids.append(message.message_id)
    finally:
        await connection.close()
        await pool.close()
    rows = await outbox.deliveries(endpoint)
    assert sorted(ids) == sorted(str(r["id"]) for r in rows)  # each once
    assert all(r["queued_at"] is not None for r in rows)
