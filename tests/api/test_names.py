"""The JSON API names each call's assistant and number as the organization's Vapi account
calls them (decision 43), next to their ids: in the calls list, a call, a lead's calls.
Null while unknown; never another organization's name for the same id."""

from __future__ import annotations

from tests.api.conftest import RunningApi, insert_call, insert_lead, insert_vapi_name


async def test_calls_carry_the_names_of_their_assistant_and_number(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    lead_id = await insert_lead(api.connection, tenant.org_id, "+14155550100", name="Ann")
    named = await insert_call(api.connection, tenant.org_id, assistant_id="asst-1",
                              phone_number_id="pn-1", lead_id=lead_id)
    unknown = await insert_call(api.connection, tenant.org_id, assistant_id="asst-gone",
                                phone_number_id="pn-gone", lead_id=lead_id)
    bare = await insert_call(api.connection, tenant.org_id, lead_id=lead_id)
    await insert_vapi_name(api.connection, tenant.org_id, "assistant", "asst-1", "Front desk")
    await insert_vapi_name(api.connection, tenant.org_id, "phone_number", "pn-1", "Sales line")
    # The other organization names the same ids (and one the tenant has no name for).
    await insert_vapi_name(api.connection, other.org_id, "assistant", "asst-1", "Theirs")
    await insert_vapi_name(api.connection, other.org_id, "assistant", "asst-gone", "Theirs")
    await insert_vapi_name(api.connection, other.org_id, "phone_number", "pn-gone", "Theirs")
    expected = {
        named: ("asst-1", "Front desk", "pn-1", "Sales line"),
        unknown: ("asst-gone", None, "pn-gone", None),
        bare: (None, None, None, None),
    }

    def names(call: dict) -> tuple:
        return (call["assistantId"], call["assistantName"], call["phoneNumberId"],
                call["phoneNumberName"])

    listed = (await tenant.client.get("/api/calls")).json()["calls"]
    assert {c["id"]: names(c) for c in listed} == expected
    for call_id, answer in expected.items():
        detail = (await tenant.client.get(f"/api/calls/{call_id}")).json()
        assert names(detail) == answer
    lead = (await tenant.client.get(f"/api/leads/{lead_id}")).json()
    assert {c["id"]: names(c) for c in lead["calls"]} == expected

    await insert_vapi_name(api.connection, tenant.org_id, "assistant", "asst-1", "Night desk")
    detail = (await tenant.client.get(f"/api/calls/{named}")).json()
    assert detail["assistantName"] == "Night desk"


async def test_the_openapi_document_describes_the_names(api: RunningApi) -> None:
    schemas = (await api.anonymous.get("/openapi.json")).json()["components"]["schemas"]
    for schema, fields in (("CallSummary", ("assistantName", "phoneNumberName")),
                           ("CallDetail", ("assistantName", "phoneNumberName")),
                           ("AssistantStats", ("assistantName",))):
        for field in fields:
            assert "Vapi account" in schemas[schema]["properties"][field]["description"]
