"""The api under test: the real app served by uvicorn in this event loop, against a
per-test database; organizations made as `calltrail org create` makes them; calls, leads and
statistics written straight into their tables (the processor's rules are tested elsewhere)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest

from api.app import create_app
from calltrail_common import db
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_organization
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi, serve
from tests.conftest import make_settings, serve_asgi

ENCRYPTION_KEY = "api-test-encryption-key-0123456789abcdef"


@dataclass
class Tenant:
    org_id: uuid.UUID
    token: str
    client: httpx.AsyncClient  # carries the tenant's token


@dataclass
class RunningApi:
    url: str
    settings: Settings
    connection: asyncpg.Connection  # for seeding rows
    anonymous: httpx.AsyncClient
    _clients: list[httpx.AsyncClient]

    def client(self, token: str | None) -> httpx.AsyncClient:
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10)
        self._clients.append(client)
        return client

    async def tenant(self, name: str = "Acme") -> Tenant:
        org = await create_organization(self.connection, name)
        return Tenant(org.org_id, org.api_token, self.client(org.api_token))


@pytest.fixture(scope="session")
def fake_vapi() -> Iterator[tuple[FakeVapi, str]]:
    fake = FakeVapi(seed=11)
    with serve(fake) as url:
        yield fake, url


@contextlib.asynccontextmanager
async def serve_api(settings: Settings) -> AsyncIterator[str]:
    async with serve_asgi(create_app(settings, KeyRing.from_settings(settings)), "the api") as url:
        yield url


@pytest.fixture
async def api(database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]
              ) -> AsyncIterator[RunningApi]:
    settings = make_settings(database_url=database_url, amqp_prefix=topology.prefix,
                             encryption_key=ENCRYPTION_KEY, vapi_api_base_url=fake_vapi[1],
                             vapi_request_timeout_seconds=3)
    connection = await db.connect(database_url)
    clients: list[httpx.AsyncClient] = []
    try:
        async with serve_api(settings) as url:
            running = RunningApi(url, settings, connection, httpx.AsyncClient(base_url=url),
                                 clients)
            clients.append(running.anonymous)
            yield running
            for client in clients:
                await client.aclose()
    finally:
        await connection.close()


# --- rows -------------------------------------------------------------------------------

_CALL_COLUMNS = ("id", "org_id", "direction", "status", "ended_reason", "created_at",
                 "started_at", "ended_at", "duration_seconds", "cost", "customer_number",
                 "customer_name", "customer_email", "transcript", "summary", "structured_data",
                 "success_evaluation", "recording_url", "stereo_recording_url", "metadata",
                 "lead_id", "assistant_id", "phone_number_id")


async def insert_call(connection: asyncpg.Connection, org_id: uuid.UUID, **fields: Any
                      ) -> str:
    values: dict[str, Any] = {
        "id": f"call-{uuid.uuid4()}", "org_id": org_id, "direction": "inboundPhoneCall",
        "status": "ended", "created_at": datetime.now(UTC), "cost": Decimal("0.12"),
        "duration_seconds": Decimal(60), "customer_number": "+14155550100",
    }
    values.update(fields)
    columns = [c for c in _CALL_COLUMNS if c in values]
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await connection.execute(
        f"INSERT INTO calls ({', '.join(columns)}) VALUES ({placeholders})",  # noqa: S608
        *[values[c] for c in columns])
    return str(values["id"])


async def insert_vapi_name(connection: asyncpg.Connection, org_id: uuid.UUID, kind: str,
                           vapi_id: str, name: str) -> None:
    """What the account calls an assistant or a number, as metrics-sync stores it."""
    await connection.execute(
        """INSERT INTO vapi_names (org_id, kind, vapi_id, name) VALUES ($1, $2, $3, $4)
           ON CONFLICT (org_id, kind, vapi_id) DO UPDATE SET name = EXCLUDED.name""",
        org_id, kind, vapi_id, name)


async def insert_lead(connection: asyncpg.Connection, org_id: uuid.UUID, phone_number: str,
                      *, name: str | None = None, email: str | None = None,
                      created_at: datetime | None = None) -> uuid.UUID:
    lead_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO leads (id, org_id, phone_number, name, email, first_call_at,
                              last_call_at, call_count, first_inbound_at, created_at)
           VALUES ($1, $2, $3, $4, $5, now(), now(), 1, now(), coalesce($6, now()))""",
        lead_id, org_id, phone_number, name, email, created_at)
    return lead_id


def assert_error(response: httpx.Response, status: int, code: str,
                 parameter: str | None = None) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}, body
    assert body["error"] == code, body
    if parameter is not None:
        assert parameter in body["message"], body
