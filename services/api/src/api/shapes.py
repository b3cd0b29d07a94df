"""What the api answers, in camelCase, and how database rows become it. Pure: rows in,
models out. The models are also the OpenAPI document's schemas."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.outcomes import BUCKETS, ended_reason_bucket, success_counts
from api.params import CALL_TYPE_DIRECTIONS, DateRange
from api.rollup import ClientFigures, Totals
from calltrail_common import structured_outputs
from calltrail_common.agencies import Client, CostView
from calltrail_common.outbound_endpoints import (
    MAX_DESCRIPTION_LENGTH,
    Delivery,
    DeliveryState,
    Endpoint,
    EventType,
    IssuedSecret,
)
from calltrail_common.outbound_targets import MAX_URL_LENGTH
from calltrail_common.success_measures import Source, SuccessMeasure
from calltrail_common.time_zones import OrganizationZone

Row = Mapping[str, Any]


class Shape(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ErrorBody(Shape):
    error: str
    message: str


class VapiConnection(Shape):
    connected: bool
    status: Literal["connected", "disconnected", "not_connected"]
    status_reason: str | None
    vapi_org_id: str | None
    last_synced_at: datetime | None
    connected_at: datetime | None


class VapiConnected(VapiConnection):
    sync_id: uuid.UUID | None  # None: stored, but the first sync waits for the next tick


class ConnectRequest(Shape):
    # Printable ASCII without spaces: it becomes an HTTP header to Vapi.
    api_key: str = Field(min_length=1, max_length=512, pattern=r"^[\x21-\x7e]+$")


class SyncRequest(Shape):
    start_date: date | None = None
    end_date: date | None = None


class SyncQueued(Shape):
    sync_id: uuid.UUID


class SyncRun(Shape):
    sync_id: uuid.UUID
    status: Literal["queued", "running", "succeeded", "failed"]
    reason: str | None
    trigger: str
    requested_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class UsageDay(Shape):
    date: date
    minutes: float
    calls: int
    cost: float


class UsageMetrics(Shape):
    start_date: date
    end_date: date
    minutes: float
    calls: int
    cost: float
    daily: list[UsageDay]
    cost_by_component: dict[str, float] = Field(
        default_factory=dict, description="Vapi's costBreakdown of the synced calls summed "
        "per component (transport, stt, llm, tts, vapi) where Vapi gave one")


class StatsDay(Shape):
    date: date
    calls: int
    inbound: int
    outbound: int
    web: int
    new_leads: int
    minutes: float
    cost: float


class EndedReasons(Shape):
    """Ended calls by how they ended (`endedReason`, bucketed by `api.outcomes`)."""
    completed: int = 0
    voicemail: int = 0
    no_answer: int = 0
    busy: int = 0
    failed: int = 0
    other: int = 0


# What the connected Vapi account calls an assistant or a number (decision 43).
_ASSISTANT_NAME = ("the assistant's name in the connected Vapi account, as of metrics-sync's "
                   "last round; null when unknown")
_PHONE_NUMBER_NAME = ("the phone number's name in the connected Vapi account (its number "
                      "when it has no name), as of metrics-sync's last round; null when "
                      "unknown")


class AssistantStats(Shape):
    assistant_id: str | None
    assistant_name: str | None = Field(default=None, description=_ASSISTANT_NAME)
    calls: int
    minutes: float
    cost: float


class SuccessMeasureShape(Shape):
    """Which source counts as a call's success (decision 41): a boolean structured output
    (success when true) or a scorecard (success at or above `passMark`, its normalized
    score out of 100)."""
    kind: Literal["output", "scorecard"]
    source_id: str = Field(description="the structured output's or scorecard's id in Vapi")
    pass_mark: float | None = Field(default=None, description="a scorecard's; null for an "
                                    "output")


class Erased(Shape):
    """What erasing a caller did (decision 44): the lead, now anonymous, and how many of
    its calls lost their personal data; their counts, minutes and costs stay."""
    lead_id: uuid.UUID
    erased_calls: int


class Retention(Shape):
    """How long transcripts, recordings and archived raw events are kept, in days; null:
    forever. The figures are kept whatever this says."""
    content_retention_days: int | None = Field(default=None, ge=1, le=36500)


class SuccessMeasureRequest(Shape):
    kind: Literal["output", "scorecard"]
    source_id: str = Field(min_length=1, max_length=255)
    pass_mark: float | None = Field(default=None, ge=0, le=100, description="a scorecard's "
                                    "(default 80); not for an output")


class SuccessSource(Shape):
    kind: Literal["output", "scorecard"]
    source_id: str
    name: str | None


class SuccessSettings(Shape):
    measure: SuccessMeasureShape | None = Field(description="null: analysis."
                                                "successEvaluation counts")
    sources: list[SuccessSource] = Field(description="the boolean structured outputs and "
                                         "scorecards of the organization's newest calls")


class StatsOverview(Shape):
    start_date: date
    end_date: date
    calls: int
    inbound: int
    outbound: int
    web: int
    new_leads: int
    minutes: float
    cost: float
    average_duration_seconds: float | None = None
    cost_per_call: float | None = None
    success_rate: float | None = Field(
        default=None, description="successful / evaluated calls: by the organization's "
        "success measure where a call carries its source, else by analysis."
        "successEvaluation (true or false); null when none was evaluated")
    evaluated_calls: int = 0
    success_measure: SuccessMeasureShape | None = None
    ended_reasons: EndedReasons = Field(default_factory=EndedReasons)
    assistants: list[AssistantStats] = Field(default_factory=list)
    daily: list[StatsDay]
    time_zone: str = Field(default="UTC", description="the zone whose days these are: the "
                           "organization's, or its previous one while `rebuilding`")
    rebuilding: bool = Field(default=False, description="the organization's time zone "
                             "changed and its daily figures are being rebuilt for it")


class TimeZoneRequest(Shape):
    time_zone: str = Field(min_length=1, max_length=64,
                           description="an IANA time zone name, e.g. Europe/Paris")


class TimeZoneSettings(Shape):
    time_zone: str = Field(description="the organization's IANA time zone")
    figures_time_zone: str = Field(description="the zone its daily figures count by now")
    usage_time_zone: str = Field(description="the zone its usage per day counts by now")
    rebuilding: bool = Field(description="true until both count by `timeZone`")


class CallSummary(Shape):
    id: str
    type: str | None
    direction: str | None  # inbound, outbound, web, or the Vapi type as it came
    status: str | None
    ended_reason: str | None
    created_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    duration_seconds: float | None
    cost: float | None
    customer_number: str | None
    customer_name: str | None
    assistant_id: str | None
    assistant_name: str | None = Field(default=None, description=_ASSISTANT_NAME)
    phone_number_id: str | None
    phone_number_name: str | None = Field(default=None, description=_PHONE_NUMBER_NAME)
    lead_id: uuid.UUID | None


class LeadSummary(Shape):
    id: uuid.UUID
    phone_number: str
    name: str | None
    email: str | None
    first_call_at: datetime | None
    last_call_at: datetime | None
    call_count: int
    created_at: datetime


class Analysis(Shape):
    structured_data: Any
    success_evaluation: str | None


class StructuredOutput(Shape):
    """One of Vapi's structured outputs on a call (`artifact.structuredOutputs`)."""
    id: str
    name: str | None
    result: Any


