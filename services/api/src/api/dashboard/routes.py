"""The dashboard's pages. Each page calls the JSON API's own handlers (`api.routes`), so a
figure on a page is the figure `/api/...` answers: one query path, not two. This module only
reads the browser's parameters, keeps the session and CSRF rules, and picks a template.

An `ApiError` from a handler (a bad date, an unknown id) is shown on the page with its
status; it never carries a key or a token (see `api.errors`).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from api import params, shapes
from api import routes as json_api
from api.dashboard import charts, formats, session
from api.dashboard.transcripts import conversation
from api.errors import ApiError, InvalidApiKey, NotConnected, NotFound, VapiUnavailable
from api.routes import ApiState
from calltrail_common import vapi_accounts
from calltrail_common.logging import get_logger
from calltrail_common.organizations import webhook_url

log = get_logger("api.dashboard")

PAGE_SIZE = 25
MAX_FORM_BYTES = 8192
SYNC_REFRESH_SECONDS = 2
PERIODS = (7, 30, 90)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(formats.FILTERS)

router = APIRouter(include_in_schema=False)


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""


class CsrfRejected(Exception):
    """A POST without the form's CSRF token: 403."""


@dataclass(frozen=True)
class Session:
    org_id: uuid.UUID
    token: str


def _state(request: Request) -> ApiState:
    state: ApiState = request.state.api
    return state


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _session(request: Request) -> Session | None:
    token = session.session_token(request.cookies.get(session.SESSION_COOKIE))
    if token is None:
        return None
    org_id = await _state(request).repository.org_of_token(token)
    return None if org_id is None else Session(org_id, token)


async def _signed_in(request: Request) -> Session:
    found = await _session(request)
    if found is None:
        raise SignInRequired
    return found


