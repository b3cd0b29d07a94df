"""The tenant API's routes (contract section 7). Each handler reads its typed parameters,
applies the pure rules (`params`, `cursors`), asks the repository or `vapi_accounts`, and
shapes the answer (`shapes`). Errors are raised as `api.errors` and answered in `app.py`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import httpx
from aio_pika.exceptions import AMQPError
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Security
from fastapi.responses import RedirectResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import cursors, exports, params, recordings, rollup, shapes
from api.auth import bearer_token
from api.broker import SyncCommands
from api.errors import (
    InvalidApiKey,
    InvalidParameter,
    NoRecording,
    NotConnected,
    NotFound,
    Unauthorized,
    VapiUnavailable,
)
from api.live import LiveHub
from api.recordings import Channel, RecordingLinks
from api.repository import Repository
from api.sessions import Sessions
from calltrail_common import (
    agencies,
    audit,
    erasure,
    organizations,
    success_measures,
    time_zones,
    vapi_accounts,
    vapi_keys,
)
from calltrail_common.agencies import CostView
from calltrail_common.crypto import CryptoError, KeyRing
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings
from calltrail_common.vapi import (
    RetryPolicy,
    VapiClient,
    VapiError,
    VapiNotFound,
    VapiUnauthorized,
)

log = get_logger("api")

# The user waits on the connect request: a few quick retries, then 502.
CONNECT_RETRY = RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0, max_retry_after=2.0)
LEAD_CALLS_LIMIT = 100
OVERVIEW_ASSISTANTS = 20
COST_COMPONENTS = ["transport", "stt", "llm", "tts", "vapi"]


@dataclass
class ApiState:
    settings: Settings
    repository: Repository
    keyring: KeyRing
    pool: Any  # asyncpg.Pool, for calltrail_common.vapi_accounts
    vapi_http: httpx.AsyncClient
    commands: SyncCommands
    sessions: Sessions
    recordings: RecordingLinks
    live: LiveHub


def api_state(request: Request) -> ApiState:
    state: ApiState = request.state.api
    return state


_bearer = HTTPBearer(auto_error=False, description="An organization API token "
                     "(`calltrail org create` or `calltrail token create`).")


@dataclass(frozen=True)
class Caller:
    """Who asks: the organization, and the actor its audit log names (a token's prefix
    here; a person when the dashboard calls these handlers)."""
    org_id: uuid.UUID
    actor: audit.Actor
    markup_percent: Decimal = Decimal(0)  # a client's token sees its agency's markup


async def caller(state: Annotated[ApiState, Depends(api_state)],
                 credentials: Annotated[HTTPAuthorizationCredentials | None,
                                        Security(_bearer)]) -> Caller:
    """The token's holder; looked up at every request, so a revoked token fails at once."""
    token = bearer_token(None if credentials is None else credentials.credentials)
    holder = await organizations.authenticate_token(state.pool, token)
    if holder is None:
        raise Unauthorized("the token is not valid")
    return Caller(holder.org_id, holder.actor, holder.markup_percent)


async def organization(who: Annotated[Caller, Depends(caller)]) -> uuid.UUID:
    return who.org_id


State = Annotated[ApiState, Depends(api_state)]
Org = Annotated[uuid.UUID, Depends(organization)]
Who = Annotated[Caller, Depends(caller)]


async def token_costs(who: Who) -> CostView:
    """A client's token sees what the client pays: every cost with its agency's markup
    (decision 38; read with the token, no query of its own). The dashboard calls the
    handlers with the default, the stored cost, and shows it as its viewer may see it
    (`SessionView.costs`)."""
    return agencies.cost_view("organization", who.markup_percent)


Costs = Annotated[CostView, Depends(token_costs)]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": shapes.ErrorBody} for code in (400, 401, 404, 413)}

router = APIRouter(prefix="/api", responses=_ERRORS)

StartDate = Annotated[date | None, Query(alias="startDate", description="YYYY-MM-DD, inclusive")]
EndDate = Annotated[date | None, Query(alias="endDate", description="YYYY-MM-DD, inclusive")]


