"""What the outbound webhooks say (decision 40): which events a batch's changes make, and
each event's `data`, as the JSON API shows the call, the lead or the day. Pure: values in,
values out.

The handler records these in the batch's transaction (`repository.RECORD_OUTBOUND`, which
keeps only those an enabled endpoint of the organization wants); the dispatcher sends each
as `{"type", "timestamp", "data"}`. Events that happen once have a deterministic id (the
`webhook-id` receivers deduplicate by), so however often a batch is delivered or applied,
one is recorded: `call.ended` per call, `lead.created` per lead, `usage.day_closed` per
organization and day. `call.updated` and `lead.updated` have random ids: they are only
made by the transaction that commits the change, and a batch applied again changes nothing.

What `data` holds (docs/outbound-webhooks.md): a call as `GET /api/calls/{id}` shows it,
without its transcript (tens of kilobytes, in every event of the call), its recordings (the
stored URLs expire: `GET /api/calls/{id}/recording` plays them), its `costBreakdown` and its
embedded lead (`leadId` names it); with `orgId`. A lead as `GET /api/leads` lists it, a day
as the overview's daily series, both with `orgId`. Costs are what the organization's own
API token sees: a client organization's with its agency's markup (decision 38).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from call_processor.calls import CallState
from call_processor.changes import CallChange
from calltrail_common import structured_outputs
from calltrail_common.agencies import billed_float

CALL_ENDED = "call.ended"
CALL_UPDATED = "call.updated"
LEAD_CREATED = "lead.created"
LEAD_UPDATED = "lead.updated"
DAY_CLOSED = "usage.day_closed"
EVENT_TYPES = (CALL_ENDED, CALL_UPDATED, LEAD_CREATED, LEAD_UPDATED, DAY_CLOSED)

# A day is closed this long after it ended (events of its last minutes may still come),
# and no later than this: an endpoint re-enabled, or every replica down, for longer does
# not bring older days back.
DAY_CLOSE_GRACE = dt.timedelta(minutes=15)
DAY_CLOSE_LOOKBACK = dt.timedelta(days=3)

# The API's `direction` for a Vapi call type (api.params.DIRECTIONS; an unknown type is
# shown as it came).
_DIRECTIONS = {"inboundPhoneCall": "inbound", "outboundPhoneCall": "outbound",
               "webCall": "web"}
_NO_MARKUP = Decimal(0)
_ANY_ORG = uuid.UUID(int=0)  # comparing a call's data before and after: one organization


@dataclass(frozen=True, slots=True)
class OutboundEvent:
    id: uuid.UUID
    org_id: uuid.UUID
    type: str
    data: Mapping[str, Any]
    call_id: str | None = None  # a call's event: `leadId` is written from the stored call
    occurred_at: dt.datetime | None = None  # None: the time of the transaction


@dataclass(frozen=True, slots=True)
class Subscriptions:
    """What the enabled endpoints of a batch's organizations want, and each such
    organization's markup; an organization without one is absent."""

    types: Mapping[uuid.UUID, frozenset[str]] = field(default_factory=dict)
    markups: Mapping[uuid.UUID, Decimal] = field(default_factory=dict)

    def wants(self, org_id: uuid.UUID, event_type: str) -> bool:
        return event_type in self.types.get(org_id, ())

    def markup(self, org_id: uuid.UUID) -> Decimal:
        return self.markups.get(org_id, _NO_MARKUP)

    def wanting(self, *event_types: str) -> list[uuid.UUID]:
        """The organizations that want any of these types."""
        return sorted(org for org, types in self.types.items()
                      if not types.isdisjoint(event_types))


NOBODY = Subscriptions()


@dataclass(frozen=True, slots=True)
class RefreshedLead:
    """A lead as the batch's refresh left it, and its name and email before."""

    id: uuid.UUID
    org_id: uuid.UUID
    phone_number: str
    name: str | None
    email: str | None
    first_call_at: dt.datetime | None
    last_call_at: dt.datetime | None
    call_count: int
    created_at: dt.datetime
    created: bool  # created by this batch
    old_name: str | None
    old_email: str | None