class CallScorecard(Shape):
    """One of Vapi's scorecards on a call (`artifact.scorecards`)."""
    id: str
    name: str | None
    score: float | None
    score_normalized: float | None
    metric_points: dict[str, float]


class Recording(Shape):
    mono_url: str | None
    stereo_url: str | None


class CallDetail(CallSummary):
    customer_email: str | None
    transcript: str | None
    summary: str | None
    analysis: Analysis
    structured_outputs: list[StructuredOutput] = Field(
        default_factory=list, description="by name; extracted by Vapi after the call, so "
        "they may appear some time after it ended")
    scorecards: list[CallScorecard] = Field(default_factory=list, description="by name")
    recording: Recording
    cost_breakdown: Any
    metadata: Any
    lead: LeadSummary | None


class CallPage(Shape):
    calls: list[CallSummary]
    next_cursor: str | None


class LeadPage(Shape):
    leads: list[LeadSummary]
    next_cursor: str | None


class LeadDetail(LeadSummary):
    calls: list[CallSummary]


def _number(value: Decimal | float | int | None) -> float:
    return 0.0 if value is None else float(value)


def _minutes(seconds: Decimal | float | int | None) -> float:
    return 0.0 if seconds is None else round(float(seconds) / 60, 6)


def connection(row: Row | None) -> VapiConnection:
    if row is None:
        return VapiConnection(connected=False, status="not_connected", status_reason=None,
                              vapi_org_id=None, last_synced_at=None, connected_at=None)
    connected = row["status"] == "connected"
    return VapiConnection(
        connected=connected, status="connected" if connected else "disconnected",
        status_reason=None if connected else row["disconnected_reason"],
        vapi_org_id=row["vapi_org_id"], last_synced_at=row["last_synced_at"],
        connected_at=row["connected_at"] if connected else None)


