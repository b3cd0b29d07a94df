"""`/api/outbound-webhooks`: an organization's endpoints, their delivery log and "send
again", through the real app with the organization's token. Deliveries are written as the
processor and the dispatcher would leave them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from calltrail_common import audit
from tests.api.conftest import RunningApi, assert_error
from tests.support.delivery_log import insert_delivery

BASE = "/api/outbound-webhooks"
URL = "https://crm.example.com/hooks/calltrail"


async def test_endpoints_are_made_checked_listed_and_their_secret_answered_once(
        api: RunningApi, capfd: pytest.CaptureFixture[str]) -> None:
    tenant = await api.tenant()
    client = tenant.client
    for body, parameter in [
        ({"url": "https://127.0.0.1/hook", "eventTypes": ["call.ended"]}, "url"),
        ({"url": "https://10.1.2.3/hook", "eventTypes": ["call.ended"]}, "url"),
        ({"url": "http://crm.example.com/hook", "eventTypes": ["call.ended"]}, "url"),
        ({"url": URL, "eventTypes": ["call.started"]}, "eventTypes"),
        ({"url": URL, "eventTypes": []}, "eventTypes"),
        ({"url": URL}, "eventTypes"),
        ({"url": URL, "eventTypes": ["call.ended"], "description": "a\nb"}, "description"),
    ]:
        assert_error(await client.post(BASE, json=body), 400, "invalid_parameter", parameter)
    refused = await client.post(BASE, json={"url": "https://127.0.0.1/hook",
                                            "eventTypes": ["call.ended"]})
    assert "loopback" in refused.json()["message"]
    assert (await client.get(BASE)).json() == {"endpoints": []}

    created = await client.post(BASE, json={
        "url": URL, "description": "CRM", "eventTypes": ["lead.created", "call.ended"]})
    assert created.status_code == 201, created.text
    made = created.json()
    secret = made.pop("secret")
    assert secret.startswith("whsec_")
    assert made == {"id": made["id"], "url": URL, "description": "CRM",
                    "eventTypes": ["call.ended", "lead.created"], "enabled": True,
                    "disabledAt": None, "disabledReason": None, "failingSince": None,
                    "lastSuccessAt": None, "lastAttempt": None,
                    "createdAt": made["createdAt"]}
    listed = await client.get(BASE)
    assert listed.json() == {"endpoints": [made]}
    one = await client.get(f"{BASE}/{made['id']}")
    assert one.json() == made
    rotated = await client.post(f"{BASE}/{made['id']}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    for answer in (listed, one, await client.get(BASE)):
        assert secret not in answer.text and new_secret not in answer.text
    assert [e.actor for e in await audit.entries(api.connection, tenant.org_id)
            if e.action.startswith("outbound_endpoint.")] == [f"token:{tenant.token[:7]}"] * 2
    captured = capfd.readouterr()
    for value in (secret, new_secret):
        assert value not in captured.out + captured.err


async def test_change_disable_enable_and_delete(api: RunningApi) -> None:
    tenant = await api.tenant()
    client = tenant.client
    endpoint = (await client.post(BASE, json={"url": URL, "eventTypes": ["call.ended"]})
                ).json()
    path = f"{BASE}/{endpoint['id']}"
    assert_error(await client.patch(path, json={}), 400, "invalid_parameter", "body")
    assert_error(await client.patch(path, json={"url": "https://192.168.0.1/"}), 400,
                 "invalid_parameter", "url")
    changed = await client.patch(path, json={"description": "Billing",
                                             "eventTypes": ["usage.day_closed"]})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["description"], changed.json()["eventTypes"]) == (
        "Billing", ["usage.day_closed"])
    disabled = (await client.patch(path, json={"enabled": False})).json()
    assert (disabled["enabled"], disabled["disabledReason"]) == (False, "by_user")
    # The dispatcher disables one that fails for days; enabling starts its streak afresh.
    await api.connection.execute(
        """UPDATE outbound_endpoints SET disabled_reason = 'failing',
                  failing_since = now() - interval '4 days' WHERE id = $1""",
        uuid.UUID(endpoint["id"]))
    failing = (await client.get(path)).json()
    assert (failing["enabled"], failing["disabledReason"]) == (False, "failing")
    assert failing["failingSince"] is not None
    enabled = (await client.patch(path, json={"enabled": True, "url": URL + "/v2"})).json()
    assert (enabled["enabled"], enabled["disabledReason"], enabled["failingSince"],
            enabled["url"]) == (True, None, None, URL + "/v2")

    deleted = await client.delete(path)
    assert deleted.status_code == 204 and deleted.content == b""
    assert_error(await client.get(path), 404, "not_found")
    assert_error(await client.delete(path), 404, "not_found")
    assert_error(await client.get(f"{BASE}/not-an-id"), 404, "not_found")


async def test_the_delivery_log_and_send_again(api: RunningApi) -> None:
    tenant = await api.tenant()
    client = tenant.client
    endpoint = (await client.post(BASE, json={"url": URL, "eventTypes": ["call.ended"]})
                ).json()
    endpoint_id = uuid.UUID(endpoint["id"])
    start = datetime.now(UTC) - timedelta(hours=2)
    made = [await insert_delivery(api.connection, tenant.org_id, endpoint_id,
                                  created_at=start + timedelta(minutes=i),
                                  state=("succeeded", "dead", "pending")[i % 3])
            for i in range(5)]
    log = f"{BASE}/{endpoint_id}/deliveries"
    first = (await client.get(log, params={"limit": 2})).json()
    assert [d["id"] for d in first["deliveries"]] == [str(made[4]), str(made[3])]
    second = (await client.get(log, params={"limit": 2, "cursor": first["nextCursor"]})
              ).json()
    third = (await client.get(log, params={"limit": 2, "cursor": second["nextCursor"]})
             ).json()
    assert [d["id"] for d in second["deliveries"] + third["deliveries"]] == [
        str(made[2]), str(made[1]), str(made[0])]
    assert third["nextCursor"] is None
    dead = second["deliveries"][1]
    assert {k: dead[k] for k in ("eventType", "state", "attempts", "lastStatus",
                                 "lastLatencyMs", "lastError")} == {
        "eventType": "call.ended", "state": "dead", "attempts": 9, "lastStatus": 503,
        "lastLatencyMs": 812, "lastError": "HTTP 503"}
    calls_cursor = "c1.WyIyMDI2LTAxLTAxVDAwOjAwOjAwKzAwOjAwIiwiY2FsbC0xIl0"
    assert_error(await client.get(log, params={"cursor": calls_cursor}), 400,
                 "invalid_parameter", "cursor")

    again = await client.post(f"{log}/{made[1]}/send-again")
    assert again.status_code == 202, again.text
    assert (again.json()["state"], again.json()["attempts"]) == ("pending", 9)
    assert await api.connection.fetchval(
        "SELECT queued_at FROM outbound_deliveries WHERE id = $1", made[1]) is None
    assert_error(await client.post(f"{log}/{made[1]}/send-again"), 409, "delivery_pending")
    await client.patch(f"{BASE}/{endpoint_id}", json={"enabled": False})
    refused = await client.post(f"{log}/{made[0]}/send-again")
    assert_error(refused, 409, "endpoint_disabled")
    assert "enable it first" in refused.json()["message"]
    assert_error(await client.post(f"{log}/{uuid.uuid4()}/send-again"), 404, "not_found")


async def test_another_organizations_endpoints_and_deliveries_are_not_found(
        api: RunningApi) -> None:
    owner, stranger = await api.tenant("Acme"), await api.tenant("Bravo")
    endpoint = (await owner.client.post(BASE, json={"url": URL, "eventTypes": ["call.ended"]})
                ).json()
    mine = (await stranger.client.post(BASE, json={"url": URL, "eventTypes": ["call.ended"]})
            ).json()
    delivery = await insert_delivery(api.connection, owner.org_id, uuid.UUID(endpoint["id"]))
    path = f"{BASE}/{endpoint['id']}"
    for method, target, body in [
        ("GET", path, None), ("PATCH", path, {"enabled": False}),
        ("PATCH", path, {"url": "https://evil.example.com/"}), ("DELETE", path, None),
        ("POST", f"{path}/rotate-secret", None), ("GET", f"{path}/deliveries", None),
        ("POST", f"{path}/deliveries/{delivery}/send-again", None),
        # Its own endpoint with the owner's delivery.
        ("POST", f"{BASE}/{mine['id']}/deliveries/{delivery}/send-again", None),
    ]:
        answer = await stranger.client.request(method, target, json=body)
        assert_error(answer, 404, "not_found")
        assert endpoint["url"] not in answer.text
    assert [e["id"] for e in (await stranger.client.get(BASE)).json()["endpoints"]] == [
        mine["id"]]
    still = (await owner.client.get(path)).json()
    assert (still["enabled"], still["url"]) == (True, URL)
    assert await api.connection.fetchval(
        "SELECT state FROM outbound_deliveries WHERE id = $1", delivery) == "dead"