@dataclass(frozen=True, slots=True)
class DayFigures:
    """An organization's figures of one of its days (the daily statistics' shards, summed)."""

    calls: int = 0
    inbound: int = 0
    outbound: int = 0
    web: int = 0
    new_leads: int = 0
    duration_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)


def event_id(org_id: uuid.UUID, event_type: str, subject: str) -> uuid.UUID:
    """The id of the one event of `event_type` about `subject` (a call id, a lead id, a
    day) in an organization."""
    return uuid.uuid5(org_id, f"{event_type}:{subject}")


# --- data: what the API shows --------------------------------------------------------------


def instant(value: dt.datetime | None) -> str | None:
    """ISO 8601 in UTC, as the API writes it (`2026-05-01T12:00:00Z`)."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _money(value: Decimal | None, markup: Decimal) -> float | None:
    return None if value is None else billed_float(float(value), markup)


def call_data(org_id: uuid.UUID, state: CallState, markup: Decimal = _NO_MARKUP
              ) -> dict[str, Any]:
    """A call as `GET /api/calls/{id}` shows it, less the parts named in the module's
    docstring; `leadId` is None here (the repository writes the stored link)."""
    values = state.values
    call_type = values.get("direction")
    duration = state.duration_seconds
    return {
        "id": state.call_id,
        "orgId": str(org_id),
        "type": call_type,
        "direction": _DIRECTIONS.get(call_type or "", call_type),
        "status": state.status,
        "endedReason": values.get("ended_reason"),
        "createdAt": instant(values.get("created_at")),
        "startedAt": instant(values.get("started_at")),
        "endedAt": instant(values.get("ended_at")),
        "durationSeconds": None if duration is None else float(duration),
        "cost": _money(values.get("cost"), markup),
        "customerNumber": values.get("customer_number"),
        "customerName": values.get("customer_name"),
        "customerEmail": values.get("customer_email"),
        "assistantId": values.get("assistant_id"),
        "phoneNumberId": values.get("phone_number_id"),
        "leadId": None,
        "summary": values.get("summary"),
        "analysis": {"structuredData": values.get("structured_data"),
                     "successEvaluation": values.get("success_evaluation")},
        "structuredOutputs": [
            {"id": o.id, "name": o.name, "result": o.result}
            for o in structured_outputs.outputs(values.get("structured_outputs"))],
        "scorecards": [
            {"id": c.id, "name": c.name, "score": c.score,
             "scoreNormalized": c.score_normalized, "metricPoints": dict(c.metric_points)}
            for c in structured_outputs.scorecards(values.get("scorecards"))],
        "metadata": values.get("metadata"),
    }


def lead_data(lead: RefreshedLead) -> dict[str, Any]:
    """A lead as `GET /api/leads` lists it, with `orgId`."""
    return {
        "id": str(lead.id),
        "orgId": str(lead.org_id),
        "phoneNumber": lead.phone_number,
        "name": lead.name,
        "email": lead.email,
        "firstCallAt": instant(lead.first_call_at),
        "lastCallAt": instant(lead.last_call_at),
        "callCount": lead.call_count,
        "createdAt": instant(lead.created_at),
    }


def day_data(org_id: uuid.UUID, day: dt.date, figures: DayFigures,
             markup: Decimal = _NO_MARKUP) -> dict[str, Any]:
    """A day of the overview's daily series (`GET /api/stats/overview`), with `orgId`."""
    return {
        "orgId": str(org_id),
        "date": day.isoformat(),
        "calls": figures.calls,
        "inbound": figures.inbound,
        "outbound": figures.outbound,
        "web": figures.web,
        "newLeads": figures.new_leads,
        "minutes": round(float(figures.duration_seconds) / 60, 6),
        "cost": billed_float(float(figures.cost), markup),
    }


# --- which events ----------------------------------------------------------------------------


def call_event_type(before: CallState | None, after: CallState) -> str | None:
    """`call.ended` when the call first reaches `ended`; `call.updated` when a stored call
    changes otherwise in what its data shows; else none (a new call that has not ended yet
    makes no event: its `call.ended` will)."""
    if after.status == "ended" and (before is None or before.status != "ended"):
        return CALL_ENDED
    if before is not None and call_data(_ANY_ORG, before) != call_data(_ANY_ORG, after):
        return CALL_UPDATED
    return None


