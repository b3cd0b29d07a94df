"""Forgot your password: ask for a reset link by email, follow it once, choose a new
password, and be signed in.

The answer to a request is the same whether or not the address has an account, and the
link is made and mailed after the answer is sent (so its timing tells nothing either).
With no mail set up, nothing is made: the page says to ask an operator, who runs
`calltrail user reset`. Setting the password ends every session the person had; the new
one starts here.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from api import sign_in_failures
from api.dashboard import throttle
from api.dashboard.page import (
    api_state,
    posted_form,
    redirect,
    render,
    start_session,
)
from api.routes import ApiState
from calltrail_common import people
from calltrail_common.logging import get_logger
from calltrail_common.mail import Mailer, MailNotSent, password_reset

log = get_logger("api.dashboard.reset")

router = APIRouter()

# Reset links a person may hold unused at once; past it a request sends nothing more.
OPEN_RESETS = 3
INVALID = ("This link is not valid: it was already used, it expired, or it was never made. "
           "Ask for a new one.")
NO_MAIL = ("This Calltrail sends no mail, so it cannot send you a link: ask your "
           "organization's admin or the operator to reset your password.")


def _sent(email: str) -> str:
    minutes = int(people.RESET_LIFETIME.total_seconds() // 60)
    return (f"If {email} has an account, a link to choose a new password is on its way to it. "
            f"The link works once, for {minutes} minutes.")


@router.get("/reset")
async def reset_request_page(request: Request) -> Response:
    return render(request, "reset_request.html", {"title": "Reset your password",
                                                  "email": ""}, current=None)


async def _mail_reset(state: ApiState, mailer: Mailer, email: str) -> None:
    """After the answer: make the link when the account exists and mail it."""
    async with state.pool.acquire() as connection:
        link = await people.request_reset(connection, email, at_most_open=OPEN_RESETS)
    if link is None:
        return
    try:
        await mailer.send(password_reset(link.email, people.link_url(
            state.settings.dashboard_base_url, link)))
    except MailNotSent as problem:
        log.warning("reset_not_mailed", user_id=str(link.user_id), reason=str(problem))
        return
    log.info("reset_mailed", user_id=str(link.user_id))


@router.post("/reset")
async def request_reset(request: Request) -> Response:
    form = await posted_form(request, None)
    email = (form.get("email") or "").strip()[:people.MAX_EMAIL_LENGTH]
    state = api_state(request)
    mailer = Mailer.from_settings(state.settings)
    if mailer is None:
        return render(request, "reset_request.html", {
            "title": "Reset your password", "email": email, "error": NO_MAIL}, current=None)
    response = render(request, "reset_request.html", {
        "title": "Reset your password", "email": "", "notice": _sent(email)}, current=None)
    response.background = BackgroundTask(_mail_reset, state, mailer, email)
    return response


def _page(request: Request, token: str, link: people.OpenLink | None, *,
          error: str | None = None, status: int = 200) -> Response:
    return render(request, "reset.html", {
        "title": "Choose a new password", "token": token, "link": link,
        "error": error if link is not None else INVALID},
        current=None, status=status if link is not None else 404)


@router.get("/reset/{token}")
async def reset_page(request: Request, token: str) -> Response:
    return _page(request, token, await people.open_link(api_state(request).pool, token,
                                                         "reset"))


@router.post("/reset/{token}")
async def reset_password(request: Request, token: str) -> Response:
    form = await posted_form(request, None)
    state = api_state(request)
    link = await people.open_link(state.pool, token, "reset")
    if link is None:
        return _page(request, token, None)
    password = form.get("password") or ""
    if password != form.get("confirm"):
        return _page(request, token, link, error="The two passwords differ.", status=400)
    try:
        async with state.pool.acquire() as connection:
            used = await people.use_link(connection, token, "reset", password)
    except people.PeopleError as error:
        return _page(request, token, link, error=str(error).capitalize() + ".", status=400)
    # Whoever holds the mailbox holds the account: earlier failures no longer count.
    await sign_in_failures.clear(state.pool, throttle.account_key(used.user.email))
    orgs = await people.accessible(state.pool, used.user.id)
    if not orgs:
        return redirect("/login")
    return await start_session(request, used.user.id, orgs[0].org_id)
