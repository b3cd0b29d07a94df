"""Webhook secret rotation and revocation (decision 34) against real Postgres."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from calltrail_common import db
from calltrail_common.organizations import (
    NewOrganization,
    NoWebhookEndpoint,
    active_endpoints,
    create_organization,
    revoke_previous,
    rotate,
    secret_status,
)

HOUR = dt.timedelta(hours=1)


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


@pytest.fixture
async def org(connection: asyncpg.Connection) -> NewOrganization:
    return await create_organization(connection, "Acme Roofing")


async def live_secrets(connection: asyncpg.Connection, endpoint_id: str) -> set[str]:
    return {c.secret for c in await active_endpoints(connection)
            if c.endpoint_id == endpoint_id}


async def test_rotation_keeps_the_previous_secret_for_the_overlap(connection, org) -> None:
    before = await secret_status(connection, org.org_id)
    assert before.endpoint_id == org.endpoint_id
    assert before.previous_valid_until is None

    rotated = await rotate(connection, org.org_id, HOUR)
    assert rotated.endpoint_id == org.endpoint_id
    assert rotated.webhook_secret.startswith("whsec_")
    assert rotated.webhook_secret != org.webhook_secret
    now = await connection.fetchval("SELECT now()")
    assert rotated.previous_valid_until is not None
    assert abs(rotated.previous_valid_until - (now + HOUR)) < dt.timedelta(seconds=5)
    assert await live_secrets(connection, org.endpoint_id) == {
        org.webhook_secret, rotated.webhook_secret}
    [previous] = [c for c in await active_endpoints(connection)
                  if c.secret == org.webhook_secret]
    assert previous.valid_until == rotated.previous_valid_until
    assert previous.org_id == str(org.org_id)

    after = await secret_status(connection, org.org_id)
    assert after.previous_valid_until == rotated.previous_valid_until
    assert after.current_created_at > before.current_created_at
    assert org.webhook_secret not in repr(after) and rotated.webhook_secret not in repr(after)


async def test_a_previous_secret_is_refused_once_its_overlap_ends(connection, org) -> None:
    rotated = await rotate(connection, org.org_id, dt.timedelta(milliseconds=300))
    await asyncio.sleep(0.5)
    assert await live_secrets(connection, org.endpoint_id) == {rotated.webhook_secret}
    assert (await secret_status(connection, org.org_id)).previous_valid_until is None
    assert await revoke_previous(connection, org.org_id) is False  # nothing live to end


async def test_revoking_ends_the_previous_secret_now(connection, org) -> None:
    rotated = await rotate(connection, org.org_id, HOUR)
    assert await revoke_previous(connection, org.org_id) is True
    assert await live_secrets(connection, org.endpoint_id) == {rotated.webhook_secret}
    assert (await secret_status(connection, org.org_id)).previous_valid_until is None
    assert await revoke_previous(connection, org.org_id) is False
    assert await connection.fetchval("SELECT count(*) FROM webhook_previous_secrets") == 0


async def test_a_zero_overlap_revokes_the_current_secret_and_any_previous(
        connection, org) -> None:
    first = await rotate(connection, org.org_id, HOUR)
    second = await rotate(connection, org.org_id, dt.timedelta(0))
    assert second.previous_valid_until is None
    assert await live_secrets(connection, org.endpoint_id) == {second.webhook_secret}
    assert first.webhook_secret != second.webhook_secret


async def test_rotating_again_replaces_the_previous_secret(connection, org) -> None:
    first = await rotate(connection, org.org_id, HOUR)
    second = await rotate(connection, org.org_id, 2 * HOUR)
    # One previous secret per endpoint: the one `second` replaced, for its own overlap.
    assert await live_secrets(connection, org.endpoint_id) == {
        first.webhook_secret, second.webhook_secret}
    assert second.previous_valid_until is not None
    assert first.previous_valid_until is not None
    assert second.previous_valid_until > first.previous_valid_until


async def test_other_organizations_are_untouched(connection, org) -> None:
    other = await create_organization(connection, "Other Co")
    await rotate(connection, org.org_id, dt.timedelta(0))
    assert await live_secrets(connection, other.endpoint_id) == {other.webhook_secret}


async def test_an_unknown_organization_or_a_negative_overlap_is_refused(
        connection, org) -> None:
    nobody = uuid.uuid4()
    with pytest.raises(NoWebhookEndpoint):
        await rotate(connection, nobody, HOUR)
    with pytest.raises(NoWebhookEndpoint):
        await revoke_previous(connection, nobody)
    with pytest.raises(NoWebhookEndpoint):
        await secret_status(connection, nobody)
    with pytest.raises(ValueError, match="negative"):
        await rotate(connection, org.org_id, -HOUR)


async def test_a_rotation_notifies_ingest(connection, org, database_url) -> None:
    listener = await db.connect(database_url)
    notified = asyncio.Event()
    await listener.add_listener("calltrail_webhook_endpoints", lambda *_: notified.set())
    try:
        await rotate(connection, org.org_id, HOUR)
        await asyncio.wait_for(notified.wait(), 5)
        notified.clear()
        await revoke_previous(connection, org.org_id)
        await asyncio.wait_for(notified.wait(), 5)
    finally:
        await listener.close()
