"""Wiring the dashboard into the api app: its pages, static files, security headers, and
the answers to a missing session (redirect to sign-in) and a missing CSRF token (403)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard.page import CsrfRejected, SignInRequired
from api.dashboard.routes import router
from api.dashboard.session import SESSION_COOKIE

# Recordings are Vapi's (remote https) files; everything else comes from this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """The dashboard's headers on every answer outside the JSON API."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/api/"):
            await self._app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self._app(scope, receive, sending)


async def _sign_in(request: Request, exc: Exception) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def _csrf_rejected(request: Request, exc: Exception) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Form expired</title><link rel=stylesheet href=/static/style.css>"
        "<main><h1>This form has expired</h1><p>Go back, reload the page and try again."
        "</p></main>", status_code=403)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.add_middleware(SecurityHeaders)
