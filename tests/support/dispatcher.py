"""Running the dispatcher in tests, and writing the rows it reads as the processor's outbox
and the management screens write them: an endpoint with its `whsec_` secret, events, one
unqueued pending delivery per endpoint.

Retry delays are shortened to milliseconds through WEBHOOKS_RETRY_DELAYS_MS (their queues
are named by their delay, so the usual ones are not touched); `delete_topologies` removes
both sets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import asyncpg

from calltrail_common.settings import Settings
from calltrail_common.topology import Topology, delete_topology
from dispatcher.worker import Dispatcher, dispatcher_topology
from tests.conftest import AMQP_URL, make_settings

SHORT_DELAYS_MS = (100, 200, 300)
# Topologies with shortened delays that a test's settings made, by prefix: deleted after it.
_SHORTENED: dict[str, list[Topology]] = {}


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


async def delete_topologies(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        for topology in (Topology(prefix), *_SHORTENED.pop(prefix, [])):
            await delete_topology(channel, topology)
    finally:
        await connection.close()


def dispatcher_settings(database_url: str, prefix: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "amqp_prefix": prefix,
        "webhooks_allow_private_targets": True, "webhooks_timeout_seconds": 5.0,
        "webhooks_retry_delays_ms": SHORT_DELAYS_MS, "webhooks_relay_idle_ms": 20,
        "dispatcher_metrics_port": 0, "log_level": "info",
    }
    values.update(overrides)
    settings = make_settings(**values)
    _SHORTENED.setdefault(prefix, []).append(dispatcher_topology(settings))
    return settings


@contextlib.asynccontextmanager
async def running_dispatcher(settings: Settings, **options: Any) -> AsyncIterator[Dispatcher]:
    dispatcher = Dispatcher(settings, **options)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        dispatcher.stop()
        await asyncio.wait_for(task, 30)


class Outbox:
    """Writes what the processor's outbox and the management screens write."""

    def __init__(self, connection: asyncpg.Connection, org_id: uuid.UUID) -> None:
        self.connection = connection
        self.org_id = org_id

    async def endpoint(self, url: str, *, secret: str | None = None,
                       event_types: Sequence[str] = ("call.ended", "lead.created")
                       ) -> tuple[uuid.UUID, str]:
        secret = secret or new_secret()
        endpoint_id = await self.connection.fetchval(
            "INSERT INTO outbound_endpoints (org_id, url, event_types, secret) "
            "VALUES ($1, $2, $3, $4) RETURNING id", self.org_id, url, list(event_types), secret)
        return endpoint_id, secret

    async def events(self, endpoints: Sequence[uuid.UUID], count: int, *,
                     event_type: str = "call.ended") -> list[uuid.UUID]:
        """`count` events, each with a pending, unqueued delivery to every endpoint."""
        ids = [uuid.uuid4() for _ in range(count)]
        occurred = dt.datetime.now(dt.UTC)
        async with self.connection.transaction():
            await self.connection.executemany(
                "INSERT INTO outbound_events (id, org_id, type, occurred_at, data) "
                "VALUES ($1, $2, $3, $4, $5::text::jsonb)",  # with or without a jsonb codec
                [(event_id, self.org_id, event_type, occurred,
                  json.dumps({"callId": f"call-{index}", "n": index}))
                 for index, event_id in enumerate(ids)])
            await self.connection.executemany(
                "INSERT INTO outbound_deliveries (endpoint_id, event_id) VALUES ($1, $2)",
                [(endpoint_id, event_id) for event_id in ids for endpoint_id in endpoints])
        return ids

    async def deliveries(self, endpoint_id: uuid.UUID) -> list[asyncpg.Record]:
        return await self.connection.fetch(
            "SELECT * FROM outbound_deliveries WHERE endpoint_id = $1", endpoint_id)

    async def states(self, endpoint_id: uuid.UUID) -> dict[str, int]:
        rows = await self.connection.fetch(
            "SELECT state, count(*) AS n FROM outbound_deliveries WHERE endpoint_id = $1 "
            "GROUP BY state", endpoint_id)
        return {row["state"]: row["n"] for row in rows}

    async def endpoint_row(self, endpoint_id: uuid.UUID) -> asyncpg.Record:
        return await self.connection.fetchrow(
            "SELECT * FROM outbound_endpoints WHERE id = $1", endpoint_id)


def body_of(raw: bytes) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


async def queue_messages(prefix: str, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message waiting in a queue, taken off it."""
    connection = await aio_pika.connect(AMQP_URL)
    taken = []
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        while (message := await queue.get(fail=False, no_ack=True)) is not None:
            taken.append(message)
    finally:
        await connection.close()
    return taken
