"""The dispatcher end to end: outbox rows in Postgres, the relay, RabbitMQ, a real receiver."""

from __future__ import annotations

import datetime as dt

from standardwebhooks import Webhook

from calltrail_testkit.webhook_receiver import WebhookReceiver
from tests.support.dispatcher import (
    Outbox,
    body_of,
    dispatcher_settings,
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
