"""Fixtures the call-processor tests share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from calltrail_common import db
from calltrail_common.organizations import NewOrganization, create_organization


@pytest.fixture
async def org(database_url: str) -> NewOrganization:
    """One organization, "Acme", in the test's own database."""
    connection = await db.connect(database_url)
    try:
        return await create_organization(connection, "Acme")
    finally:
        await connection.close()


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the test's own database, closed afterwards."""
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def org_id(connection: asyncpg.Connection) -> uuid.UUID:
    """The id of one organization, "Acme", created on `connection`."""
    return (await create_organization(connection, "Acme")).org_id
