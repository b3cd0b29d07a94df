"""Following an invitation link: choose a password (when the person has none yet), become
a member with the role the link gives, and be signed in. A link works once, until it
expires; a used, expired or made-up one says so and grants nothing."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard.page import (
    api_state,
    posted_form,
    redirect,
    render,
    start_session,
)
from calltrail_common import people

router = APIRouter()

INVALID = ("This link is not valid: it was already used, it expired, or it was never made. "
           "Ask for a new one.")


def _page(request: Request, token: str, link: people.OpenLink | None, *,
          error: str | None = None, status: int = 200) -> Response:
    return render(request, "invite.html", {
        "title": "Join Calltrail", "token": token, "link": link,
        "error": error if link is not None else INVALID},
        current=None, status=status if link is not None else 404)


@router.get("/invite/{token}")
async def invite_page(request: Request, token: str) -> Response:
    link = await people.open_link(api_state(request).pool, token, "invite")
    return _page(request, token, link)


@router.post("/invite/{token}")
async def accept_invite(request: Request, token: str) -> Response:
    form = await posted_form(request, None)
    state = api_state(request)
    link = await people.open_link(state.pool, token, "invite")
    if link is None:
        return _page(request, token, None)
    password = form.get("password") or None
    if password is not None and password != form.get("confirm"):
        return _page(request, token, link, error="The two passwords differ.", status=400)
    if link.user.has_password:
        password = None  # an existing account joins; its password is not changed here
    try:
        async with state.pool.acquire() as connection:
            used = await people.use_link(connection, token, "invite", password)
    except people.PeopleError as error:
        return _page(request, token, link, error=str(error).capitalize() + ".", status=400)
    if link.user.has_password:
        return redirect("/login")  # they prove who they are with their own password
    assert used.org_id is not None
    return await start_session(request, used.user.id, used.org_id)