def sync_run(row: Row) -> SyncRun:
    return SyncRun(sync_id=row["id"], status=row["status"], reason=row["reason"],
                   trigger=row["trigger"], requested_at=row["requested_at"],
                   started_at=row["started_at"], finished_at=row["finished_at"])


def usage_metrics(days: DateRange, rows: Iterable[Row], components: Iterable[Row] = ()
                  ) -> UsageMetrics:
    """Every day of the range, zero where nothing was stored."""
    by_day = {row["day"]: row for row in rows}
    daily = []
    for day in days.days():
        row = by_day.get(day)
        if row is None:
            daily.append(UsageDay(date=day, minutes=0.0, calls=0, cost=0.0))
        else:
            daily.append(UsageDay(date=day, minutes=_number(row["minutes"]),
                                  calls=row["calls"], cost=_number(row["cost"])))
    return UsageMetrics(
        start_date=days.start, end_date=days.end,
        minutes=round(sum(_number(r["minutes"]) for r in by_day.values()), 6),
        calls=sum(d.calls for d in daily),
        cost=float(sum((Decimal(r["cost"]) for r in by_day.values()), Decimal(0))),
        daily=daily,
        cost_by_component={r["component"]: _number(r["cost"]) for r in components})


def _ended_reasons(outcomes: Iterable[Row]) -> EndedReasons:
    buckets = dict.fromkeys(BUCKETS, 0)
    for row in outcomes:
        if row["ended_reason"] is not None:
            buckets[ended_reason_bucket(row["ended_reason"])] += row["calls"]
    return EndedReasons.model_validate(buckets)


def success_measure(measure: SuccessMeasure | None) -> SuccessMeasureShape | None:
    if measure is None:
        return None
    return SuccessMeasureShape(kind=measure.kind, source_id=measure.source_id,
                               pass_mark=None if measure.pass_mark is None
                               else float(measure.pass_mark))


def measure_and_signals(rows: Iterable[Row]
                        ) -> tuple[SuccessMeasure | None, list[tuple[Decimal, str | None, int]]]:
    """What `repository.SUCCESS_SIGNALS` answers: the measure (on every row; no row: none)
    and the chosen source's (value, successEvaluation, calls)."""
    measure, signals = None, []
    for row in rows:
        measure = SuccessMeasure(row["kind"], row["source_id"], row["pass_mark"])
        if row["calls"] is not None:
            signals.append((row["value"], row["success_evaluation"], row["calls"]))
    return measure, signals


def time_zone_settings(zone: OrganizationZone) -> TimeZoneSettings:
    return TimeZoneSettings(time_zone=zone.time_zone,
                            figures_time_zone=zone.figures_time_zone,
                            usage_time_zone=zone.usage_time_zone,
                            rebuilding=zone.rebuilding)


def success_settings(measure: SuccessMeasure | None, sources: Iterable[Source]
                     ) -> SuccessSettings:
    return SuccessSettings(measure=success_measure(measure), sources=[
        SuccessSource(kind=s.kind, source_id=s.source_id, name=s.name) for s in sources])


