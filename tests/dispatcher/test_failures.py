"""What the dispatcher does when a receiver fails: retries with the same webhook-id, waits out
an outage, keeps a hanging receiver to its own slots, refuses private targets, follows no
redirect, reads an answer only to its bound, dead-letters after the last retry and disables
an endpoint failing for too long."""

from __future__ import annotations

import socket
import uuid

from calltrail_common.envelope import HEADER_DEAD_LETTER_REASON
from calltrail_common.outbound_targets import refused_address
from calltrail_common.topology import DISPATCHER, Topology
from calltrail_testkit.webhook_receiver import WebhookReceiver
from tests.support.dispatcher import (
    Outbox,
    dispatcher_settings,
    queue_messages,
    running_dispatcher,
)
from tests.support.processor import eventually


async def test_a_failed_attempt_is_sent_again_with_the_same_id_and_so_is_send_again(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    endpoint, secret = await outbox.endpoint(receiver.url("flaky"))
    receiver.behave("flaky", secret=secret, status=500)
    [event] = await outbox.events([endpoint], 1)
    async with running_dispatcher(dispatcher_settings(
            database_url, prefix, webhooks_retry_delays_ms=(100,) * 10)):
        await eventually(lambda: receiver.received("flaky"), 10)
        receiver.behave("flaky", status=204)
        await eventually(lambda: _states(outbox, endpoint, {"succeeded": 1}), 10)
        [row] = await outbox.deliveries(endpoint)
        tries = receiver.received("flaky")
        assert row["attempts"] == len(tries) >= 2 and row["last_status"] == 204
        # "Send again" (the management screens): pending and unqueued, sent once more.
        await outbox.connection.execute(
            "UPDATE outbound_deliveries SET state = 'pending', queued_at = NULL WHERE id = $1",
            row["id"])
        await eventually(lambda: len(receiver.received("flaky")) == len(tries) + 1, 10)
        await eventually(lambda: _states(outbox, endpoint, {"succeeded": 1}), 10)
    # Every attempt carried the event's id, each signed afresh (its own timestamp).
    assert {r.webhook_id for r in receiver.received("flaky")} == {str(event)}
    assert all(r.verified for r in receiver.received("flaky"))
    [row] = await outbox.deliveries(endpoint)
    assert row["attempts"] == len(tries) + 1


async def test_a_receiver_down_then_back_gets_everything(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    endpoint, secret = await outbox.endpoint(receiver.url("down"))
    receiver.behave("down", secret=secret)
    receiver.stop()
    events = await outbox.events([endpoint], 20)
    async with running_dispatcher(dispatcher_settings(
            database_url, prefix, webhooks_retry_delays_ms=(200,) * 30)):
        await eventually(lambda: _all_refused(outbox, endpoint, 20), 10)
        endpoint_row = await outbox.endpoint_row(endpoint)
        assert endpoint_row["failing_since"] is not None
        receiver.start()  # back, on the same port
        await eventually(lambda: _states(outbox, endpoint, {"succeeded": 20}), 15)
    assert receiver.ids("down") == {str(e) for e in events}
    assert all(r.verified for r in receiver.received("down"))
    endpoint_row = await outbox.endpoint_row(endpoint)
    assert endpoint_row["failing_since"] is None and endpoint_row["last_success_at"]


async def test_a_hanging_receiver_holds_its_own_slots_not_the_other_endpoints(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    hanging, _ = await outbox.endpoint(receiver.url("hanging"))
    healthy, _ = await outbox.endpoint(receiver.url("healthy"))
    receiver.behave("hanging", hang=True)
    # Hanging first in the queue: what waits for its slots is deferred, not in the way.
    await outbox.events([hanging], 10)
    await outbox.events([healthy], 10)
    settings = dispatcher_settings(database_url, prefix, webhooks_timeout_seconds=60.0,
                                   webhooks_concurrency=8, webhooks_endpoint_concurrency=2,
                                   webhooks_retry_delays_ms=(100,) * 5)
    async with running_dispatcher(settings) as dispatcher:
        await eventually(lambda: _states(outbox, healthy, {"succeeded": 10}), 15)
        # The hanging receiver holds the 2 requests its endpoint may have, no more; the
        # rest of its deliveries went round the shortest retry delay, not counted as tries.
        assert len(receiver.received("hanging")) == 2
        await eventually(lambda: _sample(dispatcher.metrics.registry, "deferred") > 0, 10)
        assert {r["attempts"] for r in await outbox.deliveries(hanging)} == {0}
        receiver.stop()  # ends the hung requests (the dispatcher then stops at once)


async def test_a_target_that_is_not_public_is_refused_unless_allowed(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    host = socket.gethostname()  # a name (no IP literal) that resolves to this machine
    resolved = {info[4][0] for info in socket.getaddrinfo(host, receiver.port)}
    assert all(refused_address(str(address)) for address in resolved), resolved
    by_name, _ = await outbox.endpoint(f"https://{host}:{receiver.port}/by-name")
    by_address, _ = await outbox.endpoint(f"https://127.0.0.1:{receiver.port}/by-address")
    plain, _ = await outbox.endpoint(receiver.url("plain-http"))
    await outbox.events([by_name, by_address, plain], 1)
    async with running_dispatcher(dispatcher_settings(
            database_url, prefix, webhooks_allow_private_targets=False)):
        for endpoint in (by_name, by_address, plain):
            await eventually(lambda e=endpoint: _attempted(outbox, e), 10)
    errors = {endpoint: (await outbox.deliveries(endpoint))[0]["last_error"]
              for endpoint in (by_name, by_address, plain)}
    assert errors == {
        by_name: "target refused: the host resolves to a loopback address",
        by_address: "target refused: the host is a loopback address",
        plain: "target refused: the URL must start with https://"}
    assert receiver.received() == []  # nothing reached it


async def test_a_redirect_is_not_followed_and_is_a_failed_attempt(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    endpoint, _ = await outbox.endpoint(receiver.url("moved"))
    receiver.behave("moved", status=307, redirect_to=receiver.url("elsewhere"))
    await outbox.events([endpoint], 1)
    async with running_dispatcher(dispatcher_settings(database_url, prefix)):
        await eventually(lambda: _attempted(outbox, endpoint), 10)
    [row] = await outbox.deliveries(endpoint)
    assert row["last_status"] == 307
    assert row["last_error"] == "redirect not followed (HTTP 307)"
    assert row["state"] in {"pending", "dead"} and row["delivered_at"] is None
    assert receiver.received("elsewhere") == []


async def test_an_endless_answer_is_read_only_to_the_bound(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    """The receiver streams a body that never ends: read to the end, the attempt would run
    into its timeout and fail; read to the bound, it is a success."""
    endpoint, _ = await outbox.endpoint(receiver.url("endless"))
    receiver.behave("endless", body_bytes=-1)
    await outbox.events([endpoint], 1)
    async with running_dispatcher(dispatcher_settings(
            database_url, prefix, webhooks_max_response_bytes=100_000,
            webhooks_timeout_seconds=30.0)):
        await eventually(lambda: _states(outbox, endpoint, {"succeeded": 1}), 10)
    [row] = await outbox.deliveries(endpoint)
    assert row["attempts"] == 1 and row["last_status"] == 200 and row["last_error"] is None
    # What the receiver could push before the dispatcher hung up: the bound plus what the
    # sockets' buffers hold, nowhere near a body read to a 30 s timeout on loopback.
    assert 100_000 <= receiver.body_bytes_sent("endless") < 64 * 1024 * 1024


async def test_after_the_last_retry_a_delivery_is_dead_and_dead_lettered(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    endpoint, _ = await outbox.endpoint(receiver.url("broken"))
    receiver.behave("broken", status=500)
    [event] = await outbox.events([endpoint], 1)
    settings = dispatcher_settings(database_url, prefix, webhooks_retry_delays_ms=(50, 50))
    async with running_dispatcher(settings):
        await eventually(lambda: _states(outbox, endpoint, {"dead": 1}), 10)
    [row] = await outbox.deliveries(endpoint)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 500, "HTTP 500")
    assert [r.webhook_id for r in receiver.received("broken")] == [str(event)] * 3
    topology = Topology(prefix)
    [dead] = await queue_messages(prefix, topology.dead_letter_queue(DISPATCHER))
    assert dead.message_id == str(row["id"])
    assert dead.headers[HEADER_DEAD_LETTER_REASON] == "3 attempts failed, the last: HTTP 500"
    endpoint_row = await outbox.endpoint_row(endpoint)
    assert endpoint_row["failing_since"] is not None
    assert endpoint_row["last_success_at"] is None and endpoint_row["disabled_at"] is None


async def test_an_endpoint_failing_too_long_is_disabled_and_its_deliveries_skipped(
        database_url: str, prefix: str, outbox: Outbox, receiver: WebhookReceiver) -> None:
    endpoint, _ = await outbox.endpoint(receiver.url("failing"))
    receiver.behave("failing", status=503)
    await outbox.events([endpoint], 1)
    settings = dispatcher_settings(database_url, prefix, webhooks_retry_delays_ms=(100,) * 50,
                                   webhooks_disable_after_hours=0.5 / 3600)  # half a second
    async with running_dispatcher(settings):
        await eventually(lambda: _disabled(outbox, endpoint), 15)
        # The delivery in its retries is skipped at its next turn; a new one never tried.
        await eventually(lambda: _states(outbox, endpoint, {"skipped": 1}), 10)
        tries = len(receiver.received("failing"))
        await outbox.events([endpoint], 1)
        await eventually(lambda: _states(outbox, endpoint, {"skipped": 2}), 10)
    assert len(receiver.received("failing")) == tries
    endpoint_row = await outbox.endpoint_row(endpoint)
    assert endpoint_row["disabled_reason"] == "failing"
    assert endpoint_row["disabled_at"] > endpoint_row["failing_since"]
    rows = await outbox.deliveries(endpoint)
    assert sorted(r["attempts"] for r in rows)[0] == 0  # the new one: never attempted


# -- helpers ---------------------------------------------------------------------------------

async def _states(outbox: Outbox, endpoint: uuid.UUID, expected: dict[str, int]) -> bool:
    return await outbox.states(endpoint) == expected


async def _attempted(outbox: Outbox, endpoint: uuid.UUID) -> bool:
    return all(row["attempts"] >= 1 for row in await outbox.deliveries(endpoint))


async def _all_refused(outbox: Outbox, endpoint: uuid.UUID, count: int) -> bool:
    rows = await outbox.deliveries(endpoint)
    return len(rows) == count and all(r["last_error"] == "connection refused" for r in rows)


async def _disabled(outbox: Outbox, endpoint: uuid.UUID) -> bool:
    return (await outbox.endpoint_row(endpoint))["disabled_at"] is not None


def _sample(registry: object, outcome: str) -> float:
    value = registry.get_sample_value(  # type: ignore[attr-defined]
        "calltrail_dispatcher_deliveries_total", {"outcome": outcome})
    return value or 0.0
