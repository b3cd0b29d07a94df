"""The event envelope: what travels with a Vapi event on the broker besides its body.

This module alone writes and reads event headers. Ingest, metrics-sync's snapshots, the
hand-back of archived events, the CLI's dead-letter replay, the benchmarks and the tests all
build an `EventEnvelope`; the call processor reads one back with `EventEnvelope.read`.

    x-received-at        epoch ms, when ingest received the webhook (or the API answered)
    x-endpoint-id        "shared", an organization's endpoint id, or "sync" (a snapshot)
    x-org-id             the organization, when the endpoint decided it
    x-message-type       Vapi's `message.type`
    x-dedupe-key         call id + type + status, where present
    partition            which call-processor partition queue the event goes to (below)
    x-retries            how often the event went through a retry queue
    x-dead-letter-reason why it could never be processed (dead-letter queue only)

The partition: every event of one caller (the customer's phone number, else the call id)
goes to the same partition queue, so the processor replica that owns the partition applies
all of a caller's calls and its lead one batch after another, and replicas never wait on
each other's rows. The header is named without `x-`: a headers exchange ignores binding
arguments that start with it. A caller's number never travels in a header, only the
partition number derived from it.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import aio_pika
from aiormq.abc import FieldValue
from pamqp.commands import Basic

from calltrail_common.topology import (
    CALL_PROCESSOR,
    PARTITION_HEADER,
    SNAPSHOT_ROUTING_KEY,
    event_routing_key,
)

HEADER_RECEIVED_AT = "x-received-at"
HEADER_ENDPOINT_ID = "x-endpoint-id"
HEADER_ORG_ID = "x-org-id"
HEADER_MESSAGE_TYPE = "x-message-type"
HEADER_DEDUPE_KEY = "x-dedupe-key"
HEADER_PARTITION = PARTITION_HEADER
HEADER_RETRIES = "x-retries"
HEADER_DEAD_LETTER_REASON = "x-dead-letter-reason"
HEADER_ORIGINAL_ROUTING_KEY = "x-original-routing-key"

SHARED_ENDPOINT = "shared"
SNAPSHOT_ENDPOINT = "sync"  # the endpoint of every call snapshot: it came from no webhook
CALL_SNAPSHOT = "call-snapshot"  # the snapshot's message type (Vapi sends none of this name)
CALL_SNAPSHOTS = "call-snapshots"  # several snapshots of one partition in one message

# What a replay drops: they describe a failed attempt, not the event.
_ATTEMPT_HEADERS = frozenset({
    HEADER_DEAD_LETTER_REASON, HEADER_RETRIES, HEADER_ORIGINAL_ROUTING_KEY, "x-death",
    "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
    "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
})
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_BIGINT_DIGITS = len(str(_BIGINT_MIN))
_MIN_NUMBER_DIGITS = 7  # fewer digits than any real number: "anonymous", short codes


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """A header's text as Postgres can store it: AMQP may deliver bytes, and NUL (which text
    columns refuse) means nothing in a header."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        value = value.replace("\x00", "").strip()
        return value or None
    return None


