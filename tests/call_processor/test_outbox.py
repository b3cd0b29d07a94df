"""The outbox (decision 40) through the real handler into real Postgres: which outbound
events a batch records, for which endpoints, once; closed days; pruning; and the data as
the API shows it."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import itertools
import uuid
from collections import Counter
from decimal import Decimal

import asyncpg
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api import repository as api_repository
from api import shapes
from call_processor.deliveries import Delivery
from call_processor.handlers import process_batch, record_closed_days
from call_processor.outbound import EVENT_TYPES, days_to_close
from call_processor.repository import prune_outbound
from calltrail_common import db
from calltrail_common.agencies import cost_view, create_agency, create_client
from calltrail_common.organizations import create_organization
from calltrail_testkit.lifecycles import traffic
from tests.call_processor.test_convergence import _messy, deliveries_for
from tests.support.samples import sample

_tags = itertools.count(1)
NUMBER = "+14155550123"
LIFECYCLE = ("inbound-1-status-ringing", "inbound-2-status-in-progress",
             "inbound-6-status-ended", "inbound-7-end-of-call-report")


def event(name: str, call_id: str, *, number: str = NUMBER, named: bool = True) -> dict:
    body = copy.deepcopy(sample(name))
    message = body["message"]
    message["call"]["id"] = call_id
    if not named:
        message["call"]["customer"] = {"number": number}
        message.get("analysis", {}).pop("structuredData", None)
    message["call"]["customer"]["number"] = number
    message["customer"] = {"number": number}
    return body


def deliveries(org_id: uuid.UUID, *bodies: dict) -> list[Delivery]:
    return [Delivery.received(next(_tags), uuid.uuid4().hex, {"x-org-id": str(org_id)},
                              orjson.dumps(b)) for b in bodies]


async def apply(connection: asyncpg.Connection, org_id: uuid.UUID, *bodies: dict) -> None:
    outcome = await process_batch(connection, deliveries(org_id, *bodies))
    assert not outcome.dead


async def endpoint(connection: asyncpg.Connection, org_id: uuid.UUID, *types: str,
                   disabled: bool = False, created_at: dt.datetime | None = None
                   ) -> uuid.UUID:
    return await connection.fetchval(
        "INSERT INTO outbound_endpoints (org_id, url, event_types, secret, created_at,"
        " disabled_at, disabled_reason)"
        " VALUES ($1, 'https://receiver.example/hook', $2, 'whsec_dGVzdHNlY3JldA==',"
        "         coalesce($3, now()), CASE WHEN $4 THEN now() END,"
        "         CASE WHEN $4 THEN 'by_user' END) RETURNING id",
        org_id, list(types or EVENT_TYPES), created_at, disabled)


async def recorded(connection: asyncpg.Connection, org_id: uuid.UUID | None = None
                   ) -> list[tuple[str, dict, list[uuid.UUID]]]:
    """(type, data, endpoints delivered to) of every event, oldest first."""
    rows = await connection.fetch(
        "SELECT e.type, e.data, array_agg(d.endpoint_id ORDER BY d.endpoint_id) AS endpoints"
        " FROM outbound_events e LEFT JOIN outbound_deliveries d ON d.event_id = e.id"
        " WHERE $1::uuid IS NULL OR e.org_id = $1"
        " GROUP BY e.id ORDER BY e.occurred_at, e.type", org_id)
    return [(r["type"], r["data"], [x for x in r["endpoints"] if x is not None])
            for r in rows]


async def test_nothing_is_recorded_where_no_enabled_endpoint_wants_it(connection) -> None:
    silent = (await create_organization(connection, "No endpoint")).org_id
    disabled = (await create_organization(connection, "Disabled endpoint")).org_id
    leads_only = (await create_organization(connection, "Leads only")).org_id
    await endpoint(connection, disabled, disabled=True)
    wants_leads = await endpoint(connection, leads_only, "lead.created")
    for index, org in enumerate((silent, disabled, leads_only)):
        for name in LIFECYCLE:
            await apply(connection, org, event(name, f"call-{index}"))
    assert await recorded(connection, silent) == []
    assert await recorded(connection, disabled) == []
    assert [(t, e) for t, _, e in await recorded(connection, leads_only)] == [
        ("lead.created", [wants_leads])]
    assert await connection.fetchval("SELECT count(*) FROM outbound_deliveries") == 1


async def test_each_enabled_endpoint_wanting_an_event_gets_one_delivery(connection,
                                                                        org_id) -> None:
    ended = await endpoint(connection, org_id, "call.ended")
    calls = await endpoint(connection, org_id, "call.ended", "call.updated")
    await endpoint(connection, org_id, disabled=True)
    leads = await endpoint(connection, org_id, "lead.created", "lead.updated")
    for name in LIFECYCLE:
        await apply(connection, org_id, event(name, "c1"))
    got = [(t, e) for t, _, e in await recorded(connection)]
    assert got[0] == ("lead.created", [leads])  # with the call's first event
    assert ("call.ended", sorted([ended, calls])) in got
    # in progress, then the report's analysis and cost after the ended status
    assert [e for t, e in got if t == "call.updated"] == [[calls], [calls]]
    assert ("lead.updated", [leads]) in got  # the report's email
    assert Counter(t for t, _ in got) == {"lead.created": 1, "lead.updated": 1,
                                          "call.ended": 1, "call.updated": 2}
    assert await connection.fetchval(
        "SELECT bool_and(state = 'pending' AND queued_at IS NULL AND attempts = 0)"
        " FROM outbound_deliveries")


async def test_call_ended_once_however_often_and_in_whatever_order(connection,
                                                                   org_id) -> None:
    await endpoint(connection, org_id, "call.ended")
    report, ended = event(LIFECYCLE[3], "c1"), event(LIFECYCLE[2], "c1")
    batch = deliveries(org_id, report, ended)
    assert not (await process_batch(connection, batch)).dead
    assert not (await process_batch(connection, batch)).dead  # redelivered
    await apply(connection, org_id, ended, report, event(LIFECYCLE[0], "c1"))  # Vapi retries
    events = await recorded(connection)
    assert [(t, data["status"], data["summary"] is not None) for t, data, _ in events] == [
        ("call.ended", "ended", True)]


async def test_lead_created_then_updated_when_a_later_call_names_the_caller(
        connection, org_id) -> None:
    await endpoint(connection, org_id, "lead.created", "lead.updated")
    await apply(connection, org_id, event(LIFECYCLE[0], "c1", named=False))
    await apply(connection, org_id, event(LIFECYCLE[3], "c1", named=False))
    await apply(connection, org_id, event(LIFECYCLE[3], "c2"))  # "Ana Ruiz", an email
    await apply(connection, org_id, event(LIFECYCLE[3], "c2"))  # again: no change
    lead_id = str(await connection.fetchval("SELECT id FROM leads"))
    events = [(t, d["id"], d["name"], d["email"], d["callCount"])
              for t, d, _ in await recorded(connection)]
    assert events == [("lead.created", lead_id, None, None, 1),
                      ("lead.updated", lead_id, "Ana Ruiz", "dana@example.com", 2)]


async def test_the_data_is_what_the_api_shows_the_organizations_token(connection) -> None:
    """A client's endpoint, so costs carry the agency's markup, as the client's token sees
    them; compared field by field with the API's own shapes of the stored rows."""
    agency = await create_agency(connection, "Agency")
    client = (await create_client(connection, agency.org_id, "Client",
                                  markup_percent=Decimal("12.5"))).org_id
    await endpoint(connection, client)
    for name in LIFECYCLE:
        await apply(connection, client, event(name, "c1"))
    call, lead = await api_repository_call(connection, client, "c1")
    costs = cost_view("organization", Decimal("12.5"))
    api_call = shapes.billed_call(shapes.call_detail(call, lead), costs).model_dump(
        mode="json", by_alias=True)
    events = await recorded(connection)
    latest_call = [d for t, d, _ in events if t.startswith("call.")][-1]
    assert latest_call["cost"] == api_call["cost"] != float(call["cost"])
    # The names are metrics-sync's (vapi_names), read by the API, not by the processor.
    left_out = {"transcript", "recording", "costBreakdown", "lead", "assistantName",
                "phoneNumberName"}
    assert set(api_call) - set(latest_call) == left_out
    assert set(latest_call) - set(api_call) == {"orgId"}
    assert {k: latest_call[k] for k in api_call if k not in left_out} == {
        k: v for k, v in api_call.items() if k not in left_out}
    assert latest_call["orgId"] == str(client)
    latest_lead = [d for t, d, _ in events if t.startswith("lead.")][-1]
    api_lead = shapes.lead_summary(lead).model_dump(mode="json", by_alias=True)
    assert latest_lead == {**api_lead, "orgId": str(client)}


