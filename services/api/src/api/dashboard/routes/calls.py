"""Call history with its filters, and one call: transcript, summary, recording, costs, and
what Vapi extracted (structured outputs and scorecards by name, the analysis' data)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from api import params, shapes
from api import routes as json_api
from api.dashboard.page import (
    PAGE_SIZE,
    SignInRequired,
    api_state,
    caller,
    find_session,
    open_page,
    parse_day,
    redirect,
    render,
    render_missing,
    require,
)
from api.dashboard.transcripts import conversation
from api.errors import ApiError, InvalidParameter, NotFound
from api.recordings import Channel
from calltrail_common.access import Action

router = APIRouter()

# The page's words for a filter the API's rules refuse (`params.as_direction`, `as_status`).
_REFUSED_FILTER = {"direction": "Unknown direction.", "status": "Unknown status."}


def _start_of(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), UTC)


def _filters(request: Request) -> dict[str, str]:
    """The page's filters as its form holds them ("" for none)."""
    query = request.query_params
    day_from, day_to = parse_day(query.get("from")), parse_day(query.get("to"))
    return {"direction": query.get("direction") or "", "status": query.get("status") or "",
            "leadId": query.get("leadId") or "",
            "from": day_from.isoformat() if day_from else "",
            "to": day_to.isoformat() if day_to else ""}


@router.get("/calls")
async def calls(request: Request) -> Response:
    current = await open_page(request)
    query = request.query_params
    filters = _filters(request)
    direction, status = filters["direction"] or None, filters["status"] or None
    lead_id = filters["leadId"] or None
    day_from, day_to = parse_day(filters["from"]), parse_day(filters["to"])
    error = None
    page = shapes.CallPage(calls=[], next_cursor=None)
    try:
        page = await json_api.list_calls(
            api_state(request), current.org_id, limit=PAGE_SIZE,
            cursor=query.get("cursor") or None, direction=params.as_direction(direction),
            status=params.as_status(status), lead_id=lead_id, created_from=_start_of(day_from),
            created_to=_start_of(None if day_to is None else day_to + timedelta(days=1)))
    except InvalidParameter as problem:
        error = _REFUSED_FILTER.get(problem.parameter, problem.message)
    except ApiError as problem:
        error = problem.message
    active = {k: v for k, v in filters.items() if v}
    next_url = (f"/calls?{urlencode({**active, 'cursor': page.next_cursor})}"
                if page.next_cursor else None)
    return render(request, "calls.html", {
        "title": "Calls", "nav": "calls", "page": page, "filters": filters,
        "filtered": bool(active), "paged": bool(query.get("cursor")),
        "first_url": f"/calls?{urlencode(active)}", "next_url": next_url,
        "export_url": f"/calls/export?{urlencode(active)}",
        "directions": list(params.DIRECTIONS), "statuses": params.STATUSES,
        "error": error}, current=current, status=400 if error else 200)


@router.get("/calls/export")
async def calls_export(request: Request) -> Response:
    """What the page's filters show, every page of it, as CSV (the API's export)."""
    current = await open_page(request)
    require(current, Action.EXPORT)
    filters = _filters(request)
    day_from, day_to = parse_day(filters["from"]), parse_day(filters["to"])
    try:
        checked = json_api.call_filters(
            params.as_direction(filters["direction"] or None),
            params.as_status(filters["status"] or None), filters["leadId"] or None,
            _start_of(day_from),
            _start_of(None if day_to is None else day_to + timedelta(days=1)))
    except InvalidParameter:
        # The page says what is wrong with the filters.
        return redirect(f"/calls?{urlencode({k: v for k, v in filters.items() if v})}")
    return await json_api.export_calls(api_state(request), caller(current), filters=checked,
                                       costs=current.costs, fmt="csv")


@router.get("/calls/{call_id}")
async def call_page(request: Request, call_id: str) -> Response:
    current = await open_page(request)
    try:
        call = await json_api.get_call(api_state(request), current.org_id, call_id)
    except NotFound:
        return render_missing(request, current, what="call", back="/calls")
    connected = shapes.connection(
        await api_state(request).repository.vapi_account(current.org_id)).connected
    breakdown = call.cost_breakdown if isinstance(call.cost_breakdown, dict) else {}
    costs = [(k, v) for k, v in breakdown.items()
             if k in json_api.COST_COMPONENTS and isinstance(v, int | float)]
    return render(request, "call.html", {
        "title": "Call", "nav": "calls", "call": call, "turns": conversation(call.transcript),
        "recording": _player_source(call, connected),
        "costs": costs, "structured": _pretty(call.analysis.structured_data),
        "outputs": [(o.name or o.id, _shown(o.result)) for o in call.structured_outputs]},
        current=current)


def _player_source(call: shapes.CallDetail, connected: bool) -> str | None:
    """The player's same-origin source (the route below): mono, Vapi's combined recording,
    unless only a stereo one is stored and no key can ask Vapi for another."""
    if connected or call.recording.mono_url:
        channel = "mono"
    elif call.recording.stereo_url:
        channel = "stereo"
    else:
        return None
    return f"/calls/{call.id}/recording?{urlencode({'channel': channel})}"


_CHANNELS: tuple[Channel, ...] = ("mono", "stereo", "customer", "assistant")


@router.get("/calls/{call_id}/recording")
async def recording(request: Request, call_id: str) -> Response:
    """The player's source: a redirect to a URL that plays now, as `/api/calls/{id}/recording`
    answers it (303, the dashboard's redirect). No stale-sync check: it is not a page."""
    current = await find_session(request)
    if current is None:
        raise SignInRequired
    require(current, Action.READ)
    channel = request.query_params.get("channel", "mono")
    if channel not in _CHANNELS:
        return PlainTextResponse("Unknown channel.", status_code=400)
    try:
        location = await json_api.recording_location(api_state(request), current.org_id,
                                                      call_id, channel)
    except ApiError as problem:
        return PlainTextResponse(problem.message, status_code=problem.status_code)
    response = redirect(location)
    response.headers["Cache-Control"] = "no-store"
    return response


def _pretty(value: Any) -> str | None:
    return None if value in (None, {}, []) else json.dumps(value, indent=2, ensure_ascii=False)


def _shown(result: Any) -> tuple[str, str]:
    """A structured output's result as the page shows it: ("text", ...) for a value on one
    line (yes/no for a boolean), ("block", ...) for an object or a list, as JSON."""
    if isinstance(result, bool):
        return "text", "Yes" if result else "No"
    if result is None:
        return "text", "—"
    if isinstance(result, dict | list):
        return "block", json.dumps(result, indent=2, ensure_ascii=False)
    return "text", str(result)