def stats_overview(days: DateRange, rows: Iterable[Row], outcomes: Iterable[Row] = (),
                   assistants: Iterable[Row] = (), success_rows: Iterable[Row] = ()
                   ) -> StatsOverview:
    """Totals and every day of the range, zero where nothing happened. Sums are taken over
    exact numerics before they become floats. Averages are over the day totals' calls."""
    by_day = {row["day"]: row for row in rows}
    daily = []
    for day in days.days():
        row = by_day.get(day)
        if row is None:
            daily.append(StatsDay(date=day, calls=0, inbound=0, outbound=0, web=0, new_leads=0,
                                  minutes=0.0, cost=0.0))
            continue
        daily.append(StatsDay(date=day, calls=row["calls"], inbound=row["inbound"],
                              outbound=row["outbound"], web=row["web"],
                              new_leads=row["new_leads"],
                              minutes=_minutes(row["duration_seconds"]),
                              cost=_number(row["cost"])))
    seconds = sum((Decimal(r["duration_seconds"]) for r in by_day.values()), Decimal(0))
    cost = sum((Decimal(r["cost"]) for r in by_day.values()), Decimal(0))
    calls = sum(d.calls for d in daily)
    outcomes = list(outcomes)
    measure, signals = measure_and_signals(success_rows)
    evaluated, succeeded = success_counts(
        ((r["success_evaluation"], r["calls"]) for r in outcomes), signals, measure)
    return StatsOverview(
        start_date=days.start, end_date=days.end,
        calls=calls, inbound=sum(d.inbound for d in daily),
        outbound=sum(d.outbound for d in daily), web=sum(d.web for d in daily),
        new_leads=sum(d.new_leads for d in daily), minutes=_minutes(seconds),
        cost=float(cost),
        average_duration_seconds=round(float(seconds / calls), 3) if calls else None,
        cost_per_call=round(float(cost / calls), 6) if calls else None,
        success_rate=round(succeeded / evaluated, 6) if evaluated else None,
        evaluated_calls=evaluated, success_measure=success_measure(measure),
        ended_reasons=_ended_reasons(outcomes),
        assistants=[AssistantStats(assistant_id=r["assistant_id"],
                                   assistant_name=r["assistant_name"], calls=r["calls"],
                                   minutes=_minutes(r["seconds"]), cost=_number(r["cost"]))
                    for r in assistants],
        daily=daily)


def _summary_fields(row: Row) -> dict[str, Any]:
    call_type = row["direction"]
    return {
        "id": row["id"], "type": call_type,
        "direction": CALL_TYPE_DIRECTIONS.get(call_type, call_type),
        "status": row["status"], "ended_reason": row["ended_reason"],
        "created_at": row["created_at"], "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "duration_seconds": None if row["duration_seconds"] is None
        else float(row["duration_seconds"]),
        "cost": None if row["cost"] is None else float(row["cost"]),
        "customer_number": row["customer_number"], "customer_name": row["customer_name"],
        "assistant_id": row["assistant_id"], "assistant_name": row["assistant_name"],
        "phone_number_id": row["phone_number_id"],
        "phone_number_name": row["phone_number_name"], "lead_id": row["lead_id"],
    }


def call_summary(row: Row) -> CallSummary:
    return CallSummary(**_summary_fields(row))


def lead_summary(row: Row) -> LeadSummary:
    return LeadSummary(id=row["id"], phone_number=row["phone_number"], name=row["name"],
                       email=row["email"], first_call_at=row["first_call_at"],
                       last_call_at=row["last_call_at"], call_count=row["call_count"],
                       created_at=row["created_at"])


