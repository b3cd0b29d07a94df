"""Settings: connect or disconnect the Vapi account, "Sync now" and the latest run, the
organization's webhook address, its phone-number conflicts and its outbound webhook
endpoints the dispatcher disabled for failing. Everyone reads; the actions
need the role `calltrail_common.access` gives them, and each is written to the audit log
(connect and disconnect by the JSON API's handlers, with the person as actor)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api import routes as json_api
from api import shapes
from api.dashboard.page import (
    Session,
    api_state,
    caller,
    open_page,
    posted_form,
    redirect,
    render,
    require,
    signed_in,
)
from api.errors import (
    InvalidApiKey,
    InvalidParameter,
    NotConnected,
    NotFound,
    VapiUnavailable,
)
from calltrail_common import audit, erasure, outbound_endpoints, phone_numbers
from calltrail_common.access import Action, may
from calltrail_common.organizations import webhook_url

SYNC_REFRESH_SECONDS = 2

router = APIRouter()

_NOTICES = {"connected": "Vapi account connected. Its first sync shows under Latest run.",
            "disconnected": "Vapi account disconnected; its key is deleted.",
            "time-zone": "Time zone saved. The figures are rebuilt for it in the background.",
            "sync": "Sync requested.",
            "retention": "Saved: older content is purged within a day; the figures stay."}


def _actor(current: Session) -> audit.Actor:
    return audit.user_actor(current.user_id, current.email)


async def _settings_page(request: Request, current: Session, *, error: str | None = None,
                         status: int = 200) -> Response:
    state = api_state(request)
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
    async with state.pool.acquire() as connection:
        number_conflicts = await phone_numbers.conflicts(connection, current.org_id, limit=50)
    # The dispatcher's notice: endpoints it disabled for failing, to whoever manages them.
    failing = [e for e in await outbound_endpoints.list_endpoints(state.pool, current.org_id)
               if e.disabled_for_failing] \
        if may(current.role, Action.MANAGE_OUTBOUND_WEBHOOKS) else []
    in_progress = run is not None and run.status in ("queued", "running")
    zone = await json_api.get_time_zone(state, current.org_id)
    return render(request, "settings.html", {
        "title": "Settings", "nav": "settings", "account": account, "run": run,
        "refresh": SYNC_REFRESH_SECONDS if in_progress else None,
        "webhook_url": None if endpoint is None else webhook_url(
            state.settings.public_base_url, endpoint["id"]),
        "number_conflicts": number_conflicts, "failing_endpoints": failing, "zone": zone,
        "retention": (await json_api.get_retention(state, current.org_id))
        .content_retention_days,
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        current=current, status=status)


@router.get("/settings")
async def settings_page(request: Request) -> Response:
    return await _settings_page(request, await open_page(request))


@router.post("/settings/connect")
async def connect(request: Request) -> Response:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_VAPI_KEY)
    try:
        body = shapes.ConnectRequest(api_key=(form.get("apiKey") or "").strip())
    except ValidationError:
        return await _settings_page(request, current, status=400, error=(
            "That is not a Vapi API key: paste the private key from Vapi's dashboard "
            "(Organization settings, API keys)."))
    try:
        connected = await json_api.connect(api_state(request), caller(current), body)
    except (InvalidApiKey, VapiUnavailable) as problem:
        return await _settings_page(request, current, error=problem.message,
                                    status=problem.status_code)
    sync = f"&sync={connected.sync_id}" if connected.sync_id else ""
    return redirect(f"/settings?notice=connected{sync}")


@router.post("/settings/disconnect")
async def disconnect(request: Request) -> Response:
    current = await signed_in(request)
    await posted_form(request, current)
    require(current, Action.MANAGE_VAPI_KEY)
    await json_api.disconnect(api_state(request), caller(current))
    return redirect("/settings?notice=disconnected")


@router.post("/settings/sync")
async def sync_now(request: Request) -> Response:
    current = await signed_in(request)
    await posted_form(request, current)
    require(current, Action.SYNC)
    try:
        queued = await json_api.sync_now(api_state(request), current.org_id, None)
    except NotConnected:
        return await _settings_page(request, current, status=409,
                                    error="Connect a Vapi account first.")
    await audit.record(api_state(request).pool, current.org_id, _actor(current),
                       "vapi.sync_requested", str(queued.sync_id))
    return redirect(f"/settings?notice=sync&sync={queued.sync_id}")


@router.post("/settings/time-zone")
async def set_time_zone(request: Request) -> Response:
    """The organization's time zone (decision 45): its figures are rebuilt for it."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.SET_TIME_ZONE)
    try:
        body = shapes.TimeZoneRequest(time_zone=(form.get("timeZone") or "").strip())
        await json_api.set_time_zone(api_state(request), caller(current), body)
    except ValidationError:
        return await _settings_page(request, current, status=400, error=(
            "Give an IANA time zone name, such as Europe/Paris or UTC."))
    except InvalidParameter as problem:
        return await _settings_page(request, current, status=400, error=problem.message)
    return redirect("/settings?notice=time-zone")


@router.post("/settings/retention")
async def retention(request: Request) -> Response:
    """How long transcripts, recordings and archived raw events are kept: `days`, empty for
    forever (decision 44)."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.ERASE_PERSONAL_DATA)
    try:
        days = erasure.parse_retention(form.get("days"))
    except ValueError as problem:
        return await _settings_page(request, current, status=400,
                                    error=f"{str(problem).capitalize()}.")
    await json_api.choose_retention(api_state(request), caller(current), days)
    return redirect("/settings?notice=retention")
