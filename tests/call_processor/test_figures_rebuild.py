"""The organization's own day through real Postgres (decision 45): calls land on its local
days, a new zone re-keys the figures in the background, and a rebuild racing batches on
other connections converges to exact figures, exact at every commit on the way."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import random
import uuid

import asyncpg
import orjson

from call_processor.deliveries import Delivery
from call_processor.handlers import process_batch
from call_processor.rebuild import rebuild_figures, rebuild_waiting_figures
from calltrail_common import audit, db, time_zones
from calltrail_common.organizations import create_organization
from calltrail_testkit.state import assert_invariants
from tests.support.samples import sample

_tags = itertools.count(1)


def report(call_id: str, created: dt.datetime, number: str) -> dict:
    body = copy.deepcopy(sample("inbound-7-end-of-call-report"))
    message = body["message"]
    message["call"]["id"] = call_id
    message["call"]["createdAt"] = created.astimezone(dt.UTC).isoformat()
    message["call"]["customer"] = {"number": number}
    message["customer"] = {"number": number}
    return body


async def apply(connection: asyncpg.Connection, org_id: uuid.UUID, *bodies: dict,
                shard: int = 0) -> None:
    deliveries = [Delivery.received(next(_tags), uuid.uuid4().hex, {"x-org-id": str(org_id)},
                                    orjson.dumps(b)) for b in bodies]
    outcome = await process_batch(connection, deliveries, shard)
    assert not outcome.dead


async def days(connection: asyncpg.Connection, org_id: uuid.UUID) -> dict[dt.date, tuple]:
    rows = await connection.fetch(
        "SELECT day, calls, new_leads FROM daily_stats WHERE org_id = $1"
        " AND (calls <> 0 OR new_leads <> 0) ORDER BY day", org_id)
    return {r["day"]: (r["calls"], r["new_leads"]) for r in rows}


async def choose(connection: asyncpg.Connection, org_id: uuid.UUID, name: str) -> None:
    await time_zones.choose(connection, org_id, name, audit.CLI_ACTOR)


async def test_calls_either_side_of_local_midnight_land_on_their_local_days(
        connection, org_id) -> None:
    await choose(connection, org_id, "Asia/Kolkata")
    assert await rebuild_figures(connection, org_id)
    kolkata = time_zones.zone("Asia/Kolkata")
    await apply(connection, org_id,
                report("late", dt.datetime(2026, 11, 21, 23, 30, tzinfo=kolkata), "+14155550101"),
                report("early", dt.datetime(2026, 11, 22, 0, 30, tzinfo=kolkata), "+14155550102"))
    # 18:00 and 19:00 UTC on the 21st: one UTC day, two days in Kolkata.
    assert await days(connection, org_id) == {dt.date(2026, 11, 21): (1, 1),
                                              dt.date(2026, 11, 22): (1, 1)}
    await assert_invariants(connection)


async def test_a_new_zone_counts_by_the_old_one_until_the_rebuild(connection, org_id) -> None:
    los_angeles = time_zones.zone("America/Los_Angeles")
    # The 23-hour day of 2026-03-08 in Los Angeles, at its edges (UTC 08:00 to 07:00).
    moments = [dt.datetime(2026, 3, 8, 0, 30, tzinfo=los_angeles),  # 08:30Z
               dt.datetime(2026, 3, 8, 23, 30, tzinfo=los_angeles),  # 06:30Z on the 9th
               dt.datetime(2026, 3, 9, 0, 30, tzinfo=los_angeles)]  # 07:30Z on the 9th
    await apply(connection, org_id, *(report(f"c{i}", m, f"+1415555020{i}")
                                      for i, m in enumerate(moments)))
    assert await days(connection, org_id) == {dt.date(2026, 3, 8): (1, 1),
                                              dt.date(2026, 3, 9): (2, 2)}
    await choose(connection, org_id, "America/Los_Angeles")
    zone = await time_zones.find(connection, org_id)
    assert zone.rebuilding and zone.figures_time_zone == "UTC"
    await apply(connection, org_id, report("c9", moments[0], "+14155550209"))
    await assert_invariants(connection)  # still exact, by UTC days
    assert await rebuild_waiting_figures(connection) == 1
    assert (await time_zones.find(connection, org_id)).figures_time_zone == \
        "America/Los_Angeles"  # (usage is metrics-sync's to re-key)
    assert await days(connection, org_id) == {dt.date(2026, 3, 8): (3, 3),
                                              dt.date(2026, 3, 9): (1, 1)}
    await assert_invariants(connection)
    assert await rebuild_waiting_figures(connection) == 0  # nothing waits any more
    await choose(connection, org_id, "UTC")
    await rebuild_waiting_figures(connection)
    assert await days(connection, org_id) == {dt.date(2026, 3, 8): (2, 2),
                                              dt.date(2026, 3, 9): (2, 2)}
    await assert_invariants(connection)


async def test_an_unknown_zone_is_refused_and_nothing_changes(connection, org_id) -> None:
    try:
        await choose(connection, org_id, "Mars/Olympus")
    except time_zones.InvalidTimeZone:
        pass
    else:
        raise AssertionError("an unknown zone was accepted")
    assert await time_zones.find(connection, org_id) == time_zones.OrganizationZone("UTC",
                                                                                     "UTC")


async def test_a_rebuild_racing_batches_converges_and_is_exact_at_every_commit(
        database_url) -> None:
    """Four writers on four shards keep applying reports (new calls, and calls moved across
    midnight) for two organizations while the zone of one changes again and again and the
    rebuild runs; a reader checks the invariants in repeatable-read snapshots meanwhile."""
    setup = await db.connect(database_url)
    busy = (await create_organization(setup, "Busy")).org_id
    calm = (await create_organization(setup, "Calm")).org_id
    rng = random.Random(45)
    base = dt.datetime(2026, 11, 1, 6, 0, tzinfo=dt.UTC)  # around Los Angeles' 25-hour day

    def batch(writer: int, round_: int) -> list[tuple[uuid.UUID, dict]]:
        bodies = []
        for i in range(4):
            org = busy if i % 3 else calm
            call = f"w{writer}-{rng.randrange(12)}"  # calls come back: before and after
            created = base + dt.timedelta(minutes=rng.randrange(0, 60 * 40, 30))
            bodies.append((org, report(f"{org.hex[:4]}-{call}", created,
                                       f"+1415555{writer:02d}{rng.randrange(6):02d}")))
        return bodies

    stop = asyncio.Event()
    checks = 0

    async def writer(number: int) -> None:
        connection = await db.connect(database_url)
        try:
            for round_ in range(12):
                for org, body in batch(number, round_):
                    await apply(connection, org, body, shard=number)
        finally:
            await connection.close()

    async def rebuilder() -> None:
        connection = await db.connect(database_url)
        try:
            for name in itertools.islice(itertools.cycle(
                    ["America/Los_Angeles", "Asia/Kolkata", "UTC"]), 6):
                await choose(connection, busy, name)
                await rebuild_waiting_figures(connection)
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    async def reader() -> None:
        nonlocal checks
        connection = await db.connect(database_url)
        try:
            while not stop.is_set():
                async with connection.transaction(isolation="repeatable_read",
                                                  readonly=True):
                    await assert_invariants(connection)
                checks += 1
                await asyncio.sleep(0.02)
        finally:
            await connection.close()

    try:
        checking = asyncio.create_task(reader())
        await asyncio.gather(*(writer(n) for n in range(4)), rebuilder())
        stop.set()
        await checking
        await choose(setup, busy, "Asia/Kolkata")  # and one last rebuild, at rest
        assert await rebuild_waiting_figures(setup) == 1
        await assert_invariants(setup)
        assert checks > 0
        zone = await time_zones.find(setup, busy)
        assert zone.figures_time_zone == zone.time_zone == "Asia/Kolkata"
        assert await setup.fetchval("SELECT sum(calls) FROM daily_stats") == \
            await setup.fetchval("SELECT count(*) FROM calls")
    finally:
        await setup.close()
