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
    open_page,
    parse_day,
    render,
    render_missing,
)
from api.dashboard.transcripts import conversation
from api.errors import ApiError, InvalidParameter, NotFound

router = APIRouter()

# The page's words for a filter the API's rules refuse (`params.as_direction`, `as_status`).
_REFUSED_FILTER = {"direction": "Unknown direction.", "status": "Unknown status."}


def _start_of(day: date | None) -> datetime | None:
    return None if day is None else datetime.combine(day, time(), UTC)


@router.get("/calls")
async def calls(request: Request) -> Response:
    current = await open_page(request)
    query = request.query_params
    direction = query.get("direction") or None
    status = query.get("status") or None
    lead_id = query.get("leadId") or None
    day_from, day_to = parse_day(query.get("from")), parse_day(query.get("to"))
    filters = {"direction": direction or "", "status": status or "", "leadId": lead_id or "",
               "from": day_from.isoformat() if day_from else "",
               "to": day_to.isoformat() if day_to else ""}
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
        "directions": list(params.DIRECTIONS), "statuses": params.STATUSES,
        "error": error}, current=current, status=400 if error else 200)


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