def _today() -> date:
    return datetime.now(UTC).date()


async def organization_day(state: ApiState, org_id: uuid.UUID
                            ) -> tuple[date, time_zones.OrganizationZone]:
    """Today where the organization's figures count (decision 45), and its zones."""
    zone = await time_zones.find(state.pool, org_id)
    return time_zones.today(time_zones.zone(zone.figures_time_zone)), zone


# --- Vapi account -----------------------------------------------------------------------


@router.get("/vapi/connect", response_model=shapes.VapiConnection, tags=["vapi"])
async def get_connection(state: State, org_id: Org) -> shapes.VapiConnection:
    return shapes.connection(await state.repository.vapi_account(org_id))


@router.post("/vapi/connect", response_model=shapes.VapiConnected, tags=["vapi"],
             responses={502: {"model": shapes.ErrorBody}})
async def connect(state: State, who: Who, body: shapes.ConnectRequest
                  ) -> shapes.VapiConnected:
    """Check the key with Vapi, store it sealed, register the numbers, queue a first sync.
    The key is never answered nor logged; the audit log says who connected it."""
    org_id, api_key = who.org_id, body.api_key
    client = VapiClient(state.vapi_http, api_key, base_url=state.settings.vapi_api_base_url,
                        retry=CONNECT_RETRY)
    channel = await state.commands.channel()
    sync_id: uuid.UUID | None = None
    try:
        account = await vapi_accounts.connect_account(
            state.pool, state.keyring, client, org_id, api_key, channel=channel,
            topology=state.commands.topology if channel is not None else None)
        sync_id = account.sync_id
    except vapi_accounts.KeyRefused:
        raise InvalidApiKey("Vapi refused the API key: use the account's private key"
                            ) from None
    except vapi_accounts.NoSuchOrganization:
        raise Unauthorized("the token's organization no longer exists") from None
    except VapiError as error:
        log.warning("vapi_connect_unavailable", org_id=str(org_id),
                    error=type(error).__name__, status=error.status)
        raise VapiUnavailable("Vapi could not be reached; try again") from None
    except (TimeoutError, AMQPError, ConnectionError) as error:
        # Only after the account was committed: its first run waits for metrics-sync's tick.
        state.commands.lost(error)
    connection = shapes.connection(await state.repository.vapi_account(org_id))
    await audit.record(state.pool, org_id, who.actor, "vapi.connected",
                       connection.vapi_org_id)
    return shapes.VapiConnected(**connection.model_dump(), sync_id=sync_id)


@router.delete("/vapi/connect", response_model=shapes.VapiConnection, tags=["vapi"])
async def disconnect(state: State, who: Who) -> shapes.VapiConnection:
    """Delete the key and mark the account disconnected; idempotent."""
    await vapi_accounts.disconnect_account(state.pool, who.org_id)
    state.recordings.forget(who.org_id)
    await audit.record(state.pool, who.org_id, who.actor, "vapi.disconnected")
    return shapes.connection(await state.repository.vapi_account(who.org_id))


@router.get("/vapi/metrics", response_model=shapes.UsageMetrics, tags=["vapi"])
async def usage_metrics(
        state: State, org_id: Org,
        start_date: StartDate = None,
        end_date: EndDate = None,
        costs: Costs = agencies.AS_STORED,
) -> shapes.UsageMetrics:
    zone = await time_zones.find(state.pool, org_id)
    days = params.date_range(start_date, end_date,
                             time_zones.today(time_zones.zone(zone.usage_time_zone)))
    rows = await state.repository.usage_days(org_id, days.start, days.end)
    components = await state.repository.cost_components(org_id, days.start, days.end,
                                                        COST_COMPONENTS)
    return shapes.billed_usage(shapes.usage_metrics(days, rows, components), costs)


@router.post("/vapi/sync", status_code=202, response_model=shapes.SyncQueued, tags=["vapi"],
             responses={409: {"model": shapes.ErrorBody}})
