"""`/api/vapi/wiring`: the connected account's assistants and numbers as Vapi (the fake,
served for real) holds them, wired to the organization's endpoint and put back."""

from __future__ import annotations

import datetime as dt
import uuid

from calltrail_common import audit
from calltrail_common.organizations import rotate
from calltrail_testkit.fake_vapi import FakeAccount, FakeVapi
from tests.api.conftest import RunningApi, Tenant, assert_error

ELSEWHERE = {"url": "https://crm.example.com/vapi-hook?token=crm-private-token",
             "timeoutSeconds": 12}


async def _connected(api: RunningApi, fake: FakeVapi) -> tuple[Tenant, FakeAccount, str]:
    tenant = await api.tenant(f"Wired {uuid.uuid4().hex[:6]}")
    key = f"wiring-{uuid.uuid4().hex}"
    account = fake.add_account(key, phone_numbers=2, assistants=2)
    account.assistants[0].update(server=dict(ELSEWHERE),
                                 serverMessages=["transcript", "status-update"])
    assert (await tenant.client.post("/api/vapi/connect", json={"apiKey": key})
            ).status_code == 200
    return tenant, account, key


async def _secret(api: RunningApi, org_id: uuid.UUID) -> tuple[str, str]:
    row = await api.connection.fetchrow(
        "SELECT id, secret FROM webhook_endpoints WHERE org_id = $1", org_id)
    return f"{api.settings.public_base_url}/webhooks/vapi/{row['id']}", row["secret"]


