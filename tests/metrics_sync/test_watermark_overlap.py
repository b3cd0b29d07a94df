"""Clock skew: a call that Vapi stamps as updated a little before the last watermark is
read again by the next sync (issue 16: with no overlap on the watermark every other test
passed, and such a change was lost for good)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi, format_instant, parse_instant
from tests.metrics_sync.conftest import (
    connect,
    fetch,
    finished_run,
    new_org,
    running_sync,
    sync_now,
    sync_settings,
)
from tests.metrics_sync.test_cost_breakdown import breakdown_by_day, stored_breakdowns

SKEW = dt.timedelta(seconds=60)  # Vapi's clock behind ours; well within the 300 s overlap


async def test_a_change_stamped_before_the_watermark_is_read_by_the_next_sync(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    account = fake.add_account("key-skewed", seed=12, calls=40, days=3)
    settings = sync_settings(database_url, topology, url)
    assert settings.sync_overlap_seconds > SKEW.total_seconds()
    org_id = await new_org(database_url)
    async with running_sync(settings):
        first = await finished_run(database_url, (await connect(settings, org_id,
                                                                "key-skewed")).sync_id)
        assert first["status"] == "succeeded", first["reason"]
        (watermark,) = [r["calls_watermark"] for r in await fetch(
            database_url, "SELECT calls_watermark FROM vapi_accounts WHERE org_id = $1",
            org_id)]
        assert watermark is not None

        # Changed after the first sync read the list, but stamped by Vapi's clock, a minute
        # behind ours: before the watermark.
        changed = next(c for c in account.calls.values() if c.get("costBreakdown"))
        stamped = format_instant(watermark - SKEW)
        assert parse_instant(stamped) < watermark
        account.update_call(changed["id"], cost=7.77, updatedAt=stamped,
                            costBreakdown={**changed["costBreakdown"], "llm": 7.0})

        second = await finished_run(database_url, await sync_now(settings, org_id))
        assert second["status"] == "succeeded", second["reason"]
        assert second["calls_seen"] >= 1, "the change before the watermark was not read"

    day = parse_instant(changed["createdAt"]).date()
    truth = sum((Decimal(str(c["cost"])) for c in account.calls.values()
                 if c.get("cost") is not None and parse_instant(c["createdAt"]).date() == day),
                Decimal(0))
    (cost,) = [r["cost"] for r in await fetch(
        database_url, "SELECT cost FROM vapi_usage_daily WHERE org_id = $1 AND day = $2",
        org_id, day)]
    assert cost == truth
    assert await stored_breakdowns(database_url, org_id) == breakdown_by_day(
        account.calls.values())
