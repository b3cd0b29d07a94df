"""metrics-sync under test: the fake Vapi served for real, the service in this event loop,
accounts connected the way the CLI and the api connect them."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from calltrail_common import db
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_organization
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology, declare_topology
from calltrail_common.vapi import VapiClient
from calltrail_common.vapi_accounts import ConnectedAccount, connect_account, request_sync
from calltrail_testkit.fake_vapi import FakeVapi, serve
from metrics_sync.worker import MetricsSync
from tests.conftest import AMQP_URL, make_settings

ENCRYPTION_KEY = "metrics-sync-test-encryption-key-0123456789"


@pytest.fixture
def fake_vapi() -> Iterator[tuple[FakeVapi, str]]:
    fake = FakeVapi(seed=7)
    with serve(fake) as url:
        yield fake, url


def sync_settings(database_url: str, topology: Topology, base_url: str,
                  **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "amqp_prefix": topology.prefix,
        "encryption_key": ENCRYPTION_KEY, "vapi_api_base_url": base_url,
        "sync_interval_seconds": 300, "sync_lease_seconds": 6,
        "vapi_request_timeout_seconds": 3, "metrics_sync_metrics_port": 0,
    }
    values.update(overrides)
    return make_settings(**values)


@contextlib.asynccontextmanager
async def running_sync(settings: Settings, *, tick_seconds: float = 0.2
                       ) -> AsyncIterator[MetricsSync]:
    service = MetricsSync(settings=settings, keyring=KeyRing.from_settings(settings),
                          tick_seconds=tick_seconds, shutdown_grace_seconds=5)
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stop()
        await asyncio.wait_for(task, 30)


async def new_org(database_url: str, name: str = "Acme") -> uuid.UUID:
    connection = await db.connect(database_url)
    try:
        return (await create_organization(connection, name)).org_id
    finally:
        await connection.close()


async def connect(settings: Settings, org_id: uuid.UUID, api_key: str) -> ConnectedAccount:
    """Connect as `calltrail vapi connect` does (broker channel included)."""
    topology = Topology(settings.amqp_prefix)
    pool = await db.create_pool(settings.database_url, max_size=2)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel, topology)
        async with httpx.AsyncClient(timeout=5) as http:
            return await connect_account(
                pool, KeyRing.from_settings(settings),
                VapiClient(http, api_key, base_url=settings.vapi_api_base_url),
                org_id, api_key, channel=channel, topology=topology)
    finally:
        await connection.close()
        await pool.close()


async def sync_now(settings: Settings, org_id: uuid.UUID) -> uuid.UUID:
    topology = Topology(settings.amqp_prefix)
    pool = await db.create_pool(settings.database_url, max_size=1)
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        return await request_sync(pool, org_id, channel=channel, topology=topology)
    finally:
        await connection.close()
        await pool.close()


async def finished_run(database_url: str, sync_id: uuid.UUID, timeout: float = 30
                       ) -> asyncpg.Record:
    deadline = time.monotonic() + timeout
    connection = await db.connect(database_url)
    try:
        while True:
            row = await connection.fetchrow("SELECT * FROM sync_runs WHERE id = $1", sync_id)
            if row is not None and row["status"] in ("succeeded", "failed"):
                return row
            if time.monotonic() > deadline:
                raise AssertionError(f"sync run {sync_id} not finished: {row and dict(row)}")
            await asyncio.sleep(0.1)
    finally:
        await connection.close()


async def fetch(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    connection = await db.connect(database_url)
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def wait_until(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)
