"""What the dispatcher's relay publishes and its senders read: one delivery to send.

The message carries the webhook's body as it is sent and signed (serialized once, by the
relay, from the event row) and the ids in its properties:

    message_id               the delivery's id (outbound_deliveries.id; settlement logs it)
    x-webhook-endpoint-id    the endpoint to send it to (outbound_endpoints.id)
    x-webhook-event-id       the event (outbound_events.id): the `webhook-id` a receiver
                             deduplicates by

Why the body and not only the ids: the event never changes once recorded, so a sender needs
no read of it, at any attempt; only the endpoint (its URL, secret, whether it is enabled) is
read, and cached for seconds, because it may change. The secret never travels on the broker.

Only the dispatcher writes and reads these messages; its retry and dead-letter headers are
the shared ones (calltrail_common.envelope).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pamqp.commands import Basic

HEADER_ENDPOINT_ID = "x-webhook-endpoint-id"
HEADER_EVENT_ID = "x-webhook-event-id"
CONTENT_TYPE = "application/json"
PERSISTENT = 2


class NotADelivery(ValueError):
    """A message on the dispatcher's queue that names no delivery: it can never be sent."""


def webhook_body(event_type: str, occurred_at: dt.datetime, data_json: str) -> bytes:
    """The body a receiver gets: `{"type", "timestamp", "data"}` (Standard Webhooks' shape),
    `timestamp` the event's time in UTC (ISO 8601 with milliseconds and `Z`, as the API and
    Vapi write instants), `data` the stored JSON as it is (not parsed and written again)."""
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    utc = occurred_at.astimezone(dt.UTC)
    stamp = f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
    return orjson.dumps({"type": event_type, "timestamp": stamp,
                         "data": orjson.Fragment(data_json)})


@dataclass(frozen=True, slots=True)
class DeliveryMessage:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    body: bytes

    def properties(self) -> Basic.Properties:
        return Basic.Properties(
            message_id=str(self.delivery_id), content_type=CONTENT_TYPE,
            delivery_mode=PERSISTENT,
            headers={HEADER_ENDPOINT_ID: str(self.endpoint_id),
                     HEADER_EVENT_ID: str(self.event_id)})

    @classmethod
    def read(cls, message_id: str | None, headers: Mapping[str, Any] | None,
             body: bytes) -> DeliveryMessage:
        """The delivery a message names, or `NotADelivery` saying what is missing."""
        headers = headers or {}
        return cls(delivery_id=_uuid(message_id, "message_id"),
                   endpoint_id=_uuid(headers.get(HEADER_ENDPOINT_ID), HEADER_ENDPOINT_ID),
                   event_id=_uuid(headers.get(HEADER_EVENT_ID), HEADER_EVENT_ID),
                   body=body)


def _uuid(value: object, name: str) -> uuid.UUID:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise NotADelivery(f"no {name}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotADelivery(f"{name} is not a UUID") from None
