"""The ingest HTTP contract (section 3) against real RabbitMQ: every answer in its table."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from pathlib import Path

import orjson
import pytest

from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from tests.conftest import (
    AMQP_URL,
    WEBHOOK_SECRET,
    make_settings,
    serve_ingest,
    wait_for_broker,
)
from tests.support.broker import drain_queue
from tests.support.samples import sample_bytes, webhook_samples

AUTH = {"x-vapi-secret": WEBHOOK_SECRET, "content-type": "application/json"}


def signed(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: str | None = None) -> dict:
    payload = body if timestamp is None else timestamp.encode() + b"." + body
    headers = {"content-type": "application/json",
               "x-vapi-signature": "sha256=" + hmac.new(secret.encode(), payload,
                                                        hashlib.sha256).hexdigest()}
    if timestamp is not None:
        headers["x-timestamp"] = timestamp
    return headers


@pytest.fixture
def settings(topology: Topology, spool_dir: Path, database_url: str):
    return make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                         database_url=database_url, ingest_max_body_bytes=64 * 1024)


async def test_a_200_means_the_body_is_in_the_queue_byte_for_byte(settings, topology) -> None:
    bodies = [sample_bytes(name) for name in webhook_samples()]
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)  # else the events are (rightly) spooled
        for body in bodies:
            response = await ingest.client.post("/webhooks/vapi", content=body, headers=AUTH)
            assert response.status_code == 200, response.text
    messages = await drain_queue(AMQP_URL, topology, expect=len(bodies))
    assert sorted(m.body for m in messages) == sorted(bodies)
    # Each caller's events in one partition queue, in the order they were accepted.
    by_caller = [m.body for m in messages
                 if m.headers["partition"] == messages[0].headers["partition"]]
    assert by_caller == [b for b in bodies if b in by_caller]
    [first] = [m for m in messages if m.headers["x-message-type"] == "assistant-request"]
    assert first.headers["x-endpoint-id"] == "shared"
    assert first.headers["x-dedupe-key"] == (
        "db5b5fab-8f4d-4e27-9da1-494c73cf256d:assistant-request")
    assert abs(first.headers["x-received-at"] - time.time() * 1000) < 60_000
    assert first.delivery_mode == 2  # persistent
    assert first.routing_key == "vapi.assistant-request"


async def test_each_credential_kind_is_accepted_and_others_refused(settings) -> None:
    body = sample_bytes("inbound-2-status-in-progress")
    now = int(time.time())
    async with serve_ingest(settings) as ingest:
        async def post(headers: dict) -> int:
            return (await ingest.client.post("/webhooks/vapi", content=body,
                                             headers=headers)).status_code

        assert await post(AUTH) == 200
        assert await post({"authorization": f"Bearer {WEBHOOK_SECRET}"}) == 200
        assert await post(signed(body, timestamp=str(now))) == 200
        assert await post(signed(body, timestamp=str(now * 1000))) == 200
        assert await post({"content-type": "application/json"}) == 401
        assert await post({"x-vapi-secret": "wrong"}) == 401
        assert await post(signed(body, secret="wrong", timestamp=str(now))) == 401
        assert await post(signed(body, timestamp=str(now - 6 * 60))) == 401
        # An HMAC without a timestamp could be replayed for ever: refused by default.
        assert await post(signed(body)) == 401
        response = await ingest.client.post("/webhooks/vapi", content=body,
                                            headers={"authorization": "Bearer nope"})
        assert response.json() == {"error": "unauthorized"}


async def test_an_hmac_without_a_timestamp_is_accepted_when_not_required(
        topology, spool_dir) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             ingest_hmac_require_timestamp=False)
    body = sample_bytes("inbound-2-status-in-progress")
    async with serve_ingest(settings) as ingest:
        async def post(headers: dict) -> int:
            return (await ingest.client.post("/webhooks/vapi", content=body,
                                             headers=headers)).status_code

        assert await post(signed(body)) == 200
        assert await post(signed(body, timestamp=str(int(time.time())))) == 200
        assert await post(signed(body, secret="wrong")) == 401
        assert await post(signed(body + b" ")) == 401


async def test_shared_endpoint_without_a_configured_secret_is_closed(
        topology, spool_dir) -> None:
    settings = make_settings(amqp_prefix=topology.prefix, spool_dir=spool_dir,
                             vapi_webhook_secret="")
    async with serve_ingest(settings) as ingest:
        response = await ingest.client.post(
            "/webhooks/vapi", content=sample_bytes("inbound-1-status-ringing"),
            headers={"x-vapi-secret": "", "content-type": "application/json"})
        assert response.status_code == 401


async def test_oversized_bodies_get_413_with_or_without_content_length(settings) -> None:
    big = b'{"message":{"type":"status-update","pad":"' + b"x" * 70_000 + b'"}}'

    async def chunked():
        for start in range(0, len(big), 8192):
            yield big[start:start + 8192]

    async with serve_ingest(settings) as ingest:
        with_length = await ingest.client.post("/webhooks/vapi", content=big, headers=AUTH)
        assert with_length.status_code == 413
        assert with_length.json() == {"error": "payload_too_large"}
        streamed = await ingest.client.post("/webhooks/vapi", content=chunked(), headers=AUTH)
        assert streamed.status_code == 413
        assert "content-length" not in streamed.request.headers
        # A body exactly at the limit is fine.
        fits = b'{"message":{"type":"x","p":"' + b"y" * (64 * 1024 - 31) + b'"}}'
        assert len(fits) == 64 * 1024
        assert (await ingest.client.post("/webhooks/vapi", content=fits,
                                         headers=AUTH)).status_code == 200


async def test_refusals_for_media_type_and_payload(settings) -> None:
    async with serve_ingest(settings) as ingest:
        async def post(body: bytes, content_type: str = "application/json"):
            return await ingest.client.post(
                "/webhooks/vapi", content=body,
                headers={"x-vapi-secret": WEBHOOK_SECRET, "content-type": content_type})

        response = await post(b"type=status-update", "application/x-www-form-urlencoded")
        assert (response.status_code, response.json()) == (
            415, {"error": "unsupported_media_type"})
        response = await post(b"{not json")
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_payload"
        assert response.json()["detail"]
        response = await post(b'{"message": {"call": {}}}')
        assert response.status_code == 400
        assert "message.type" in response.json()["detail"]
        # JSON with a charset parameter, or a +json type, is JSON.
        ok = b'{"message":{"type":"hang"}}'
        assert (await post(ok, "application/json; charset=utf-8")).status_code == 200
        assert (await post(ok, "application/vnd.vapi+json")).status_code == 200


async def test_unknown_and_reply_expecting_types_are_accepted(settings, topology) -> None:
    async with serve_ingest(settings) as ingest:
        # Connected first: an event spooled while connecting would be replayed out of order.
        await wait_for_broker(ingest.client)
        unknown = await ingest.client.post(
            "/webhooks/vapi", content=b'{"message":{"type":"brand-new.kind","x":1}}',
            headers=AUTH)
        assert (unknown.status_code, unknown.json()) == (200, {"ok": True})
        for reply_type in ("assistant-request", "tool-calls", "transfer-destination-request",
                           "knowledge-base-request"):
            body = orjson.dumps({"message": {"type": reply_type}})
            response = await ingest.client.post("/webhooks/vapi", content=body, headers=AUTH)
            assert (response.status_code, response.json()) == (200, {})
    messages = await drain_queue(AMQP_URL, topology, expect=5)
    assert sorted(m.routing_key for m in messages) == sorted([
        "vapi.brand-new.kind", "vapi.assistant-request", "vapi.tool-calls",
        "vapi.transfer-destination-request", "vapi.knowledge-base-request"])


async def test_organization_endpoint_uses_its_own_secret(settings, database_url,
                                                         topology) -> None:
    connection = await db.connect(database_url)
    org = await create_organization(connection, "Acme Roofing")
    await connection.close()
    body = sample_bytes("outbound-1-status-queued")
    path = f"/webhooks/vapi/{org.endpoint_id}"
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)  # else the events are (rightly) spooled
        await _wait_until_status(ingest.client, path, body, signed(
            body, org.webhook_secret, timestamp=str(int(time.time()))),
                                 200)
        assert (await ingest.client.post(path, content=body, headers={
            "x-vapi-secret": org.webhook_secret})).status_code == 200
        # The shared secret does not open an organization's endpoint, nor the reverse.
        assert (await ingest.client.post(path, content=body, headers=AUTH)).status_code == 401
        assert (await ingest.client.post("/webhooks/vapi", content=body, headers={
            "x-vapi-secret": org.webhook_secret})).status_code == 401
        unknown = await ingest.client.post("/webhooks/vapi/ep_nosuch", content=body,
                                           headers=AUTH)
        assert (unknown.status_code, unknown.json()) == (404, {"error": "unknown_endpoint"})
    messages = await drain_queue(AMQP_URL, topology, expect=2)
    assert len(messages) == 2
    assert {m.headers["x-org-id"] for m in messages} == {str(org.org_id)}
    assert {m.headers["x-endpoint-id"] for m in messages} == {org.endpoint_id}


async def _wait_until_status(client, path, body, headers, status, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.post(path, content=body, headers=headers)
        if response.status_code == status or time.monotonic() > deadline:
            assert response.status_code == status, response.text
            return
        await asyncio.sleep(0.05)


async def test_an_organization_created_while_running_is_accepted_without_restart(
        settings, database_url) -> None:
    body = sample_bytes("inbound-1-status-ringing")
    async with serve_ingest(settings) as ingest:
        await _wait_until_status(ingest.client, "/webhooks/vapi/ep_unknown", body, AUTH, 404)
        connection = await db.connect(database_url)
        org = await create_organization(connection, "Late Co")
        await connection.close()
        await _wait_until_status(ingest.client, f"/webhooks/vapi/{org.endpoint_id}", body,
                                 {"authorization": f"Bearer {org.webhook_secret}"}, 200)


async def test_health_readiness_and_metrics(settings) -> None:
    async with serve_ingest(settings) as ingest:
        await wait_for_broker(ingest.client)  # else the event is (rightly) spooled
        assert (await ingest.client.get("/healthz")).status_code == 200
        assert (await ingest.client.get("/readyz")).status_code == 200
        await ingest.client.post("/webhooks/vapi", content=b'{"message":{"type":"hang"}}',
                                 headers=AUTH)
        await ingest.client.post("/webhooks/vapi", content=b"{}", headers=AUTH)
        text = (await ingest.client.get("/metrics")).text
    assert 'calltrail_ingest_requests_total{status="200"} 1.0' in text
    assert 'calltrail_ingest_requests_total{status="400"} 1.0' in text
    assert "calltrail_ingest_publish_seconds_count 1.0" in text
    assert "calltrail_ingest_spool_depth 0.0" in text


async def test_other_methods_and_paths_under_webhooks(settings) -> None:
    async with serve_ingest(settings) as ingest:
        get = await ingest.client.get("/webhooks/vapi")
        assert (get.status_code, get.json()) == (405, {"error": "method_not_allowed"})
        nested = await ingest.client.post("/webhooks/vapi/ep_x/extra", content=b"{}",
                                          headers=AUTH)
        assert (nested.status_code, nested.json()) == (404, {"error": "not_found"})
        assert (await ingest.client.get("/nowhere")).status_code == 404
