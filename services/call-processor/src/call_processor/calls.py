"""Pure rules for a call's state (contract section 5). No I/O here.

A call's state converges whatever order events arrive in, and however often:

- every field is a last-writer-wins register whose version is (authority, event time,
  canonical value): an end-of-call-report (REPORT) outranks a status-update or a call
  snapshot (SNAPSHOT); among equals the later event wins; a tie falls to the larger value.
  `merge` is therefore commutative, associative and idempotent. What Vapi extracts after
  the call (`EXTRACTED_AFTER_THE_CALL`) is said at SNAPSHOT authority even by a report.
- status is a max-register on `status_rank`: it only moves forward, `ended` is final, an
  unknown status never moves it, and an end-of-call-report alone ends a call.
- a field an event does not carry never erases a value.
- a deleted call (`call.deleted`) is a tombstone: it absorbs every later or earlier event
  (the lattice's top), holds no field and counts in no figure.
- a call's `withheld` fields (erased personal data, purged content:
  `calltrail_common.erasure`) are never filled again; of the structured outputs of an
  erased call only the anonymous part is taken (`anonymous_outputs`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import orjson

from calltrail_common.erasure import REDACTED_FIELDS, anonymous_outputs
from calltrail_common.time_zones import local_day

SNAPSHOT = 1  # what a call object says: a status-update, any event's call, a call-snapshot
REPORT = 2  # the end-of-call-report's own top-level fields: the authority on final values

STATUS_ORDER = ("scheduled", "queued", "ringing", "in-progress", "forwarding", "ended")
_STATUS_RANK = {status: rank for rank, status in enumerate(STATUS_ORDER, start=1)}

# Every call field a register holds, in one list (the repository maps them to columns).
CALL_FIELDS = (
    "direction", "created_at", "started_at", "ended_at", "ended_reason", "cost",
    "cost_breakdown", "costs", "customer_number", "customer_name", "customer_email",
    "phone_number_id", "assistant_id", "transcript", "summary", "structured_data",
    "success_evaluation", "recording_url", "stereo_recording_url", "metadata",
    "structured_outputs", "scorecards",
)

# What Vapi extracts after the call (structured outputs, scorecards): often missing from the
# end-of-call-report, filled in on the call later, and run again on demand. A report says
# them with a snapshot's authority, so the newest of them wins by time, wherever it came from.
EXTRACTED_AFTER_THE_CALL = frozenset({"structured_outputs", "scorecards"})


def status_rank(status: str | None) -> int:
    """Rank of a known status; 0 for an unknown or missing one (it never moves a call)."""
    return _STATUS_RANK.get(status or "", 0)


def canonical(value: Any) -> bytes:
    """A total order among values of one field, identical for a value read back from SQL."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)


Version = tuple[int, int, bytes]  # (authority, event time in ms, canonical value)


@dataclass(frozen=True, slots=True)
class Observation:
    """What one event says about one call: fields with the authority they are said with."""

    call_id: str
    event_ms: int  # the event's own timestamp (ms); 0 when it has none
    status: str | None
    is_report: bool
    values: Mapping[str, tuple[Any, int]]  # field -> (value, authority)
    deletes: bool = False  # call.deleted: the call is gone for good


@dataclass(frozen=True, slots=True)
class CallState:
    call_id: str
    status: str | None = None
    report_received: bool = False
    last_event_ms: int = 0
    values: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    deleted: bool = False  # a tombstone: Vapi deleted the call
    withheld: frozenset[str] = frozenset()  # fields never filled again (erased, purged)

    def get(self, name: str) -> Any:
        return self.values.get(name)

    @property
    def duration_seconds(self) -> Decimal | None:
        started, ended = self.values.get("started_at"), self.values.get("ended_at")
        if started is None or ended is None:
            return None
        delta = ended - started
        return Decimal(delta.days * 86_400 + delta.seconds) + Decimal(delta.microseconds) / \
            Decimal(1_000_000)

    @property
    def last_event_at(self) -> dt.datetime | None:
        if not self.last_event_ms:
            return None
        return dt.datetime.fromtimestamp(self.last_event_ms / 1000, tz=dt.UTC)


def _wins(state: CallState, name: str, value: Any, authority: int, event_ms: int) -> bool:
    """Whether (authority, event_ms, canonical(value)) outranks the field's current version.

    The value is only encoded on a tie of (authority, event time): that is rare except for
    a duplicate, and a transcript is many kilobytes.
    """
    stored = state.versions.get(name)
    if stored is None:
        return True
    key = (authority, event_ms)
    if key != stored:
        return key > stored
    current: Version = (stored[0], stored[1], canonical(state.values.get(name)))
    return (authority, event_ms, canonical(value)) > current