def _int(value: Any) -> int | None:
    """A header's whole number, or None when it holds none that fits a bigint: a header is
    anyone's input, and a number of a hundred thousand digits must not stop a batch."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str | bytes):
        text = _text(value)
        if text is not None and len(text) <= _BIGINT_DIGITS and text.lstrip("-").isdigit():
            number = int(text)
    return number if number is not None and _BIGINT_MIN <= number <= _BIGINT_MAX else None


def caller_key(call: Mapping[str, Any], beside: Mapping[str, Any] | None = None) -> str | None:
    """What groups the events of one caller: the customer's number (digits only, so
    "+1 (415) 555-0123" and "+14155550123" agree), else the call's id; None without either.

    `call` is the event's call object; `beside` is the webhook message, which carries the
    customer next to the call (a call from Vapi's API carries it inside)."""
    customer = {**_dict(_dict(beside).get("customer")), **_dict(call.get("customer"))}
    number = customer.get("number")
    if isinstance(number, str):
        digits = "".join(ch for ch in number if ch.isdigit())
        if len(digits) >= _MIN_NUMBER_DIGITS:
            return f"n:{digits}"
    call_id = _text(call.get("id"))
    return f"c:{call_id}" if call_id is not None else None


def partition_of(key: str | None, message_id: str) -> int:
    """The call-processor partition of an event grouped by `key` (its message id when it
    has none: such an event touches no call, so any partition will do)."""
    return zlib.crc32((key or message_id).encode()) % CALL_PROCESSOR.partitions


def webhook_partition(message: Mapping[str, Any], message_id: str) -> int:
    """The partition of a webhook's `message` object (of a bundle of call snapshots: its
    first call's, which every call of the bundle shares)."""
    if message.get("type") == CALL_SNAPSHOTS:
        calls = message.get("calls")
        first = _dict(calls[0]) if isinstance(calls, list) and calls else {}
        return partition_of(caller_key(_dict(first.get("call"))), message_id)
    return partition_of(caller_key(_dict(message.get("call")), message), message_id)


@dataclass(frozen=True, slots=True)
class EventEnvelope:
    message_id: str
    message_type: str
    received_at_ms: int
    endpoint_id: str
    partition: int
    org_id: str | None = None  # set when the endpoint decided the organization
    dedupe_key: str | None = None
    retries: int = 0

    @property
    def routing_key(self) -> str:
        if self.message_type in (CALL_SNAPSHOT, CALL_SNAPSHOTS):
            return SNAPSHOT_ROUTING_KEY
        return event_routing_key(self.message_type)

    @property
    def received_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.received_at_ms / 1000, tz=dt.UTC)

    def headers(self) -> dict[str, FieldValue]:
        headers: dict[str, FieldValue] = {
            HEADER_RECEIVED_AT: self.received_at_ms,
            HEADER_ENDPOINT_ID: self.endpoint_id,
            HEADER_MESSAGE_TYPE: self.message_type,
            HEADER_PARTITION: str(self.partition),
        }
        if self.org_id is not None:
            headers[HEADER_ORG_ID] = self.org_id
        if self.dedupe_key is not None:
            headers[HEADER_DEDUPE_KEY] = self.dedupe_key
        if self.retries:
            headers[HEADER_RETRIES] = self.retries
        return headers

    def message(self, body: bytes) -> aio_pika.Message:
        """The persistent message to publish with `routing_key` on the events exchange (or
        with none on the processor's partitions exchange)."""
        return aio_pika.Message(body, headers=self.headers(), content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                message_id=self.message_id)

    def properties(self) -> Basic.Properties:
        """The same message's properties as the wire carries them (`broker.publish_event`:
        no aio-pika message built per event)."""
        return Basic.Properties(content_type="application/json", delivery_mode=2,
                                headers=self.headers(), message_id=self.message_id)

    def retried(self) -> EventEnvelope:
        return replace(self, retries=self.retries + 1)

    @classmethod
    def read(cls, message_id: str | None, headers: Mapping[str, Any] | None) -> EventEnvelope:
        """The envelope of a delivered message. Never raises: a header that is missing or
        of the wrong type reads as absent (received now, no organization, partition 0), and
        the processor decides what the event itself is worth."""
        headers = headers or {}
        received = _int(headers.get(HEADER_RECEIVED_AT))
        partition = _int(headers.get(HEADER_PARTITION))
        retries = _int(headers.get(HEADER_RETRIES))
        return cls(
            message_id=message_id or "",
            message_type=_text(headers.get(HEADER_MESSAGE_TYPE)) or "",
            received_at_ms=received if received is not None and _storable_ms(received)
            else _now_ms(),
            endpoint_id=_text(headers.get(HEADER_ENDPOINT_ID)) or SHARED_ENDPOINT,
            partition=partition if partition is not None
            and 0 <= partition < CALL_PROCESSOR.partitions else 0,
            org_id=_text(headers.get(HEADER_ORG_ID)),
            dedupe_key=_text(headers.get(HEADER_DEDUPE_KEY)),
            retries=retries if retries is not None and retries > 0 else 0,
        )


def _now_ms() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp() * 1000)


def _storable_ms(value: int) -> bool:
    """A time Postgres stores and Python reads back (years 1970 to 9999)."""
    return 0 <= value < 253_402_300_800_000


def new_message_id() -> str:
    return uuid.uuid4().hex


# -- the headers of a message that failed ---------------------------------------------------

def retry_count(headers: Mapping[str, Any] | None) -> int:
    """How often the message went through a retry queue (a header nobody else sets)."""
    value = _int((headers or {}).get(HEADER_RETRIES))
    return value if value is not None and value > 0 else 0


def retry_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of the copy sent to a retry queue: one retry more."""
    return {**(headers or {}), HEADER_RETRIES: retry_count(headers) + 1}


def dead_letter_headers(headers: Mapping[str, Any] | None, reason: str,
                        routing_key: str | None) -> dict[str, Any]:
    """The headers of the copy sent to the dead-letter queue: why, and where it came from."""
    return {**(headers or {}), HEADER_DEAD_LETTER_REASON: reason,
            HEADER_ORIGINAL_ROUTING_KEY: routing_key or ""}


def dead_letter_reason(headers: Mapping[str, Any] | None) -> str:
    """Why a dead letter is one: the consumer's reason, or what the broker recorded."""
    headers = headers or {}
    if HEADER_DEAD_LETTER_REASON in headers:
        return str(headers[HEADER_DEAD_LETTER_REASON])
    deaths = headers.get("x-death") or []
    if deaths and isinstance(deaths[0], dict):  # dead-lettered by the broker itself
        return f"broker: {deaths[0].get('reason')}"
    return "unknown"


def replay_headers(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headers of a dead letter handed back for another try: the event's own only."""
    return {k: v for k, v in (headers or {}).items() if k not in _ATTEMPT_HEADERS}


def header_text(headers: Mapping[str, Any] | None, name: str) -> str | None:
    """A text header as stored (AMQP may deliver bytes)."""
    return _text((headers or {}).get(name))
