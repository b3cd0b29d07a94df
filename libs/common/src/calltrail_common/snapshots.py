"""Call snapshots: calls as Vapi's API returns them, for the call processor.

metrics-sync publishes every call it sees in an account's call list (`GET /call`), and the
call processor applies each by the rules it applies to webhooks (contract section 6): a
call whose webhooks were lost still appears, and ends in the same state. One snapshot is
shaped like a webhook, with the call object exactly as the API gave it:

    {"message": {"type": "call-snapshot", "timestamp": <updatedAt, epoch ms>, "call": {...}}}

metrics-sync sends them in bundles (`snapshot_bundles`): the calls of one poll that share a
partition (the same callers' partition as their webhooks), up to BUNDLE_CALLS a message:

    {"message": {"type": "call-snapshots", "calls": [{"timestamp": ..., "call": {...}}, ...]}}

One AMQP message per call was most of a backfill's publishing cost (a third of
metrics-sync's CPU at 50,000 calls); the processor reads a bundle as its calls' snapshots.

The envelope is the one ingest gives a webhook, with the organization always given (the
account's), so the processor never has to resolve it, and the partition of the call's
caller, so it is applied by the replica that applies the caller's webhooks. The message id
is a function of the organization, the call id and `updatedAt`: polling the same call again
publishes the same message, and the archive, keyed on the message id, keeps it once.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import orjson

from calltrail_common.envelope import (
    CALL_SNAPSHOT,
    CALL_SNAPSHOTS,
    SNAPSHOT_ENDPOINT,
    EventEnvelope,
    caller_key,
    partition_of,
)
from calltrail_common.topology import SNAPSHOT_ROUTING_KEY

__all__ = ["CALL_SNAPSHOT", "CALL_SNAPSHOTS", "SNAPSHOT_ENDPOINT", "SNAPSHOT_ROUTING_KEY",
           "snapshot_bundles", "snapshot_event", "snapshot_message"]
BUNDLE_CALLS = 50  # calls per bundle at most (a backfill's are ~5 KB each)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MESSAGE_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://calltrail.invalid/call-snapshot")


def _epoch_ms(moment: dt.datetime) -> int:
    return (moment - _EPOCH) // dt.timedelta(milliseconds=1)


def _updated_ms(value: Any) -> int | None:
    """`updatedAt` in epoch ms (Vapi gives ISO 8601); None when absent or not a time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return _epoch_ms(moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC))


def snapshot_message(org_id: uuid.UUID | str, call: Mapping[str, Any], *,
                     received_at: dt.datetime) -> aio_pika.Message:
    """`snapshot_event` as one aio-pika message."""
    envelope, body = snapshot_event(org_id, call, received_at=received_at)
    return envelope.message(body)


def snapshot_event(org_id: uuid.UUID | str, call: Mapping[str, Any], *,
                   received_at: dt.datetime) -> tuple[EventEnvelope, bytes]:
    """The envelope and body for `call` (one item of `GET /call`) of `org_id`'s connected
    account, to publish on the events exchange with `SNAPSHOT_ROUTING_KEY` (its
    `routing_key`); `received_at` (aware) is when the API answered, the snapshot's time if
    the call has no `updatedAt`.

    Raises ValueError for an `org_id` that is not a UUID, a call without an id or a naive
    `received_at`; orjson.JSONEncodeError (a TypeError) for a value JSON cannot hold.
    """
    org = str(uuid.UUID(str(org_id)))
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id.strip():
        raise ValueError("a call snapshot needs the call's id")
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    received_ms = _epoch_ms(received_at)
    updated_ms = _updated_ms(call.get("updatedAt"))
    at_ms = received_ms if updated_ms is None else updated_ms
    body = orjson.dumps({"message": {"type": CALL_SNAPSHOT, "timestamp": at_ms,
                                     "call": dict(call)}})
    message_id = uuid.uuid5(_MESSAGE_IDS, f"{org}:{call_id}:{at_ms}").hex
    return EventEnvelope(
        message_id=message_id,
        message_type=CALL_SNAPSHOT,
        received_at_ms=received_ms,
        endpoint_id=SNAPSHOT_ENDPOINT,
        partition=partition_of(caller_key(call), message_id),
        org_id=org,
        dedupe_key=f"{call_id}:{CALL_SNAPSHOT}:{at_ms}",
    ), body


def snapshot_bundles(org_id: uuid.UUID | str, calls: Sequence[Mapping[str, Any]], *,
                     received_at: dt.datetime) -> list[tuple[EventEnvelope, bytes]]:
    """The `calls` of one poll (each with an id) as bundles: the calls of one partition
    together, at most BUNDLE_CALLS a bundle, in the order given. A bundle's message id is a
    function of the organization and of its calls and their times, as a snapshot's is.

    Raises as `snapshot_event` does."""
    org = str(uuid.UUID(str(org_id)))
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    received_ms = _epoch_ms(received_at)
    by_partition: dict[int, list[tuple[str, int, Mapping[str, Any]]]] = {}
    for call in calls:
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id.strip():
            raise ValueError("a call snapshot needs the call's id")
        updated_ms = _updated_ms(call.get("updatedAt"))
        at_ms = received_ms if updated_ms is None else updated_ms
        partition = partition_of(caller_key(call), f"{org}:{call_id}")
        by_partition.setdefault(partition, []).append((call_id, at_ms, call))
    bundles = []
    for partition, members in sorted(by_partition.items()):
        for start in range(0, len(members), BUNDLE_CALLS):
            part = members[start:start + BUNDLE_CALLS]
            body = orjson.dumps({"message": {
                "type": CALL_SNAPSHOTS, "timestamp": received_ms,
                "calls": [{"timestamp": at_ms, "call": dict(call)}
                          for _, at_ms, call in part]}})
            names = ",".join(f"{call_id}@{at_ms}" for call_id, at_ms, _ in part)
            message_id = uuid.uuid5(_MESSAGE_IDS, f"{org}:bundle:{names}").hex
            bundles.append((EventEnvelope(
                message_id=message_id, message_type=CALL_SNAPSHOTS,
                received_at_ms=received_ms, endpoint_id=SNAPSHOT_ENDPOINT,
                partition=partition, org_id=org), body))
    return bundles
