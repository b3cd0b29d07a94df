"""The call-snapshot message metrics-sync publishes: its body, its headers (ingest's, with
the organization given) and a message id that makes a re-poll the same message."""

from __future__ import annotations

import copy
import datetime as dt
import uuid

import aio_pika
import orjson
import pytest

from calltrail_common.envelope import webhook_partition
from calltrail_common.snapshots import (
    BUNDLE_CALLS,
    CALL_SNAPSHOT,
    SNAPSHOT_ENDPOINT,
    SNAPSHOT_ROUTING_KEY,
    snapshot_bundles,
    snapshot_event,
    snapshot_message,
)
from calltrail_common.topology import CALL_PROCESSOR
from tests.support.samples import sample

ORG = uuid.UUID("0b9c6f4e-3d2a-4f7b-8e1c-5a6d7e8f9a0b")
RECEIVED = dt.datetime(2026, 11, 3, 16, 0, 0, 123000, tzinfo=dt.UTC)
UPDATED_MS = 1793718248000  # the sample's updatedAt, 2026-11-03T15:04:08.000Z


def api_call(**changes) -> dict:
    call = copy.deepcopy(sample("api-get-call-item")["apiCall"])
    call.update(changes)
    return call


def test_the_body_is_the_call_untouched_in_a_webhook_shaped_message() -> None:
    call = api_call()
    message = snapshot_message(ORG, call, received_at=RECEIVED)
    assert orjson.loads(message.body) == {"message": {
        "type": "call-snapshot", "timestamp": UPDATED_MS, "call": call}}
    assert message.content_type == "application/json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT


def test_the_headers_are_ingests_with_the_organization_given() -> None:
    message = snapshot_message(ORG, api_call(), received_at=RECEIVED)
    assert message.headers == {
        "x-org-id": str(ORG),
        "x-message-type": CALL_SNAPSHOT,
        "x-received-at": 1793721600123,
        "x-endpoint-id": SNAPSHOT_ENDPOINT,
        "x-dedupe-key": f"db5b5fab-8f4d-4e27-9da1-494c73cf256d:call-snapshot:{UPDATED_MS}",
        # The partition of the caller's webhooks: one replica applies both.
        "partition": str(webhook_partition(sample("inbound-2-status-in-progress")["message"],
                                           "any message id")),
    }


def test_the_message_id_is_one_per_organization_call_and_update() -> None:
    first = snapshot_message(ORG, api_call(), received_at=RECEIVED)
    # Polled again later, the organization given as text: the same message.
    again = snapshot_message(str(ORG).upper(), api_call(),
                             received_at=RECEIVED + dt.timedelta(minutes=5))
    assert again.message_id == first.message_id
    others = [
        snapshot_message(uuid.uuid4(), api_call(), received_at=RECEIVED),
        snapshot_message(ORG, api_call(id=str(uuid.uuid4())), received_at=RECEIVED),
        snapshot_message(ORG, api_call(updatedAt="2026-11-03T15:04:08.001Z"),
                         received_at=RECEIVED),
    ]
    assert len({first.message_id, *(m.message_id for m in others)}) == 4


def test_without_updated_at_the_snapshot_is_as_of_when_the_api_answered() -> None:
    call = api_call()
    del call["updatedAt"]
    message = snapshot_message(ORG, call, received_at=RECEIVED)
    assert orjson.loads(message.body)["message"]["timestamp"] == 1793721600123
    assert message.headers["x-dedupe-key"].endswith(":call-snapshot:1793721600123")
    later = snapshot_message(ORG, call, received_at=RECEIVED + dt.timedelta(seconds=1))
    assert later.message_id != message.message_id  # nothing says it is the same snapshot


@pytest.mark.parametrize(("updated_at", "ms"), [
    ("2026-11-03T15:04:08.000Z", UPDATED_MS),
    ("2026-11-03T16:04:08.000+01:00", UPDATED_MS),
    ("2026-11-03T15:04:08", UPDATED_MS),
    (UPDATED_MS, UPDATED_MS),
    ("yesterday", 1793721600123),
    (None, 1793721600123),
    (True, 1793721600123),
])
def test_updated_at_is_read_as_the_processor_reads_times(updated_at, ms) -> None:
    message = snapshot_message(ORG, api_call(updatedAt=updated_at), received_at=RECEIVED)
    assert orjson.loads(message.body)["message"]["timestamp"] == ms


@pytest.mark.parametrize(("org_id", "call", "received_at"), [
    ("not-an-org", api_call(), RECEIVED),
    (ORG, api_call(id=None), RECEIVED),
    (ORG, api_call(id="  "), RECEIVED),
    (ORG, {k: v for k, v in api_call().items() if k != "id"}, RECEIVED),
    (ORG, api_call(), RECEIVED.replace(tzinfo=None)),
])
def test_what_is_not_a_snapshot_of_an_organizations_call_is_refused(org_id, call,
                                                                      received_at) -> None:
    with pytest.raises(ValueError):
        snapshot_message(org_id, call, received_at=received_at)


def test_the_call_processor_queue_is_bound_to_snapshots() -> None:
    assert SNAPSHOT_ROUTING_KEY in CALL_PROCESSOR.binding_keys


def test_a_polls_calls_go_in_bundles_of_one_partition_each() -> None:
    calls = [api_call(id=str(uuid.uuid4()), customer={"number": f"+1415555{n % 40:04d}"})
             for n in range(300)]
    bundles = snapshot_bundles(ORG, calls, received_at=RECEIVED)
    seen = []
    for envelope, body in bundles:
        message = orjson.loads(body)["message"]
        assert envelope.org_id == str(ORG) and envelope.routing_key == SNAPSHOT_ROUTING_KEY
        assert 1 <= len(message["calls"]) <= BUNDLE_CALLS
        # Each call in the partition of its own snapshot, which is its webhooks' partition.
        for item in message["calls"]:
            single, _ = snapshot_event(ORG, item["call"], received_at=RECEIVED)
            assert single.partition == envelope.partition
            assert item["timestamp"] == orjson.loads(snapshot_message(
                ORG, item["call"], received_at=RECEIVED).body)["message"]["timestamp"]
            seen.append(item["call"]["id"])
        assert webhook_partition(message, "any") == envelope.partition
    assert sorted(seen) == sorted(c["id"] for c in calls)  # each once
    assert len(bundles) < len(calls) / 5
    # Polling the same calls again sends the same messages (the archive keeps them once).
    assert [e.message_id for e, _ in snapshot_bundles(ORG, calls, received_at=RECEIVED)] == \
        [e.message_id for e, _ in bundles]
