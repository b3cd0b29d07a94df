"""The dispatcher against real Postgres, RabbitMQ and a real receiver (the test kit's); each
test on its own database, broker prefix and receiver port."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_testkit.webhook_receiver import WebhookReceiver
from tests.support.dispatcher import Outbox, delete_topologies


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    await delete_topologies(name)


@pytest.fixture
async def outbox(database_url: str) -> AsyncIterator[Outbox]:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme Roofing")
        yield Outbox(connection, org.org_id)
    finally:
        await connection.close()
