"""Tokens are machines' credentials (their last use noted at most once a minute, a revoked
one refused at its next request), the audit log of what a token did, /metrics kept off the
public port, bodies bounded before authentication, and recording URLs only over https."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import orjson

from calltrail_common import audit
from calltrail_common.organizations import create_token, revoke_token
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi
from tests.api.conftest import ENCRYPTION_KEY, RunningApi, assert_error, insert_call, serve_api
from tests.conftest import free_port, make_settings

# --- tokens -----------------------------------------------------------------------------


async def _last_used(api: RunningApi, token_id: uuid.UUID) -> object:
    return await api.connection.fetchval(
        "SELECT last_used_at FROM api_tokens WHERE id = $1", token_id)


async def test_a_tokens_last_use_is_noted_at_most_once_a_minute(api: RunningApi) -> None:
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id, name="CRM")
    assert await _last_used(api, made.token_id) is None
    client = api.client(made.api_token)
    assert (await client.get("/api/calls")).status_code == 200
    first = await _last_used(api, made.token_id)
    assert first is not None
    for _ in range(5):  # within the minute: no write
        assert (await client.get("/api/leads")).status_code == 200
    assert await _last_used(api, made.token_id) == first
    await api.connection.execute(
        "UPDATE api_tokens SET last_used_at = now() - interval '61 seconds' WHERE id = $1",
        made.token_id)
    assert (await client.get("/api/calls")).status_code == 200
    assert await _last_used(api, made.token_id) > first  # type: ignore[operator]


async def test_a_token_revoked_while_in_use_fails_at_its_next_request(api: RunningApi) -> None:
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id)
    client = api.client(made.api_token)  # one kept-alive connection
    assert (await client.get("/api/calls")).status_code == 200
    assert await revoke_token(api.connection, made.token_id)
    assert_error(await client.get("/api/calls"), 401, "unauthorized")
    assert (await tenant.client.get("/api/calls")).status_code == 200


async def test_connect_and_disconnect_are_audited_with_the_tokens_prefix(
        api: RunningApi, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, _ = fake_vapi
    api_key = f"key-{uuid.uuid4()}"
    account = fake.add_account(api_key)
    tenant = await api.tenant()
    made = await create_token(api.connection, tenant.org_id)
    client = api.client(made.api_token)
    assert (await client.post("/api/vapi/connect", json={"apiKey": api_key})).status_code == 200
    assert (await client.delete("/api/vapi/connect")).status_code == 200
    assert (await client.get("/api/vapi/connect")).status_code == 200  # a read: not audited
    logged = await audit.entries(api.connection, tenant.org_id)
    assert [(e.actor, e.action, e.target) for e in logged[:2]] == [
        (f"token:{made.prefix}", "vapi.disconnected", None),
        (f"token:{made.prefix}", "vapi.connected", account.org_id)]
    assert api_key not in repr(logged) and made.api_token not in repr(logged)


# --- /metrics ---------------------------------------------------------------------------


async def test_metrics_are_served_on_their_own_port_never_on_the_public_one(
        database_url: str, topology: Topology) -> None:
    port = free_port()
    settings = make_settings(database_url=database_url, amqp_prefix=topology.prefix,
                             encryption_key=ENCRYPTION_KEY, api_host="127.0.0.1",
                             api_metrics_port=port)
    async with serve_api(settings) as url, httpx.AsyncClient(timeout=5) as client:
        assert_error(await client.get(f"{url}/metrics"), 404, "not_found")
        await client.get(f"{url}/api/calls")  # counted, although refused
        scraped = await client.get(f"http://127.0.0.1:{port}/metrics")
        assert scraped.status_code == 200
        assert 'calltrail_api_requests_total{route="unmatched",status="401"}' in scraped.text
        # Only metrics there: the probes are the public port's.
        assert (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 404
        assert (await client.get(f"{url}/healthz")).status_code == 200
    with contextlib.suppress(httpx.TransportError):  # closed with the app
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"http://127.0.0.1:{port}/metrics")
            raise AssertionError("the metrics port outlived the app")


# --- bodies bounded before authentication -----------------------------------------------


@contextlib.asynccontextmanager
async def _raw(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], dict[str, str]]:
    """The status line, headers and JSON body of one answer, within 5 s."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return int(lines[0].split()[1]), headers, orjson.loads(body)