async def sync_now(state: State, org_id: Org,
                   body: Annotated[shapes.SyncRequest | None, Body()] = None
                   ) -> shapes.SyncQueued:
    if body is not None and (body.start_date or body.end_date):
        params.date_range(body.start_date, body.end_date, _today())  # 400 on a bad range
    try:
        sync_id = await vapi_accounts.request_sync(state.pool, org_id, channel=None,
                                                   topology=None)
    except vapi_accounts.NotConnected:
        raise NotConnected("connect a Vapi account first") from None
    await state.commands.publish_sync(org_id, sync_id)
    return shapes.SyncQueued(sync_id=sync_id)


@router.get("/vapi/sync/{sync_id}", response_model=shapes.SyncRun, tags=["vapi"])
async def sync_run(state: State, org_id: Org, sync_id: str) -> shapes.SyncRun:
    row = await state.repository.sync_run(org_id, params.path_uuid(sync_id))
    if row is None:
        raise NotFound("no such sync")
    return shapes.sync_run(row)


# --- statistics, calls, leads -----------------------------------------------------------


@router.get("/stats/overview", response_model=shapes.StatsOverview, tags=["stats"])
async def stats_overview(
        state: State, org_id: Org,
        start_date: StartDate = None,
        end_date: EndDate = None,
        costs: Costs = agencies.AS_STORED,
) -> shapes.StatsOverview:
    today, zone = await organization_day(state, org_id)
    days = params.date_range(start_date, end_date, today)
    rows = await state.repository.stats_days(org_id, days.start, days.end)
    outcomes = await state.repository.call_outcomes(org_id, days.start, days.end)
    assistants = await state.repository.assistants(org_id, days.start, days.end,
                                                   OVERVIEW_ASSISTANTS)
    success = await state.repository.success_signals(org_id, days.start, days.end)
    overview = shapes.stats_overview(days, rows, outcomes, assistants, success)
    return shapes.billed_overview(overview.model_copy(update={
        "time_zone": zone.figures_time_zone,
        "rebuilding": zone.figures_time_zone != zone.time_zone}), costs)


# --- the organization's own day (decision 45) -------------------------------------------


@router.get("/time-zone", response_model=shapes.TimeZoneSettings, tags=["stats"])
async def get_time_zone(state: State, org_id: Org) -> shapes.TimeZoneSettings:
    """The organization's time zone, whose days the figures count, and whether they are
    being rebuilt for a new one."""
    return shapes.time_zone_settings(await time_zones.find(state.pool, org_id))


@router.put("/time-zone", response_model=shapes.TimeZoneSettings, tags=["stats"])
async def set_time_zone(state: State, who: Who, body: shapes.TimeZoneRequest
                        ) -> shapes.TimeZoneSettings:
    """Choose the organization's IANA time zone; its daily figures are rebuilt in the
    background (`rebuilding` until done)."""
    try:
        async with state.pool.acquire() as connection:
            zone = await time_zones.choose(connection, who.org_id, body.time_zone, who.actor)
    except time_zones.InvalidTimeZone as problem:
        raise InvalidParameter("timeZone", str(problem)) from None
    log.info("time_zone_set", org_id=str(who.org_id))
    return shapes.time_zone_settings(zone)


# --- what counts as a call's success (decision 41) --------------------------------------


@router.get("/success-measure", response_model=shapes.SuccessSettings, tags=["stats"])
async def get_success_measure(state: State, org_id: Org) -> shapes.SuccessSettings:
    """The organization's success measure, and the sources its newest calls carry."""
    return shapes.success_settings(await success_measures.find(state.pool, org_id),
                                   await success_measures.recent_sources(state.pool, org_id))


@router.put("/success-measure", response_model=shapes.SuccessSettings, tags=["stats"])
async def set_success_measure(state: State, who: Who, body: shapes.SuccessMeasureRequest
                              ) -> shapes.SuccessSettings:
    """Choose which boolean structured output or scorecard counts as a call's success."""
    try:
        measure = success_measures.measure_of(body.kind, body.source_id, body.pass_mark)
    except ValueError as problem:
        raise InvalidParameter("passMark" if "pass mark" in str(problem) else "sourceId",
                               str(problem)) from None
    return await choose_success_measure(state, who, measure)


