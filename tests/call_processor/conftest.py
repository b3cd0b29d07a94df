"""Fixtures the call-processor tests share."""

from __future__ import annotations

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