def tombstone(call_id: str) -> CallState:
    """A deleted call: nothing of it is kept, nothing brings it back."""
    return CallState(call_id=call_id, deleted=True)


def _taken(state: CallState, name: str, value: Any) -> Any:
    """`value` as the call takes it: None (not at all) for a withheld field, its anonymous
    part for a redacted one."""
    if value is None or name not in state.withheld:
        return value
    return anonymous_outputs(value) if name in REDACTED_FIELDS else None


def merge(state: CallState, observation: Observation) -> CallState:
    """The state after also knowing `observation` (order-free, duplicate-free)."""
    if state.deleted or observation.deletes:
        return tombstone(state.call_id)
    values = dict(state.values)
    versions = dict(state.versions)
    for name, (said, authority) in observation.values.items():
        value = _taken(state, name, said)
        if value is None:
            continue  # absent or withheld: never erases
        if _wins(state, name, value, authority, observation.event_ms):
            values[name] = value
            versions[name] = (authority, observation.event_ms)
    status = state.status
    incoming = "ended" if observation.is_report else observation.status
    if status_rank(incoming) > status_rank(status):
        status = incoming
    return replace(
        state,
        status=status,
        report_received=state.report_received or observation.is_report,
        last_event_ms=max(state.last_event_ms, observation.event_ms),
        values=values,
        versions=versions,
    )


def combine(state: CallState, other: CallState) -> CallState:
    """The state knowing what both know: `merge` of every observation behind either, in any
    grouping (each field, the status and the rest are joins), so a batch's observations can
    be merged before the stored state is read. `state` is the stored one: its `withheld`
    fields stay as they are (an observed state has none)."""
    if state.deleted or other.deleted:
        return tombstone(state.call_id)
    values = dict(state.values)
    versions = dict(state.versions)
    for name, (authority, event_ms) in other.versions.items():
        value = _taken(state, name, other.values.get(name))
        if value is not None and _wins(state, name, value, authority, event_ms):
            values[name] = value
            versions[name] = (authority, event_ms)
    status = other.status if status_rank(other.status) > status_rank(state.status) \
        else state.status
    return replace(
        state,
        status=status,
        report_received=state.report_received or other.report_received,
        last_event_ms=max(state.last_event_ms, other.last_event_ms),
        values=values,
        versions=versions,
    )

# -- statistics ---------------------------------------------------------------------------

DIRECTION_COLUMNS = {"inboundPhoneCall": "inbound", "outboundPhoneCall": "outbound",
                     "webCall": "web"}


@dataclass(frozen=True, slots=True)
class DayContribution:
    """What one call adds to its organization's statistics for one of its days."""

    day: dt.date
    calls: int = 0
    inbound: int = 0
    outbound: int = 0
    web: int = 0
    duration_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


def counted_at(state: CallState) -> dt.datetime | None:
    """The moment a call counts at: when Vapi created it (else started, ended, last heard)."""
    for name in ("created_at", "started_at", "ended_at"):
        moment = state.values.get(name)
        if isinstance(moment, dt.datetime):
            return moment
    return state.last_event_at


def stats_day(state: CallState) -> dt.date | None:
    """The UTC day of `counted_at` (the calls' `stats_day` column)."""
    at = counted_at(state)
    return None if at is None else local_day(at, dt.UTC)


def contribution(state: CallState | None, where: dt.tzinfo = dt.UTC) -> DayContribution | None:
    """What `state` adds to the figures of its organization, whose zone is `where`: on the
    organization's day of `counted_at` (decision 45); None for none (a deleted call:
    none, decision 44)."""
    if state is None or state.deleted:
        return None
    at = counted_at(state)
    if at is None:
        return None
    column = DIRECTION_COLUMNS.get(state.values.get("direction") or "")
    return DayContribution(
        day=local_day(at, where),
        calls=1,
        inbound=int(column == "inbound"),
        outbound=int(column == "outbound"),
        web=int(column == "web"),
        duration_seconds=state.duration_seconds or Decimal(0),
        cost=state.values.get("cost") or Decimal(0),
    )


def is_inbound(state: CallState) -> bool:
    return state.values.get("direction") == "inboundPhoneCall"
