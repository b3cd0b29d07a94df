"""The organization's webhook: its address, its secret (admins and owners only), and the
secret's rotation with an overlap in which both are accepted, or the previous secret's
revocation (owners only). Every change is written to the audit log, never the secret."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard.page import (
    Session,
    api_state,
    open_page,
    posted_form,
    redirect,
    render,
    require,
    signed_in,
)
from calltrail_common import audit
from calltrail_common.access import Action, may
from calltrail_common.organizations import (
    NoWebhookEndpoint,
    revoke_previous,
    rotate,
    secret_status,
    webhook_url,
)

router = APIRouter()

# What the rotation form offers, in hours (0: the replaced secret is refused at once).
OVERLAPS = {"0": 0, "1": 1, "24": 24, "168": 168}
_NOTICES = {
    "rotated": "New secret issued: set it on your Vapi credential before the old one ends.",
    "revoked": "The previous secret is no longer accepted.",
    "nothing": "No previous secret was still accepted.",
}


async def _page(request: Request, current: Session) -> Response:
    state = api_state(request)
    endpoint = await state.repository.webhook_endpoint(current.org_id)
    status = None
    if endpoint is not None:
        async with state.pool.acquire() as connection:
            try:
                status = await secret_status(connection, current.org_id)
            except NoWebhookEndpoint:
                status = None
    see_secret = may(current.role, Action.SEE_SECRETS)
    return render(request, "webhook.html", {
        "title": "Webhook", "nav": "settings", "status": status,
        "webhook_url": None if endpoint is None else webhook_url(
            state.settings.public_base_url, endpoint["id"]),
        "webhook_secret": endpoint["secret"] if endpoint is not None and see_secret else None,
        "may_rotate": may(current.role, Action.MANAGE_SECRET), "overlaps": OVERLAPS,
        "notice": _NOTICES.get(request.query_params.get("notice") or "")},
        current=current)


@router.get("/settings/webhook")
async def webhook_page(request: Request) -> Response:
    return await _page(request, await open_page(request))


async def _owner_form(request: Request) -> tuple[Session, dict[str, str]]:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_SECRET)
    return current, form


@router.post("/settings/webhook/rotate")
async def rotate_secret(request: Request) -> Response:
    current, form = await _owner_form(request)
    hours = OVERLAPS.get(form.get("overlapHours") or "24", 24)
    state = api_state(request)
    async with state.pool.acquire() as connection, connection.transaction():
        rotated = await rotate(connection, current.org_id, dt.timedelta(hours=hours))
        await audit.record(connection, current.org_id,
                           audit.user_actor(current.user_id, current.email),
                           "webhook_secret.rotated", rotated.endpoint_id,
                           {"overlapSeconds": hours * 3600})
    return redirect("/settings/webhook?notice=rotated")


@router.post("/settings/webhook/revoke")
async def revoke_previous_secret(request: Request) -> Response:
    current, _ = await _owner_form(request)
    state = api_state(request)
    async with state.pool.acquire() as connection, connection.transaction():
        revoked = await revoke_previous(connection, current.org_id)
        if revoked:
            await audit.record(connection, current.org_id,
                               audit.user_actor(current.user_id, current.email),
                               "webhook_secret.previous_revoked")
    return redirect(f"/settings/webhook?notice={'revoked' if revoked else 'nothing'}")
