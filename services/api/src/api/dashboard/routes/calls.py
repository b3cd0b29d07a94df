"""Call history with its filters, and one call: transcript, summary, recording, costs."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import params, shapes
from api import routes as json_api
from api.dashboard.page import (
    PAGE_SIZE,
    api_state,
    caller,
    open_page,
    parse_day,
    redirect,
    render,
    render_missing,
    require,
)
from api.dashboard.transcripts import conversation
from api.errors import ApiError, InvalidParameter, NotFound
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
    breakdown = call.cost_breakdown if isinstance(call.cost_breakdown, dict) else {}
    costs = [(k, v) for k, v in breakdown.items()
             if k in json_api.COST_COMPONENTS and isinstance(v, int | float)]
    return render(request, "call.html", {
        "title": "Call", "nav": "calls", "call": call, "turns": conversation(call.transcript),
        "recording": call.recording.stereo_url or call.recording.mono_url,
        "costs": costs, "structured": _pretty(call.analysis.structured_data)},
        current=current)


def _pretty(value: Any) -> str | None:
    return None if value in (None, {}, []) else json.dumps(value, indent=2, ensure_ascii=False)
