"""The tenant matrix: every `/api/...` route the app has (read from its route table, so a new
route cannot be left out) against no token, a wrong one, a garbage one, a revoked one, and
another organization's token with this organization's ids. 401 or 404 as the contract says,
and nothing of the first organization in any answer nor in any log line.

Tokens are looked up by their SHA-256 digest through a unique index: the comparison is
on the digest, and the raw token is stored nowhere.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from api.app import create_app
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_token, revoke_token, token_digest
from calltrail_testkit.fake_vapi import FakeVapi
from tests.api.conftest import RunningApi, Tenant, assert_error, insert_call, insert_lead
from tests.support.delivery_log import insert_delivery


@dataclass
class Seeded:
    tenant: Tenant
    vapi_key: str
    call_ids: list[str]
    lead_id: uuid.UUID
    sync_id: str
    endpoint_id: str  # an outbound webhook endpoint, with a dead delivery
    delivery_id: str
    secrets: list[str] = field(default_factory=list)  # must appear in no other answer

    def path_value(self, parameter: str) -> str:
        values = {"call_id": self.call_ids[0], "lead_id": str(self.lead_id),
                  "sync_id": self.sync_id, "endpoint_id": self.endpoint_id,
                  "delivery_id": self.delivery_id}
        assert parameter in values, (
            f"a route takes {{{parameter}}}: give the matrix an id of that kind")
        return values[parameter]


async def _seed(api: RunningApi, fake: FakeVapi, name: str, number: str) -> Seeded:
    tenant = await api.tenant(name)
    marker = uuid.uuid4().hex[:10]
    person, email = f"{name} Person{marker}", f"{name.lower()}{marker}@example.com"
    lead_id = await insert_lead(api.connection, tenant.org_id, number, name=person,
                                email=email)
    now = datetime.now(UTC)
    call_ids = [await insert_call(
        api.connection, tenant.org_id, lead_id=lead_id, customer_number=number,
        customer_name=person, created_at=now - timedelta(minutes=i),
        transcript=f"AI: hello {name}\nUser: my code is transcript{marker}",
        summary=f"summary{marker}", recording_url=f"https://rec.example/{marker}.wav")
        for i in range(3)]
    await api.connection.execute(
        "INSERT INTO daily_stats_shards (org_id, day, calls, inbound, new_leads)"
        " VALUES ($1, $2, 3, 3, 1)", tenant.org_id, now.date())
    chosen = await tenant.client.put("/api/success-measure", json={
        "kind": "output", "sourceId": f"so-{marker}"})
    assert chosen.status_code == 200, chosen.text
    vapi_key = f"vapi-key-{marker}"
    account = fake.add_account(vapi_key, phone_numbers=1)
    connected = await tenant.client.post("/api/vapi/connect", json={"apiKey": vapi_key})
    assert connected.status_code == 200, connected.text
    sync_id = connected.json()["syncId"]
    made = await tenant.client.post("/api/outbound-webhooks", json={
        "url": f"https://{marker}.example.com/hook", "eventTypes": ["call.ended"]})
    assert made.status_code == 201, made.text
    endpoint_id = made.json()["id"]
    deliveries = [await insert_delivery(api.connection, tenant.org_id, uuid.UUID(endpoint_id),
                                        created_at=now - timedelta(minutes=i))
                  for i in range(2)]
    secrets = [*call_ids, str(lead_id), sync_id, number, number.lstrip("+"), person, email,
               f"transcript{marker}", f"summary{marker}", marker, account.org_id,
               str(tenant.org_id), tenant.token, vapi_key, endpoint_id, made.json()["secret"],
               *map(str, deliveries), f"so-{marker}"]
    return Seeded(tenant, vapi_key, call_ids, lead_id, sync_id, endpoint_id,
                  str(deliveries[0]), secrets)


def _walk(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            yield from _walk(included.routes)


def api_routes(api: RunningApi) -> list[tuple[str, APIRoute]]:
    """Every (method, route) under /api/ the app routes, documented or not."""
    app = create_app(api.settings, KeyRing.from_settings(api.settings))
    routes = [(method, route) for route in _walk(app.routes)
              if route.path.startswith("/api/") for method in sorted(route.methods)]
    documented = {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
                  for method in operations if path.startswith("/api/")}
    assert documented <= {(method, route.path) for method, route in routes}
    assert len(routes) >= 11
    return routes


def _concrete(route: APIRoute, owner: Seeded) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: owner.path_value(m.group(1)), route.path)


async def _query(route: APIRoute, owner: Seeded) -> dict[str, str]:
    """The owner's ids and search terms in every filter the route takes."""
    query: dict[str, str] = {}
    for parameter in route.dependant.query_params:
        alias = parameter.alias
        if alias == "leadId":
            query[alias] = str(owner.lead_id)
        elif alias == "q":
            query[alias] = "Person"
        elif alias == "cursor":
            # The owner's own cursor, taken from the owner's first page of one.
            page = await owner.tenant.client.get(_concrete(route, owner),
                                                 params={"limit": 1})
            cursor = page.json().get("nextCursor")
            if cursor:
                query[alias] = cursor
    return query


