"""Usage per day counts the organization's days (decision 45): a call on the local day of
its createdAt, DST change days included, and a new zone re-keys the stored usage, whatever
order syncs and the re-keying run in."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from calltrail_common import audit, db, time_zones
from metrics_sync.repository import SyncRepository
from metrics_sync.usage import CallUsage, call_usage
from tests.metrics_sync.conftest import fetch, new_org

LOS_ANGELES = time_zones.zone("America/Los_Angeles")


def usage(call_id: str, created: dt.datetime) -> CallUsage:
    made = call_usage({"id": call_id, "createdAt": created.astimezone(dt.UTC).isoformat(),
                       "cost": 0.25})
    assert made is not None
    return made


async def days(database_url: str, org_id: uuid.UUID) -> dict[dt.date, int]:
    rows = await fetch(database_url, "SELECT day, calls FROM vapi_usage_daily"
                       " WHERE org_id = $1 AND calls > 0 ORDER BY day", org_id)
    return {r["day"]: r["calls"] for r in rows}


async def test_usage_counts_local_days_and_follows_a_new_zone(database_url: str) -> None:
    org_id = await new_org(database_url)
    # Either side of local midnight on the 25-hour day of 2026-11-01 in Los Angeles.
    calls: list[tuple[str, Any]] = [
        ("late-oct-31", dt.datetime(2026, 10, 31, 23, 30, tzinfo=LOS_ANGELES)),  # 06:30Z 1st
        ("early-nov-1", dt.datetime(2026, 11, 1, 0, 30, tzinfo=LOS_ANGELES)),  # 07:30Z 1st
        ("late-nov-1", dt.datetime(2026, 11, 1, 23, 30, tzinfo=LOS_ANGELES)),  # 07:30Z 2nd
        ("early-nov-2", dt.datetime(2026, 11, 2, 0, 30, tzinfo=LOS_ANGELES)),  # 08:30Z 2nd
    ]
    pool = await db.create_pool(database_url, max_size=2)
    try:
        repository = SyncRepository(pool, "usage-day-test", lease_seconds=30)
        await repository.record_usage(org_id, [usage(*calls[0]), usage(*calls[2])])
        assert await days(database_url, org_id) == {dt.date(2026, 11, 1): 1,
                                                    dt.date(2026, 11, 2): 1}
        async with pool.acquire() as connection:
            await time_zones.choose(connection, org_id, "America/Los_Angeles",
                                    audit.CLI_ACTOR)
            assert (await time_zones.find(connection, org_id)).rebuilding
        assert await repository.rekey_usage() == 1
        assert await days(database_url, org_id) == {dt.date(2026, 10, 31): 1,
                                                    dt.date(2026, 11, 1): 1}
        await repository.record_usage(org_id, [usage(*calls[1]), usage(*calls[3])])
        assert await days(database_url, org_id) == {dt.date(2026, 10, 31): 1,
                                                    dt.date(2026, 11, 1): 2,
                                                    dt.date(2026, 11, 2): 1}
        assert await repository.rekey_usage() == 0
        async with pool.acquire() as connection:
            zone = await time_zones.find(connection, org_id)
        assert zone.usage_time_zone == "America/Los_Angeles"
        assert zone.figures_time_zone == "UTC" and zone.rebuilding  # the processor's part
    finally:
        await pool.close()
