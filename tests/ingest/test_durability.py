"""A 200 is never lost: broker outages, Postgres outages, kill -9 and SIGTERM.

Outages are made with a TCP proxy between ingest and the shared servers, never by stopping
the servers themselves.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

import httpx
import orjson
import pytest

from calltrail_common import db
from calltrail_common.envelope import HEADER_PARTITION
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from calltrail_testkit.tcp_proxy import TcpProxy
from tests.conftest import (
    AMQP_URL,
    WEBHOOK_SECRET,
    make_settings,
    proxied_amqp_url,
    serve_ingest,
    wait_for_broker,
)
from tests.support.broker import drain_queue

AUTH = {"x-vapi-secret": WEBHOOK_SECRET, "content-type": "application/json"}


def numbered(n: int) -> bytes:
    return orjson.dumps({"message": {"type": "status-update", "status": "in-progress",
                                     "call": {"id": f"call-{n}"}, "seq": n}})


def sequence_of(messages) -> list[int]:
    """The webhooks' numbers, once it is checked that each partition queue received its
    share in the order ingest accepted them (the order the processor sees: partitions are
    consumed side by side, so there is no order across them)."""
    by_partition: dict[object, list[int]] = {}
    for message in messages:
        partition = (message.headers or {}).get(HEADER_PARTITION)
        by_partition.setdefault(partition, []).append(
            orjson.loads(message.body)["message"]["seq"])
    for partition, seqs in by_partition.items():
        assert seqs == sorted(seqs), (partition, seqs)
    return sorted(seq for seqs in by_partition.values() for seq in seqs)


async def _wait_for(predicate, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_broker_outage_spools_and_replays_everything_in_order(
        topology: Topology, spool_dir: Path, broker_proxy: TcpProxy) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             amqp_url=proxied_amqp_url(broker_proxy))
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)
        for n in range(5):  # broker up: published directly
            assert (await ingest.client.post("/webhooks/vapi", content=numbered(n),
                                             headers=AUTH)).status_code == 200
        await broker_proxy.cut()
        for n in range(5, 45):  # broker down: every one still 200, through the spool
            response = await ingest.client.post("/webhooks/vapi", content=numbered(n),
                                                headers=AUTH)
            assert response.status_code == 200, response.text
        depth = await ingest.client.get("/metrics")
        assert "calltrail_ingest_spool_depth 40.0" in depth.text
        assert (await ingest.client.get("/readyz")).status_code == 200  # spool writable
        await broker_proxy.restore()
        messages = await drain_queue(AMQP_URL, topology, expect=45, timeout=30)
        # While the spool drains, new events queue behind it: order is kept throughout.
        for n in range(45, 50):
            assert (await ingest.client.post("/webhooks/vapi", content=numbered(n),
                                             headers=AUTH)).status_code == 200
        messages += await drain_queue(AMQP_URL, topology, expect=5)
    assert sequence_of(messages) == list(range(50))
    assert not list(spool_dir.glob("slot-*/*.seg"))


async def test_ingest_started_while_the_broker_is_unreachable_takes_webhooks(
        topology: Topology, spool_dir: Path, broker_proxy: TcpProxy) -> None:
    await broker_proxy.cut()
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             amqp_url=proxied_amqp_url(broker_proxy))
    async with serve_ingest(settings) as ingest:
        for n in range(10):
            assert (await ingest.client.post("/webhooks/vapi", content=numbered(n),
                                             headers=AUTH)).status_code == 200
        await broker_proxy.restore()
        messages = await drain_queue(AMQP_URL, topology, expect=10, timeout=30)
    assert sequence_of(messages) == list(range(10))


async def test_broker_down_and_spool_unwritable_answers_503(
        topology: Topology, spool_dir: Path, broker_proxy: TcpProxy) -> None:
    await broker_proxy.cut()
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             amqp_url=proxied_amqp_url(broker_proxy))
    async with serve_ingest(settings) as ingest:
        shutil.rmtree(spool_dir)
        spool_dir.write_text("a file where the spool directory was")
        response = await ingest.client.post("/webhooks/vapi", content=numbered(1),
                                            headers=AUTH)
        assert (response.status_code, response.json()) == (503, {"error": "unavailable"})
        assert (await ingest.client.get("/readyz")).status_code == 503
        spool_dir.unlink()


async def test_kill_9_with_events_spooled_then_restart_publishes_them(
        topology: Topology, tmp_path: Path, broker_proxy: TcpProxy,
        ingest_process_factory) -> None:
    spool_dir = tmp_path / "spool"
    await broker_proxy.cut()
    first = ingest_process_factory(AMQP_URL=proxied_amqp_url(broker_proxy),
                                   AMQP_PREFIX=topology.prefix, SPOOL_DIR=str(spool_dir))
    await first.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        for n in range(30):
            assert (await client.post("/webhooks/vapi", content=numbered(n),
                                      headers=AUTH)).status_code == 200
    first.kill(signal.SIGKILL)
    first.wait()
    # The restarted ingest talks to the broker directly: it must publish the spooled 30.
    second = ingest_process_factory(AMQP_PREFIX=topology.prefix, SPOOL_DIR=str(spool_dir))
    await second.start()
    messages = await drain_queue(AMQP_URL, topology, expect=30, timeout=30)
    assert sequence_of(messages) == list(range(30))


async def test_a_dead_replicas_spool_is_adopted_by_a_live_one(
        topology: Topology, tmp_path: Path, broker_proxy: TcpProxy,
        ingest_process_factory) -> None:
    spool_dir = tmp_path / "spool"
    survivor = ingest_process_factory(AMQP_PREFIX=topology.prefix, SPOOL_DIR=str(spool_dir))
    await survivor.start()
    await broker_proxy.cut()
    doomed = ingest_process_factory(AMQP_URL=proxied_amqp_url(broker_proxy),
                                    AMQP_PREFIX=topology.prefix, SPOOL_DIR=str(spool_dir))
    await doomed.start()
    async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as client:
        for n in range(12):
            assert (await client.post("/webhooks/vapi", content=numbered(n),
                                      headers=AUTH)).status_code == 200
    doomed.kill(signal.SIGKILL)
    doomed.wait()
    messages = await drain_queue(AMQP_URL, topology, expect=12, timeout=30)
    assert sequence_of(messages) == list(range(12))


async def test_sigterm_under_load_loses_no_acknowledged_event(
        topology: Topology, tmp_path: Path, ingest_process_factory) -> None:
    ingest = ingest_process_factory(AMQP_PREFIX=topology.prefix,
                                    SPOOL_DIR=str(tmp_path / "spool"))
    await ingest.start()
    acknowledged: list[int] = []

    async def sender(client: httpx.AsyncClient, start: int) -> None:
        for n in range(start, start + 10_000, 16):
            try:
                response = await client.post("/webhooks/vapi", content=numbered(n),
                                             headers=AUTH)
            except httpx.HTTPError:
                return  # the server has gone away: later sends were never acknowledged
            if response.status_code == 200:
                acknowledged.append(n)

    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
        senders = [asyncio.create_task(sender(client, i)) for i in range(16)]
        await _wait_for(lambda: len(acknowledged) >= 200)
        ingest.kill(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*senders), 30)
    assert ingest.wait() == 0
    # What was spooled (a confirm later than a second under load) is drained on the way out
    # while the broker is up, else kept on disk: the next ingest on this spool sends it.
    again = ingest_process_factory(AMQP_PREFIX=topology.prefix,
                                   SPOOL_DIR=str(tmp_path / "spool"))
    await again.start()
    messages = await drain_queue(AMQP_URL, topology, expect=len(acknowledged), timeout=30)
    # Sixteen senders at once: no order to check, only that nothing acknowledged is missing.
    assert set(acknowledged) <= {orjson.loads(m.body)["message"]["seq"] for m in messages}


@pytest.fixture
async def postgres_proxy() -> TcpProxy:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    yield proxy
    await proxy.close()


async def test_organization_webhooks_keep_flowing_while_postgres_is_down(
        topology: Topology, tmp_path: Path, database_url: str,
        postgres_proxy: TcpProxy, ingest_process_factory) -> None:
    connection = await db.connect(database_url)
    org = await create_organization(connection, "Down Co")
    await connection.close()
    proxied_db = database_url.replace(":5432/", f":{postgres_proxy.port}/")
    path = f"/webhooks/vapi/{org.endpoint_id}"
    headers = {"x-vapi-secret": org.webhook_secret, "content-type": "application/json"}
    env = {"AMQP_PREFIX": topology.prefix, "SPOOL_DIR": str(tmp_path / "spool"),
           "DATABASE_URL": proxied_db, "INGEST_ENDPOINT_REFRESH_SECONDS": "0.2"}
    first = ingest_process_factory(**env)
    await first.start()
    async with httpx.AsyncClient(base_url=first.url, timeout=10) as client:
        for _ in range(100):
            if (await client.post(path, content=numbered(0), headers=headers)).status_code \
                    == 200:
                break
            await asyncio.sleep(0.05)
        await postgres_proxy.cut()
        await asyncio.sleep(0.5)  # several failed refreshes
        assert (await client.post(path, content=numbered(1), headers=headers)).status_code \
            == 200
    first.kill(signal.SIGTERM)
    first.wait()
    # Restarted while Postgres is still down: the snapshot knows the endpoint.
    second = ingest_process_factory(**env)
    await second.start()
    async with httpx.AsyncClient(base_url=second.url, timeout=10) as client:
        assert (await client.post(path, content=numbered(2), headers=headers)).status_code \
            == 200
        assert (await client.post("/webhooks/vapi/ep_other", content=numbered(3),
                                  headers=headers)).status_code == 404
    messages = await drain_queue(AMQP_URL, topology, expect=3)
    assert sequence_of(messages) == [0, 1, 2]
