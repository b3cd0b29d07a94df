"""`POST /api/leads/{id}/erase` and `GET`/`PUT /api/retention` (decision 44), and a call
Vapi deleted, which the API no longer shows."""

from __future__ import annotations

import uuid

from calltrail_common import audit
from tests.api.conftest import RunningApi, assert_error, insert_call, insert_lead

NUMBER = "+14155550166"


async def test_erase_a_lead_through_the_api(api: RunningApi) -> None:
    tenant = await api.tenant()
    lead_id = await insert_lead(api.connection, tenant.org_id, NUMBER, name="Pia Secret",
                                email="pia@secret.example")
    call_id = await insert_call(api.connection, tenant.org_id, lead_id=lead_id,
                                customer_number=NUMBER, customer_name="Pia Secret",
                                transcript="User: the code is 4471", summary="Pia called")

    erased = await tenant.client.post(f"/api/leads/{lead_id}/erase")

    assert erased.status_code == 200, erased.text
    assert erased.json() == {"leadId": str(lead_id), "erasedCalls": 1}
    lead = (await tenant.client.get(f"/api/leads/{lead_id}")).json()
    assert (lead["phoneNumber"], lead["name"], lead["email"]) == \
        (f"erased:{lead_id}", None, None)
    call = (await tenant.client.get(f"/api/calls/{call_id}")).json()
    assert (call["customerName"], call["transcript"], call["summary"]) == (None, None, None)
    assert call["cost"] == 0.12  # the figures' part stays
    listed = (await tenant.client.get("/api/leads", params={"q": "Pia"})).json()
    assert listed["leads"] == []
    # Again: nothing more to clear, still 200; the audit log names the lead, not the number.
    again = await tenant.client.post(f"/api/leads/{lead_id}/erase")
    assert again.status_code == 200
    entries = await audit.entries(api.connection, tenant.org_id)
    assert [(e.action, e.target) for e in entries[:2]] == [("lead.erase", str(lead_id))] * 2
    assert all(NUMBER not in str(e.detail) for e in entries)
    assert_error(await tenant.client.post(f"/api/leads/{uuid.uuid4()}/erase"), 404,
                 "not_found")


async def test_retention_is_forever_until_set(api: RunningApi) -> None:
    tenant = await api.tenant()
    assert (await tenant.client.get("/api/retention")).json() == {
        "contentRetentionDays": None}
    put = await tenant.client.put("/api/retention", json={"contentRetentionDays": 30})
    assert put.status_code == 200
    assert (await tenant.client.get("/api/retention")).json() == {"contentRetentionDays": 30}
    refused = await tenant.client.put("/api/retention", json={"contentRetentionDays": 0})
    assert refused.status_code == 400
    await tenant.client.put("/api/retention", json={"contentRetentionDays": None})
    assert (await tenant.client.get("/api/retention")).json() == {
        "contentRetentionDays": None}


async def test_a_deleted_call_is_not_shown(api: RunningApi) -> None:
    tenant = await api.tenant()
    kept = await insert_call(api.connection, tenant.org_id)
    gone = await insert_call(api.connection, tenant.org_id, customer_number=None)
    await api.connection.execute("UPDATE calls SET deleted = true WHERE id = $1", gone)
    listed = (await tenant.client.get("/api/calls")).json()
    assert [c["id"] for c in listed["calls"]] == [kept]
    assert_error(await tenant.client.get(f"/api/calls/{gone}"), 404, "not_found")