def call_events(changes: Iterable[CallChange], subscriptions: Subscriptions
                ) -> list[OutboundEvent]:
    """The events of the batch's calls that some endpoint of their organization wants."""
    events = []
    for change in changes:
        org = change.org_id
        if org not in subscriptions.types or change.after.deleted:
            continue  # a deleted call's events go with it (changes.BatchWrite.gone_calls)
        kind = call_event_type(change.before, change.after)
        if kind is None or not subscriptions.wants(org, kind):
            continue
        call_id = change.after.call_id
        events.append(OutboundEvent(
            id=event_id(org, kind, call_id) if kind == CALL_ENDED else uuid.uuid4(),
            org_id=org, type=kind,
            data=call_data(org, change.after, subscriptions.markup(org)), call_id=call_id))
    return events


def lead_event_type(lead: RefreshedLead) -> str | None:
    if lead.created:
        return LEAD_CREATED
    if (lead.name, lead.email) != (lead.old_name, lead.old_email):
        return LEAD_UPDATED
    return None


def lead_events(leads: Iterable[RefreshedLead], subscriptions: Subscriptions
                ) -> list[OutboundEvent]:
    """`lead.created` for a lead the batch created (as the refresh left it), `lead.updated`
    for one whose name or email the batch changed, where an endpoint wants it."""
    events = []
    for lead in leads:
        kind = lead_event_type(lead)
        if kind is None or not subscriptions.wants(lead.org_id, kind):
            continue
        events.append(OutboundEvent(
            id=event_id(lead.org_id, kind, str(lead.id)) if kind == LEAD_CREATED
            else uuid.uuid4(),
            org_id=lead.org_id, type=kind, data=lead_data(lead)))
    return events


# --- closed days -----------------------------------------------------------------------------


def day_end(day: dt.date, where: dt.tzinfo = dt.UTC) -> dt.datetime:
    """When the organization's `day` ends, its zone being `where` (decision 45)."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(),
                               tzinfo=where).astimezone(dt.UTC)


def days_to_close(since: dt.datetime, now: dt.datetime, where: dt.tzinfo = dt.UTC
                  ) -> list[dt.date]:
    """The days (of the organization, in its zone `where`) to close at `now` for an
    organization whose first endpoint wanting them was created at `since`: those that
    ended after it, at least `DAY_CLOSE_GRACE` ago and at most `DAY_CLOSE_LOOKBACK` ago.
    Oldest first."""
    last = (now - DAY_CLOSE_GRACE).astimezone(where).date() - dt.timedelta(days=1)
    days = []
    day = last
    while day_end(day, where) > since and day_end(day, where) > now - DAY_CLOSE_LOOKBACK:
        days.append(day)
        day -= dt.timedelta(days=1)
    return days[::-1]


def day_closed_event(org_id: uuid.UUID, day: dt.date, figures: DayFigures,
                     markup: Decimal = _NO_MARKUP, where: dt.tzinfo = dt.UTC
                     ) -> OutboundEvent:
    """The day's one `usage.day_closed`; it happened when the day ended (in `where`)."""
    return OutboundEvent(id=event_id(org_id, DAY_CLOSED, day.isoformat()), org_id=org_id,
                         type=DAY_CLOSED, data=day_data(org_id, day, figures, markup),
                         occurred_at=day_end(day, where))


def candidate_days(since_by_org: Mapping[uuid.UUID, dt.datetime], now: dt.datetime,
                   zones: Mapping[uuid.UUID, dt.tzinfo] | None = None
                   ) -> Sequence[tuple[uuid.UUID, uuid.UUID, dt.date]]:
    """(event id, organization, day) of every day to close at `now`, each organization's
    days in its zone (`zones`, the one its figures count by; UTC when missing)."""
    return [(event_id(org, DAY_CLOSED, day.isoformat()), org, day)
            for org, since in sorted(since_by_org.items())
            for day in days_to_close(since, now, (zones or {}).get(org, dt.UTC))]
