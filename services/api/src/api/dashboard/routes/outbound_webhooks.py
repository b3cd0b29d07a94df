"""Settings, Outbound webhooks (decision 40): the organization's endpoints, a form to make
one (its secret shown in the answer, once), and a page per endpoint to edit, disable or
enable, rotate the secret, delete, and read its delivery log with "Send again". Admins and
owners only (`access.Action.MANAGE_OUTBOUND_WEBHOOKS`): a viewer gets 403 and no link.

An endpoint the dispatcher disabled for failing says so here and on the settings page:
since when it failed, and its last error. Rules and SQL: `calltrail_common.
outbound_endpoints`; the log's pages are the JSON API's (`api.outbound_webhooks`). An id
of another organization answers 404, as an unknown one does.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import outbound_webhooks as json_api
from api import shapes
from api.dashboard.page import (
    PAGE_SIZE,
    Session,
    api_state,
    open_page,
    posted_form,
    redirect,
    render,
    render_missing,
    require,
    signed_in,
)
from api.errors import InvalidParameter
from calltrail_common import audit
from calltrail_common import outbound_endpoints as endpoints
from calltrail_common.access import Action

LIST = "/settings/outbound-webhooks"
EVENT_FIELD = "event."  # a checkbox per event type: `event.call.ended=on`
CONFIRM_DELETE = "yes"

# What each event type is, beside its checkbox (decision 40 says when each happens).
EVENT_HINTS: dict[str, str] = {
    "call.ended": "a call ended",
    "call.updated": "a stored call changed otherwise (its analysis, its cost)",
    "lead.created": "a new caller became a lead",
    "lead.updated": "a lead's name or email changed",
    "usage.day_closed": "a day's usage, once the day is over",
}

router = APIRouter()

_NOTICES = {
    "saved": "Saved.",
    "disabled": "Endpoint disabled: nothing is sent to it until it is enabled again.",
    "enabled": "Endpoint enabled: new events are sent to it again. Deliveries skipped "
               "while it was disabled can be sent again one by one.",
    "sent": "Sent again: the delivery is pending and goes out shortly, with the same "
            "webhook-id.",
    "deleted": "Endpoint deleted, with its delivery log.",
}


def _actor(current: Session) -> audit.Actor:
    return audit.user_actor(current.user_id, current.email)


def _id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _checked(form: dict[str, str]) -> list[str]:
    return [t for t in endpoints.EVENT_TYPES if form.get(EVENT_FIELD + t)]


def _problem(error: endpoints.EndpointError) -> str:
    message = str(error)
    return message[:1].upper() + message[1:] + "."


async def _list_page(request: Request, current: Session, *,
                     made: endpoints.IssuedSecret | None = None, error: str | None = None,
                     form: dict[str, str] | None = None, status: int = 200) -> Response:
    found = await endpoints.list_endpoints(api_state(request).pool, current.org_id)
    return render(request, "outbound_webhooks.html", {
        "title": "Outbound webhooks", "nav": "settings", "endpoints": found, "made": made,
        "event_types": endpoints.EVENT_TYPES, "hints": EVENT_HINTS,
        "event_field": EVENT_FIELD,
        "form": form or {}, "checked": _checked(form) if form else [],
        "max_endpoints": endpoints.MAX_ENDPOINTS_PER_ORGANIZATION,
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        current=current, status=status)


@router.get(LIST)
async def endpoints_page(request: Request) -> Response:
    current = await open_page(request)
    require(current, Action.MANAGE_OUTBOUND_WEBHOOKS)
    return await _list_page(request, current)


@router.post(LIST)
async def create_endpoint(request: Request) -> Response:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_OUTBOUND_WEBHOOKS)
    state = api_state(request)
    async with state.pool.acquire() as connection:
        try:
            made = await endpoints.create(
                connection, current.org_id, url=form.get("url") or "",
                description=form.get("description"), event_types=_checked(form),
                actor=_actor(current),
                allow_private=state.settings.webhooks_allow_private_targets)
        except endpoints.EndpointError as problem:
            status = 409 if isinstance(problem, endpoints.TooManyEndpoints) else 400
            return await _list_page(request, current, error=_problem(problem), form=form,
                                    status=status)
    return await _list_page(request, current, made=made)


async def _endpoint_page(request: Request, current: Session, endpoint_id: str, *,
                         issued: endpoints.IssuedSecret | None = None,
                         error: str | None = None, form: dict[str, str] | None = None,
                         status: int = 200) -> Response:
    wanted = _id(endpoint_id)
    state = api_state(request)
    endpoint = None if wanted is None else await endpoints.get_endpoint(
        state.pool, current.org_id, wanted)
    if endpoint is None:
        return render_missing(request, current, what="endpoint", back=LIST)
    cursor = request.query_params.get("cursor") or None
    log = shapes.OutboundDeliveryPage(deliveries=[], next_cursor=None)
    try:
        log = await json_api.delivery_page(state, current.org_id, endpoint_id,
                                           limit=PAGE_SIZE, cursor=cursor)
    except InvalidParameter:
        error = error or "That page of the delivery log does not exist: showing none."
    return render(request, "outbound_webhook.html", {
        "title": endpoint.description or endpoint.url, "nav": "settings",
        "endpoint": endpoint, "issued": issued, "log": log, "paged": cursor is not None,
        "event_types": endpoints.EVENT_TYPES, "hints": EVENT_HINTS,
        "event_field": EVENT_FIELD,
        "form": form or {"url": endpoint.url, "description": endpoint.description},
        "checked": _checked(form) if form else list(endpoint.event_types),
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        current=current, status=status)


@router.get(LIST + "/{endpoint_id}")
async def endpoint_page(request: Request, endpoint_id: str) -> Response:
    current = await open_page(request)
    require(current, Action.MANAGE_OUTBOUND_WEBHOOKS)
    return await _endpoint_page(request, current, endpoint_id)


async def _managing(request: Request) -> tuple[Session, dict[str, str]]:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_OUTBOUND_WEBHOOKS)
    return current, form


def _missing(request: Request, current: Session) -> Response:
    return render_missing(request, current, what="endpoint", back=LIST)


@router.post(LIST + "/{endpoint_id}")
async def edit_endpoint(request: Request, endpoint_id: str) -> Response:
    current, form = await _managing(request)
    wanted = _id(endpoint_id)
    if wanted is None:
        return _missing(request, current)
    state = api_state(request)
    async with state.pool.acquire() as connection:
        if await endpoints.get_endpoint(connection, current.org_id, wanted) is None:
            return _missing(request, current)
        try:
            changed = await endpoints.update(
                connection, current.org_id, wanted, url=form.get("url") or "",
                description=form.get("description") or "", event_types=_checked(form),
                actor=_actor(current),
                allow_private=state.settings.webhooks_allow_private_targets)
        except endpoints.EndpointError as problem:
            return await _endpoint_page(request, current, endpoint_id, error=_problem(problem),
                                        form=form, status=400)
    if changed is None:
        return _missing(request, current)
    return redirect(f"{LIST}/{wanted}?notice=saved")


@router.post(LIST + "/{endpoint_id}/disable")
async def disable_endpoint(request: Request, endpoint_id: str) -> Response:
    return await _switch(request, endpoint_id, enable=False)


@router.post(LIST + "/{endpoint_id}/enable")
async def enable_endpoint(request: Request, endpoint_id: str) -> Response:
    return await _switch(request, endpoint_id, enable=True)


async def _switch(request: Request, endpoint_id: str, *, enable: bool) -> Response:
    current, _ = await _managing(request)
    wanted = _id(endpoint_id)
    if wanted is None:
        return _missing(request, current)
    change = endpoints.enable if enable else endpoints.disable
    async with api_state(request).pool.acquire() as connection:
        found = await change(connection, current.org_id, wanted, actor=_actor(current))
    if found is None:
        return _missing(request, current)
    return redirect(f"{LIST}/{wanted}?notice={'enabled' if enable else 'disabled'}")


@router.post(LIST + "/{endpoint_id}/rotate-secret")
async def rotate_secret(request: Request, endpoint_id: str) -> Response:
    """The new secret is shown in this answer, never in a URL and never again."""
    current, _ = await _managing(request)
    wanted = _id(endpoint_id)
    if wanted is None:
        return _missing(request, current)
    async with api_state(request).pool.acquire() as connection:
        issued = await endpoints.rotate_secret(connection, current.org_id, wanted,
                                               actor=_actor(current))
    if issued is None:
        return _missing(request, current)
    return await _endpoint_page(request, current, endpoint_id, issued=issued)


@router.post(LIST + "/{endpoint_id}/delete")
async def delete_endpoint(request: Request, endpoint_id: str) -> Response:
    current, form = await _managing(request)
    wanted = _id(endpoint_id)
    if wanted is None:
        return _missing(request, current)
    async with api_state(request).pool.acquire() as connection:
        if await endpoints.get_endpoint(connection, current.org_id, wanted) is None:
            return _missing(request, current)
        if form.get("confirm") != CONFIRM_DELETE:
            return await _endpoint_page(
                request, current, endpoint_id, status=400,
                error="Tick the box to confirm: the endpoint and its delivery log are "
                      "deleted for good.")
        if not await endpoints.delete(connection, current.org_id, wanted,
                                      actor=_actor(current)):
            return _missing(request, current)
    return redirect(f"{LIST}?notice=deleted")


@router.post(LIST + "/{endpoint_id}/deliveries/{delivery_id}/send-again")
async def send_again(request: Request, endpoint_id: str, delivery_id: str) -> Response:
    current, _ = await _managing(request)
    wanted, delivery = _id(endpoint_id), _id(delivery_id)
    if wanted is None or delivery is None:
        return render_missing(request, current, what="delivery", back=LIST)
    async with api_state(request).pool.acquire() as connection:
        try:
            again = await endpoints.send_again(connection, current.org_id, delivery,
                                               endpoint_id=wanted, actor=_actor(current))
        except endpoints.EndpointError as problem:
            return await _endpoint_page(request, current, endpoint_id, status=409,
                                        error=_problem(problem))
    if again is None:
        return render_missing(request, current, what="delivery", back=LIST)
    return redirect(f"{LIST}/{wanted}?notice=sent")
