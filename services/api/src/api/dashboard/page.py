"""What every dashboard page does: find the session, ask for a sync when the account's
last one is stale, check a posted form's CSRF token, and render a template.

The pages (`api.dashboard.routes`) call the JSON API's own handlers (`api.routes`), so a
figure on a page is the figure `/api/...` answers: one query path, not two. An `ApiError`
from a handler (a bad date, an unknown id) is shown on the page with its status; it never
carries a key or a token (see `api.errors`).
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.dashboard import formats, session
from api.routes import ApiState, Caller
from api.sessions import SessionView
from calltrail_common import access, audit, people, vapi_accounts
from calltrail_common.access import Action
from calltrail_common.logging import get_logger

log = get_logger("api.dashboard")

PAGE_SIZE = 25
MAX_FORM_BYTES = 8192

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(formats.FILTERS)
templates.env.globals["Action"] = Action


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""


class CsrfRejected(Exception):
    """A POST without the form's CSRF token: 403."""


class NotAllowed(Exception):
    """The signed-in person's role does not allow the action: a 403 page that says so."""

    def __init__(self, current: SessionView, action: Action) -> None:
        super().__init__(action.value)
        self.current = current
        self.action = action


Session = SessionView


def api_state(request: Request) -> ApiState:
    state: ApiState = request.state.api
    return state


def secure(request: Request) -> bool:
    """Whether cookies are Secure with the __Host- prefix: over https, or always when a
    proxy terminates TLS (DASHBOARD_FORCE_HTTPS)."""
    return api_state(request).settings.dashboard_force_https or request.url.scheme == "https"


def cookies(request: Request) -> session.CookieNames:
    return session.cookie_names(secure(request))


def session_id(request: Request) -> str | None:
    return request.cookies.get(cookies(request).session)


async def find_session(request: Request) -> Session | None:
    return await api_state(request).sessions.find(session_id(request))


async def signed_in(request: Request) -> Session:
    found = await find_session(request)
    if found is None:
        raise SignInRequired
    # The header's organization switcher: every organization this person may open.
    request.state.organizations = await people.accessible(api_state(request).pool,
                                                          found.user_id)
    return found


def caller(current: Session) -> Caller:
    """The signed-in person as the JSON API's handlers know a caller (for the audit log)."""
    return Caller(current.org_id, audit.user_actor(current.user_id, current.email))


async def open_page(request: Request) -> Session:
    """Every page: the session, then the stale-sync check."""
    current = await signed_in(request)
    await sync_if_stale(api_state(request), current.org_id)
    return current


def require(current: Session, action: Action) -> None:
    """NotAllowed unless the person's role allows `action` (`calltrail_common.access`)."""
    if not access.may(current.role, action):
        raise NotAllowed(current, action)


async def sync_if_stale(state: ApiState, org_id: uuid.UUID) -> None:
    """Opening the dashboard asks for a sync when the last one is older than the interval
    and none is waiting (the rule: `vapi_accounts.request_sync_if_stale`)."""
    sync_id = await vapi_accounts.request_sync_if_stale(
        state.pool, org_id, interval_seconds=state.settings.sync_interval_seconds,
        trigger="dashboard")
    if sync_id is not None:
        await state.commands.publish_sync(org_id, sync_id)
        log.info("dashboard_sync_requested", org_id=str(org_id), sync_id=str(sync_id))


def set_csrf_nonce(request: Request, response: Response, nonce: str) -> None:
    response.set_cookie(cookies(request).csrf, nonce, httponly=True, samesite="strict",
                        secure=secure(request), path="/")


def set_session_cookie(request: Request, response: Response, new_session_id: str) -> None:
    response.set_cookie(cookies(request).session, new_session_id, httponly=True,
                        samesite="lax", secure=secure(request), path="/")


async def start_session(request: Request, user_id: uuid.UUID, org_id: uuid.UUID
                        ) -> RedirectResponse:
    """Sign a person in, looking at `org_id`: a new session id (any the browser held is
    ended, never kept) and a new CSRF nonce, then on to the overview."""
    new_id = await api_state(request).sessions.start(user_id, org_id,
                                                     replacing=session_id(request))
    response = redirect("/")
    set_session_cookie(request, response, new_id)
    set_csrf_nonce(request, response, session.new_nonce())
    return response


def render(request: Request, name: str, context: dict[str, Any], *,
           current: Session | None, status: int = 200, nonce: str | None = None) -> Response:
    """Render a page for `current` (None: signed out); `nonce` replaces the CSRF nonce
    (at sign-in), else the browser's is kept (or one is made)."""
    names = cookies(request)
    nonce = nonce or request.cookies.get(names.csrf) or session.new_nonce()
    context = {"signed_in": current is not None, "me": current,
               "brand": None if current is None else current.brand,
               "organizations": getattr(request.state, "organizations", [])
               if current is not None else [],
               "csrf": session.csrf_token(nonce, None if current is None else
                                          current.session_id),
               "may": lambda action: current is not None and access.may(current.role, action),
               "error": None, "notice": None, "refresh": None, **context}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if request.cookies.get(names.csrf) != nonce:
        set_csrf_nonce(request, response, nonce)
    response.headers["Cache-Control"] = "no-store"
    return response


def render_missing(request: Request, current: Session, *, what: str, back: str) -> Response:
    """404: no such call or lead in the organization (another's answers the same)."""
    return render(request, "missing.html", {"title": f"{what.capitalize()} not found",
                                            "nav": back.strip("/"), "what": what,
                                            "back": back},
                  current=current, status=404)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


class FormTooLarge(Exception):
    """A posted form over MAX_FORM_BYTES: 413, and the rest is never read."""


async def read_bounded(request: Request, limit: int) -> bytes:
    """The request body, refused (FormTooLarge) as soon as it passes `limit` bytes: a
    Content-Length over it is refused before anything is read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise FormTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise FormTooLarge
    return bytes(body)


async def posted_form(request: Request, current: Session | None) -> dict[str, str]:
    """The posted form's fields, after its CSRF token was checked against the session."""
    body = await read_bounded(request, MAX_FORM_BYTES)
    fields = parse_qs(body.decode(errors="replace"), max_num_fields=20)
    form = {name: values[0] for name, values in fields.items()}
    if not session.csrf_valid(request.cookies.get(cookies(request).csrf),
                              None if current is None else current.session_id,
                              form.get(session.CSRF_FIELD)):
        raise CsrfRejected
    return form


def parse_day(value: str | None) -> date | None:
    """A YYYY-MM-DD field; None when empty or not a date."""
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None
