"""Hand archived events back to the call processor (events an organization now matches,
replays): straight to its queue on the default exchange, persistent and confirmed, with the
headers ingest gave them and their original message id, so the archive does not grow a
second copy and processing stays idempotent. Used by the CLI and by metrics-sync."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from calltrail_common.phone_numbers import StoredEvent
from calltrail_common.topology import (
    CALL_PROCESSOR,
    HEADER_DEDUPE_KEY,
    HEADER_ENDPOINT_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_ORG_ID,
    HEADER_RECEIVED_AT,
    Topology,
)


async def republish(channel: AbstractChannel, topology: Topology,
                    events: Sequence[StoredEvent], org_id: str | None = None) -> int:
    """Publish each event to the processor's queue (on a confirming channel, each publish
    returns once the broker has it); return how many."""
    for event in events:
        headers: dict[str, Any] = {
            HEADER_RECEIVED_AT: int(event.received_at.timestamp() * 1000),
            HEADER_MESSAGE_TYPE: event.message_type,
            HEADER_ENDPOINT_ID: event.endpoint_id or "shared",
        }
        if event.dedupe_key:
            headers[HEADER_DEDUPE_KEY] = event.dedupe_key
        if org_id is not None:
            headers[HEADER_ORG_ID] = org_id
        await channel.default_exchange.publish(
            aio_pika.Message(event.body, headers=headers, content_type="application/json",
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                             message_id=event.message_id),
            routing_key=topology.queue(CALL_PROCESSOR), mandatory=True)
    return len(events)
