"""Signing in with email and password, and out.

Too many failed sign-ins for an account (email) or from an address (the client's IP as the
server sees it: a proxy's X-Forwarded-For counts only when uvicorn's proxy headers trust
it) answer 429 without checking the password (`api.dashboard.throttle` is the rule); a
success clears the account's failures.

Signing in starts a new server-side session (any session id the browser held is ended,
never kept) and replaces the CSRF nonce; signing out ends the session server-side, so the
old cookie opens nothing even if it was copied.
"""

from __future__ import annotations

import math
from datetime import timedelta

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import sign_in_failures
from api.dashboard import throttle
from api.dashboard.page import (
    api_state,
    cookies,
    find_session,
    posted_form,
    redirect,
    render,
    session_id,
    start_session,
)
from calltrail_common import agencies, people
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings

log = get_logger("api.dashboard.sign_in")

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


def _limits(settings: Settings) -> tuple[throttle.Limit, throttle.Limit]:
    window = timedelta(minutes=settings.sign_in_failure_window_minutes)
    return (throttle.Limit(settings.sign_in_account_failures, window),
            throttle.Limit(settings.sign_in_address_failures, window))


async def _throttled(request: Request, keys: tuple[str, str]
                     ) -> tuple[str, timedelta] | None:
    """What is throttled (account or address) and for how long, when there were too many
    recent failures; None: go on and check the password."""
    by_account, by_address = _limits(api_state(request).settings)
    now, failures = await sign_in_failures.recent(api_state(request).pool, keys,
                                                  by_account.window)
    account, address = keys
    if (wait := throttle.wait(failures[account], now, by_account)) is not None:
        return "account", wait
    if (wait := throttle.wait(failures[address], now, by_address)) is not None:
        return "address", wait
    return None


async def _too_many(request: Request, email: str, what: str, wait: timedelta) -> Response:
    minutes = throttle.minutes(wait)
    whose = "for this account" if what == "account" else "from this address"
    response = await _login_page(request, status=429, email=email, error=(
        f"Too many failed sign-ins {whose}; try again in {minutes} "
        f"minute{'' if minutes == 1 else 's'}."))
    response.headers["Retry-After"] = str(math.ceil(wait.total_seconds()))
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
    keys = (throttle.account_key(email.lower()),
            throttle.address_key(request.client.host if request.client else "unknown"))
    refused = await _throttled(request, keys)
    if refused is not None:
        log.info("sign_in_throttled", by=refused[0])
        return await _too_many(request, email, *refused)
    user = await people.authenticate(state.pool, email, form.get("password") or "")
    if user is None:
        await sign_in_failures.record(state.pool, keys, _limits(state.settings)[0].window)
        return await _login_page(request, error=WRONG, status=401, email=email)
    await sign_in_failures.clear(state.pool, keys[0])
    orgs = await people.accessible(state.pool, user.id)
    if not orgs:
        return await _login_page(request, error=NO_ORGANIZATION, status=403, email=email)
    return await start_session(request, user.id, orgs[0].org_id)


@router.post("/logout")
async def logout(request: Request) -> Response:
    current = await find_session(request)
    await posted_form(request, current)
    await api_state(request).sessions.end(session_id(request))
    response = redirect("/login")
    response.delete_cookie(cookies(request).session, path="/")
    return response