# Routes that answer a stream of Server-Sent Events (the live board, decision 46): read up
# to their snapshot of the organization's calls.
STREAMS = {("GET", "/api/live")}


async def _until_snapshot(response: httpx.Response) -> str:
    lines = []
    async with asyncio.timeout(10):
        async for line in response.aiter_lines():
            lines.append(line)
            if lines[-2:-1] == ["event: snapshot"]:
                break
    return "\n".join(lines)


def assert_nothing_of(owner: Seeded, response: httpx.Response) -> None:
    for secret in owner.secrets:
        assert secret not in response.text, (response.request.url, secret)


async def test_the_tenant_matrix(api: RunningApi, fake_vapi: tuple[FakeVapi, str],
                                 capfd: pytest.CaptureFixture[str]) -> None:
    fake, _ = fake_vapi
    owner = await _seed(api, fake, "Alpha", "+14155550161")
    intruder = await _seed(api, fake, "Bravo", "+14155550172")
    made = await create_token(api.connection, owner.tenant.org_id)
    revoked_id, revoked_token = made.token_id, made.api_token
    assert await revoke_token(api.connection, revoked_id)
    owner.secrets.append(revoked_token)
    garbage = api.client("x")
    refused = {
        "no token": api.anonymous,
        "wrong token": api.client("ct_" + "A" * 43),
        "garbage token": garbage,
        "revoked token": api.client(revoked_token),
        "another scheme": api.client(None),
    }
    refused["another scheme"].headers["Authorization"] = f"Basic {owner.tenant.token}"

    # A call of the owner's in progress: on the owner's live board, on no other.
    live_name = f"Live Caller {uuid.uuid4().hex[:8]}"
    await insert_call(api.connection, owner.tenant.org_id, status="in-progress",
                      customer_name=live_name, ended_at=None)
    owner.secrets.append(live_name)
    async with owner.tenant.client.stream("GET", "/api/live") as streamed:
        assert live_name in await _until_snapshot(streamed)

    for method, route in api_routes(api):
        path = _concrete(route, owner)
        body = {"apiKey": owner.vapi_key} if method in ("POST", "PUT", "PATCH") else None
        answers = {}
        for case, client in refused.items():
            response = await client.request(method, path, json=body)
            assert_error(response, 401, "unauthorized")
            assert_nothing_of(owner, response)
            answers[case] = (response.status_code, response.json())
        # A well-formed wrong token and garbage are told apart by nothing.
        assert answers["wrong token"] == answers["garbage token"], path

        if (method, route.path) in STREAMS:
            # A stream never ends: what its first events say, the intruder's board.
            async with intruder.tenant.client.stream(method, path) as streamed:
                text = await _until_snapshot(streamed)
                response = httpx.Response(streamed.status_code, text=text,
                                          request=streamed.request)
        else:
            response = await intruder.tenant.client.request(
                method, path, params=await _query(route, owner),
                json=None if body is None else {})
        assert_nothing_of(owner, response)
        if route.dependant.path_params:
            assert_error(response, 404, "not_found")
        else:
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500, (method, path, response.text)

    # The intruder's DELETE /api/vapi/connect disconnected the intruder, not the owner.
    status = (await owner.tenant.client.get("/api/vapi/connect")).json()
    assert status["connected"] is True
    for call_id in owner.call_ids:
        assert (await owner.tenant.client.get(f"/api/calls/{call_id}")).status_code == 200
    # Nor did it delete, disable or rotate the owner's outbound endpoint.
    endpoint = await owner.tenant.client.get(f"/api/outbound-webhooks/{owner.endpoint_id}")
    assert endpoint.json()["enabled"] is True
    assert await api.connection.fetchval(
        "SELECT secret FROM outbound_endpoints WHERE id = $1",
        uuid.UUID(owner.endpoint_id)) in owner.secrets
    # The intruder's POST /api/leads/{id}/erase erased nothing of the owner's.
    lead = (await owner.tenant.client.get(f"/api/leads/{owner.lead_id}")).json()
    assert lead["phoneNumber"] == "+14155550161" and lead["name"] is not None
    # The intruder's PUT and DELETE /api/success-measure changed the intruder's measure.
    measure = (await owner.tenant.client.get("/api/success-measure")).json()["measure"]
    chosen = next(s for s in owner.secrets if s.startswith("so-"))
    assert measure == {"kind": "output", "sourceId": chosen, "passMark": None}

    captured = capfd.readouterr()
    logs = captured.out + captured.err
    for secret in (owner.tenant.token, intruder.tenant.token, revoked_token, owner.vapi_key,
                   intruder.vapi_key):
        assert secret not in logs


