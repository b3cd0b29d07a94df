"""The dispatcher end to end: outbox rows in Postgres, the relay, RabbitMQ, a real receiver."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from standardwebhooks import Webhook

from calltrail_testkit.webhook_receiver import WebhookReceiver
from dispatcher.messages import DeliveryMessage
from dispatcher.sender import PooledTransport, Sender
from tests.support.dispatcher import (
    Outbox,
    body_of,
    dispatcher_settings,
    new_secret,
    running_dispatcher,
)
from tests.support.processor import eventually


async def test_every_delivery_arrives_signed_once_per_endpoint_and_is_logged(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    first, first_secret = await outbox.endpoint(receiver.url("first"))
    second, second_secret = await outbox.endpoint(receiver.url("second"))
    receiver.behave("first", secret=first_secret)
    receiver.behave("second", secret=second_secret)
    calls = await outbox.events([first, second], 30, event_type="call.ended")
    leads = await outbox.events([first], 10, event_type="lead.created")

    async with running_dispatcher(dispatcher_settings(database_url, prefix)):
        await eventually(lambda: len(receiver.received()) >= 70, 20)
        await eventually(lambda: _all_succeeded(outbox, first, 40), 10)
        await eventually(lambda: _all_succeeded(outbox, second, 30), 10)

    # Each endpoint got each of its events once (nothing failed, so nothing was sent twice),
    # the event's id as webhook-id, signed with that endpoint's secret.
    assert sorted(r.webhook_id for r in receiver.received("first")) == sorted(
        str(i) for i in calls + leads)
    assert sorted(r.webhook_id for r in receiver.received("second")) == sorted(
        str(i) for i in calls)
    for record in receiver.received():
        assert record.verified is True
        secret = first_secret if record.path == "first" else second_secret
        assert Webhook(secret).verify(record.body, record.headers)["type"] in {
            "call.ended", "lead.created"}
        assert record.headers["content-type"] == "application/json"
    # Signed with the other endpoint's secret, it would not verify.
    record = receiver.received("second")[0]
    assert _verifies(first_secret, record.body, record.headers) is False

    # The body: type, the event's time in UTC, its data as recorded.
    by_id = {r.webhook_id: body_of(r.body) for r in receiver.received("first")}
    body = by_id[str(leads[0])]
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == "lead.created" and body["data"]["callId"].startswith("call-")
    stamp = dt.datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert body["timestamp"].endswith("Z")
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 120

    # The log: one attempt each, its status and latency, delivered and queued.
    for row in await outbox.deliveries(first):
        assert row["attempts"] == 1 and row["last_status"] == 200
        assert row["last_error"] is None and row["last_latency_ms"] >= 0
        assert row["delivered_at"] == row["last_attempt_at"] is not None
        assert row["queued_at"] is not None
    endpoint = await outbox.endpoint_row(first)
    assert endpoint["last_success_at"] is not None and endpoint["failing_since"] is None


async def _all_succeeded(outbox: Outbox, endpoint_id: object, count: int) -> bool:
    return await outbox.states(endpoint_id) == {"succeeded": count}  # type: ignore[arg-type]


def _verifies(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(body, headers)
    except Exception:
        return False
    return True


async def test_the_sender_spreads_a_burst_over_small_pools_and_light_traffic_over_one(
        receiver: WebhookReceiver) -> None:
    """httpcore's pool costs grow with the square of its connections: the sender keeps
    pools of POOL_CONNECTIONS, fills the least busy, and gives each request back."""
    receiver.behave("pools", latency=0.05)
    sender = Sender(timeout_seconds=5, max_response_bytes=1024, allow_private=True,
                    max_connections=64)
    transport = sender._client._transport
    assert isinstance(transport, PooledTransport) and len(transport._pools) == 64 // 16
    secret = new_secret()
    message = DeliveryMessage(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), b'{"type":"t"}')
    try:
        for _ in range(3):  # one at a time: always the first pool, its connection reused
            answer = await sender.send(receiver.url("pools"), Webhook(secret), message)
            assert answer.status == 200
        assert transport._in_flight == [0, 0, 0, 0]
        answers = await asyncio.gather(*(
            sender.send(receiver.url("pools"), Webhook(secret), message) for _ in range(40)))
        assert {a.status for a in answers} == {200}
        assert transport._in_flight == [0, 0, 0, 0]  # every request given back
        used = [len(pool._pool.connections) for pool in transport._pools]
        assert all(n <= 16 for n in used) and sum(1 for n in used if n) >= 3, used
    finally:
        await sender.aclose()
    assert len(receiver.received("pools")) == 43
