"""Ingest's broker link comes back by itself after any fault, and publishes directly again.

Spooling through an outage is tested in test_durability; here the point is the end of the
fault: ingest must notice the link is gone (a reset, or a silent partition that only
heartbeats and confirm timeouts reveal), reconnect on its own, and publish the webhooks
sent after the fault straight to the broker, not leave them in the spool for ever.
"""

from __future__ import annotations

from pathlib import Path

import orjson

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
from tests.support.processor import eventually

AUTH = {"x-vapi-secret": WEBHOOK_SECRET, "content-type": "application/json"}


def numbered(n: int) -> bytes:
    return orjson.dumps({"message": {"type": "status-update", "status": "ringing",
                                     "call": {"id": f"call-{n}"}, "seq": n}})


def published_directly(metrics: str) -> float:
    line = next(line for line in metrics.splitlines()
                if line.startswith('calltrail_ingest_events_total{kept="published"}'))
    return float(line.split()[-1])


async def _post_all(client, numbers: range) -> None:
    for n in numbers:
        response = await client.post("/webhooks/vapi", content=numbered(n), headers=AUTH)
        assert response.status_code == 200, response.text


async def test_after_a_cut_and_after_a_silent_partition_ingest_publishes_directly_again(
        topology: Topology, spool_dir: Path, broker_proxy: TcpProxy) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             amqp_url=proxied_amqp_url(broker_proxy), amqp_heartbeat_seconds=1)
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)
        await _post_all(ingest.client, range(0, 3))

        for fault in (broker_proxy.cut, broker_proxy.stall):
            first = published_directly((await ingest.client.get("/metrics")).text)
            await fault()
            await _post_all(ingest.client, range(100, 103))  # spooled, each answered 200
            await broker_proxy.restore()
            await wait_for_broker(ingest.client, timeout=20)
            await eventually(lambda: _spool_empty(ingest.client), 20)
            before = published_directly((await ingest.client.get("/metrics")).text)
            await _post_all(ingest.client, range(200, 203))
            after = published_directly((await ingest.client.get("/metrics")).text)
            assert after - before == 3, (fault.__name__, first, before, after)

        messages = await drain_queue(AMQP_URL, topology, expect=3 + 2 * 6, timeout=30)
    seqs = sorted(orjson.loads(m.body)["message"]["seq"] for m in messages)
    # Each webhook at least once (a publish cut mid-confirm is spooled too): none missing.
    assert set(seqs) == {0, 1, 2, 100, 101, 102, 200, 201, 202}


async def _spool_empty(client) -> bool:
    return "calltrail_ingest_spool_depth 0.0" in (await client.get("/metrics")).text
