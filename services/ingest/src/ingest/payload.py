"""What ingest reads of a webhook body: just enough to route it, partition it and dedupe it.

The body itself travels on unchanged; the call processor parses it fully.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from calltrail_common.envelope import EventEnvelope, caller_key
from ingest.errors import InvalidPayload


@dataclass(frozen=True, slots=True)
class AcceptedEvent:
    """A webhook as it goes to the broker: the raw request bytes, unchanged, and its
    envelope."""

    envelope: EventEnvelope
    body: bytes

    @property
    def message_id(self) -> str:
        return self.envelope.message_id


@dataclass(frozen=True, slots=True)
class WebhookEnvelope:
    message_type: str
    dedupe_key: str | None
    caller_key: str | None  # what the partition is derived from (envelope.caller_key)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def read_envelope(body: bytes) -> WebhookEnvelope:
    """Parse `body` as `{"message": {"type": ...}}`; raise `InvalidPayload` otherwise."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidPayload("body is not valid JSON") from None
    message = document.get("message") if isinstance(document, dict) else None
    if not isinstance(message, dict):
        raise InvalidPayload("body has no message object")
    message_type = _text(message.get("type"))
    if message_type is None:
        raise InvalidPayload("message.type is missing or not a string")
    call = message.get("call")
    if not isinstance(call, dict):
        call = {}
    call_id = _text(call.get("id"))
    # Presigned URLs change on every delivery, so never a hash of the body (vapi.md).
    dedupe_key = None
    if call_id is not None:
        status = _text(message.get("status"))
        dedupe_key = f"{call_id}:{message_type}" + (f":{status}" if status else "")
    return WebhookEnvelope(message_type=message_type, dedupe_key=dedupe_key,
                           caller_key=caller_key(call, message))
