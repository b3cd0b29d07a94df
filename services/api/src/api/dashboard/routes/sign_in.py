"""Signing in with an organization API token, and out."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard import session
from api.dashboard.page import api_state, find_session, posted_form, redirect, render, secure

router = APIRouter()


@router.get("/login")
async def login_page(request: Request) -> Response:
    if await find_session(request) is not None:
        return redirect("/")
    response = render(request, "login.html", {"title": "Sign in"}, token=None)
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    return response


@router.post("/login")
async def login(request: Request) -> Response:
    form = await posted_form(request, session.session_token(
        request.cookies.get(session.SESSION_COOKIE)))
    token = session.session_token(form.get("token"))
    org_id = None if token is None else await api_state(request).repository.org_of_token(token)
    if token is None or org_id is None:
        response = render(request, "login.html", {
            "title": "Sign in", "error": "That token is not valid, or it was revoked."},
            token=None, status=401)
        response.delete_cookie(session.SESSION_COOKIE, path="/")
        return response
    response = redirect("/")
    response.set_cookie(session.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=secure(request), path="/")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await posted_form(request, session.session_token(
        request.cookies.get(session.SESSION_COOKIE)))
    response = redirect("/login")
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    return response