def _render(request: Request, name: str, context: dict[str, Any], *,
            token: str | None, status: int = 200) -> Response:
    nonce = request.cookies.get(session.CSRF_COOKIE) or session.new_nonce()
    context = {"signed_in": token is not None, "csrf": session.csrf_token(nonce, token),
               "error": None, "notice": None, "refresh": None, **context}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if request.cookies.get(session.CSRF_COOKIE) != nonce:
        response.set_cookie(session.CSRF_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=_secure(request), path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _form(request: Request, token: str | None) -> dict[str, str]:
    """The posted form's fields, after its CSRF token was checked against the session."""
    body = await request.body()
    fields = parse_qs(body[:MAX_FORM_BYTES].decode(errors="replace"), max_num_fields=10)
    form = {name: values[0] for name, values in fields.items()}
    if not session.csrf_valid(request.cookies.get(session.CSRF_COOKIE), token,
                              form.get(session.CSRF_FIELD)):
        raise CsrfRejected
    return form


async def _sync_if_stale(state: ApiState, org_id: uuid.UUID) -> None:
    """Opening the dashboard asks for a sync when the last one is older than the interval
    and none is waiting (`vapi_accounts.request_sync_if_stale`)."""
    sync_id = await vapi_accounts.request_sync_if_stale(
        state.pool, org_id, interval_seconds=state.settings.sync_interval_seconds,
        trigger="dashboard")
    if sync_id is not None:
        await state.commands.publish_sync(org_id, sync_id)
        log.info("dashboard_sync_requested", org_id=str(org_id), sync_id=str(sync_id))


async def _page(request: Request) -> Session:
    """Every page: the session, then the stale-sync check."""
    current = await _signed_in(request)
    await _sync_if_stale(_state(request), current.org_id)
    return current


def _date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _period(request: Request) -> tuple[date | None, date | None, str | None]:
    raw_start, raw_end = request.query_params.get("startDate"), request.query_params.get(
        "endDate")
    start, end = _date(raw_start), _date(raw_end)
    if (raw_start and start is None) or (raw_end and end is None):
        return None, None, "Dates are written YYYY-MM-DD; showing the last 30 days."
    return start, end, None


def _period_links(path: str) -> list[tuple[str, str]]:
    today = datetime.now(UTC).date()
    return [(f"{days} days", f"{path}?" + urlencode({
        "startDate": (today - timedelta(days=days - 1)).isoformat(),
        "endDate": today.isoformat()})) for days in PERIODS]


# --- sign in and out --------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await _session(request) is not None:
        return _redirect("/")
    response = _render(request, "login.html", {"title": "Sign in"}, token=None)
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request, session.session_token(
        request.cookies.get(session.SESSION_COOKIE)))
    token = session.session_token(form.get("token"))
    org_id = None if token is None else await _state(request).repository.org_of_token(token)
    if token is None or org_id is None:
        response = _render(request, "login.html", {
            "title": "Sign in", "error": "That token is not valid, or it was revoked."},
            token=None, status=401)
        response.delete_cookie(session.SESSION_COOKIE, path="/")
        return response
    response = _redirect("/")
    response.set_cookie(session.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=_secure(request), path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await _form(request, session.session_token(request.cookies.get(session.SESSION_COOKIE)))
    response = _redirect("/login")
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    return response


# --- overview and usage -----------------------------------------------------------------


def _daily_labels(days: list[date]) -> list[str]:
    return [d.strftime("%b %-d") for d in days]


@router.get("/")
async def overview(request: Request) -> Response:
    current = await _page(request)
    start, end, error = _period(request)
    state = _state(request)
    try:
        stats = await json_api.stats_overview(state, current.org_id, start, end)
    except ApiError as problem:
        error = problem.message
        stats = await json_api.stats_overview(state, current.org_id, None, None)
    labels = _daily_labels([d.date for d in stats.daily])
    ended = stats.ended_reasons
    outcomes = [("Completed", ended.completed), ("Voicemail", ended.voicemail),
                ("No answer", ended.no_answer), ("Busy", ended.busy),
                ("Failed", ended.failed), ("Other", ended.other)]
    return _render(request, "overview.html", {
        "title": "Overview", "nav": "overview", "stats": stats, "error": error,
        "periods": _period_links("/"),
        "calls_chart": charts.bar_chart([d.calls for d in stats.daily], labels,
                                        unit=" calls", whole=True),
        "outcomes": outcomes, "outcomes_total": sum(n for _, n in outcomes)},
        token=current.token)


@router.get("/usage")
async def usage(request: Request) -> Response:
    current = await _page(request)
    start, end, error = _period(request)
    state = _state(request)
    try:
        metrics = await json_api.usage_metrics(state, current.org_id, start, end)
    except ApiError as problem:
        error = problem.message
        metrics = await json_api.usage_metrics(state, current.org_id, None, None)
    account = await json_api.get_connection(state, current.org_id)
    labels = _daily_labels([d.date for d in metrics.daily])
    return _render(request, "usage.html", {
        "title": "Usage and billing", "nav": "usage", "metrics": metrics, "error": error,
        "account": account, "periods": _period_links("/usage"),
        "minutes_chart": charts.bar_chart([d.minutes for d in metrics.daily], labels,
                                          unit=" min", fmt="{:,.1f}"),
        "cost_chart": charts.bar_chart([d.cost for d in metrics.daily], labels,
                                       fmt="${:,.2f}"),
        "components": sorted(metrics.cost_by_component.items(), key=lambda kv: -kv[1])},
        token=current.token)


# --- calls and leads --------------------------------------------------------------------


@router.get("/calls")
async def calls(request: Request) -> Response:
    current = await _page(request)
    query = request.query_params
    direction = query.get("direction") or None
    status = query.get("status") or None
    lead_id = query.get("leadId") or None
    day_from, day_to = _date(query.get("from")), _date(query.get("to"))
    filters = {"direction": direction or "", "status": status or "", "leadId": lead_id or "",
               "from": day_from.isoformat() if day_from else "",
               "to": day_to.isoformat() if day_to else ""}
    error = None
    page = shapes.CallPage(calls=[], next_cursor=None)
    if direction is not None and direction not in params.DIRECTIONS:
        error = "Unknown direction."
    elif status is not None and status not in params.STATUSES:
        error = "Unknown status."
    else:
        try:
            page = await json_api.list_calls(
                _state(request), current.org_id, limit=PAGE_SIZE,
                cursor=query.get("cursor") or None,
                direction=direction,  # type: ignore[arg-type]  # checked above
                status=status,  # type: ignore[arg-type]
                lead_id=lead_id,
                created_from=None if day_from is None else datetime.combine(
                    day_from, time(), UTC),
                created_to=None if day_to is None else datetime.combine(
                    day_to + timedelta(days=1), time(), UTC))
        except ApiError as problem:
            error = problem.message
    active = {k: v for k, v in filters.items() if v}
    next_url = (f"/calls?{urlencode({**active, 'cursor': page.next_cursor})}"
                if page.next_cursor else None)
    return _render(request, "calls.html", {
        "title": "Calls", "nav": "calls", "page": page, "filters": filters,
        "filtered": bool(active), "paged": bool(query.get("cursor")),
        "first_url": f"/calls?{urlencode(active)}", "next_url": next_url,
        "directions": list(params.DIRECTIONS), "statuses": params.STATUSES,
        "error": error}, token=current.token, status=400 if error else 200)


@router.get("/calls/{call_id}")
async def call_page(request: Request, call_id: str) -> Response:
    current = await _page(request)
    try:
        call = await json_api.get_call(_state(request), current.org_id, call_id)
    except NotFound:
        return _render(request, "missing.html", {"title": "Call not found", "nav": "calls",
                                                 "what": "call", "back": "/calls"},
                       token=current.token, status=404)
    breakdown = call.cost_breakdown if isinstance(call.cost_breakdown, dict) else {}
    costs = [(k, v) for k, v in breakdown.items()
             if k in json_api.COST_COMPONENTS and isinstance(v, int | float)]
    return _render(request, "call.html", {
        "title": "Call", "nav": "calls", "call": call, "turns": conversation(call.transcript),
        "recording": call.recording.stereo_url or call.recording.mono_url,
        "costs": costs, "structured": _pretty(call.analysis.structured_data)},
        token=current.token)


def _pretty(value: Any) -> str | None:
    return None if value in (None, {}, []) else json.dumps(value, indent=2, ensure_ascii=False)


@router.get("/leads")
async def leads(request: Request) -> Response:
    current = await _page(request)
    q = (request.query_params.get("q") or "").strip()[:params.MAX_SEARCH_LENGTH]
    cursor = request.query_params.get("cursor") or None
    error = None
    page = shapes.LeadPage(leads=[], next_cursor=None)
    try:
        page = await json_api.list_leads(_state(request), current.org_id, limit=PAGE_SIZE,
                                         cursor=cursor, q=q or None)
    except ApiError as problem:
        error = problem.message
    base = {"q": q} if q else {}
    next_url = (f"/leads?{urlencode({**base, 'cursor': page.next_cursor})}"
                if page.next_cursor else None)
    return _render(request, "leads.html", {
        "title": "Leads", "nav": "leads", "page": page, "q": q, "next_url": next_url,
        "first_url": f"/leads?{urlencode(base)}", "paged": cursor is not None,
        "error": error}, token=current.token, status=400 if error else 200)


@router.get("/leads/{lead_id}")
async def lead_page(request: Request, lead_id: str) -> Response:
    current = await _page(request)
    try:
        lead = await json_api.get_lead(_state(request), current.org_id, lead_id)
    except NotFound:
        return _render(request, "missing.html", {"title": "Lead not found", "nav": "leads",
                                                 "what": "lead", "back": "/leads"},
                       token=current.token, status=404)
    return _render(request, "lead.html", {"title": lead.name or lead.phone_number,
                                          "nav": "leads", "lead": lead}, token=current.token)


# --- settings ---------------------------------------------------------------------------

_NOTICES = {"connected": "Vapi account connected. Its first sync shows under Latest run.",
            "disconnected": "Vapi account disconnected; its key is deleted.",
            "sync": "Sync requested."}


async def _settings_page(request: Request, current: Session, *, error: str | None = None,
                         status: int = 200) -> Response:
    state = _state(request)
    account = await json_api.get_connection(state, current.org_id)
    run = None
    wanted = request.query_params.get("sync")
    if wanted:
        try:
            run = await json_api.sync_run(state, current.org_id, wanted)
        except NotFound:
            run = None
    latest = await state.repository.latest_sync_run(current.org_id)
    if run is None and latest is not None:
        run = shapes.sync_run(latest)
    endpoint = await state.repository.webhook_endpoint(current.org_id)
    in_progress = run is not None and run.status in ("queued", "running")
    return _render(request, "settings.html", {
        "title": "Settings", "nav": "settings", "account": account, "run": run,
        "refresh": SYNC_REFRESH_SECONDS if in_progress else None,
        "webhook_url": None if endpoint is None else webhook_url(
            state.settings.public_base_url, endpoint["id"]),
        "webhook_secret": None if endpoint is None else endpoint["secret"],
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        token=current.token, status=status)


@router.get("/settings")
async def settings_page(request: Request) -> Response:
    return await _settings_page(request, await _page(request))


@router.post("/settings/connect")
async def connect(request: Request) -> Response:
    current = await _signed_in(request)
    form = await _form(request, current.token)
    try:
        body = shapes.ConnectRequest(api_key=(form.get("apiKey") or "").strip())
    except ValidationError:
        return await _settings_page(request, current, status=400, error=(
            "That is not a Vapi API key: paste the private key from Vapi's dashboard "
            "(Organization settings, API keys)."))
    try:
        connected = await json_api.connect(_state(request), current.org_id, body)
    except (InvalidApiKey, VapiUnavailable) as problem:
        return await _settings_page(request, current, error=problem.message,
                                    status=problem.status_code)
    sync = f"&sync={connected.sync_id}" if connected.sync_id else ""
    return _redirect(f"/settings?notice=connected{sync}")


@router.post("/settings/disconnect")
async def disconnect(request: Request) -> Response:
    current = await _signed_in(request)
    await _form(request, current.token)
    await json_api.disconnect(_state(request), current.org_id)
    return _redirect("/settings?notice=disconnected")


@router.post("/settings/sync")
async def sync_now(request: Request) -> Response:
    current = await _signed_in(request)
    await _form(request, current.token)
    try:
        queued = await json_api.sync_now(_state(request), current.org_id, None)
    except NotConnected:
        return await _settings_page(request, current, status=409,
                                    error="Connect a Vapi account first.")
    return _redirect(f"/settings?notice=sync&sync={queued.sync_id}")
