"""Hand archived events back to the call processor (events an organization now matches,
replays): straight to its partitions exchange, so no other consumer sees them twice,
persistent and confirmed, with the envelope ingest gave them and their original message
id, so the archive does not grow a second copy and processing stays idempotent. Used by
the CLI and by metrics-sync."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aio_pika.abc import AbstractChannel

from calltrail_common.envelope import (
    SHARED_ENDPOINT,
    EventEnvelope,
    partition_of,
    webhook_partition,
)
from calltrail_common.phone_numbers import StoredEvent
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
