"""A rotated organization secret, through a running ingest (decision 34): both secrets are
accepted during the overlap, only the new one after it ends or after a revocation.

The timer reload is an hour away in these tests, so what changes comes by NOTIFY, and an
overlap that ends is refused from ingest's memory alone.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import time
from pathlib import Path

import httpx
import orjson
import pytest

from calltrail_common import db
from calltrail_common.organizations import create_organization, rotate
from calltrail_common.topology import Topology
from tests.admin.test_cli import calltrail
from tests.conftest import make_settings, serve_ingest
from tests.support.samples import sample_bytes

BODY = sample_bytes("inbound-1-status-ringing")


@pytest.fixture
def settings(topology: Topology, spool_dir: Path, database_url: str):
    return make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                         database_url=database_url, ingest_endpoint_refresh_seconds=3600)


def credentials(secret: str) -> list[dict[str, str]]:
    """The secret as each kind of credential Vapi sends."""
    timestamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + BODY,
                         hashlib.sha256).hexdigest()
    return [{"x-vapi-secret": secret}, {"authorization": f"Bearer {secret}"},
            {"x-signature": signature, "x-timestamp": timestamp}]


async def statuses(client: httpx.AsyncClient, endpoint_id: str, secret: str) -> set[int]:
    return {(await client.post(f"/webhooks/vapi/{endpoint_id}", content=BODY,
                               headers=headers)).status_code
            for headers in credentials(secret)}


async def until_statuses(client: httpx.AsyncClient, endpoint_id: str, secret: str,
                         expected: set[int], timeout: float = 5.0) -> float:
    """Seconds until every credential made of `secret` is answered `expected`."""
    started = time.monotonic()
    while (got := await statuses(client, endpoint_id, secret)) != expected:
        assert time.monotonic() - started < timeout, got
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_both_secrets_work_during_the_overlap_and_only_the_new_one_after(
        settings, database_url) -> None:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme Roofing")
        async with serve_ingest(settings) as ingest:
            await until_statuses(ingest.client, org.endpoint_id, org.webhook_secret, {200})
            rotated = await rotate(connection, org.org_id, dt.timedelta(seconds=2))
            assert rotated.previous_valid_until is not None
            # NOTIFY: the new secret works within a second.
            assert await until_statuses(ingest.client, org.endpoint_id,
                                        rotated.webhook_secret, {200}) < 1.5
            assert await statuses(ingest.client, org.endpoint_id, org.webhook_secret) == {200}
            await asyncio.sleep(max(0.0, rotated.previous_valid_until.timestamp()
                                    - time.time()) + 0.1)
            # No reload since (nothing changed in Postgres): ingest's memory ends it.
            assert await statuses(ingest.client, org.endpoint_id,
                                  org.webhook_secret) == {401}
            assert await statuses(ingest.client, org.endpoint_id,
                                  rotated.webhook_secret) == {200}
    finally:
        await connection.close()


async def test_revoke_from_the_cli_ends_the_previous_secret_now(
        settings, database_url) -> None:
    created = calltrail("org", "create", "--name", "Acme", database_url=database_url)
    assert created.returncode == 0, created.stderr
    org = orjson.loads(created.stdout)
    endpoint_id = org["webhookUrl"].rsplit("/", 1)[1]
    async with serve_ingest(settings) as ingest:
        await until_statuses(ingest.client, endpoint_id, org["webhookSecret"], {200})
        result = await asyncio.to_thread(calltrail, "webhook-secret", "rotate", "--org",
                                         org["orgId"], database_url=database_url)
        assert result.returncode == 0, result.stderr
        new_secret = orjson.loads(result.stdout)["webhookSecret"]
        await until_statuses(ingest.client, endpoint_id, new_secret, {200})
        assert await statuses(ingest.client, endpoint_id, org["webhookSecret"]) == {200}

        result = await asyncio.to_thread(calltrail, "webhook-secret", "revoke", "--org",
                                         org["orgId"], database_url=database_url)
        assert result.returncode == 0, result.stderr
        assert await until_statuses(ingest.client, endpoint_id, org["webhookSecret"],
                                    {401}) < 1.5
        assert await statuses(ingest.client, endpoint_id, new_secret) == {200}
