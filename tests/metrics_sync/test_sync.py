"""metrics-sync against the fake Vapi (a real HTTP server), real Postgres and RabbitMQ, and
the real call processor: usage exact, lost calls repaired, incremental, faults handled."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from decimal import ROUND_HALF_UP, Decimal

from calltrail_common import db
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi
from calltrail_testkit.state import assert_invariants
from metrics_sync.usage import MINUTES_QUANTUM
from tests.conftest import AMQP_URL
from tests.metrics_sync.conftest import (
    connect,
    fetch,
    finished_run,
    new_org,
    running_sync,
    sync_now,
    sync_settings,
    wait_until,
)
from tests.support.processor import publish, running_processor


async def _usage_matches(database_url: str, org_id, fake_account) -> None:
    truth = fake_account.daily_usage()
    rows = {r["day"]: r for r in await fetch(
        database_url, "SELECT day, calls, minutes, cost FROM vapi_usage_daily "
        "WHERE org_id = $1", org_id)}
    assert set(rows) == set(truth)
    for day, usage in truth.items():
        row = rows[day]
        assert row["calls"] == usage.calls, day
        assert row["minutes"] == usage.minutes.quantize(MINUTES_QUANTUM, ROUND_HALF_UP), day
        assert row["cost"] == usage.cost, day


async def test_first_sync_backfills_usage_exactly_and_repairs_every_call(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    now = dt.datetime.now(dt.UTC)
    account = fake.add_account("key-busy", seed=1, calls=300, days=20, now=now)
    # One day with more than 1,000 calls: the 1,000-row windows must be split.
    busy_day = (now - dt.timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)
    account.add_calls(1_150, rng=random.Random(2), start=busy_day,
                      end=busy_day + dt.timedelta(days=1))
    # 1,450 calls in one run: a lease of 6 s ran out on a machine at load 8 (CI, 'lease_lost').
    settings = sync_settings(database_url, topology, url, sync_lease_seconds=30)
    org_id = await new_org(database_url)
    async with running_processor(database_url, AMQP_URL, topology), running_sync(settings):
        connected = await connect(settings, org_id, "key-busy")
        run = await finished_run(database_url, connected.sync_id, timeout=60)
        assert run["status"] == "succeeded", run["reason"]
        assert run["calls_seen"] == len(account.calls) == 1_450
        await _usage_matches(database_url, org_id, account)
        busy = await fetch(database_url, "SELECT calls FROM vapi_usage_daily "
                           "WHERE org_id = $1 AND day = $2", org_id, busy_day.date())
        assert busy[0]["calls"] > 1_000

        # Not one of these calls came as a webhook: each appears from its snapshot.
        async def all_calls_stored() -> bool:
            rows = await fetch(database_url, "SELECT count(*) AS n FROM calls WHERE org_id = $1",
                               org_id)
            return rows[0]["n"] == len(account.calls)
        await wait_until(all_calls_stored, 60, "every call stored")
    sample = next(c for c in account.calls.values() if c["type"] == "inboundPhoneCall")
    row = (await fetch(database_url, "SELECT * FROM calls WHERE org_id = $1 AND id = $2",
                       org_id, sample["id"]))[0]
    assert row["transcript"] == sample["artifact"]["transcript"]
    assert row["cost"] == Decimal(str(sample["cost"]))
    assert row["status"] == "ended"
    assert row["lead_id"] is not None  # an inbound caller became a lead
    numbers = await fetch(database_url, "SELECT vapi_phone_number_id FROM phone_numbers "
                          "WHERE org_id = $1", org_id)
    assert {r["vapi_phone_number_id"] for r in numbers} == {p["id"] for p in
                                                            account.phone_numbers}
    vapi_org = await fetch(database_url, "SELECT vapi_org_id FROM vapi_accounts "
                           "WHERE org_id = $1", org_id)
    assert vapi_org[0]["vapi_org_id"] == account.org_id
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
    finally:
        await connection.close()


async def test_later_syncs_ask_only_for_what_changed(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    account = fake.add_account("key-quiet", seed=3, calls=120, days=10)
    settings = sync_settings(database_url, topology, url)
    org_id = await new_org(database_url)
    async with running_sync(settings):
        first = await finished_run(database_url, (await connect(settings, org_id,
                                                                "key-quiet")).sync_id)
        assert first["status"] == "succeeded"
        before = account.requests
        second = await finished_run(database_url, await sync_now(settings, org_id))
        assert second["status"] == "succeeded"
        assert account.requests - before == second["requests"] <= 3
        asked = account.request_log[-second["requests"]:]
        assert any("updatedAtGe" in query for _, path, query in asked if path == "/call")

        # A call that changed since (its cost was revised) is read again and counted anew.
        changed = next(iter(account.calls))
        account.update_call(changed, cost=9.99)
        third = await finished_run(database_url, await sync_now(settings, org_id))
        assert third["status"] == "succeeded" and third["calls_seen"] >= 1
    await _usage_matches(database_url, org_id, account)


async def test_rate_limit_is_honoured_and_a_401_disconnects(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    account = fake.add_account("key-limited", seed=4, calls=30, days=5)
    settings = sync_settings(database_url, topology, url)
    org_id = await new_org(database_url)
    async with running_sync(settings):
        await finished_run(database_url, (await connect(settings, org_id,
                                                        "key-limited")).sync_id)
        account.rate_limit_next, account.retry_after = 2, 0.3
        run = await finished_run(database_url, await sync_now(settings, org_id))
        assert run["status"] == "succeeded", run["reason"]  # waited, then went on

        account.unauthorized = True
        run = await finished_run(database_url, await sync_now(settings, org_id))
        assert run["status"] == "failed" and run["reason"] == "invalid_api_key"
        state = (await fetch(database_url, "SELECT status, disconnected_reason FROM "
                             "vapi_accounts WHERE org_id = $1", org_id))[0]
        assert (state["status"], state["disconnected_reason"]) == ("disconnected",
                                                                   "invalid_api_key")
        asked = account.requests
        await asyncio.sleep(1.5)  # several ticks: its polling has stopped
        assert account.requests == asked


async def test_a_hanging_account_never_delays_the_others(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    slow = fake.add_account("key-slow", seed=5, calls=10, days=2)
    fake.add_account("key-fast", seed=6, calls=10, days=2)
    settings = sync_settings(database_url, topology, url, vapi_request_timeout_seconds=30)
    slow_org, fast_org = await new_org(database_url, "Slow"), await new_org(database_url, "Fast")
    async with running_sync(settings):
        await finished_run(database_url, (await connect(settings, slow_org, "key-slow")).sync_id)
        await finished_run(database_url, (await connect(settings, fast_org, "key-fast")).sync_id)
        slow.hang_seconds = 20
        slow_run = await sync_now(settings, slow_org)
        await asyncio.sleep(0.5)
        fast_run = await finished_run(database_url, await sync_now(settings, fast_org),
                                      timeout=5)
        assert fast_run["status"] == "succeeded"
        running = await fetch(database_url, "SELECT status FROM sync_runs WHERE id = $1",
                              slow_run)
        assert running[0]["status"] == "running"
        slow.hang_seconds = 0


async def test_unassigned_events_are_processed_once_the_account_connects(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    account = fake.add_account("key-late", seed=8, calls=0)
    call_id = "7f1d2a3b-0000-4000-8000-00000000beef"
    webhook = {"message": {"type": "status-update", "status": "in-progress",
                           "timestamp": 1_763_000_000_000,
                           "call": {"id": call_id, "orgId": account.org_id,
                                    "type": "inboundPhoneCall",
                                    "createdAt": "2026-11-20T10:00:00.000Z",
                                    "customer": {"number": "+14155550199"}}}}
    settings = sync_settings(database_url, topology, url)
    org_id = await new_org(database_url)
    async with running_processor(database_url, AMQP_URL, topology), running_sync(settings):
        await publish(AMQP_URL, topology, [webhook])

        async def set_aside() -> bool:
            return bool(await fetch(database_url, "SELECT 1 FROM unassigned_events"))
        await wait_until(set_aside, 20, "the event set aside as unassigned")
        connected = await connect(settings, org_id, "key-late")
        assert connected.events_handed_back == 1

        async def assigned() -> bool:
            return bool(await fetch(database_url, "SELECT 1 FROM calls WHERE org_id = $1 "
                                    "AND id = $2", org_id, call_id))
        await wait_until(assigned, 20, "the call assigned to the organization")
    assert not await fetch(database_url, "SELECT 1 FROM unassigned_events")