def https_only(url: str | None) -> str | None:
    """A recording URL as answered: only an https one (rows stored before the processor
    refused others may hold `http:`, `javascript:` or worse, which a page would play or
    link to)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() == "https" and parts.hostname else None


def call_detail(row: Row, lead: Row | None) -> CallDetail:
    return CallDetail(
        **_summary_fields(row), customer_email=row["customer_email"],
        transcript=row["transcript"], summary=row["summary"],
        analysis=Analysis(structured_data=row["structured_data"],
                          success_evaluation=row["success_evaluation"]),
        structured_outputs=[
            StructuredOutput(id=o.id, name=o.name, result=o.result)
            for o in structured_outputs.outputs(row["structured_outputs"])],
        scorecards=[
            CallScorecard(id=c.id, name=c.name, score=c.score,
                          score_normalized=c.score_normalized,
                          metric_points=dict(c.metric_points))
            for c in structured_outputs.scorecards(row["scorecards"])],
        recording=Recording(mono_url=https_only(row["recording_url"]),
                            stereo_url=https_only(row["stereo_recording_url"])),
        cost_breakdown=row["cost_breakdown"], metadata=row["metadata"],
        lead=None if lead is None else lead_summary(lead))


def lead_detail(row: Row, calls: Sequence[Row]) -> LeadDetail:
    return LeadDetail(**lead_summary(row).model_dump(), calls=[call_summary(c) for c in calls])


# --- an agency's clients ----------------------------------------------------------------


class ClientSummary(Shape):
    id: uuid.UUID
    name: str
    markup_percent: float


class ClientList(Shape):
    clients: list[ClientSummary]


class ClientRollup(Shape):
    calls: int
    minutes: float
    cost: float = Field(description="the cost before markup")
    billed_cost: float = Field(description="the cost with the client's markup: what the "
                               "client's own token answers as `cost`")
    new_leads: int
    success_rate: float | None
    evaluated_calls: int


class ClientOverview(ClientRollup):
    id: uuid.UUID
    name: str
    markup_percent: float


class ClientsOverview(Shape):
    start_date: date
    end_date: date
    sort: str
    clients: list[ClientOverview]
    totals: ClientRollup


def client_list(clients: Iterable[Client]) -> ClientList:
    return ClientList(clients=[ClientSummary(id=c.org_id, name=c.name,
                                             markup_percent=float(c.markup_percent))
                               for c in clients])


def _rollup(figures: ClientFigures | Totals) -> dict[str, Any]:
    return {"calls": figures.calls, "minutes": _minutes(figures.seconds),
            "cost": float(figures.cost), "billed_cost": float(figures.billed),
            "new_leads": figures.new_leads, "success_rate": figures.success_rate,
            "evaluated_calls": figures.evaluated}


def clients_overview(days: DateRange, sort: str, clients: Iterable[ClientFigures],
                     totals: Totals) -> ClientsOverview:
    return ClientsOverview(
        start_date=days.start, end_date=days.end, sort=sort,
        clients=[ClientOverview(id=c.org_id, name=c.name,
                                markup_percent=float(c.markup_percent), **_rollup(c))
                 for c in clients],
        totals=ClientRollup(**_rollup(totals)))


# --- costs as a client's own people and tokens see them (with the agency's markup) ------

# The money in a call's costBreakdown; with a markup only these are answered, marked up
# (Vapi's token and character counts, and its analysis costs, would tell the cost before it).
MONEY_COMPONENTS = ("transport", "stt", "llm", "tts", "vapi", "total")


def _billed(value: float | None, costs: CostView) -> float | None:
    return None if value is None else costs.billed(value)


def billed_breakdown(breakdown: Any, costs: CostView) -> Any:
    if not costs.marked_up or not isinstance(breakdown, dict):
        return breakdown
    return {k: costs.billed(float(v)) for k, v in breakdown.items()
            if k in MONEY_COMPONENTS and isinstance(v, int | float) and not isinstance(v, bool)}


def billed_overview(overview: StatsOverview, costs: CostView) -> StatsOverview:
    if not costs.marked_up:
        return overview
    return overview.model_copy(update={
        "cost": costs.billed(overview.cost),
        "cost_per_call": _billed(overview.cost_per_call, costs),
        "assistants": [a.model_copy(update={"cost": costs.billed(a.cost)})
                       for a in overview.assistants],
        "daily": [d.model_copy(update={"cost": costs.billed(d.cost)}) for d in overview.daily]})


def billed_usage(usage: UsageMetrics, costs: CostView) -> UsageMetrics:
    if not costs.marked_up:
        return usage
    return usage.model_copy(update={
        "cost": costs.billed(usage.cost),
        "daily": [d.model_copy(update={"cost": costs.billed(d.cost)}) for d in usage.daily],
        "cost_by_component": {k: costs.billed(v) for k, v in usage.cost_by_component.items()}})


def billed_call(call: CallSummary, costs: CostView) -> Any:
    """A call summary or detail with the client's cost (the same type back)."""
    if not costs.marked_up:
        return call
    update: dict[str, Any] = {"cost": _billed(call.cost, costs)}
    if isinstance(call, CallDetail):
        update["cost_breakdown"] = billed_breakdown(call.cost_breakdown, costs)
    return call.model_copy(update=update)


def billed_calls(page: CallPage, costs: CostView) -> CallPage:
    if not costs.marked_up:
        return page
    return page.model_copy(update={"calls": [billed_call(c, costs) for c in page.calls]})


def billed_lead(lead: LeadDetail, costs: CostView) -> LeadDetail:
    if not costs.marked_up:
        return lead
    return lead.model_copy(update={"calls": [billed_call(c, costs) for c in lead.calls]})


# --- outbound webhooks (decision 40) ----------------------------------------------------


class OutboundEndpointRequest(Shape):
    url: str = Field(max_length=MAX_URL_LENGTH, description=(
        "where to POST the events: https, on a public address (private, loopback and "
        "link-local targets are refused unless the operator allows them)"))
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)
    event_types: list[EventType] = Field(min_length=1, description=(
        "the events the endpoint wants"))


