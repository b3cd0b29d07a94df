"""GET /api/calls and /api/calls/{id}: filters, bad parameters, tenant scoping, and keyset
pagination that neither skips nor repeats a call while new calls arrive."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import RunningApi, assert_error, insert_call, insert_lead

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


async def test_calls_newest_first_with_filters(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    lead_id = await insert_lead(api.connection, tenant.org_id, "+14155550100", name="Ann")
    inbound = await insert_call(api.connection, tenant.org_id, created_at=T0, lead_id=lead_id)
    outbound = await insert_call(api.connection, tenant.org_id, created_at=T0 + timedelta(1),
                                 direction="outboundPhoneCall", status="in-progress")
    web = await insert_call(api.connection, tenant.org_id, created_at=T0 + timedelta(2),
                            direction="webCall")
    undated = await insert_call(api.connection, tenant.org_id, created_at=None,
                                status="queued", direction=None)
    await insert_call(api.connection, other.org_id, created_at=T0)

    async def ids(**query: str) -> list[str]:
        response = await tenant.client.get("/api/calls", params=query)
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["calls"]]

    assert await ids() == [undated, web, outbound, inbound]
    assert await ids(direction="inbound") == [inbound]
    assert await ids(direction="web") == [web]
    assert await ids(status="in-progress") == [outbound]
    assert await ids(leadId=str(lead_id)) == [inbound]
    assert await ids(leadId=str(uuid.uuid4())) == []
    assert await ids(**{"from": (T0 + timedelta(1)).isoformat()}) == [web, outbound]
    assert await ids(to="2026-05-02T12:00:00Z") == [inbound]
    assert await ids(**{"from": "2026-05-01T12:00:00", "to": "2026-05-02T12:00:00"}) == [
        inbound]
    body = (await tenant.client.get("/api/calls", params={"direction": "inbound"})).json()
    assert body["nextCursor"] is None
    call = body["calls"][0]
    assert call["direction"] == "inbound" and call["type"] == "inboundPhoneCall"
    assert call["leadId"] == str(lead_id) and call["createdAt"].startswith("2026-05-01T12:00")
    assert call["cost"] == 0.12 and call["durationSeconds"] == 60.0
    assert "transcript" not in call


@pytest.mark.parametrize(("name", "value"), [
    ("limit", "0"), ("limit", "101"), ("limit", "ten"), ("cursor", "garbage"),
    ("direction", "sideways"), ("status", "done"), ("leadId", "not-a-uuid"),
    ("from", "yesterday"), ("to", "2026-13-01"),
])
async def test_a_bad_parameter_is_a_400_naming_it(api: RunningApi, name: str,
                                                  value: str) -> None:
    tenant = await api.tenant()
    response = await tenant.client.get("/api/calls", params={name: value})
    assert_error(response, 400, "invalid_parameter", name)
    assert value not in response.json()["message"] or value in ("0", "101")


async def test_reversed_instants_are_a_400(api: RunningApi) -> None:
    tenant = await api.tenant()
    response = await tenant.client.get("/api/calls", params={
        "from": "2026-05-02T00:00:00Z", "to": "2026-05-01T00:00:00Z"})
    assert_error(response, 400, "invalid_parameter", "from")


async def test_a_lead_cursor_is_not_a_call_cursor(api: RunningApi) -> None:
    tenant = await api.tenant()
    for phone in ("+14155550101", "+14155550102"):
        await insert_lead(api.connection, tenant.org_id, phone)
    cursor = (await tenant.client.get("/api/leads", params={"limit": 1})).json()["nextCursor"]
    assert cursor is not None
    assert_error(await tenant.client.get("/api/calls", params={"cursor": cursor}), 400,
                 "invalid_parameter", "cursor")


async def test_one_call_in_full(api: RunningApi) -> None:
    tenant = await api.tenant()
    lead_id = await insert_lead(api.connection, tenant.org_id, "+14155550100", name="Ann",
                                email="ann@example.com")
    call_id = await insert_call(
        api.connection, tenant.org_id, created_at=T0, lead_id=lead_id, transcript="AI: Hi",
        summary="A short call", structured_data={"name": "Ann"}, success_evaluation="true",
        recording_url="https://rec.example/mono.wav",
        stereo_recording_url="https://rec.example/stereo.wav", metadata={"orgId": "x"},
        customer_name="Ann")
    response = await tenant.client.get(f"/api/calls/{call_id}")
    assert response.status_code == 200, response.text
    call = response.json()
    assert call["id"] == call_id and call["transcript"] == "AI: Hi"
    assert call["summary"] == "A short call"
    assert call["analysis"] == {"structuredData": {"name": "Ann"}, "successEvaluation": "true"}
    assert call["recording"] == {"monoUrl": "https://rec.example/mono.wav",
                                 "stereoUrl": "https://rec.example/stereo.wav"}
    assert call["lead"]["id"] == str(lead_id) and call["lead"]["email"] == "ann@example.com"
    assert call["metadata"] == {"orgId": "x"}


async def test_another_organizations_call_is_not_found(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    call_id = await insert_call(api.connection, other.org_id)
    assert_error(await tenant.client.get(f"/api/calls/{call_id}"), 404, "not_found")
    assert (await other.client.get(f"/api/calls/{call_id}")).status_code == 200
    for missing in ("no-such-call", "x" * 300, "%20"):
        assert_error(await tenant.client.get(f"/api/calls/{missing}"), 404, "not_found")


_arrivals = st.lists(
    st.lists(st.tuples(st.integers(-3000, 3000), st.booleans()), max_size=4),
    min_size=1, max_size=6)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(initial=st.lists(st.tuples(st.integers(-3000, 3000), st.booleans()), min_size=1,
                        max_size=25),
       arrivals=_arrivals, limit=st.integers(1, 7))
async def test_pages_neither_skip_nor_repeat_while_calls_arrive(
        api: RunningApi, initial, arrivals, limit) -> None:
    """Calls present before the first page are each listed exactly once; calls that arrive
    between pages (at any creation time, some not known yet) are listed at most once; no
    call of another organization ever is."""
    tenant, other = await api.tenant("A"), await api.tenant("B")

    async def add(offset: int, undated: bool) -> str:
        # Equal creation times are likely: the id breaks the tie.
        created = None if undated and offset % 3 == 0 else T0 + timedelta(seconds=offset // 7)
        return await insert_call(api.connection, tenant.org_id, created_at=created)

    present = {await add(o, u) for o, u in initial}
    await insert_call(api.connection, other.org_id, created_at=T0)
    seen: list[str] = []
    arrived: set[str] = set()
    cursor = None
    # Bounded, so that a cursor that does not move on fails the test instead of paging for
    # ever (issue 16): calls arrive between the first pages only, and a page with a next
    # cursor is full of calls not listed before, so there are at most this many pages.
    most_pages = len(present) + sum(len(a) for a in arrivals) + 1
    for pages in range(most_pages):
        query: dict[str, str | int] = {"limit": limit}
        if cursor is not None:
            query["cursor"] = cursor
        response = await tenant.client.get("/api/calls", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        page = [c["id"] for c in body["calls"]]
        assert not set(page) & set(seen), f"page {pages + 1} lists a call again"
        seen.extend(page)
        cursor = body["nextCursor"]
        if cursor is None:
            assert len(page) <= limit
            break
        assert len(page) == limit
        for offset, undated in arrivals[pages] if pages < len(arrivals) else ():
            arrived.add(await add(offset, undated))
    else:
        raise AssertionError(f"still paging after {most_pages} pages")
    assert len(seen) == len(set(seen)), "a call was listed twice"
    assert present <= set(seen), "a call was skipped"
    assert set(seen) <= present | arrived
