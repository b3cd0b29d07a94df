"""Calltrail through PgBouncer in transaction mode, with TLS verified, as managed Postgres is
reached (Supabase's pooler, RDS Proxy, CloudNativePG's Pooler).

`DATABASE_URL` carries everything: `sslmode=verify-full&sslrootcert=...` (the pooler
refuses clients without TLS, so a connection that missed it fails) and `pgbouncer=true`
(asyncpg's statement cache off). Every service and the CLI run as processes against this
URL; a pooler of four server connections makes them share, so a prepared statement or a
session lock that leaked across transactions would show.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from calltrail_common import db
from calltrail_testkit.lifecycles import CallFactory, Organization, fake_uuid
from calltrail_testkit.pgbouncer import PgBouncer
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack
from tests.conftest import POSTGRES_ADMIN_URL

ENCRYPTION_KEY = "pgbouncer-test-encryption-key-0123456789"
SERVER_POOL = 4  # server connections per database behind the pooler


@pytest.fixture(scope="module")
def pgbouncer() -> Iterator[PgBouncer]:
    with PgBouncer(pool_size=SERVER_POOL) as bouncer:
        yield bouncer


async def _concurrent_errors(url: str) -> int:
    pool = await db.create_pool(url, min_size=8, max_size=8)
    errors = 0

    async def one(value: int) -> None:
        nonlocal errors
        try:
            async with pool.acquire() as connection:
                assert await connection.fetchval("SELECT $1::int * 2", value) == value * 2
                await connection.fetchval("SELECT $1::text || 'x'", str(value))
        except Exception:
            errors += 1

    try:
        await asyncio.gather(*(one(value) for value in range(300)))
    finally:
        await pool.close()
    return errors


async def test_pgbouncer_true_is_what_makes_a_pool_work_through_the_pooler(
        pgbouncer: PgBouncer) -> None:
    assert await _concurrent_errors(pgbouncer.url("postgres")) == 0
    # The same pool without the flag: statements prepared on one server connection are
    # missing on the next. If this ever passes, the test above proves nothing.
    assert await _concurrent_errors(pgbouncer.url("postgres", pooler_flag=False)) > 0


async def test_a_connection_without_tls_is_refused(pgbouncer: PgBouncer) -> None:
    with pytest.raises(Exception, match="SSL required"):
        await db.connect(pgbouncer.url("postgres", tls="disable"))


def _calltrail(*args: str, env: dict[str, str], stdin: str = "") -> dict[str, Any]:
    result = subprocess.run([sys.executable, "-m", "admin", *args], input=stdin,
                            capture_output=True, text=True, env={**os.environ, **env},
                            timeout=60, check=False)
    assert result.returncode == 0, (args, result.stderr)
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


async def test_concurrent_migrations_through_the_pooler_apply_each_file_once(
        pgbouncer: PgBouncer) -> None:
    name = "calltrail_test_pooler_" + uuid.uuid4().hex[:8]
    await db.create_database_if_missing(f"{POSTGRES_ADMIN_URL}/{name}")
    env = {"DATABASE_URL": pgbouncer.url(name)}
    try:
        runs = await asyncio.gather(*(asyncio.to_thread(_calltrail, "migrate", env=env)
                                      for _ in range(3)))
        applied = sorted(m for run in runs for m in run["applied"])
        assert applied == [m.name for m in db.bundled_migrations()]
        assert _calltrail("migrate", "--check", env=env) == {"pending": []}
    finally:
        admin = await db.connect(f"{POSTGRES_ADMIN_URL}/postgres")
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _organization(created: dict[str, Any], index: int) -> Organization:
    """An organization the CLI created, as the call factory takes it."""
    return Organization(
        org_id=created["orgId"], endpoint_id=created["webhookUrl"].rsplit("/", 1)[1],
        webhook_secret=created["webhookSecret"], vapi_org_id=fake_uuid(random.Random(index)),
        phone_number=f"+1415555010{index}", phone_number_id=str(uuid.uuid4()))


async def _until(check: Any, what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.mark.timeout(180)
async def test_every_service_and_the_cli_work_through_the_pooler(
        pgbouncer: PgBouncer) -> None:
    async with Stack() as stack:
        url = pgbouncer.url(stack.database)
        _fake, vapi_url = await stack.serve_fake_vapi(latency=0.0)
        api_key = f"pooler-{uuid.uuid4().hex}"
        async with httpx.AsyncClient(base_url=vapi_url, timeout=30) as http:
            (await http.post("/_fake/accounts", json={
                "api_key": api_key, "calls": 30, "days": 3, "seed": 7})).raise_for_status()
        cli_env = {"DATABASE_URL": url, "AMQP_URL": stack.amqp_url, "AMQP_PREFIX": stack.prefix,
                   "ENCRYPTION_KEY": ENCRYPTION_KEY, "VAPI_API_BASE_URL": vapi_url}
        first = _calltrail("org", "create", "--name", "Pooled Roofing", env=cli_env)

        ingest = stack.ingest(shared_secret="pooler-shared-secret")
        processor = stack.processor("processor", batch_size=50, batch_wait_ms=20)
        sync = stack.metrics_sync("metrics-sync", vapi_base_url=vapi_url,
                                  encryption_key=ENCRYPTION_KEY, concurrency=4)
        api = stack.api(encryption_key=ENCRYPTION_KEY)
        for server in (ingest, processor, sync, api):
            server.env.update({"DATABASE_URL": url, "LOG_LEVEL": "info",
                               "INGEST_ENDPOINT_REFRESH_SECONDS": "1",
                               "SYNC_INTERVAL_SECONDS": "3600"})
            server.start()

        # An organization created after ingest started: without LISTEN behind the pooler,
        # its endpoint must still reach ingest (the timer reloads it).
        second = _calltrail("org", "create", "--name", "Late Roofing", env=cli_env)
        organizations = [_organization(first, 1), _organization(second, 2)]
        factory = CallFactory(SAMPLES_DIR, organizations, seed=11,
                              now_ms=int(time.time() * 1000), shared_share=0.0)
        calls = factory.calls(24)
        async with httpx.AsyncClient(timeout=10) as client:
            async def accepted(event: Any) -> bool:
                response = await client.post(
                    f"http://127.0.0.1:{ingest.port}/webhooks/vapi/{event.org.endpoint_id}",
                    content=event.body, headers={"Content-Type": "application/json",
                                                 "X-Vapi-Secret": event.org.webhook_secret})
                assert response.status_code in (200, 404, 503), response.text
                return response.status_code == 200

            for call in calls:
                for event in call.events:
                    await _until(lambda e=event: accepted(e), "ingest to accept a webhook")

            connection = await stack.db()
            try:
                async def stored() -> bool:
                    return await connection.fetchval("SELECT count(*) FROM calls") == len(calls)
                await _until(stored, "every call to be stored")
                per_org = {r["org_id"]: r["n"] for r in await connection.fetch(
                    "SELECT org_id::text, count(*) AS n FROM calls GROUP BY org_id")}
            finally:
                await connection.close()
            assert per_org == {org.org_id: sum(1 for c in calls if c.org == org)
                               for org in organizations if any(c.org == org for c in calls)}

            listed = await client.get(f"http://127.0.0.1:{api.port}/api/calls",
                                      params={"limit": 100},
                                      headers={"Authorization": f"Bearer {first['apiToken']}"})
            assert listed.status_code == 200, listed.text
            assert len(listed.json()["calls"]) == per_org.get(first["orgId"], 0)

        _calltrail("vapi", "connect", "--org", first["orgId"], env=cli_env, stdin=api_key)
        done = _calltrail("vapi", "sync", "--org", first["orgId"], "--wait", "--timeout", "60",
                          env=cli_env)
        assert done["status"] == "succeeded", done
        connection = await stack.db()
        try:
            synced = await connection.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM vapi_usage_daily WHERE org_id = $1",
                uuid.UUID(first["orgId"]))
        finally:
            await connection.close()
        assert synced == 30

        await stack.stop_servers()
        for server in (ingest, processor, sync, api):
            log = server.log_path.read_text(errors="replace")
            assert "prepared statement" not in log, server.log_tail()
            assert '"level": "error"' not in log, server.log_tail()
