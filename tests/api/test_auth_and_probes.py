"""Tokens (401 for missing, wrong or revoked ones, on every /api route), the error shape,
the probes and the OpenAPI document."""

from __future__ import annotations

import pytest

from calltrail_common.organizations import create_token, revoke_token
from tests.api.conftest import RunningApi, assert_error

ROUTES = [
    ("GET", "/api/vapi/connect"), ("POST", "/api/vapi/connect"),
    ("DELETE", "/api/vapi/connect"), ("GET", "/api/vapi/metrics"),
    ("POST", "/api/vapi/sync"), ("GET", "/api/vapi/sync/00000000-0000-0000-0000-000000000000"),
    ("GET", "/api/stats/overview"), ("GET", "/api/calls"), ("GET", "/api/calls/call-1"),
    ("GET", "/api/leads"), ("GET", "/api/leads/00000000-0000-0000-0000-000000000000"),
]


async def test_every_api_route_needs_a_valid_token(api: RunningApi) -> None:
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id)
    token_id, token = made.token_id, made.api_token
    assert await revoke_token(api.connection, token_id)
    wrong = api.client("ct_" + "x" * 43)
    revoked = api.client(token)
    other_scheme = api.client(None)
    other_scheme.headers["Authorization"] = f"Basic {tenant.token}"
    for method, path in ROUTES:
        for client in (api.anonymous, wrong, revoked, other_scheme):
            response = await client.request(method, path, json={"apiKey": "k"})
            assert_error(response, 401, "unauthorized")
            assert tenant.token not in response.text
    assert (await tenant.client.get("/api/calls")).status_code == 200


async def test_a_second_token_works_until_revoked(api: RunningApi) -> None:
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id)
    token_id, token = made.token_id, made.api_token
    client = api.client(token)
    assert (await client.get("/api/leads")).status_code == 200
    await revoke_token(api.connection, token_id)
    assert_error(await client.get("/api/leads"), 401, "unauthorized")
    assert (await tenant.client.get("/api/leads")).status_code == 200


async def test_unknown_paths_and_methods_answer_the_error_shape(api: RunningApi) -> None:
    tenant = await api.tenant()
    assert_error(await tenant.client.get("/api/nothing"), 404, "not_found")
    assert_error(await tenant.client.put("/api/calls"), 405, "method_not_allowed")


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"apiKey": 5}', b'{"apiKey": ""}',
                                  b"{}"])
async def test_a_bad_connect_body_is_a_400(api: RunningApi, body: bytes) -> None:
    tenant = await api.tenant()
    response = await tenant.client.post("/api/vapi/connect", content=body,
                                        headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_parameter")


async def test_probes_and_metrics(api: RunningApi) -> None:
    assert (await api.anonymous.get("/healthz")).json() == {"ok": True}
    assert (await api.anonymous.get("/readyz")).json() == {"ready": True}
    # Prometheus scrapes API_METRICS_PORT (tests/api/test_machines.py); never the public port.
    assert_error(await api.anonymous.get("/metrics"), 404, "not_found")


async def test_the_openapi_document_describes_every_route(api: RunningApi) -> None:
    document = (await api.anonymous.get("/openapi.json")).json()
    paths = document["paths"]
    for method, path in ROUTES:
        template = (path.replace("00000000-0000-0000-0000-000000000000", "{sync_id}")
                    if "/sync/" in path else path)
        template = template.replace("/calls/call-1", "/calls/{call_id}").replace(
            "/leads/00000000-0000-0000-0000-000000000000", "/leads/{lead_id}")
        assert method.lower() in paths[template], (method, template)
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    calls = paths["/api/calls"]["get"]
    assert {p["name"] for p in calls["parameters"]} == {
        "limit", "cursor", "direction", "status", "leadId", "from", "to"}
    assert "nextCursor" in document["components"]["schemas"]["CallPage"]["properties"]