class OutboundEndpointChange(Shape):
    """What to change; every field is optional, and at least one is given."""
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    event_types: list[EventType] | None = Field(default=None, min_length=1)
    enabled: bool | None = Field(default=None, description=(
        "false disables the endpoint; true enables it again, also after the dispatcher "
        "disabled it for failing (its failing streak starts afresh)"))


class OutboundAttempt(Shape):
    at: datetime
    status: int | None = Field(description="the HTTP status; null: no answer")
    error: str | None = Field(description="'timeout', 'connection refused', ...; never a body")


class OutboundEndpoint(Shape):
    id: uuid.UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_at: datetime | None
    disabled_reason: Literal["failing", "by_user"] | None = Field(description=(
        "failing: the dispatcher disabled it after failing without a success for "
        "WEBHOOKS_DISABLE_AFTER_HOURS; by_user: a person or a token did"))
    failing_since: datetime | None = Field(description="its first failure since its last "
                                           "success; null while it succeeds")
    last_success_at: datetime | None
    last_attempt: OutboundAttempt | None = Field(description="its latest attempted delivery")
    created_at: datetime


class OutboundEndpointIssued(OutboundEndpoint):
    secret: str = Field(description="the signing secret (Standard Webhooks, `whsec_`...): "
                        "answered this once, never again")


class OutboundEndpointList(Shape):
    endpoints: list[OutboundEndpoint]


class OutboundDelivery(Shape):
    id: uuid.UUID
    event_id: uuid.UUID = Field(description="the `webhook-id` the receiver deduplicates by")
    event_type: str
    occurred_at: datetime
    state: DeliveryState = Field(description=(
        "pending (to send, or between retries), succeeded (a 2xx), dead (retries "
        "exhausted), skipped (its endpoint was disabled before it was sent)"))
    attempts: int
    last_status: int | None
    last_latency_ms: int | None
    last_error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime


class OutboundDeliveryPage(Shape):
    deliveries: list[OutboundDelivery]
    next_cursor: str | None


def outbound_endpoint(endpoint: Endpoint) -> OutboundEndpoint:
    attempt = endpoint.last_attempt
    return OutboundEndpoint(
        id=endpoint.id, url=endpoint.url, description=endpoint.description,
        event_types=list(endpoint.event_types), enabled=endpoint.enabled,
        disabled_at=endpoint.disabled_at, disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since, last_success_at=endpoint.last_success_at,
        last_attempt=None if attempt is None else OutboundAttempt(
            at=attempt.at, status=attempt.status, error=attempt.error),
        created_at=endpoint.created_at)


def outbound_issued(issued: IssuedSecret) -> OutboundEndpointIssued:
    return OutboundEndpointIssued(**outbound_endpoint(issued.endpoint).model_dump(),
                                  secret=issued.secret)


def outbound_delivery(delivery: Delivery) -> OutboundDelivery:
    return OutboundDelivery(
        id=delivery.id, event_id=delivery.event_id, event_type=delivery.event_type,
        occurred_at=delivery.occurred_at, state=delivery.state, attempts=delivery.attempts,
        last_status=delivery.last_status, last_latency_ms=delivery.last_latency_ms,
        last_error=delivery.last_error, last_attempt_at=delivery.last_attempt_at,
        delivered_at=delivery.delivered_at, created_at=delivery.created_at)


# --- Vapi wiring (decision 47) ----------------------------------------------------------


class WiringItem(Shape):
    kind: Literal["assistant", "phone-number"]
    id: str
    name: str | None
    number: str | None  # a phone number's number or SIP URI
    points: Literal["here", "elsewhere", "nowhere"]  # where its server URL sends calls
    server_url: str | None
    credential_id: str | None
    credential_current: bool  # Calltrail's credential for the current webhook secret
    missing_messages: list[str]  # needed server messages it leaves out
    wired_by_calltrail: bool  # its previous set-up is kept: unwire puts it back
    complete: bool


class VapiWiring(Shape):
    endpoint_url: str | None
    needed_messages: list[str]
    items: list[WiringItem]


class WiringRequest(Shape):
    # Vapi ids of the assistants and phone numbers to change; absent: every one.
    ids: list[str] | None = Field(default=None, max_length=1000)


class WiringChange(Shape):
    kind: Literal["assistant", "phone-number"]
    id: str
    added_messages: list[str]


class WiringChanges(Shape):
    changed: list[WiringChange]