async def test_wire_one_then_all_then_unwire_puts_everything_back(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    tenant, account, key = await _connected(api, fake)
    endpoint_url, secret = await _secret(api, tenant.org_id)
    first, second = (a["id"] for a in account.assistants)

    listed = (await tenant.client.get("/api/vapi/wiring")).json()
    assert listed["endpointUrl"] == endpoint_url
    assert listed["neededMessages"] == ["status-update", "end-of-call-report",
                                        "call.deleted"]
    by_id = {item["id"]: item for item in listed["items"]}
    assert set(by_id) == {first, second, *(p["id"] for p in account.phone_numbers)}
    assert by_id[first]["points"] == "elsewhere"
    assert by_id[first]["serverUrl"] == ELSEWHERE["url"]
    assert by_id[first]["missingMessages"] == ["end-of-call-report", "call.deleted"]
    # Vapi's defaults (no serverMessages) carry the two that build calls, not deletions.
    assert by_id[second]["points"] == "nowhere"
    assert by_id[second]["missingMessages"] == ["call.deleted"]
    assert by_id[account.phone_numbers[0]["id"]]["number"] == account.phone_numbers[0]["number"]
    assert not any(item["complete"] or item["wiredByCalltrail"] for item in listed["items"])

    wired = await tenant.client.post("/api/vapi/wiring/wire", json={"ids": [first]})
    assert wired.status_code == 200, wired.text
    assert wired.json() == {"changed": [{"kind": "assistant", "id": first,
                                         "addedMessages": ["end-of-call-report",
                                                           "call.deleted"]}]}
    # Vapi now holds the endpoint, a credential signing with the org's secret, and the union.
    server = account.assistant(first)["server"]
    assert server["url"] == endpoint_url and server["timeoutSeconds"] == 12
    credential = account.credentials[server["credentialId"]]
    assert credential["provider"] == "webhook"
    assert credential["authenticationPlan"]["type"] == "hmac"
    assert credential["authenticationPlan"]["secretKey"] == secret
    assert account.assistant(first)["serverMessages"] == [
        "transcript", "status-update", "end-of-call-report", "call.deleted"]
    assert "server" not in account.assistant(second)

    everything = (await tenant.client.post("/api/vapi/wiring/wire")).json()["changed"]
    assert {c["id"] for c in everything} == {second, *(p["id"] for p in account.phone_numbers)}
    assert len(account.credentials) == 1  # made once for the secret, then reused
    assert all(p["server"] == {"url": endpoint_url, "credentialId": server["credentialId"]}
               for p in account.phone_numbers)
    listed = (await tenant.client.get("/api/vapi/wiring")).json()
    assert all(item["complete"] and item["wiredByCalltrail"] and item["credentialCurrent"]
               for item in listed["items"])
    assert (await tenant.client.post("/api/vapi/wiring/wire")).json() == {"changed": []}

    entries = await audit.entries(api.connection, tenant.org_id)
    actions = [e.action for e in entries]
    assert actions.count("vapi.wired") == 4 and actions.count("vapi.credential_created") == 1
    assert all(secret not in str(e.detail) and key not in str(e.detail) for e in entries)
    assert all("crm-private-token" not in str(e.detail) for e in entries)
    first_entry = next(e for e in entries if e.target == f"assistant:{first}")
    assert first_entry.detail["previousUrlHost"] == "crm.example.com"

    unwired = (await tenant.client.post("/api/vapi/wiring/unwire")).json()["changed"]
    assert len(unwired) == 4
    assert account.assistant(first)["server"] == ELSEWHERE
    assert account.assistant(first)["serverMessages"] == ["transcript", "status-update"]
    assert "server" not in account.assistant(second)
    assert "serverMessages" not in account.assistant(second)
    assert all("server" not in p for p in account.phone_numbers)
    assert (await tenant.client.post("/api/vapi/wiring/unwire")).json() == {"changed": []}
    assert [e.action for e in await audit.entries(api.connection, tenant.org_id)
            ].count("vapi.unwired") == 4


async def test_a_rotated_secret_needs_a_new_credential(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    tenant, account, _ = await _connected(api, fake)
    first = account.assistants[0]["id"]
    await tenant.client.post("/api/vapi/wiring/wire", json={"ids": [first]})
    old_credential = account.assistant(first)["server"]["credentialId"]
    await rotate(api.connection, tenant.org_id, dt.timedelta(hours=1))
    _, new_secret = await _secret(api, tenant.org_id)

    item = next(i for i in (await tenant.client.get("/api/vapi/wiring")).json()["items"]
                if i["id"] == first)
    assert item["points"] == "here" and not item["credentialCurrent"] and not item["complete"]
    assert item["credentialId"] == old_credential

    await tenant.client.post("/api/vapi/wiring/wire", json={"ids": [first]})
    credential = account.credentials[account.assistant(first)["server"]["credentialId"]]
    assert credential["id"] != old_credential
    assert credential["authenticationPlan"]["secretKey"] == new_secret
    # Re-wiring what Calltrail had wired keeps the set-up from before the first wiring.
    await tenant.client.post("/api/vapi/wiring/unwire", json={"ids": [first]})
    assert account.assistant(first)["server"] == ELSEWHERE


async def test_without_an_account_or_with_a_refused_key(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    lonely = await api.tenant("No Vapi")
    for method, path in (("GET", ""), ("POST", "/wire"), ("POST", "/unwire")):
        assert_error(await lonely.client.request(method, f"/api/vapi/wiring{path}"), 409,
                     "not_connected")
    tenant, account, _ = await _connected(api, fake)
    account.unauthorized = True
    try:
        assert_error(await tenant.client.get("/api/vapi/wiring"), 409, "not_connected")
        assert_error(await tenant.client.post("/api/vapi/wiring/wire"), 409, "not_connected")
    finally:
        account.unauthorized = False
    assert not any(e.action == "vapi.wired"
                   for e in await audit.entries(api.connection, tenant.org_id))
    # Vapi failing answers 502, and nothing was changed.
    account.fail_status = 503
    try:
        assert_error(await tenant.client.post("/api/vapi/wiring/wire"), 502,
                     "vapi_unavailable")
    finally:
        account.fail_status = 0


async def test_nothing_to_wire_makes_no_credential(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    tenant = await api.tenant("Empty account")
    key = f"wiring-empty-{uuid.uuid4().hex}"
    account = fake.add_account(key, phone_numbers=0, assistants=0)
    await tenant.client.post("/api/vapi/connect", json={"apiKey": key})
    assert (await tenant.client.get("/api/vapi/wiring")).json()["items"] == []
    assert (await tenant.client.post("/api/vapi/wiring/wire")).json() == {"changed": []}
    assert (await tenant.client.post("/api/vapi/wiring/wire", json={"ids": ["unknown"]})
            ).json() == {"changed": []}
    assert account.credentials == {}
