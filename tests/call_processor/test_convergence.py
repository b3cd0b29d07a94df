"""Any order, any duplicates, any batching: the same calls, leads, links and statistics.

Random lifecycles of several calls across organizations go through the real handler into
real Postgres twice: once in order, each event once; once with every event delivered 1-3
times, shuffled, in random batches. The two final states must be identical, and the
statistics must equal the aggregates over calls and leads.
"""

from __future__ import annotations

import uuid
from dataclasses import replace

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_processor.handlers import Delivery, process_batch
from calltrail_common import db
from calltrail_common.organizations import create_organization
from tests.support.lifecycles import traffic
from tests.support.state import assert_invariants, snapshot

RESET = ("TRUNCATE calls, leads, daily_stats, daily_call_outcomes, daily_assistants, events,"
         " unassigned_events")


def deliveries_for(calls, org_ids) -> list[Delivery]:
    """Each webhook of `calls` as ingest would publish it, in Vapi's order per call."""
    out = []
    for org_index, bodies in calls:
        for body in bodies:
            out.append(Delivery(0, uuid.uuid4().hex, {"x-org-id": str(org_ids[org_index]),
                                                   "x-received-at": 1793718246000},
                                orjson.dumps(body)))
    return out


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=traffic(), data=st.data())
async def test_any_order_and_duplicates_converge_to_one_in_order_delivery(
        database_url, calls, data) -> None:
    connection = await db.connect(database_url)
    try:
        org_ids = [r["id"] for r in await connection.fetch(
            "SELECT id FROM organizations ORDER BY name")]
        if len(org_ids) < 2:
            org_ids = [(await create_organization(connection, name)).org_id
                       for name in ("org-a", "org-b")]
        await connection.execute(RESET)
        in_order = deliveries_for(calls, org_ids)
        for delivery in in_order:
            outcome = await process_batch(connection, [delivery])
            assert not outcome.dead
        await assert_invariants(connection)
        reference = await snapshot(connection)

        await connection.execute(RESET)
        # A duplicate is a redelivery (same message id) or a Vapi retry (a new one).
        messy = []
        for d in in_order:
            for copy in range(data.draw(st.integers(1, 3))):
                retry = copy and data.draw(st.booleans())
                messy.append(replace(d, tag=len(messy) + 1,
                                     message_id=uuid.uuid4().hex if retry else d.message_id))
        messy = data.draw(st.permutations(messy))
        while messy:
            size = data.draw(st.integers(1, max(1, len(messy))))
            batch, messy = messy[:size], messy[size:]
            outcome = await process_batch(connection, batch)
            assert not outcome.dead
            await assert_invariants(connection)  # at every commit, not only at the end
        assert await snapshot(connection) == reference
    finally:
        await connection.close()
