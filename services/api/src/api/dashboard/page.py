"""What every dashboard page does: find the session, ask for a sync when the account's
last one is stale, check a posted form's CSRF token, and render a template.

The pages (`api.dashboard.routes`) call the JSON API's own handlers (`api.routes`), so a
figure on a page is the figure `/api/...` answers: one query path, not two. An `ApiError`
from a handler (a bad date, an unknown id) is shown on the page with its status; it never
carries a key or a token (see `api.errors`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.dashboard import formats, session
from api.routes import ApiState
from calltrail_common import vapi_accounts
from calltrail_common.logging import get_logger

log = get_logger("api.dashboard")

PAGE_SIZE = 25
MAX_FORM_BYTES = 8192

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters.update(formats.FILTERS)


class SignInRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""


class CsrfRejected(Exception):
    """A POST without the form's CSRF token: 403."""


@dataclass(frozen=True)
class Session:
    org_id: uuid.UUID
    token: str


def api_state(request: Request) -> ApiState:
    state: ApiState = request.state.api
    return state


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def find_session(request: Request) -> Session | None:
    token = session.session_token(request.cookies.get(session.SESSION_COOKIE))
    if token is None:
        return None
    org_id = await api_state(request).repository.org_of_token(token)
    return None if org_id is None else Session(org_id, token)


async def signed_in(request: Request) -> Session:
    found = await find_session(request)
    if found is None:
        raise SignInRequired
    return found


async def open_page(request: Request) -> Session:
    """Every page: the session, then the stale-sync check."""
    current = await signed_in(request)
    await sync_if_stale(api_state(request), current.org_id)
    return current


async def sync_if_stale(state: ApiState, org_id: uuid.UUID) -> None:
    """Opening the dashboard asks for a sync when the last one is older than the interval
    and none is waiting (the rule: `vapi_accounts.request_sync_if_stale`)."""
    sync_id = await vapi_accounts.request_sync_if_stale(
        state.pool, org_id, interval_seconds=state.settings.sync_interval_seconds,
        trigger="dashboard")
    if sync_id is not None:
        await state.commands.publish_sync(org_id, sync_id)
        log.info("dashboard_sync_requested", org_id=str(org_id), sync_id=str(sync_id))


def render(request: Request, name: str, context: dict[str, Any], *,
           token: str | None, status: int = 200) -> Response:
    nonce = request.cookies.get(session.CSRF_COOKIE) or session.new_nonce()
    context = {"signed_in": token is not None, "csrf": session.csrf_token(nonce, token),
               "error": None, "notice": None, "refresh": None, **context}
    response = templates.TemplateResponse(request, name, context, status_code=status)
    if request.cookies.get(session.CSRF_COOKIE) != nonce:
        response.set_cookie(session.CSRF_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=secure(request), path="/")
    response.headers["Cache-Control"] = "no-store"
    return response


def render_missing(request: Request, current: Session, *, what: str, back: str) -> Response:
    """404: no such call or lead in the organization (another's answers the same)."""
    return render(request, "missing.html", {"title": f"{what.capitalize()} not found",
                                            "nav": back.strip("/"), "what": what,
                                            "back": back},
                  token=current.token, status=404)


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def posted_form(request: Request, token: str | None) -> dict[str, str]:
    """The posted form's fields, after its CSRF token was checked against the session."""
    body = await request.body()
    fields = parse_qs(body[:MAX_FORM_BYTES].decode(errors="replace"), max_num_fields=10)
    form = {name: values[0] for name, values in fields.items()}
    if not session.csrf_valid(request.cookies.get(session.CSRF_COOKIE), token,
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