@router.delete("/success-measure", response_model=shapes.SuccessSettings, tags=["stats"])
async def clear_success_measure(state: State, who: Who) -> shapes.SuccessSettings:
    """Count analysis.successEvaluation again; idempotent."""
    return await choose_success_measure(state, who, None)


async def choose_success_measure(state: ApiState, who: Caller,
                                 measure: success_measures.SuccessMeasure | None
                                 ) -> shapes.SuccessSettings:
    async with state.pool.acquire() as connection:
        await success_measures.choose(connection, who.org_id, measure, who.actor)
    log.info("success_measure_set", org_id=str(who.org_id),
             kind=None if measure is None else measure.kind)
    return await get_success_measure(state, who.org_id)


Limit = Annotated[int, Query(ge=1, le=params.MAX_PAGE_LIMIT)]
Cursor = Annotated[str | None, Query(description="`nextCursor` of the previous page",
                                     max_length=cursors.MAX_CURSOR_LENGTH)]


# The calls' filters, shared by the list and its export.
LeadId = Annotated[str | None, Query(alias="leadId")]
CreatedFrom = Annotated[datetime | None, Query(
    alias="from", description="ISO 8601; calls created at or after")]
CreatedTo = Annotated[datetime | None, Query(
    alias="to", description="ISO 8601; calls created before")]