async def test_no_bearer_header_is_a_401_before_any_body_is_sent(api: RunningApi) -> None:
    async with _raw(api.url) as (reader, writer):
        # Ten megabytes announced, none sent: the answer comes anyway.
        writer.write(b"POST /api/vapi/connect HTTP/1.1\r\nHost: api\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n")
        await writer.drain()
        status, headers, body = await _answer(reader)
    assert status == 401 and body["error"] == "unauthorized" and set(body) == {"error",
                                                                              "message"}
    assert headers["connection"] == "close"


async def test_a_declared_body_over_the_bound_is_a_413_before_it_is_sent(
        api: RunningApi) -> None:
    tenant = await api.tenant()
    async with _raw(api.url) as (reader, writer):
        writer.write(b"POST /api/vapi/connect HTTP/1.1\r\nHost: api\r\n"
                     b"Authorization: Bearer " + tenant.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 65537\r\n\r\n")
        await writer.drain()
        status, headers, body = await _answer(reader)
    assert status == 413 and body["error"] == "payload_too_large", body
    assert headers["connection"] == "close"
    # A wrong token is refused the same way: the bound comes before the token is looked up.
    async with _raw(api.url) as (reader, writer):
        writer.write(b"POST /api/vapi/sync HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer x\r\n"
                     b"Content-Length: 900000\r\n\r\n")
        await writer.drain()
        assert (await _answer(reader))[0] == 413


async def test_a_chunked_body_is_cut_when_it_passes_the_bound(api: RunningApi) -> None:
    tenant = await api.tenant()
    chunk = b"x" * 16384
    async with _raw(api.url) as (reader, writer):
        writer.write(b"POST /api/vapi/connect HTTP/1.1\r\nHost: api\r\n"
                     b"Authorization: Bearer " + tenant.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(5):  # 80 KiB, and the body never ends
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        await writer.drain()
        status, _, body = await _answer(reader)
        assert status == 413 and body["error"] == "payload_too_large"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection closed
    # A chunked body within the bound is read as usual.
    async with _raw(api.url) as (reader, writer):
        payload = b'{"apiKey": ""}'
        writer.write(b"POST /api/vapi/connect HTTP/1.1\r\nHost: api\r\n"
                     b"Authorization: Bearer " + tenant.token.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
        await writer.drain()
        status, _, body = await _answer(reader)
    assert (status, body["error"]) == (400, "invalid_parameter")


async def test_bounds_leave_the_dashboard_and_probes_alone(api: RunningApi) -> None:
    assert (await api.anonymous.get("/healthz")).status_code == 200
    assert (await api.anonymous.get("/login")).status_code == 200


# --- recordings -------------------------------------------------------------------------


async def test_only_https_recording_urls_are_answered(api: RunningApi) -> None:
    tenant = await api.tenant()
    stored = {"https://rec.example/a.wav": "https://rec.example/a.wav",
              "http://rec.example/a.wav": None, "javascript:alert(1)": None,
              "HTTPS://REC.EXAMPLE/B.WAV": "HTTPS://REC.EXAMPLE/B.WAV", "https:///x": None}
    for url, answered in stored.items():
        call_id = await insert_call(api.connection, tenant.org_id, recording_url=url,
                                    stereo_recording_url=url)
        call = (await tenant.client.get(f"/api/calls/{call_id}")).json()
        assert call["recording"] == {"monoUrl": answered, "stereoUrl": answered}, url
