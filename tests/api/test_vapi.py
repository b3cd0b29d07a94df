"""POST/GET/DELETE /api/vapi/connect and sync now, against the fake Vapi served for real and
real RabbitMQ. The API key is in no answer."""

from __future__ import annotations

import uuid

import aio_pika
import orjson
import pytest

from calltrail_common.topology import METRICS_SYNC_COMMANDS, Topology
from calltrail_testkit.fake_vapi import FakeVapi
from tests.api.conftest import RunningApi, Tenant, assert_error
from tests.conftest import AMQP_URL


async def _sync_commands(topology: Topology) -> list[dict]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.queue(METRICS_SYNC_COMMANDS), ensure=False)
        found = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            found.append(orjson.loads(message.body))
        return found
    finally:
        await connection.close()


async def _connect(tenant: Tenant, api_key: str) -> dict:
    response = await tenant.client.post("/api/vapi/connect", json={"apiKey": api_key})
    assert response.status_code == 200, response.text
    assert api_key not in response.text
    return response.json()


async def test_connect_sync_and_disconnect(api: RunningApi, topology: Topology,
                                           fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    account = fake.add_account(api_key, phone_numbers=2)
    tenant, other = await api.tenant("A"), await api.tenant("B")
    not_yet = (await tenant.client.get("/api/vapi/connect")).json()
    assert not_yet == {"connected": False, "status": "not_connected", "statusReason": None,
                       "vapiOrgId": None, "lastSyncedAt": None, "connectedAt": None}

    connected = await _connect(tenant, api_key)
    assert connected["connected"] is True and connected["status"] == "connected"
    assert connected["vapiOrgId"] == account.org_id and connected["syncId"]
    sealed = await api.connection.fetchval(
        "SELECT sealed FROM vapi_api_keys WHERE org_id = $1", tenant.org_id)
    assert api_key.encode() not in sealed
    numbers = await api.connection.fetchval(
        "SELECT count(*) FROM phone_numbers WHERE org_id = $1", tenant.org_id)
    assert numbers == 2

    status = await tenant.client.get("/api/vapi/connect")
    assert status.json()["connected"] is True and api_key not in status.text
    assert (await other.client.get("/api/vapi/connect")).json()["connected"] is False

    queued = await tenant.client.post("/api/vapi/sync")
    assert queued.status_code == 202, queued.text
    sync_id = queued.json()["syncId"]
    assert set(queued.json()) == {"syncId"}
    run = (await tenant.client.get(f"/api/vapi/sync/{sync_id}")).json()
    assert run["syncId"] == sync_id and run["status"] == "queued"
    assert run["trigger"] == "manual" and run["reason"] is None
    first_run = (await tenant.client.get(f"/api/vapi/sync/{connected['syncId']}")).json()
    assert first_run["trigger"] == "connect"
    commands = await _sync_commands(topology)
    assert {c["syncId"] for c in commands} == {connected["syncId"], sync_id}
    assert all(c["orgId"] == str(tenant.org_id) for c in commands)

    # Another organization's run, an unknown one and a malformed id: all not found.
    for client, path in ((other.client, sync_id), (tenant.client, str(uuid.uuid4())),
                         (tenant.client, "not-a-uuid")):
        assert_error(await client.get(f"/api/vapi/sync/{path}"), 404, "not_found")

    for _ in range(2):  # idempotent
        gone = await tenant.client.delete("/api/vapi/connect")
        assert gone.status_code == 200, gone.text
        assert gone.json()["connected"] is False and gone.json()["status"] == "disconnected"
        assert gone.json()["statusReason"] == "disconnected"
    assert await api.connection.fetchval(
        "SELECT count(*) FROM vapi_api_keys WHERE org_id = $1", tenant.org_id) == 0
    failed = (await tenant.client.get(f"/api/vapi/sync/{sync_id}")).json()
    assert failed["status"] == "failed" and failed["reason"]
    assert_error(await tenant.client.post("/api/vapi/sync"), 409, "not_connected")
    never = await other.client.delete("/api/vapi/connect")
    assert never.status_code == 200 and never.json()["status"] == "not_connected"


async def test_a_key_vapi_refuses_is_invalid_api_key(api: RunningApi) -> None:
    tenant = await api.tenant()
    api_key = f"unknown-{uuid.uuid4()}"
    response = await tenant.client.post("/api/vapi/connect", json={"apiKey": api_key})
    assert_error(response, 400, "invalid_api_key")
    assert api_key not in response.text
    assert (await tenant.client.get("/api/vapi/connect")).json()["connected"] is False


async def test_vapi_down_is_502_and_stores_nothing(api: RunningApi,
                                                   fake_vapi: tuple[FakeVapi, str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    account = fake.add_account(api_key)
    account.fail_status = 503
    tenant = await api.tenant()
    response = await tenant.client.post("/api/vapi/connect", json={"apiKey": api_key})
    assert_error(response, 502, "vapi_unavailable")
    assert api_key not in response.text
    assert (await tenant.client.get("/api/vapi/connect")).json()["status"] == "not_connected"
    captured = capsys.readouterr()
    assert api_key not in captured.out + captured.err  # nor in any log line


@pytest.mark.parametrize("body", [{"startDate": "2026-13-01"},
                                  {"startDate": "2026-05-02", "endDate": "2026-05-01"},
                                  {"startDate": "2024-01-01", "endDate": "2026-01-01"}])
async def test_a_bad_sync_range_is_a_400(api: RunningApi, body: dict) -> None:
    tenant = await api.tenant()
    assert_error(await tenant.client.post("/api/vapi/sync", json=body), 400,
                 "invalid_parameter")


async def test_sync_without_an_account_is_409(api: RunningApi) -> None:
    tenant = await api.tenant()
    assert_error(await tenant.client.post("/api/vapi/sync", json={}), 409, "not_connected")