@router.get("/calls", response_model=shapes.CallPage, tags=["calls"])
async def list_calls(
        state: State, org_id: Org,
        limit: Limit = params.DEFAULT_PAGE_LIMIT,
        cursor: Cursor = None,
        direction: params.Direction | None = None,
        status: params.CallStatus | None = None,
        lead_id: LeadId = None,
        created_from: CreatedFrom = None,
        created_to: CreatedTo = None,
        costs: Costs = agencies.AS_STORED,
) -> shapes.CallPage:
    """Newest first. Pages follow `nextCursor`: none is skipped or repeated while calls
    arrive (keyset pagination)."""
    start, end = params.instant_range(created_from, created_to)
    after = None if cursor is None else cursors.decode("c", cursor)
    rows = await state.repository.calls_page(
        org_id, call_type=None if direction is None else params.DIRECTIONS[direction],
        status=status, lead_id=params.filter_uuid("leadId", lead_id), created_from=start,
        created_to=end, after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = (cursors.encode("c", cursors.Position(page[-1]["created_at"], page[-1]["id"]))
                   if more else None)
    return shapes.billed_calls(shapes.CallPage(calls=[shapes.call_summary(r) for r in page],
                                               next_cursor=next_cursor), costs)


# --- exports: the lists' rows, all of them, streamed ------------------------------------

EXPORT_CHUNK_ROWS = 500  # rows per chunk written to the socket
_EXPORTED: dict[int | str, dict[str, Any]] = {200: {
    "description": "CSV (the default) or NDJSON (`Accept: application/x-ndjson`)",
    "content": {"text/csv": {}, exports.NDJSON: {}}}}
Accept = Annotated[str | None, Header(description="`application/x-ndjson` for NDJSON; "
                                      "anything else answers CSV")]


async def _encoded(kind: exports.Kind, fmt: exports.Format,
                   records: AsyncIterator[dict[str, exports.Value]]) -> AsyncIterator[bytes]:
    """The export's bytes, a batch of rows at a time: memory stays that of one batch."""
    if fmt == "csv":
        yield exports.csv_header(kind)
    batch: list[dict[str, exports.Value]] = []
    async for record in records:
        batch.append(record)
        if len(batch) == EXPORT_CHUNK_ROWS:
            yield exports.encode(kind, fmt, batch)
            batch = []
    if batch:
        yield exports.encode(kind, fmt, batch)


async def _exported(state: ApiState, who: Caller, kind: exports.Kind, fmt: exports.Format,
                    filters: dict[str, str],
                    records: AsyncIterator[dict[str, exports.Value]]) -> StreamingResponse:
    """Audit the export (before its first row is read), then stream it."""
    await audit.record(state.pool, who.org_id, who.actor, "data.exported", kind,
                       {"format": fmt, "filters": filters})
    log.info("data_exported", org_id=str(who.org_id), kind=kind, format=fmt)
    return StreamingResponse(
        _encoded(kind, fmt, records), media_type=exports.MEDIA_TYPES[fmt],
        headers={"Content-Disposition": exports.content_disposition(kind, fmt, _today()),
                 "Cache-Control": "no-store"})


async def export_calls(
        state: ApiState, who: Caller, *, filters: exports.CallFilters, costs: CostView,
        fmt: exports.Format) -> StreamingResponse:
    """The calls `filters` match, as `GET /api/calls` lists them (the dashboard's
    export too)."""
    rows = state.repository.export_calls(
        who.org_id, call_type=filters.call_type, status=filters.status,
        lead_id=params.filter_uuid("leadId", filters.lead_id),
        created_from=filters.created_from, created_to=filters.created_to)
    records = (exports.call_record(row, costs) async for row in rows)
    return await _exported(state, who, "calls", fmt, filters.audited(), records)


async def export_leads(state: ApiState, who: Caller, *, q: str | None, fmt: exports.Format
                       ) -> StreamingResponse:
    pattern = params.search_term(q)
    rows = state.repository.export_leads(who.org_id, pattern=pattern)
    records = (exports.lead_record(row) async for row in rows)
    filters = {"q": q.strip()} if q is not None and pattern is not None else {}
    return await _exported(state, who, "leads", fmt, filters, records)


def call_filters(direction: params.Direction | None, status: params.CallStatus | None,
                 lead_id: str | None, created_from: datetime | None,
                 created_to: datetime | None) -> exports.CallFilters:
    """The list's filters, checked as the list checks them (400 before any row)."""
    start, end = params.instant_range(created_from, created_to)
    params.filter_uuid("leadId", lead_id)
    return exports.CallFilters(
        call_type=None if direction is None else params.DIRECTIONS[direction], status=status,
        lead_id=lead_id, created_from=start, created_to=end)


@router.get("/calls/export", response_class=StreamingResponse, tags=["calls"],
            responses=_EXPORTED)
async def export_calls_route(
        state: State, who: Who,
        direction: params.Direction | None = None,
        status: params.CallStatus | None = None,
        lead_id: LeadId = None,
        created_from: CreatedFrom = None,
        created_to: CreatedTo = None,
        costs: Costs = agencies.AS_STORED,
        accept: Accept = None,
) -> StreamingResponse:
    """Every call `GET /api/calls` would page through with these filters, newest first,
    as a download (`calls-YYYY-MM-DD.csv`), streamed. Written to the audit log."""
    filters = call_filters(direction, status, lead_id, created_from, created_to)
    return await export_calls(state, who, filters=filters, costs=costs,
                              fmt=exports.negotiate(accept))


@router.get("/calls/{call_id}", response_model=shapes.CallDetail, tags=["calls"])
async def get_call(state: State, org_id: Org, call_id: str,
                   costs: Costs = agencies.AS_STORED) -> shapes.CallDetail:
    found = await state.repository.call(org_id, params.path_call_id(call_id))
    if found is None:
        raise NotFound("no such call")
    detail: shapes.CallDetail = shapes.billed_call(shapes.call_detail(*found), costs)
    return detail


async def recording_location(state: ApiState, org_id: uuid.UUID, call_id: str,
                             channel: Channel) -> str:
    """A URL that plays the call's recording now (`api.recordings`): Vapi's fresh one with
    a connected key, else the stored one. NotFound for another organization's call,
    NoRecording when there is none, VapiUnavailable when Vapi cannot say."""
    call_id = params.path_call_id(call_id)
    row = await state.repository.call_recordings(org_id, call_id)
    if row is None:
        raise NotFound("no such call")
    key = (org_id, call_id, channel)
    cached = state.recordings.get(key)
    if cached is not None:
        return cached
    async with state.pool.acquire() as connection:
        try:
            api_key = await vapi_keys.load_key(connection, state.keyring, org_id)
        except CryptoError:
            log.warning("recording_key_unreadable", org_id=str(org_id))
            api_key = None
    if api_key is not None:
        client = VapiClient(state.vapi_http, api_key,
                            base_url=state.settings.vapi_api_base_url, retry=CONNECT_RETRY)
        try:
            location = await client.recording_location(call_id, channel)
        except VapiNotFound:
            raise NoRecording(f"Vapi has no {channel} recording of this call") from None
        except VapiUnauthorized:
            log.warning("recording_key_refused", org_id=str(org_id))
        except VapiError as error:
            log.warning("recording_vapi_unavailable", org_id=str(org_id), call_id=call_id,
                        error=type(error).__name__, status=error.status)
            raise VapiUnavailable("Vapi could not be reached; try again") from None
        else:
            state.recordings.put(key, location,
                                 recordings.keep_seconds(location, datetime.now(UTC)))
            return location
    stored = recordings.stored_url(channel, row["recording_url"], row["stereo_recording_url"])
    if stored is None:
        raise NoRecording(f"no {channel} recording of this call")
    return stored


@router.get("/calls/{call_id}/recording", tags=["calls"], status_code=302,
            response_class=RedirectResponse,
            responses={302: {"description": "to a URL that plays the recording now"},
                       502: {"model": shapes.ErrorBody}})
async def get_recording(state: State, org_id: Org, call_id: str,
                        channel: Channel = "mono") -> RedirectResponse:
    """A redirect to the call's recording: a fresh short-lived URL from Vapi when a key is
    connected (kept until shortly before it expires), else the stored https URL; 404
    `no_recording` when there is none. No audio passes through the api (decision 39)."""
    location = await recording_location(state, org_id, call_id, channel)
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})