async def api_repository_call(connection: asyncpg.Connection, org_id: uuid.UUID,
                              call_id: str) -> tuple[asyncpg.Record, asyncpg.Record]:
    call = await connection.fetchrow(api_repository.CALL, org_id, call_id)
    return call, await connection.fetchrow(api_repository.LEAD, org_id, call["lead_id"])


async def test_a_day_is_closed_once_when_it_is_over_with_its_figures(database_url,
                                                                     connection) -> None:
    agency = await create_agency(connection, "Agency")
    org = (await create_client(connection, agency.org_id, "Client",
                               markup_percent=Decimal(10))).org_id
    now = await connection.fetchval("SELECT now()")
    since = now - dt.timedelta(days=2)
    first = await endpoint(connection, org, "usage.day_closed", created_at=since)
    await endpoint(connection, org, "call.ended", created_at=since)  # wants no days
    late = await endpoint(connection, org, "usage.day_closed")  # after the days ended
    days = days_to_close(since, now)
    assert days and now.date() not in days
    day = days[-1]
    for shard, (calls, seconds, cost) in enumerate([(2, 90, "0.30"), (1, 30, "0.10")]):
        await connection.execute(
            "INSERT INTO daily_stats_shards (org_id, day, shard, calls, inbound, outbound,"
            " web, new_leads, duration_seconds, cost) VALUES ($1, $2, $3, $4, $4, 0, 0, 1,"
            " $5, $6)", org, day, shard, calls, seconds, Decimal(cost))
    today = now.date()
    await connection.execute(
        "INSERT INTO daily_stats_shards (org_id, day, shard, calls) VALUES ($1, $2, 0, 5)",
        org, today)

    others = [await db.connect(database_url) for _ in range(2)]
    try:  # replicas racing
        await asyncio.gather(*(record_closed_days(c) for c in others))
    finally:
        for other in others:
            await other.close()
    assert await record_closed_days(connection) == 0  # nothing left open

    events = await recorded(connection)
    assert [(t, d["date"], e) for t, d, e in events] == [
        ("usage.day_closed", d.isoformat(), [first]) for d in days]
    assert late not in {e for _, _, endpoints in events for e in endpoints}
    assert events[-1][1] == {"orgId": str(org), "date": day.isoformat(), "calls": 3,
                             "inbound": 3, "outbound": 0, "web": 0, "newLeads": 2,
                             "minutes": 2.0, "cost": 0.44}
    assert await connection.fetchval(
        "SELECT occurred_at FROM outbound_events WHERE data ->> 'date' = $1",
        day.isoformat()) == dt.datetime.combine(day + dt.timedelta(days=1), dt.time(),
                                                tzinfo=dt.UTC)


