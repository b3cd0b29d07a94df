"""Settings for machines and records: the organization's API tokens (make one, shown once;
revoke one) and its audit log. Admins and owners only (`access.Action.MANAGE_TOKENS`,
`READ_AUDIT`): a viewer gets 403 and sees no link to them.

A new token is shown in the answer to the POST that made it, never in a URL and never again.
A token id of another organization answers 404, as an unknown one does.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard.page import (
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
from calltrail_common import audit, organizations
from calltrail_common.access import Action

AUDIT_ENTRIES = 100

router = APIRouter()

_NOTICES = {"revoked": "Token revoked: it stops working at its next request."}


async def _tokens_page(request: Request, current: Session, *,
                       made: organizations.NewToken | None = None, error: str | None = None,
                       status: int = 200) -> Response:
    tokens = await organizations.list_tokens(api_state(request).pool, current.org_id)
    return render(request, "tokens.html", {
        "title": "API tokens", "nav": "settings", "tokens": tokens, "made": made,
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        current=current, status=status)


@router.get("/settings/tokens")
async def tokens_page(request: Request) -> Response:
    current = await open_page(request)
    require(current, Action.MANAGE_TOKENS)
    return await _tokens_page(request, current)


@router.post("/settings/tokens")
async def create_token(request: Request) -> Response:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_TOKENS)
    try:
        name = organizations.token_name(form.get("name"))
    except organizations.InvalidTokenName as problem:
        return await _tokens_page(request, current, error=str(problem).capitalize() + ".",
                                  status=400)
    async with api_state(request).pool.acquire() as connection:
        made = await organizations.create_token(
            connection, current.org_id, name=name, via="dashboard",
            actor=audit.user_actor(current.user_id, current.email))
    return await _tokens_page(request, current, made=made)


@router.post("/settings/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    current = await signed_in(request)
    await posted_form(request, current)
    require(current, Action.MANAGE_TOKENS)
    try:
        wanted = uuid.UUID(token_id)
    except ValueError:
        wanted = None
    revoked = False
    if wanted is not None:
        async with api_state(request).pool.acquire() as connection:
            revoked = await organizations.revoke_token(
                connection, wanted, org_id=current.org_id,
                actor=audit.user_actor(current.user_id, current.email))
    if not revoked:
        return render_missing(request, current, what="token", back="/settings/tokens")
    return redirect("/settings/tokens?notice=revoked")


@router.get("/settings/audit")
async def audit_page(request: Request) -> Response:
    current = await open_page(request)
    require(current, Action.READ_AUDIT)
    entries = await audit.entries(api_state(request).pool, current.org_id, AUDIT_ENTRIES)
    return render(request, "audit.html", {"title": "Audit log", "nav": "settings",
                                          "entries": entries}, current=current)
