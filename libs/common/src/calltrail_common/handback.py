"""Hand archived events back to the call processor (events an organization now matches,
replays): straight to its partitions exchange, so no other consumer sees them twice,
persistent and confirmed, with the envelope ingest gave them and their original message
id, so the archive does not grow a second copy and processing stays idempotent. Used by
the CLI, by connecting an account and by metrics-sync."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractChannel

from calltrail_common import archive
from calltrail_common.archive import StoredEvent, WaitingEvent
from calltrail_common.attribution import attribute
from calltrail_common.envelope import (
    SHARED_ENDPOINT,
    EventEnvelope,
    partition_of,
    webhook_partition,
)
from calltrail_common.phone_numbers import known_for, number_keys
from calltrail_common.topology import CALL_PROCESSOR, Topology


def archived_partition(event: StoredEvent) -> int:
    """The partition of an archived event, from its body as ingest read it."""
    try:
        document = orjson.loads(event.body)
    except orjson.JSONDecodeError:
        return partition_of(None, event.message_id)
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, dict):
        return partition_of(None, event.message_id)
    return webhook_partition(message, event.message_id)


async def republish(channel: AbstractChannel, topology: Topology,
                    events: Sequence[StoredEvent], org_id: str | None = None) -> int:
    """Publish each event to the processor (on a confirming channel, each publish returns
    once the broker has it); return how many."""
    exchange = await channel.get_exchange(topology.partitions_exchange(CALL_PROCESSOR),
                                          ensure=False)
    for event in events:
        envelope = EventEnvelope(
            message_id=event.message_id,
            message_type=event.message_type,
            received_at_ms=int(event.received_at.timestamp() * 1000),
            endpoint_id=event.endpoint_id or SHARED_ENDPOINT,
            partition=archived_partition(event),
            org_id=org_id,
            dedupe_key=event.dedupe_key,
        )
        await exchange.publish(envelope.message(event.body), routing_key="", mandatory=True)
    return len(events)


async def releasable(connection: asyncpg.Connection, numbers: Sequence[str],
                     vapi_phone_number_ids: Sequence[str], vapi_org_id: str | None
                     ) -> list[StoredEvent]:
    """The unassigned events these keys match that now have an organization by the rule the
    processor applies (`attribution.attribute`): a match on a key alone releases nothing
    that would disagree, or that a mapping of another Vapi org would take."""
    waiting = await archive.unassigned_matching(connection, numbers, vapi_phone_number_ids,
                                                vapi_org_id)
    return await agreeing(connection, waiting)


async def agreeing(connection: asyncpg.Connection, waiting: Sequence[WaitingEvent]
                   ) -> list[StoredEvent]:
    if not waiting:
        return []
    known = await known_for(connection, [w.routing for w in waiting])
    return [w.event for w in waiting if attribute(w.routing, known).org_id is not None]


async def hand_back_matching(connection: asyncpg.Connection, channel: AbstractChannel,
                             topology: Topology, numbers: Sequence[Mapping[str, Any]],
                             vapi_org_id: str | None) -> int:
    """Hand the unassigned events that an account's numbers (Vapi's phone number list) or
    its Vapi org id now attribute to an organization back to the processor, which assigns
    them (as `calltrail phone-number add` does); how many."""
    keys = [number_keys(item) for item in numbers]
    ready = await releasable(connection, [n for n, _ in keys if n is not None],
                             [i for _, i in keys if i is not None], vapi_org_id)
    if not ready:
        return 0
    return await republish(channel, topology, ready)  # in the order received
