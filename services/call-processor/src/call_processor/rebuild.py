"""The daily figures' rebuild after an organization's time zone changed (decision 45).

An organization's figures are keyed by its day in `figures_time_zone`; a new `time_zone`
waits for this rebuild, which the processors' periodic job runs. For each organization
whose two zones differ, one transaction: lock its row FOR UPDATE (every batch that adds to
its figures holds the row FOR KEY SHARE from before it computes its deltas to its commit,
so none is half way through), count every stored call with the batches' own rule
(`figures.DailyFigures`, on the new zone), replace its shard rows with those totals and
set `figures_time_zone`. A batch that waited reads the new zone and adds its deltas to the
rebuilt rows: the figures are exact at every commit. Replicas may race: the second finds
the zones equal under the lock and does nothing.
"""

from __future__ import annotations

import uuid

import asyncpg

from call_processor.figures import DailyFigures
from call_processor.repository import (
    calls_to_count,
    lock_org_for_rebuild,
    orgs_to_rebuild,
    write_rebuilt_figures,
)
from calltrail_common.logging import get_logger
from calltrail_common.time_zones import InvalidTimeZone, zone

log = get_logger("call_processor")


async def rebuild_figures(connection: asyncpg.Connection, org_id: uuid.UUID) -> bool:
    """Re-key the organization's figures to its zone if they wait for it; whether they
    did."""
    async with connection.transaction():
        zones = await lock_org_for_rebuild(connection, org_id)
        if zones is None or zones[0] == zones[1]:
            return False
        wanted = zones[0]
        try:
            where = zone(wanted)
        except InvalidTimeZone:
            # Validated when chosen; a name a newer tzdata dropped is left for an operator.
            log.error("figures_zone_unknown", org_id=str(org_id))
            return False
        figures = DailyFigures()
        calls = 0
        async for state in calls_to_count(connection, org_id):
            figures.add_change(org_id, None, state, where)
            calls += 1
        await write_rebuilt_figures(connection, org_id, figures, wanted)
    log.info("figures_rebuilt", org_id=str(org_id), calls=calls)
    return True


async def rebuild_waiting_figures(connection: asyncpg.Connection) -> int:
    """Rebuild the figures of every organization whose zone changed; how many were."""
    rebuilt = 0
    for org_id in await orgs_to_rebuild(connection):
        rebuilt += await rebuild_figures(connection, org_id)
    return rebuilt
