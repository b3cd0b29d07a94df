"""Several metrics-sync replicas coordinate through Postgres only: each account is synced
once per interval and never by two at once; a replica killed mid-run loses its accounts to
another within a lease, and its run does not stay "running"."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
from pathlib import Path

from calltrail_common import db
from calltrail_common.sync_runs import RunCounts
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi
from metrics_sync.repository import SyncRepository
from tests.conftest import AMQP_URL
from tests.metrics_sync.conftest import (
    ENCRYPTION_KEY,
    connect,
    fetch,
    finished_run,
    new_org,
    running_sync,
    sync_settings,
    wait_until,
)

INTERVAL = 2


async def test_two_replicas_sync_each_account_once_per_interval(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    settings = sync_settings(database_url, topology, url, sync_interval_seconds=INTERVAL)
    orgs = []
    for index in range(6):
        account = fake.add_account(f"key-replica-{index}", seed=100 + index, calls=5, days=1)
        account.latency = 0.2  # runs take a while, so replicas would overlap if they could
        org_id = await new_org(database_url, f"Org {index}")
        await connect(settings, org_id, account.api_key)
        orgs.append(org_id)
    async with running_sync(settings), running_sync(settings):
        await asyncio.sleep(4 * INTERVAL + 1)
    runs = await fetch(database_url, "SELECT org_id, trigger, status, worker, started_at, "
                       "finished_at FROM sync_runs ORDER BY started_at")
    assert {r["status"] for r in runs} <= {"succeeded"}
    for org_id in orgs:
        own = [r for r in runs if r["org_id"] == org_id and r["finished_at"] is not None]
        # The first run (connect) and then one per interval: never two at once.
        for before, after in itertools.pairwise(own):
            assert after["started_at"] >= before["finished_at"], (before, after)
        scheduled = [r for r in own if r["trigger"] == "schedule"]
        assert 2 <= len(scheduled) <= 5, len(scheduled)
        for before, after in itertools.pairwise(scheduled):
            gap = (after["started_at"] - before["started_at"]).total_seconds()
            assert gap >= INTERVAL / 2, gap
    assert len({r["worker"] for r in runs}) == 2  # both replicas took part


async def test_a_replica_killed_mid_run_is_taken_over_and_its_run_not_left_running(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str],
        tmp_path: Path) -> None:
    fake, url = fake_vapi
    lease = 5
    settings = sync_settings(database_url, topology, url, sync_lease_seconds=lease,
                             vapi_request_timeout_seconds=60)
    account = fake.add_account("key-killed", seed=9, calls=20, days=2)
    org_id = await new_org(database_url)
    connected = await connect(settings, org_id, "key-killed")
    account.hang_seconds = 60  # the first run hangs in Vapi until its replica is killed
    log = (tmp_path / "metrics-sync.log").open("wb")
    replica = subprocess.Popen(
        [sys.executable, "-m", "metrics_sync"], stdout=log, stderr=log,
        env={**os.environ, "DATABASE_URL": database_url, "AMQP_URL": AMQP_URL,
             "AMQP_PREFIX": topology.prefix, "ENCRYPTION_KEY": ENCRYPTION_KEY,
             "VAPI_API_BASE_URL": url, "SYNC_LEASE_SECONDS": str(lease),
             "VAPI_REQUEST_TIMEOUT_SECONDS": "60", "METRICS_SYNC_METRICS_PORT": "0"})
    try:
        async def running() -> bool:
            rows = await fetch(database_url, "SELECT status FROM sync_runs WHERE id = $1",
                               connected.sync_id)
            return rows[0]["status"] == "running"
        await wait_until(running, 30, "the run to start in the replica")
        replica.send_signal(signal.SIGKILL)
        replica.wait(10)
    finally:
        if replica.poll() is None:
            replica.kill()
        log.close()
    account.hang_seconds = 0
    async with running_sync(settings):
        # Its run is failed as abandoned once the lease runs out...
        run = await finished_run(database_url, connected.sync_id, timeout=lease + 10)
        assert run["status"] == "failed" and run["reason"].startswith("abandoned")

        # ...and the account is synced again by the replica still alive.
        async def taken_over() -> bool:
            rows = await fetch(database_url, "SELECT 1 FROM sync_runs WHERE org_id = $1 "
                               "AND status = 'succeeded'", org_id)
            return bool(rows)
        await wait_until(taken_over, 15, "another replica to sync the account")
    assert not await fetch(database_url, "SELECT 1 FROM sync_runs WHERE status = 'running'")


async def test_sigterm_hands_a_run_in_progress_back_whole(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    settings = sync_settings(database_url, topology, url, vapi_request_timeout_seconds=60)
    account = fake.add_account("key-sigterm", seed=13, calls=15, days=2)
    org_id = await new_org(database_url)
    connected = await connect(settings, org_id, "key-sigterm")
    account.hang_seconds = 60
    async with running_sync(settings) as service:
        async def running() -> bool:
            rows = await fetch(database_url, "SELECT status FROM sync_runs WHERE id = $1",
                               connected.sync_id)
            return rows[0]["status"] == "running"
        await wait_until(running, 20, "the run to start")
        service._grace = 0.5  # shorter than the hang: the run cannot finish in time
    # Stopped: the run is queued again, not failed, not half-recorded.
    row = (await fetch(database_url, "SELECT status, worker FROM sync_runs WHERE id = $1",
                       connected.sync_id))[0]
    assert (row["status"], row["worker"]) == ("queued", None)
    assert not await fetch(database_url, "SELECT 1 FROM vapi_usage_daily")
    account.hang_seconds = 0
    async with running_sync(settings):  # any replica runs it from the start
        run = await finished_run(database_url, connected.sync_id)
    assert run["status"] == "succeeded" and run["calls_seen"] == 15


async def test_a_run_the_reaper_thought_abandoned_ends_as_it_really_ended(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    """A run outlives its lease (Postgres was cut while it worked, say), the reaper fails it
    as abandoned, and no other replica took the account: when the run then records its
    success, the run row says succeeded, as the account does."""
    fake, url = fake_vapi
    settings = sync_settings(database_url, topology, url)
    fake.add_account("key-late", seed=11, calls=3, days=1)
    org_id = await new_org(database_url)
    connected = await connect(settings, org_id, "key-late")
    pool = await db.create_pool(database_url, max_size=2)
    try:
        repository = SyncRepository(pool, "replica-a", lease_seconds=30)
        [(account, runs)] = await repository.claim_due(1)
        assert runs == [connected.sync_id]
        await pool.execute("UPDATE vapi_accounts SET lease_until = now() - interval '1 second'"
                           " WHERE org_id = $1", org_id)
        assert await repository.reap() == 1
        run = (await fetch(database_url, "SELECT status, reason FROM sync_runs WHERE id = $1",
                           connected.sync_id))[0]
        assert run["status"] == "failed" and run["reason"].startswith("abandoned")

        recorded = await repository.succeed(
            account, runs, RunCounts(calls_seen=3, calls_published=3, requests=2),
            next_sync_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5),
            watermark=dt.datetime.now(dt.UTC))
    finally:
        await pool.close()
    assert recorded
    run = (await fetch(database_url, "SELECT status, reason, calls_seen FROM sync_runs "
                       "WHERE id = $1", connected.sync_id))[0]
    assert (run["status"], run["reason"], run["calls_seen"]) == ("succeeded", None, 3)


async def test_a_run_whose_end_was_lost_is_abandoned_when_its_account_is_leased_again(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    """A run failed while Postgres was away, so its end was never written, and the same
    replica leases the account again before the reaper looks (its lease is then held by
    that worker, out of the reaper's reach): the new lease fails the old run as
    abandoned, and it does not stay 'running' for ever (the fault suite's
    sync-postgres-cut found one)."""
    fake, url = fake_vapi
    settings = sync_settings(database_url, topology, url)
    fake.add_account("key-lost-end", seed=12, calls=3, days=1)
    org_id = await new_org(database_url)
    connected = await connect(settings, org_id, "key-lost-end")
    pool = await db.create_pool(database_url, max_size=2)
    try:
        repository = SyncRepository(pool, "replica-a", lease_seconds=30)
        [(_, runs)] = await repository.claim_due(1)
        assert runs == [connected.sync_id]
        # Its end is lost; the account is due again and its lease has run out.
        await pool.execute("UPDATE vapi_accounts SET lease_until = now() - interval '1 second',"
                           " next_sync_at = now() WHERE org_id = $1", org_id)
        [(_, again)] = await repository.claim_due(1)
        assert again != runs
        assert await repository.reap() == 0  # held by the same worker: nothing to reap
    finally:
        await pool.close()
    old = (await fetch(database_url, "SELECT status, reason FROM sync_runs WHERE id = $1",
                       connected.sync_id))[0]
    assert old["status"] == "failed" and old["reason"].startswith("abandoned")
    running = await fetch(database_url, "SELECT id FROM sync_runs WHERE org_id = $1"
                          " AND status = 'running'", org_id)
    assert [r["id"] for r in running] == again
