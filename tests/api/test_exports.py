"""GET /api/calls/export and /api/leads/export against the real api: the list's rows and
filters as CSV or NDJSON, formula cells neutralized, scoped to the token's organization,
marked up for a client, audited, and streamed rather than built in memory."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson

from api import exports
from tests.api.conftest import RunningApi, Tenant, assert_error, insert_call, insert_lead

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def _export(tenant: Tenant, path: str, **query: str) -> list[dict[str, str]]:
    response = await tenant.client.get(path, params=query)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.text.splitlines()[0] == ",".join(
        exports.COLUMNS["calls" if "calls" in path else "leads"])
    return _csv(response.text)


async def test_calls_export_holds_the_lists_rows_and_filters(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    lead_id = await insert_lead(api.connection, tenant.org_id, "+14155550100", name="Ann")
    inbound = await insert_call(api.connection, tenant.org_id, created_at=T0, lead_id=lead_id,
                                summary="Booked, then said \"thanks\",\nbye.",
                                success_evaluation="true", customer_name="Ann")
    outbound = await insert_call(api.connection, tenant.org_id, created_at=T0 + timedelta(1),
                                 direction="outboundPhoneCall", status="in-progress")
    web = await insert_call(api.connection, tenant.org_id, created_at=T0 + timedelta(2),
                            direction="webCall", cost=Decimal("-1.5"))
    await insert_call(api.connection, other.org_id, created_at=T0)

    async def ids(**query: str) -> list[str]:
        return [row["id"] for row in await _export(tenant, "/api/calls/export", **query)]

    assert await ids() == [web, outbound, inbound]
    assert await ids(direction="inbound") == [inbound]
    assert await ids(status="in-progress") == [outbound]
    assert await ids(leadId=str(lead_id)) == [inbound]
    assert await ids(leadId=str(uuid.uuid4())) == []
    assert await ids(**{"from": (T0 + timedelta(1)).isoformat()}) == [web, outbound]
    assert await ids(to=(T0 + timedelta(1)).isoformat()) == [inbound]
    # The list answers the same calls, page by page.
    listed = (await tenant.client.get("/api/calls", params={"limit": 100})).json()["calls"]
    assert [c["id"] for c in listed] == await ids()

    rows = {row["id"]: row for row in await _export(tenant, "/api/calls/export")}
    assert rows[inbound] == {
        "id": inbound, "createdAt": "2026-05-01T12:00:00Z", "startedAt": "", "endedAt": "",
        "direction": "inbound", "status": "ended", "endedReason": "", "durationSeconds": "60.0",
        "cost": "0.12", "customerNumber": "'+14155550100", "customerName": "Ann",
        "assistantId": "", "phoneNumberId": "", "leadId": str(lead_id),
        "summary": "Booked, then said \"thanks\",\nbye.", "successEvaluation": "true"}
    assert rows[web]["cost"] == "-1.5"  # a number stays a number

    # Bad filters answer as the list answers them, before any row.
    assert_error(await tenant.client.get("/api/calls/export", params={"leadId": "nope"}),
                 400, "invalid_parameter", "leadId")
    assert_error(await tenant.client.get("/api/calls/export", params={
        "from": T0.isoformat(), "to": (T0 - timedelta(1)).isoformat()}),
        400, "invalid_parameter", "from")
    assert (await tenant.client.get("/api/calls/export",
                                    params={"direction": "sideways"})).status_code == 400


async def test_the_file_is_named_and_ndjson_is_asked_for_with_accept(api: RunningApi) -> None:
    tenant = await api.tenant()
    call_id = await insert_call(api.connection, tenant.org_id, created_at=T0,
                                customer_name="=HYPERLINK(\"http://evil\")")
    today = datetime.now(UTC).date().isoformat()
    response = await tenant.client.get("/api/calls/export")
    assert response.headers["content-disposition"] == \
        f'attachment; filename="calls-{today}.csv"'
    assert response.headers["cache-control"] == "no-store"
    [row] = _csv(response.text)
    assert row["customerName"] == "'=HYPERLINK(\"http://evil\")"

    response = await tenant.client.get("/api/calls/export",
                                       headers={"Accept": "application/x-ndjson"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["content-disposition"] == \
        f'attachment; filename="calls-{today}.ndjson"'
    [record] = [orjson.loads(line) for line in response.text.splitlines()]
    assert record["id"] == call_id and record["cost"] == 0.12
    assert record["customerName"] == "=HYPERLINK(\"http://evil\")"  # data, not a sheet
    assert record["createdAt"] == "2026-05-01T12:00:00Z"
    assert list(record) == list(exports.CALL_COLUMNS)


async def test_leads_export_searches_as_the_list_does(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    ann = await insert_lead(api.connection, tenant.org_id, "+14155550100", name="Ann Smith",
                            email="ann@example.com", created_at=T0)
    bob = await insert_lead(api.connection, tenant.org_id, "+14155550101", name="@bob",
                            created_at=T0 + timedelta(1))
    await insert_lead(api.connection, other.org_id, "+14155550102", name="Ann Other")

    rows = await _export(tenant, "/api/leads/export")
    assert [row["id"] for row in rows] == [str(bob), str(ann)]
    assert rows[0]["name"] == "'@bob" and rows[0]["callCount"] == "1"
    assert rows[1]["email"] == "ann@example.com"
    assert [row["id"] for row in await _export(tenant, "/api/leads/export", q="ann")] == \
        [str(ann)]
    assert [row["id"] for row in await _export(tenant, "/api/leads/export", q="%")] == []
    response = await tenant.client.get("/api/leads/export", params={"q": "ann"},
                                       headers={"Accept": "application/x-ndjson"})
    [record] = [orjson.loads(line) for line in response.text.splitlines()]
    assert record["id"] == str(ann) and record["phoneNumber"] == "+14155550100"
    assert record["callCount"] == 1
    assert response.headers["content-disposition"].endswith('.ndjson"')


async def test_another_organizations_token_never_sees_the_rows(api: RunningApi) -> None:
    owner, intruder = await api.tenant("A"), await api.tenant("B")
    lead_id = await insert_lead(api.connection, owner.org_id, "+14155550177", name="Secret")
    call_id = await insert_call(api.connection, owner.org_id, lead_id=lead_id,
                                customer_number="+14155550177")
    for path, query in (("/api/calls/export", {}), ("/api/calls/export",
                                                    {"leadId": str(lead_id)}),
                        ("/api/leads/export", {}), ("/api/leads/export", {"q": "Secret"})):
        response = await intruder.client.get(path, params=query)
        assert response.status_code == 200
        assert _csv(response.text) == []  # the list answers an empty page alike
        for mark in (call_id, str(lead_id), "Secret", "550177"):
            assert mark not in response.text
    assert (await api.anonymous.get("/api/calls/export")).status_code == 401


async def test_a_clients_token_exports_the_marked_up_cost(api: RunningApi) -> None:
    agency, client = await api.tenant("Agency"), await api.tenant("Client")
    await api.connection.execute("UPDATE organizations SET kind = 'agency' WHERE id = $1",
                                 agency.org_id)
    await api.connection.execute(
        "UPDATE organizations SET agency_id = $2, markup_percent = 25 WHERE id = $1",
        client.org_id, agency.org_id)
    await insert_call(api.connection, client.org_id, cost=Decimal("0.2"))
    [listed] = (await client.client.get("/api/calls")).json()["calls"]
    [row] = _csv((await client.client.get("/api/calls/export")).text)
    assert float(row["cost"]) == listed["cost"] == 0.25


async def test_every_export_is_audited(api: RunningApi) -> None:
    tenant = await api.tenant()
    lead_id = uuid.uuid4()
    await tenant.client.get("/api/calls/export", params={
        "direction": "outbound", "leadId": str(lead_id), "from": "2026-05-01T00:00:00Z"})
    await tenant.client.get("/api/leads/export", params={"q": " ann "},
                            headers={"Accept": "application/x-ndjson"})
    entries = await api.connection.fetch(
        "SELECT actor, action, target, detail FROM audit_log WHERE org_id = $1 "
        "AND action = 'data.exported' ORDER BY at", tenant.org_id)
    prefix = tenant.token[:7]
    assert [(e["actor"], e["target"], e["detail"]) for e in entries] == [
        (f"token:{prefix}", "calls", {"format": "csv", "filters": {
            "direction": "outbound", "leadId": str(lead_id),
            "from": "2026-05-01T00:00:00Z"}}),
        (f"token:{prefix}", "leads", {"format": "ndjson", "filters": {"q": "ann"}})]


async def test_the_export_streams(api: RunningApi) -> None:
    """20,000 calls (1,538 of them not dated yet, which list first): the first chunk is read
    while the rest is still to come (the body is written as the pages are read, not built
    first), and the pages join without a call skipped or repeated."""
    tenant = await api.tenant()
    await api.connection.execute(
        """INSERT INTO calls (id, org_id, direction, status, created_at, cost, summary)
           SELECT 'call-' || i, $1, 'inboundPhoneCall', 'ended',
                  CASE WHEN i % 13 = 0 THEN NULL
                       ELSE $2::timestamptz - (i / 3) * interval '1 second' END,
                  0.1, repeat('x', 200)
           FROM generate_series(1, 20000) AS i""", tenant.org_id, T0)
    expected = [r["id"] for r in await api.connection.fetch(
        "SELECT id FROM calls WHERE org_id = $1 ORDER BY created_at DESC, id DESC",
        tenant.org_id)]
    body = b""
    async with tenant.client.stream("GET", "/api/calls/export") as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        assert response.headers.get("transfer-encoding") == "chunked"
        chunks = response.aiter_raw()
        first = await anext(chunks)
        assert first.startswith(b"id,createdAt,")
        chunks_after_first = 0
        body += first
        async for chunk in chunks:
            chunks_after_first += 1
            body += chunk
    assert chunks_after_first > 0  # more came after the first chunk
    assert [row["id"] for row in _csv(body.decode())] == expected


async def test_leads_export_joins_its_pages(api: RunningApi) -> None:
    tenant = await api.tenant()
    await api.connection.execute(
        """INSERT INTO leads (id, org_id, phone_number, name, first_call_at, last_call_at,
                              call_count, created_at)
           SELECT gen_random_uuid(), $1, '+1415' || lpad(i::text, 7, '0'), 'Lead ' || i,
                  now(), now(), 1, $2::timestamptz - (i / 2) * interval '1 second'
           FROM generate_series(1, 2500) AS i""", tenant.org_id, T0)
    expected = [str(r["id"]) for r in await api.connection.fetch(
        "SELECT id FROM leads WHERE org_id = $1 ORDER BY created_at DESC, id DESC",
        tenant.org_id)]
    assert [row["id"] for row in await _export(tenant, "/api/leads/export")] == expected


async def test_filters_postgres_cannot_hold_answer_400_not_a_cut_stream(
        api: RunningApi) -> None:
    tenant = await api.tenant()
    for path, query, parameter in (
            ("/api/leads/export", {"q": "a\x00b"}, "q"), ("/api/leads", {"q": "a\x00b"}, "q"),
            ("/api/calls/export", {"from": "0001-01-01T00:00:00+01:00"}, "from"),
            ("/api/calls", {"to": "9999-12-31T23:59:59-01:00"}, "to")):
        assert_error(await tenant.client.get(path, params=query), 400, "invalid_parameter",
                     parameter)
