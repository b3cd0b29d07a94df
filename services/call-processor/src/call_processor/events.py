"""Parse a webhook message at the edge into typed values; refuse what can never be processed.

Vapi's shapes vary (vapi.md): timestamps in epoch ms or ISO strings, end-of-call-report
fields under `artifact`/`analysis` or, in older payloads, at the top level, metadata in
several places. All of that is read here, once; the rules in `calls.py` see only values.

A call snapshot (metrics-sync's `call-snapshot`, calltrail_common.snapshots) is read like a
webhook whose whole news is its call object: the call as Vapi's API returns it, with the
final values a report carries, said at SNAPSHOT authority as of the call's `updatedAt`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import orjson

from call_processor.calls import EXTRACTED_AFTER_THE_CALL, REPORT, SNAPSHOT, Observation
from calltrail_common.attribution import Routing
from calltrail_common.e164 import to_e164
from calltrail_common.logging import get_logger
from calltrail_common.snapshots import CALL_SNAPSHOT, CALL_SNAPSHOTS

log = get_logger("call_processor")

CALL_DELETED = "call.deleted"  # the SDK's ServerMessageCallDeleted: the call is gone
CALL_EVENT_TYPES = frozenset({"status-update", "end-of-call-report", CALL_SNAPSHOT,
                              CALL_DELETED})

# What Postgres cannot hold is left out here, as if the event did not carry it, rather than
# failing the whole batch in the database; the raw event (bytea) keeps every byte of it.
_KEY_MAX_CHARS = 255  # an id or a number: Vapi's are UUIDs and E.164, b-tree entries < 2704 B
_MONEY_DIGITS = 12  # |amount| < 10**12 USD, to 12 places: sums stay exact in 28 digits
_MONEY_QUANTUM = Decimal(1).scaleb(-_MONEY_DIGITS)


class PoisonMessage(Exception):
    """A message that can never be processed; the reason goes with it to the dead letters."""


NO_ROUTING = Routing(metadata_org_ids=(), phone_number_id=None, dialled_number=None,
                     vapi_org_id=None)


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    message_type: str
    routing: Routing  # NO_ROUTING when the endpoint already decided the organization
    observation: Observation | None  # None for chatter: archived, not applied to a call
    call_id: str | None


def archived_chatter(message_type: str, dedupe_key: str | None) -> WebhookEvent:
    """Chatter whose organization the endpoint decided: nothing in its body is needed.

    Ingest parsed the body (it refuses what is not JSON) and put the type and the dedupe key
    (`call.id:type[:status]`) in headers, which is all the archive needs; most webhooks are
    chatter, so not parsing it again is most of the processor's parsing time saved.
    """
    call_id = dedupe_key.split(":", 1)[0] if dedupe_key else None
    return WebhookEvent(message_type, NO_ROUTING, None, call_id or None)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:  # Postgres text cannot hold NUL, and in Vapi's text it means nothing
            value = value.replace("\x00", "")
        value = value.strip()
        return value or None
    return None


def _key(value: Any) -> str | None:
    """Text that names something (a call, a number, an organization), or None when it cannot:
    with NUL inside (without it, it would name something else) or longer than any id."""
    if isinstance(value, str) and ("\x00" in value or len(value) > _KEY_MAX_CHARS):
        return None
    return _text(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {key.replace("\x00", ""): _without_nul(item) for key, item in value.items()}
    return value


def _json(value: Any) -> Any:
    """A value for a jsonb column: NUL removed from its strings and keys (jsonb refuses it);
    None when empty or nested deeper than orjson writes (255 levels, far below its reading
    limit)."""
    if not value:
        return None
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return None
    return _without_nul(value) if b"\\u0000" in encoded else value


# asyncpg writes datetime.min and datetime.max as -infinity and infinity: keep off both ends.
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


def parse_time(value: Any) -> dt.datetime | None:
    """ISO 8601 text or epoch milliseconds, as an aware UTC datetime; None if neither, or if
    it is not a time Postgres stores and gives back (year 1 to 9999, off the very ends)."""
    moment = _moment(value)
    return moment if moment is not None and _EARLIEST <= moment <= _LATEST else None


def _moment(value: Any) -> dt.datetime | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    text = _text(value)
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        return moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):  # not a time, or outside year 1..9999 once in UTC
        return None


def _epoch_ms(value: Any) -> int:
    moment = parse_time(value)
    return int(moment.timestamp() * 1000) if moment is not None else 0


def _money(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    if not amount.is_finite() or amount.adjusted() >= _MONEY_DIGITS:
        return None
    exponent = amount.as_tuple().exponent  # an int for a finite amount
    if isinstance(exponent, int) and exponent < -_MONEY_DIGITS:  # float noise: 0.1 + 0.2
        amount = amount.quantize(_MONEY_QUANTUM)
    return amount


def _evaluation(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return _text(value)


def _metadata(message: Mapping[str, Any], call: Mapping[str, Any]) -> Mapping[str, Any]:
    """Merged metadata; on a key in several places the earlier place wins (vapi.md order)."""
    merged: dict[str, Any] = {}
    for source in (_dict(_dict(message.get("assistant")).get("metadata")),
                   _dict(call.get("metadata")),
                   _dict(_dict(call.get("assistantOverrides")).get("metadata"))):
        merged.update(source)
    return merged


def _metadata_org_ids(message: Mapping[str, Any], call: Mapping[str, Any]) -> tuple[str, ...]:
    ids: list[str] = []
    for source in (_dict(_dict(call.get("assistantOverrides")).get("metadata")),
                   _dict(call.get("metadata")),
                   _dict(_dict(message.get("assistant")).get("metadata"))):
        for key in ("orgId", "organizationId"):
            value = _key(source.get(key))
            if value is not None and value not in ids:
                ids.append(value)
    return tuple(ids)


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _beside_call(message_type: str, message: Mapping[str, Any], call: Mapping[str, Any]
                 ) -> Mapping[str, Any]:
    """Where the event keeps what a webhook puts beside its call (`assistant`, `phoneNumber`,
    `customer`): a call object from the API carries them inside."""
    return call if message_type == CALL_SNAPSHOT else message


# What a browser would drop from a URL or read otherwise: control characters, whitespace,
# backslashes. One regular expression: a presigned URL is hundreds of characters, and a
# loop over them in Python made this check 3 % of the processor's samples (py-spy; 1.5 %
# with it, too little for bench.processor to tell apart from its noise).
_UNSAFE_IN_URL = re.compile(r"[\x00-\x20\\\x7f]")


def is_https_url(value: str) -> bool:
    """Whether a recording URL may be kept: `https:` with a host, and nothing a browser
    would drop or read otherwise (control characters, whitespace, backslashes)."""
    if _UNSAFE_IN_URL.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() == "https" and bool(parts.hostname)


def _recording(value: Any, call_id: str, place: str) -> str | None:
    """A recording URL, or None when there is none or it is not https (it would end in an
    href and in API answers): dropped, logged by call id, never the URL."""
    url = _text(value)
    if url is not None and not is_https_url(url):
        log.warning("recording_url_dropped", call_id=call_id, field=place)
        return None
    return url


def _final_values(source: Mapping[str, Any], call_id: str) -> dict[str, Any]:
    """The values a finished call has, as a report's message or a call object carries them:
    `artifact`/`analysis` first, the older top-level fields second."""
    artifact = _dict(source.get("artifact"))
    analysis = _dict(source.get("analysis"))
    recording = _dict(artifact.get("recording"))
    return {
        "ended_reason": _text(source.get("endedReason")),
        "started_at": parse_time(source.get("startedAt")),
        "ended_at": parse_time(source.get("endedAt")),
        "cost": _money(source.get("cost")),
        "cost_breakdown": _json(source.get("costBreakdown")),
        "costs": _json(source.get("costs")),
        "transcript": _first(_text(artifact.get("transcript")),
                             _text(source.get("transcript"))),
        "summary": _first(_text(analysis.get("summary")), _text(source.get("summary"))),
        "structured_data": _first(_json(analysis.get("structuredData")),
                                  _json(source.get("structuredData"))),
        "success_evaluation": _first(_evaluation(analysis.get("successEvaluation")),
                                     _evaluation(source.get("successEvaluation"))),
        "recording_url": _first(
            _recording(artifact.get("recordingUrl"), call_id, "artifact.recordingUrl"),
            _recording(_dict(recording.get("mono")).get("combinedUrl"), call_id,
                       "artifact.recording.mono.combinedUrl"),
            _recording(source.get("recordingUrl"), call_id, "recordingUrl")),
        # Objects keyed by id, kept as Vapi sent them (calltrail_common.structured_outputs).
        "structured_outputs": _json(_dict(artifact.get("structuredOutputs"))),
        "scorecards": _json(_dict(artifact.get("scorecards"))),
        "stereo_recording_url": _first(
            _recording(artifact.get("stereoRecordingUrl"), call_id,
                       "artifact.stereoRecordingUrl"),
            _recording(recording.get("stereoUrl"), call_id, "artifact.recording.stereoUrl"),
            _recording(source.get("stereoRecordingUrl"), call_id, "stereoRecordingUrl")),
    }


def _observation(message_type: str, message: Mapping[str, Any], call: Mapping[str, Any],
                 call_id: str) -> Observation:
    is_report = message_type == "end-of-call-report"
    beside = _beside_call(message_type, message, call)
    customer = {**_dict(beside.get("customer")), **_dict(call.get("customer"))}
    number_raw = _key(customer.get("number"))
    metadata = _metadata(beside, call)
    values: dict[str, tuple[Any, int]] = {
        "direction": (_text(call.get("type")), SNAPSHOT),
        "created_at": (parse_time(call.get("createdAt")), SNAPSHOT),
        "customer_number": (to_e164(number_raw, bare_digits=True) or number_raw, SNAPSHOT),
        "customer_name": (_text(customer.get("name")), SNAPSHOT),
        "customer_email": (_text(customer.get("email")), SNAPSHOT),
        "phone_number_id": (_key(call.get("phoneNumberId")), SNAPSHOT),
        "assistant_id": (_key(call.get("assistantId")), SNAPSHOT),
        "metadata": (_json(metadata), SNAPSHOT),
        # What the call snapshot itself says; a report's top level outranks it below.
        "started_at": (parse_time(call.get("startedAt")), SNAPSHOT),
        "ended_at": (parse_time(call.get("endedAt")), SNAPSHOT),
        "ended_reason": (_text(call.get("endedReason")), SNAPSHOT),
        "cost": (_money(call.get("cost")), SNAPSHOT),
        "cost_breakdown": (_json(call.get("costBreakdown")), SNAPSHOT),
        "costs": (_json(call.get("costs")), SNAPSHOT),
    }
    if message_type == "status-update":
        values["ended_reason"] = (_first(_text(message.get("endedReason")),
                                         _text(call.get("endedReason"))), SNAPSHOT)
    if is_report:
        for name, value in _final_values(message, call_id).items():
            if value is not None:
                values[name] = (value, SNAPSHOT if name in EXTRACTED_AFTER_THE_CALL
                                else REPORT)
    event_ms = _epoch_ms(message.get("timestamp"))
    status = _text(message.get("status")) if message_type == "status-update" else None
    if message_type == CALL_SNAPSHOT:
        # The call as Vapi stored it at `updatedAt`: its final values rank with a
        # status-update's by time, below a report's; it is not a report (report_received).
        for name, value in _final_values(call, call_id).items():
            values[name] = (value, SNAPSHOT)
        event_ms = _epoch_ms(call.get("updatedAt")) or event_ms
        status = _text(call.get("status"))
    return Observation(
        call_id=call_id,
        event_ms=event_ms,
        status=status,
        is_report=is_report,
        values={name: pair for name, pair in values.items() if pair[0] is not None},
    )


def _message(body: bytes) -> Mapping[str, Any]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise PoisonMessage("body is not valid JSON") from None
    return _dict(_dict(document).get("message"))


def parse_event(body: bytes, *, route: bool = True) -> WebhookEvent:
    """The event in `body`; raise `PoisonMessage` for one that can never be processed.

    `route=False` skips what only finding the organization needs (the endpoint decided it).
    """
    return _event(_message(body), route=route)


def parse_snapshot_bundle(body: bytes) -> tuple[list[WebhookEvent], int]:
    """The call snapshots of a bundle (calltrail_common.snapshots), and how many of its calls
    could not be read (no usable id: left out, as metrics-sync leaves such calls out). Raise
    `PoisonMessage` when `body` is not a bundle at all."""
    message = _message(body)
    calls = message.get("calls")
    if message.get("type") != CALL_SNAPSHOTS or not isinstance(calls, list):
        raise PoisonMessage("not a bundle of call snapshots")
    events, unusable = [], 0
    for item in calls:
        item = _dict(item)
        try:
            events.append(_event({"type": CALL_SNAPSHOT, "timestamp": item.get("timestamp"),
                                  "call": item.get("call")}, route=False))
        except PoisonMessage:
            unusable += 1
    return events, unusable


def _event(message: Mapping[str, Any], *, route: bool) -> WebhookEvent:
    message_type = _text(message.get("type"))
    if message_type is None:
        raise PoisonMessage("message.type is missing")
    call = _dict(message.get("call"))
    call_id = _key(call.get("id"))
    beside = _beside_call(message_type, message, call)
    routing = Routing(
        metadata_org_ids=_metadata_org_ids(beside, call),
        phone_number_id=_key(call.get("phoneNumberId")),
        dialled_number=to_e164(_key(_dict(beside.get("phoneNumber")).get("number")),
                               bare_digits=True),
        vapi_org_id=_key(call.get("orgId")),
    ) if route else NO_ROUTING
    observation = None
    if message_type in CALL_EVENT_TYPES:
        if call_id is None:
            if _text(call.get("id")) is not None:
                raise PoisonMessage(f"{message_type} with an unusable call.id")
            raise PoisonMessage(f"{message_type} without call.id")
        observation = _observation(message_type, message, call, call_id) \
            if message_type != CALL_DELETED else \
            Observation(call_id=call_id, event_ms=_epoch_ms(message.get("timestamp")),
                        status=None, is_report=False, values={}, deletes=True)
    return WebhookEvent(message_type, routing, observation, call_id)
