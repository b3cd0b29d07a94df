"""GET /api/leads, /api/leads/{id}, /api/stats/overview and /api/vapi/metrics."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from tests.api.conftest import RunningApi, assert_error, insert_call, insert_lead

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


async def test_leads_newest_first_searched_and_paged(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    ann = await insert_lead(api.connection, tenant.org_id, "+14155550101", name="Ann Lee",
                            email="ann@example.com", created_at=T0)
    bob = await insert_lead(api.connection, tenant.org_id, "+14155550102", name="Bob",
                            created_at=T0 + timedelta(hours=1))
    pct = await insert_lead(api.connection, tenant.org_id, "+14155550103", name="100% Co",
                            created_at=T0 + timedelta(hours=2))
    await insert_lead(api.connection, other.org_id, "+14155550101", name="Ann Other")

    async def ids(**query: str | int) -> list[str]:
        response = await tenant.client.get("/api/leads", params=query)
        assert response.status_code == 200, response.text
        return [lead["id"] for lead in response.json()["leads"]]

    assert await ids() == [str(pct), str(bob), str(ann)]
    assert await ids(q="ann") == [str(ann)]
    assert await ids(q="EXAMPLE.COM") == [str(ann)]
    assert await ids(q="5550102") == [str(bob)]
    assert await ids(q="%") == [str(pct)]  # a literal %, not a wildcard
    assert await ids(q="zzz") == []
    first = (await tenant.client.get("/api/leads", params={"limit": 2})).json()
    assert [lead["id"] for lead in first["leads"]] == [str(pct), str(bob)]
    second = (await tenant.client.get("/api/leads", params={
        "limit": 2, "cursor": first["nextCursor"]})).json()
    assert [lead["id"] for lead in second["leads"]] == [str(ann)]
    assert second["nextCursor"] is None
    lead = second["leads"][0]
    assert lead["phoneNumber"] == "+14155550101" and lead["email"] == "ann@example.com"
    assert lead["callCount"] == 1 and {"firstCallAt", "lastCallAt", "createdAt"} <= set(lead)


@pytest.mark.parametrize(("name", "value"), [
    ("limit", "0"), ("limit", "1000"), ("cursor", "c1.abc"), ("cursor", "l1.!!"),
    ("q", "x" * 101)])
async def test_a_bad_leads_parameter_is_a_400_naming_it(api: RunningApi, name: str,
                                                        value: str) -> None:
    tenant = await api.tenant()
    assert_error(await tenant.client.get("/api/leads", params={name: value}), 400,
                 "invalid_parameter", name)


async def test_one_lead_with_its_calls_and_no_one_elses(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    lead_id = await insert_lead(api.connection, tenant.org_id, "+14155550101", name="Ann")
    older = await insert_call(api.connection, tenant.org_id, lead_id=lead_id, created_at=T0)
    newer = await insert_call(api.connection, tenant.org_id, lead_id=lead_id,
                              created_at=T0 + timedelta(hours=1))
    await insert_call(api.connection, tenant.org_id, created_at=T0)  # no lead
    response = await tenant.client.get(f"/api/leads/{lead_id}")
    assert response.status_code == 200, response.text
    lead = response.json()
    assert lead["id"] == str(lead_id) and lead["name"] == "Ann"
    assert [c["id"] for c in lead["calls"]] == [newer, older]
    assert_error(await other.client.get(f"/api/leads/{lead_id}"), 404, "not_found")
    for missing in (str(uuid.uuid4()), "not-a-uuid", "1"):
        assert_error(await tenant.client.get(f"/api/leads/{missing}"), 404, "not_found")


async def test_overview_totals_and_daily_series(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    rows = [(tenant.org_id, date(2026, 5, 1), 3, 2, 1, 0, 1, Decimal(150), Decimal("0.30")),
            (tenant.org_id, date(2026, 5, 3), 1, 0, 0, 1, 0, Decimal(30), Decimal("0.05")),
            (tenant.org_id, date(2026, 4, 1), 9, 9, 0, 0, 9, Decimal(60), Decimal(1)),
            (other.org_id, date(2026, 5, 1), 7, 7, 0, 0, 7, Decimal(60), Decimal(1))]
    await api.connection.executemany(
        """INSERT INTO daily_stats_shards (org_id, day, calls, inbound, outbound, web,
                                           new_leads, duration_seconds, cost)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""", rows)
    response = await tenant.client.get("/api/stats/overview", params={
        "startDate": "2026-05-01", "endDate": "2026-05-03"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {k: body[k] for k in ("calls", "inbound", "outbound", "web", "newLeads",
                                 "minutes", "cost")} == {
        "calls": 4, "inbound": 2, "outbound": 1, "web": 1, "newLeads": 1, "minutes": 3.0,
        "cost": 0.35}
    assert [d["date"] for d in body["daily"]] == ["2026-05-01", "2026-05-02", "2026-05-03"]
    assert [d["calls"] for d in body["daily"]] == [3, 0, 1]
    default = (await tenant.client.get("/api/stats/overview")).json()
    assert len(default["daily"]) == 30
    assert default["endDate"] == datetime.now(UTC).date().isoformat()


async def test_usage_metrics_from_the_synced_days(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    await api.connection.executemany(
        """INSERT INTO vapi_usage_daily (org_id, day, calls, minutes, cost)
           VALUES ($1, $2, $3, $4, $5)""",
        [(tenant.org_id, date(2026, 5, 1), 4, Decimal("10.5"), Decimal("1.25")),
         (tenant.org_id, date(2026, 5, 2), 1, Decimal("0.5"), Decimal("0.05")),
         (other.org_id, date(2026, 5, 1), 9, Decimal(9), Decimal(9))])
    response = await tenant.client.get("/api/vapi/metrics", params={
        "startDate": "2026-04-30", "endDate": "2026-05-02"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["calls"], body["minutes"], body["cost"]) == (5, 11.0, 1.3)
    assert body["daily"] == [
        {"date": "2026-04-30", "minutes": 0.0, "calls": 0, "cost": 0.0},
        {"date": "2026-05-01", "minutes": 10.5, "calls": 4, "cost": 1.25},
        {"date": "2026-05-02", "minutes": 0.5, "calls": 1, "cost": 0.05}]


@pytest.mark.parametrize("path", ["/api/stats/overview", "/api/vapi/metrics"])
@pytest.mark.parametrize(("query", "named"), [
    ({"startDate": "2026-02-30"}, "startDate"), ({"endDate": "yesterday"}, "endDate"),
    ({"startDate": "2026-05-02", "endDate": "2026-05-01"}, "startDate"),
    ({"startDate": "2025-01-01", "endDate": "2026-01-02"}, "endDate"),
])
async def test_bad_or_reversed_dates_or_over_366_days_are_a_400(
        api: RunningApi, path: str, query: dict[str, str], named: str) -> None:
    tenant = await api.tenant()
    assert_error(await tenant.client.get(path, params=query), 400, "invalid_parameter",
                 named)