async def test_tokens_and_keys_are_in_no_error_message(
        api: RunningApi, capfd: pytest.CaptureFixture[str]) -> None:
    tenant = await api.tenant()
    token = tenant.token
    answers = [
        await tenant.client.get("/api/calls", params={"cursor": token}),
        await tenant.client.get("/api/calls", params={"leadId": token}),
        await tenant.client.get(f"/api/calls/{token}"),
        await tenant.client.get(f"/api/leads/{token}"),
        await tenant.client.get("/api/stats/overview", params={"startDate": token}),
        await tenant.client.post("/api/vapi/connect", json={"apiKey": token + " x"}),
        await tenant.client.post("/api/vapi/connect", json={"apiKey": token * 3}),
        await tenant.client.post("/api/vapi/connect", content=token.encode(),
                                 headers={"content-type": "application/json"}),
    ]
    for response in answers:
        assert 400 <= response.status_code < 500, response.text
        assert token not in response.text
    captured = capfd.readouterr()
    assert token not in captured.out + captured.err


async def test_tokens_are_stored_and_compared_only_as_digests(api: RunningApi) -> None:
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id)
    token_id, second = made.token_id, made.api_token
    stored = [row["token_sha256"] for row in await api.connection.fetch(
        "SELECT token_sha256 FROM api_tokens WHERE org_id = $1", tenant.org_id)]
    assert sorted(stored) == sorted([token_digest(tenant.token), token_digest(second)])
    assert all(len(digest) == 32 for digest in stored)
    # The lookup is an equality on the digest through a unique index: no comparison of the
    # token itself, in Python or in SQL, whose timing could leak a prefix.
    unique = await api.connection.fetchval(
        """SELECT count(*) FROM pg_index i
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = 'api_tokens'::regclass AND i.indisunique
             AND i.indnatts = 1 AND a.attname = 'token_sha256'""")
    assert unique == 1
    # The raw tokens are nowhere in the database.
    dump = (await asyncio.to_thread(
        subprocess.run, ["pg_dump", "--data-only", "--no-owner", api.settings.database_url],
        capture_output=True, check=True, timeout=60)).stdout
    assert dump.count(b"COPY public.api_tokens") == 1
    for token in (tenant.token, second):
        assert token.encode() not in dump
    assert token_id
