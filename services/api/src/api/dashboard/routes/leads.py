"""Leads, searched by name, email or number, and one lead with its calls."""

from __future__ import annotations

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
    render,
    render_missing,
    require,
)
from api.errors import ApiError, NotFound
from calltrail_common.access import Action

router = APIRouter()


@router.get("/leads")
async def leads(request: Request) -> Response:
    current = await open_page(request)
    q = (request.query_params.get("q") or "").strip()[:params.MAX_SEARCH_LENGTH]
    cursor = request.query_params.get("cursor") or None
    error = None
    page = shapes.LeadPage(leads=[], next_cursor=None)
    try:
        page = await json_api.list_leads(api_state(request), current.org_id, limit=PAGE_SIZE,
                                         cursor=cursor, q=q or None)
    except ApiError as problem:
        error = problem.message
    base = {"q": q} if q else {}
    next_url = (f"/leads?{urlencode({**base, 'cursor': page.next_cursor})}"
                if page.next_cursor else None)
    return render(request, "leads.html", {
        "title": "Leads", "nav": "leads", "page": page, "q": q, "next_url": next_url,
        "first_url": f"/leads?{urlencode(base)}", "paged": cursor is not None,
        "export_url": f"/leads/export?{urlencode(base)}",
        "error": error}, current=current, status=400 if error else 200)


@router.get("/leads/export")
async def leads_export(request: Request) -> Response:
    """The leads the search finds, every page of them, as CSV (the API's export)."""
    current = await open_page(request)
    require(current, Action.EXPORT)
    q = (request.query_params.get("q") or "").strip()[:params.MAX_SEARCH_LENGTH]
    return await json_api.export_leads(api_state(request), caller(current), q=q or None,
                                       fmt="csv")


@router.get("/leads/{lead_id}")
async def lead_page(request: Request, lead_id: str) -> Response:
    current = await open_page(request)
    try:
        lead = await json_api.get_lead(api_state(request), current.org_id, lead_id)
    except NotFound:
        return render_missing(request, current, what="lead", back="/leads")
    return render(request, "lead.html", {"title": lead.name or lead.phone_number,
                                         "nav": "leads", "lead": lead}, current=current)
