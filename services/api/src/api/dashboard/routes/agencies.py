"""Agencies on the dashboard: switching between the organizations a person may open, the
Clients roll-up for an agency's people, and an agency's accent colour as a stylesheet (the
CSP allows no inline style)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import rollup
from api import routes as json_api
from api.dashboard.page import (
    Session,
    api_state,
    open_page,
    parse_day,
    posted_form,
    redirect,
    render,
    signed_in,
)
from api.errors import ApiError
from calltrail_common import agencies, people

router = APIRouter()

# (sort key, column heading, numeric)
COLUMNS = [("name", "Client", False), ("calls", "Calls", True), ("minutes", "Minutes", True),
           ("cost", "Cost", True), ("billed", "Billed", True), ("leads", "New leads", True),
           ("success", "Success rate", True)]
BRAND_CACHE_SECONDS = 300


def _not_found(request: Request, current: Session, what: str) -> Response:
    return render(request, "missing.html", {"title": f"{what.capitalize()} not found",
                                            "nav": "", "what": what, "back": "/"},
                  current=current, status=404)


@router.post("/switch")
async def switch(request: Request) -> Response:
    """Look at another organization: one this person may open (a membership, or a client of
    their agency). Any other id answers 404 and changes nothing."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    try:
        org_id = uuid.UUID(form.get("org") or "")
    except ValueError:
        return _not_found(request, current, "organization")
    state = api_state(request)
    if await people.access_to(state.pool, current.user_id, org_id) is None:
        return _not_found(request, current, "organization")
    await state.sessions.switch(current.session_id, org_id)
    return redirect("/")


def _sort_links(start: str, end: str, key: str, descending: bool) -> dict[str, str]:
    """Each column heading's link: by that column, the other way round when it is the one
    sorted by (numbers first descending, names first ascending)."""
    links = {}
    for column, _, numeric in COLUMNS:
        down = not descending if column == key else numeric
        links[column] = "/clients?" + urlencode({"startDate": start, "endDate": end,
                                                 "sort": ("-" if down else "") + column})
    return links


@router.get("/clients")
async def clients(request: Request) -> Response:
    current = await open_page(request)
    agency_id = current.agency_in_view
    if agency_id is None:
        return _not_found(request, current, "page")
    state = api_state(request)
    query = request.query_params
    start, end = parse_day(query.get("startDate")), parse_day(query.get("endDate"))
    error = None
    try:
        overview = await json_api.clients_overview(state, agency_id, start, end,
                                                   query.get("sort") or None)
    except ApiError as problem:
        error = problem.message
        overview = await json_api.clients_overview(state, agency_id, None, None, None)
    key, descending = rollup.parse_sort(overview.sort)
    today, _ = await json_api.organization_day(state, agency_id)
    periods = [(f"{days} days", "/clients?" + urlencode({
        "startDate": (today - timedelta(days=days - 1)).isoformat(),
        "endDate": today.isoformat(), "sort": overview.sort})) for days in (7, 30, 90)]
    return render(request, "clients.html", {
        "title": "Clients", "nav": "clients", "overview": overview, "error": error,
        "columns": COLUMNS, "sorted_by": key, "descending": descending,
        "sort_links": _sort_links(overview.start_date.isoformat(),
                                  overview.end_date.isoformat(), key, descending),
        "periods": periods}, current=current, status=400 if error else 200)


@router.get("/brand/{name}")
async def brand_stylesheet(request: Request, name: str) -> Response:
    """`/brand/<agency id>.css`: the agency's accent as CSS custom properties. Public (the
    sign-in page needs it) and cacheable; the colour is checked again before it is
    written, so nothing but `#rrggbb` reaches the stylesheet."""
    org_id = None
    if name.endswith(".css"):
        try:
            org_id = uuid.UUID(name.removesuffix(".css"))
        except ValueError:
            org_id = None
    brand = None if org_id is None else await agencies.brand_of(api_state(request).pool,
                                                                org_id)
    if brand is None or brand.accent is None or brand.org_id != org_id:
        return Response("/* no such brand */\n", status_code=404, media_type="text/css")
    accent = agencies.parse_accent(brand.accent)
    return Response(f":root {{ --accent: {accent}; --brand-accent: {accent}; }}\n",
                    media_type="text/css",
                    headers={"Cache-Control": f"public, max-age={BRAND_CACHE_SECONDS}"})