async def test_delivered_deliveries_and_their_events_are_pruned_after_retention(
        connection, org_id) -> None:
    target = await endpoint(connection, org_id)
    ages = {"old-delivered": (40, "succeeded"), "old-dead": (40, "dead"),
            "old-pending": (40, "pending"), "new-delivered": (1, "succeeded")}
    for name, (days, state) in ages.items():
        event_id = uuid.uuid5(org_id, name)
        await connection.execute(
            "INSERT INTO outbound_events (id, org_id, type, occurred_at, data)"
            " VALUES ($1, $2, 'call.ended', now() - make_interval(days => $3), $4)",
            event_id, org_id, days, {"name": name})
        await connection.execute(
            "INSERT INTO outbound_deliveries (endpoint_id, event_id, state, created_at)"
            " VALUES ($1, $2, $3, now() - make_interval(days => $4))",
            target, event_id, state, days)
    assert await prune_outbound(connection, retention_days=30, batch=1) == 2
    assert sorted(r["data"]["name"] for r in await connection.fetch(
        "SELECT data FROM outbound_events")) == ["new-delivered", "old-dead", "old-pending"]
    assert await connection.fetchval("SELECT count(*) FROM outbound_deliveries") == 3
    assert await prune_outbound(connection, retention_days=30) == 0


# --- any order, any duplicates -------------------------------------------------------------

RESET = ("TRUNCATE calls, leads, daily_stats_shards, daily_call_outcome_shards,"
         " daily_assistant_shards, events, unassigned_events, outbound_events CASCADE")


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(calls=traffic(), data=st.data())
async def test_any_order_and_duplicates_make_one_call_ended_and_one_lead_created(
        database_url, calls, data) -> None:
    connection = await db.connect(database_url)
    try:
        await connection.execute(RESET)
        org_ids = [r["id"] for r in await connection.fetch(
            "SELECT id FROM organizations ORDER BY name")]
        if not org_ids:
            org_ids = [(await create_organization(connection, name)).org_id
                       for name in ("org-a", "org-b")]
            for org in org_ids:
                await endpoint(connection, org)
        for batch in _messy(deliveries_for(calls, org_ids), data):
            assert not (await process_batch(connection, batch)).dead
        ended = Counter(r["data"]["id"] for r in await connection.fetch(
            "SELECT data FROM outbound_events WHERE type = 'call.ended'"))
        created = Counter(r["data"]["id"] for r in await connection.fetch(
            "SELECT data FROM outbound_events WHERE type = 'lead.created'"))
        ended_calls = {r["id"] for r in await connection.fetch(
            "SELECT id FROM calls WHERE status = 'ended'")}
        assert set(ended) == ended_calls and set(ended.values()) <= {1}
        leads = {str(r["id"]) for r in await connection.fetch("SELECT id FROM leads")}
        assert leads <= set(created) and set(created.values()) <= {1}
        assert not await connection.fetchval(  # every event recorded goes somewhere
            "SELECT count(*) FROM outbound_events e WHERE NOT EXISTS"
            " (SELECT 1 FROM outbound_deliveries d WHERE d.event_id = e.id)")
    finally:
        await connection.close()
