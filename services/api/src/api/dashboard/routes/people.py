"""People: the organization's members with their roles, its pending invitations, and for
owners and admins the invitation form and each member's role and removal.

Who may give which role, and that the last owner stays, are `calltrail_common.access`'s
rules (applied under a lock by `people.change_member`); every change goes to the audit log.
An invitation is mailed when SMTP is set up; otherwise, or when the mail fails, its link is
shown once on the answer to the admin who made it (never stored, never logged).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.dashboard.page import (
    Session,
    api_state,
    open_page,
    posted_form,
    redirect,
    render,
    require,
    signed_in,
)
from calltrail_common import access, audit, people
from calltrail_common.access import ROLES, Action, parse_role
from calltrail_common.logging import get_logger
from calltrail_common.mail import Mailer, MailNotSent, invitation

log = get_logger("api.dashboard.people")

router = APIRouter()

_NOTICES = {"role": "Role changed.", "removed": "Removed from the organization.",
            "cancelled": "Invitation cancelled: its link opens nothing now."}


async def _people_page(request: Request, current: Session, *, status: int = 200,
                       error: str | None = None, notice: str | None = None,
                       extra: dict[str, Any] | None = None) -> Response:
    pool = api_state(request).pool
    return render(request, "people.html", {
        "title": "People", "nav": "settings",
        "members": await people.members(pool, current.org_id),
        "pending": [{"email": i.email, "role": i.role,
                     "expires": datetime.fromtimestamp(i.expires_at_seconds, UTC)}
                    for i in await people.pending_invites(pool, current.org_id)],
        "grantable": [role for role in ROLES if access.may_grant(current.role, role)],
        "error": error,
        "notice": notice or _NOTICES.get(request.query_params.get("notice") or ""),
        "invite_link": None, "invited": None, "form_email": "", "form_role": "viewer",
        **(extra or {})}, current=current, status=status)


def _actor(current: Session) -> audit.Actor:
    return audit.user_actor(current.user_id, current.email)


@router.get("/settings/people")
async def people_page(request: Request) -> Response:
    return await _people_page(request, await open_page(request))


@router.post("/settings/people/invite")
async def invite(request: Request) -> Response:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_PEOPLE)
    email = (form.get("email") or "").strip()[:people.MAX_EMAIL_LENGTH]
    kept = {"form_email": email, "form_role": form.get("role") or "viewer"}
    try:
        role = parse_role(form.get("role") or "")
    except ValueError:
        return await _people_page(request, current, status=400, extra=kept,
                                  error="Choose a role: owner, admin or viewer.")
    if not access.may_grant(current.role, role):
        return await _people_page(request, current, status=403, extra=kept,
                                  error=f"As {current.role} you cannot invite an {role}.")
    state = api_state(request)
    try:
        if await people.is_member(state.pool, current.org_id, email):
            return await _people_page(request, current, status=409, extra=kept, error=(
                f"{email} is already a member: change their role below."))
        async with state.pool.acquire() as connection, connection.transaction():
            link = await people.invite(connection, current.org_id, email, role,
                                       current.user_id)
            await audit.record(connection, current.org_id, _actor(current), "user.invited",
                               link.email, {"role": role})
    except people.PeopleError as problem:
        return await _people_page(request, current, status=400, extra=kept,
                                  error=str(problem).capitalize() + ".")
    url = people.link_url(state.settings.dashboard_base_url, link)
    mailer = Mailer.from_settings(state.settings)
    shown = {"invite_link": url if access.may(current.role, Action.SEE_SECRETS) else None,
             "invited": link.email}
    if mailer is None:
        return await _people_page(request, current, extra=shown, notice=(
            f"{link.email} is invited as {role}. No mail is set up here: give them the link "
            f"below yourself (it works once, for {people.INVITE_LIFETIME.days} days)."))
    try:
        await mailer.send(invitation(link.email, current.org_name, role, url, current.email))
    except MailNotSent as problem:
        log.warning("invitation_not_mailed", org_id=str(current.org_id), reason=str(problem))
        # 200: the invitation exists; only its mail failed, and the page says so.
        return await _people_page(request, current, extra=shown, error=(
            f"{link.email} is invited as {role}, but the invitation could not be mailed "
            "(the mail server failed): give them the link below yourself."))
    log.info("invitation_mailed", org_id=str(current.org_id), role=role)
    return await _people_page(request, current, extra={"invited": link.email}, notice=(
        f"Invitation mailed to {link.email} ({role})."))


async def _change(request: Request, wanted: str | None) -> Response:
    """Change a member's role (`wanted`) or remove them (None)."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_PEOPLE)
    try:
        user_id = uuid.UUID(form.get("user") or "")
        role = None if wanted is None else parse_role(form.get(wanted) or "")
    except ValueError:
        return await _people_page(request, current, status=400,
                                  error="Choose a member and a role.")
    state = api_state(request)
    try:
        async with state.pool.acquire() as connection, connection.transaction():
            before = await people.change_member(connection, current.org_id, user_id, role,
                                                current.role)
            if role is None:
                await audit.record(connection, current.org_id, _actor(current),
                                   "user.removed", before.email, {"role": before.role})
            elif role != before.role:
                await audit.record(connection, current.org_id, _actor(current),
                                   "user.role_changed", before.email,
                                   {"from": before.role, "to": role})
    except people.NotPermitted as problem:
        return await _people_page(request, current, status=403,
                                  error=str(problem).capitalize() + ".")
    except people.PeopleError as problem:
        return await _people_page(request, current, status=409,
                                  error=str(problem).capitalize() + ".")
    return redirect(f"/settings/people?notice={'removed' if role is None else 'role'}")


@router.post("/settings/people/role")
async def change_role(request: Request) -> Response:
    return await _change(request, "role")


@router.post("/settings/people/remove")
async def remove(request: Request) -> Response:
    return await _change(request, None)


@router.post("/settings/people/cancel")
async def cancel_invitation(request: Request) -> Response:
    """End a pending invitation, within the same rule as inviting: an admin cancels
    invitations up to admin."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.MANAGE_PEOPLE)
    email = (form.get("email") or "").strip()[:people.MAX_EMAIL_LENGTH]
    state = api_state(request)
    pending = {i.email: i.role for i in await people.pending_invites(state.pool, current.org_id)}
    try:
        wanted = people.normalize_email(email)
    except people.PeopleError:
        wanted = ""
    if wanted not in pending:
        return await _people_page(request, current, status=404,
                                  error="There is no pending invitation for that address.")
    if not access.may_grant(current.role, pending[wanted]):
        return await _people_page(request, current, status=403, error=(
            f"An {current.role} cannot cancel an invitation as {pending[wanted]}."))
    async with state.pool.acquire() as connection, connection.transaction():
        roles = await people.cancel_invitations(connection, current.org_id, wanted)
        await audit.record(connection, current.org_id, _actor(current),
                           "user.invitation_cancelled", wanted, {"roles": roles})
    return redirect("/settings/people?notice=cancelled")
