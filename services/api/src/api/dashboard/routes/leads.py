"""Leads, searched by name, email or number, and one lead with its calls; "Erase this
caller" (owners and admins, confirmed on the form: decision 44)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import params, shapes
from api import routes as json_api
from api.dashboard.page import (
    PAGE_SIZE,
    Session,
    api_state,
    caller,
    open_page,
    posted_form,
    redirect,
    render,
    render_missing,
    require,
    signed_in,
)
from api.errors import ApiError, NotFound
from calltrail_common.access import Action
from calltrail_common.erasure import ERASED_NUMBER_PREFIX

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
    return await _lead(request, current, lead)


async def _lead(request: Request, current: Session, lead: shapes.LeadDetail, *,
                error: str | None = None, status: int = 200) -> Response:
    erased = lead.phone_number.startswith(ERASED_NUMBER_PREFIX)
    notice = "This caller was erased: the calls keep only their counts, minutes and costs." \
        if erased else None
    return render(request, "lead.html", {
        "title": "Erased caller" if erased else lead.name or lead.phone_number,
        "nav": "leads", "lead": lead, "erased": erased, "notice": notice, "error": error},
        current=current, status=status)


@router.post("/leads/{lead_id}/erase")
async def erase(request: Request, lead_id: str) -> Response:
    """Erase the lead's caller; the form's `confirm` box must be ticked."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.ERASE_PERSONAL_DATA)
    state = api_state(request)
    try:
        lead = await json_api.get_lead(state, current.org_id, lead_id)
    except NotFound:
        return render_missing(request, current, what="lead", back="/leads")
    if form.get("confirm") != "erase":
        return await _lead(request, current, lead, status=400,
                           error="Tick the box to confirm: erasing cannot be undone.")
    await json_api.erase_caller(state, caller(current), lead.id)
    return redirect(f"/leads/{lead.id}")