@router.get("/leads", response_model=shapes.LeadPage, tags=["leads"])
async def list_leads(
        state: State, org_id: Org,
        limit: Limit = params.DEFAULT_PAGE_LIMIT,
        cursor: Cursor = None,
        q: Annotated[str | None, Query(description="part of the name, email or number",
                                       max_length=params.MAX_SEARCH_LENGTH)] = None,
) -> shapes.LeadPage:
    """Newest lead first, `nextCursor` as for calls."""
    after = None
    if cursor is not None:
        position = cursors.decode("l", cursor)
        lead_id = params.filter_uuid("cursor", position.id)
        if position.created_at is None or lead_id is None:
            raise InvalidParameter("cursor", "not a cursor of this list")
        after = (position.created_at, lead_id)
    rows = await state.repository.leads_page(org_id, pattern=params.search_term(q),
                                             after=after, limit=limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = (cursors.encode("l", cursors.Position(page[-1]["created_at"],
                                                        str(page[-1]["id"])))
                   if more else None)
    return shapes.LeadPage(leads=[shapes.lead_summary(r) for r in page],
                           next_cursor=next_cursor)


@router.get("/leads/export", response_class=StreamingResponse, tags=["leads"],
            responses=_EXPORTED)
async def export_leads_route(
        state: State, who: Who,
        q: Annotated[str | None, Query(description="part of the name, email or number",
                                       max_length=params.MAX_SEARCH_LENGTH)] = None,
        accept: Accept = None,
) -> StreamingResponse:
    """Every lead `GET /api/leads` would page through with this search, newest first, as a
    download (`leads-YYYY-MM-DD.csv`), streamed. Written to the audit log."""
    return await export_leads(state, who, q=q, fmt=exports.negotiate(accept))


@router.get("/leads/{lead_id}", response_model=shapes.LeadDetail, tags=["leads"])
async def get_lead(state: State, org_id: Org, lead_id: str,
                   costs: Costs = agencies.AS_STORED) -> shapes.LeadDetail:
    """One lead with its latest calls (up to 100; `/api/calls?leadId=` pages through all)."""
    found = await state.repository.lead(org_id, params.path_uuid(lead_id), LEAD_CALLS_LIMIT)
    if found is None:
        raise NotFound("no such lead")
    return shapes.billed_lead(shapes.lead_detail(*found), costs)


@router.post("/leads/{lead_id}/erase", response_model=shapes.Erased, tags=["leads"])
async def erase_lead(state: State, who: Who, lead_id: str) -> shapes.Erased:
    """Erase this caller: the lead's number, name and email, and in every call of that
    number its transcript, summary, structured data, recordings and archived raw events.
    Counts, minutes and costs stay; the audit log records the lead's id, never the number.
    A later call from the number makes a new lead (decision 44). Idempotent."""
    return await erase_caller(state, who, params.path_uuid(lead_id))


async def erase_caller(state: ApiState, who: Caller, lead_id: uuid.UUID) -> shapes.Erased:
    async with state.pool.acquire() as connection:
        done = await erasure.erase_caller(connection, who.org_id, who.actor, lead_id=lead_id)
    if done is None or done.lead_id is None:
        raise NotFound("no such lead")
    log.info("caller_erased", org_id=str(who.org_id), lead_id=str(done.lead_id),
             calls=done.calls)
    return shapes.Erased(lead_id=done.lead_id, erased_calls=done.calls)


@router.get("/retention", response_model=shapes.Retention, tags=["settings"])
async def get_retention(state: State, org_id: Org) -> shapes.Retention:
    """How long call content is kept (default: forever)."""
    return shapes.Retention(
        content_retention_days=await erasure.content_retention(state.pool, org_id))


@router.put("/retention", response_model=shapes.Retention, tags=["settings"])
async def set_retention(state: State, who: Who, body: shapes.Retention) -> shapes.Retention:
    """Keep transcripts, recordings and archived raw events this many days (null: forever);
    older ones are purged nightly, the figures stay."""
    return await choose_retention(state, who, body.content_retention_days)


async def choose_retention(state: ApiState, who: Caller, days: int | None
                           ) -> shapes.Retention:
    async with state.pool.acquire() as connection:
        await erasure.set_content_retention(connection, who.org_id, days, who.actor)
    log.info("retention_set", org_id=str(who.org_id), days=days)
    return shapes.Retention(content_retention_days=days)


# --- an agency's clients ----------------------------------------------------------------


async def _agency(state: ApiState, org_id: uuid.UUID) -> uuid.UUID:
    """Only an agency's token reads its clients; any other organization's answers 404, as
    for an id it cannot see (decision 38)."""
    if not await state.repository.is_agency(org_id):
        raise NotFound("this organization is not an agency: it has no clients")
    return org_id


@router.get("/clients", response_model=shapes.ClientList, tags=["agencies"])
async def list_clients(state: State, org_id: Org) -> shapes.ClientList:
    """The agency's client organizations and the markup each pays."""
    agency_id = await _agency(state, org_id)
    return shapes.client_list(await agencies.clients(state.pool, agency_id))


@router.get("/clients/overview", response_model=shapes.ClientsOverview, tags=["agencies"])
async def clients_overview(
        state: State, org_id: Org,
        start_date: StartDate = None,
        end_date: EndDate = None,
        sort: Annotated[str | None, Query(
            description=f"one of {', '.join(rollup.SORT_KEYS)}; `-` first for descending",
            max_length=20)] = None,
) -> shapes.ClientsOverview:
    """Each client's calls, minutes, cost, billed cost (with its markup), new leads and
    success rate over the period (the figures of its own `/api/stats/overview`), and the
    totals."""
    agency_id = await _agency(state, org_id)
    days = params.date_range(start_date, end_date,
                             (await organization_day(state, org_id))[0])
    key, descending = rollup.parse_sort(sort)
    rows = await state.repository.client_figures(agency_id, days.start, days.end)
    figures = [rollup.client_figures(r) for r in rows]
    return shapes.clients_overview(days, ("-" if descending else "") + key,
                                   rollup.sort_clients(figures, key, descending),
                                   rollup.totals(figures))
