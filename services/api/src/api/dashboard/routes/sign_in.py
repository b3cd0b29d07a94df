"""Signing in with email and password, and out.

Signing in starts a new server-side session (any session id the browser held is ended,
never kept) and replaces the CSRF nonce; signing out ends the session server-side, so the
old cookie opens nothing even if it was copied.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import session
from api.dashboard.page import (
    api_state,
    cookies,
    find_session,
    posted_form,
    redirect,
    render,
    session_id,
    set_csrf_nonce,
    set_session_cookie,
)
from calltrail_common import agencies, people

router = APIRouter()

WRONG = "That email and password do not match an account."
NO_ORGANIZATION = ("You have no organization to open: ask its owner or admin for a new "
                   "invitation.")


async def _login_page(request: Request, *, error: str | None = None, status: int = 200,
                      email: str = "") -> Response:
    # On an agency's own host name the sign-in page carries the agency's branding.
    brand = await agencies.brand_for_host(api_state(request).pool,
                                          agencies.host_of(request.headers.get("host")))
    response = render(request, "login.html", {"title": "Sign in", "error": error,
                                              "email": email, "brand": brand},
                      current=None, status=status)
    response.delete_cookie(cookies(request).session, path="/")
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await find_session(request) is not None:
        return redirect("/")
    return await _login_page(request)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await posted_form(request, None)
    email = (form.get("email") or "").strip()[:people.MAX_EMAIL_LENGTH]
    state = api_state(request)
    user = await people.authenticate(state.pool, email, form.get("password") or "")
    if user is None:
        return await _login_page(request, error=WRONG, status=401, email=email)
    orgs = await people.accessible(state.pool, user.id)
    if not orgs:
        return await _login_page(request, error=NO_ORGANIZATION, status=403, email=email)
    new_id = await state.sessions.start(user.id, orgs[0].org_id, replacing=session_id(request))
    response = redirect("/")
    set_session_cookie(request, response, new_id)
    set_csrf_nonce(request, response, session.new_nonce())
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    current = await find_session(request)
    await posted_form(request, current)
    await api_state(request).sessions.end(session_id(request))
    response = redirect("/login")
    response.delete_cookie(cookies(request).session, path="/")
    return response
