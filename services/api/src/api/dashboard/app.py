"""Wiring the dashboard into the api app: its pages, static files, security headers, and
the answers to a missing session (redirect to sign-in), a missing CSRF token (403) and an
action the person's role does not allow (403)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.dashboard.page import (
    CsrfRejected,
    FormTooLarge,
    NotAllowed,
    SignInRequired,
    cookies,
    render,
)
from api.dashboard.routes import router
from api.dashboard.session import HSTS

# Recordings are Vapi's (remote https) files, reached through a same-origin redirect; an
# agency's logo is an https image of its own; everything else comes from this origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "media-src 'self' https:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


def content_security_policy(vapi_api_base_url: str) -> str:
    """The policy, with VAPI_API_BASE_URL's origin allowed for media when it is not https
    (a fake Vapi on this machine, whose signed recording URLs are on itself): `https:`
    already covers Vapi's storage."""
    parts = urlsplit(vapi_api_base_url)
    if parts.scheme == "https" or not parts.netloc:
        return CONTENT_SECURITY_POLICY
    return CONTENT_SECURITY_POLICY.replace(
        "media-src 'self' https:;", f"media-src 'self' https: {parts.scheme}://{parts.netloc};")


def security_headers(policy: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"x-frame-options", b"DENY"),
    ]


class SecurityHeaders:
    """The dashboard's headers on every answer outside the JSON API, and HSTS on every
    answer over https (or always, when a proxy terminates TLS: `force_https`)."""

    def __init__(self, app: ASGIApp, force_https: bool = False,
                 policy: str = CONTENT_SECURITY_POLICY) -> None:
        self._app = app
        self._force_https = force_https
        self._headers = security_headers(policy)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = [] if scope["path"].startswith("/api/") else self._headers
        if self._force_https or scope.get("scheme") == "https":
            headers = [*headers, (b"strict-transport-security", HSTS.encode())]

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self._app(scope, receive, sending)


async def _sign_in(request: Request, exc: Exception) -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(cookies(request).session, path="/")
    return response


async def _form_too_large(request: Request, exc: Exception) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Form too large</title><link rel=stylesheet "
        "href=/static/style.css><main><h1>This form is too large</h1></main>",
        status_code=413, headers={"connection": "close"})


async def _csrf_rejected(request: Request, exc: Exception) -> Response:
    return HTMLResponse(
        "<!doctype html><title>Form expired</title><link rel=stylesheet href=/static/style.css>"
        "<main><h1>This form has expired</h1><p>Go back, reload the page and try again."
        "</p></main>", status_code=403)


# What each refused action is, on the 403 page.
_ACTIONS = {"sync": "ask for a sync", "manage_vapi_key": "connect or disconnect the Vapi key",
            "manage_people": "invite, change or remove people",
            "see_secrets": "see this organization's secrets",
            "manage_secret": "rotate or revoke the webhook secret",
            "manage_tokens": "make, see or revoke API tokens",
            "read_audit": "read the audit log",
            "manage_clients": "change an agency's clients"}


async def _not_allowed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotAllowed)
    return render(request, "forbidden.html", {
        "title": "Not allowed", "nav": "settings",
        "what": _ACTIONS.get(exc.action.value, "do this")}, current=exc.current, status=403)


def install(app: FastAPI, *, force_https: bool = False,
            policy: str = CONTENT_SECURITY_POLICY) -> None:
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"),
              name="static")
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.add_exception_handler(NotAllowed, _not_allowed)
    app.add_exception_handler(FormTooLarge, _form_too_large)
    app.add_middleware(SecurityHeaders, force_https=force_https, policy=policy)
