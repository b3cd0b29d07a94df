"""The spool keeps a caller's data only while the broker is away (issue 19: after an
erasure the caller appears nowhere, the spool included). What erasure removes from the
database is proven on `pg_dump` in tests/call_processor/test_erasure.py; this is the spool's
side: once its events reached the broker, no byte of them is left on disk."""

from __future__ import annotations

import asyncio
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

AUTH = {"x-vapi-secret": WEBHOOK_SECRET, "content-type": "application/json"}
NUMBER, NAME = "+14155550199", "Winifred Spoolwright"


def on_disk(directory: Path, needle: str) -> list[Path]:
    return [path for path in directory.rglob("*")
            if path.is_file() and needle.encode() in path.read_bytes()]


async def forgotten(directory: Path, timeout: float = 10.0) -> None:
    """The spool trims what the broker confirmed right after the confirm: wait for it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while on_disk(directory, NUMBER) or on_disk(directory, NAME):
        assert asyncio.get_running_loop().time() < deadline, on_disk(directory, NUMBER)
        await asyncio.sleep(0.05)


async def test_a_spooled_caller_leaves_the_disk_once_the_broker_has_the_event(
        topology: Topology, spool_dir: Path, broker_proxy: TcpProxy) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             amqp_url=proxied_amqp_url(broker_proxy))
    body = orjson.dumps({"message": {
        "type": "status-update", "status": "ringing",
        "call": {"id": "call-spooled", "customer": {"number": NUMBER, "name": NAME}}}})
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)
        await broker_proxy.cut()
        for _ in range(3):
            response = await ingest.client.post("/webhooks/vapi", content=body, headers=AUTH)
            assert response.status_code == 200, response.text
        # While the broker is away the caller is on disk: the check below can fail.
        assert on_disk(spool_dir, NUMBER) and on_disk(spool_dir, NAME)
        await broker_proxy.restore()
        messages = await drain_queue(AMQP_URL, topology, expect=3, timeout=30)
        assert len(messages) == 3
        await forgotten(spool_dir)
        # And the spool goes on: the next outage spools again.
        await broker_proxy.cut()
        response = await ingest.client.post("/webhooks/vapi", content=body, headers=AUTH)
        assert response.status_code == 200
        assert on_disk(spool_dir, NUMBER)
        await broker_proxy.restore()
        assert len(await drain_queue(AMQP_URL, topology, expect=1, timeout=30)) == 1
