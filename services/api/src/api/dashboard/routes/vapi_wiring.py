"""Settings, Vapi wiring (decision 47): the connected account's assistants and phone
numbers, read live from Vapi, whether each sends its calls here, and "Wire" / "Unwire" for
one or all. Admins and owners only (the page shows other servers' URLs); the changes go
through the JSON API's handlers, which write the audit log with the person as actor."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import vapi_wiring as json_api
from api.dashboard.page import (
    Session,
    api_state,
    caller,
    open_page,
    posted_form,
    redirect,
    render,
    require,
    signed_in,
)
from api.errors import ApiError
from calltrail_common.access import Action

router = APIRouter()

PAGE = "/settings/vapi-wiring"
_NOTICES = {"wired": "Wired: Vapi now sends these calls to Calltrail.",
            "unwired": "Unwired: what was set before is back in Vapi.",
            "nothing": "Nothing to change."}


async def _page(request: Request, current: Session, *, error: str | None = None,
                status: int = 200) -> Response:
    wiring = None
    problem = error
    try:
        wiring = await json_api.get_wiring(api_state(request), current.org_id)
    except ApiError as refused:
        problem = problem or refused.message
    changed = request.query_params.get("changed")
    notice = _NOTICES.get(request.query_params.get("notice") or "")
    if notice and changed is not None:
        notice = _NOTICES["nothing"] if changed == "0" else f"{notice} ({changed} changed)"
    return render(request, "vapi_wiring.html", {
        "title": "Vapi wiring", "nav": "settings", "wiring": wiring,
        "assistants": [] if wiring is None else
        [i for i in wiring.items if i.kind == "assistant"],
        "numbers": [] if wiring is None else
        [i for i in wiring.items if i.kind == "phone-number"],
        "notice": notice, "error": problem}, current=current, status=status)


@router.get(PAGE)
async def wiring_page(request: Request) -> Response:
    current = await open_page(request)
    require(current, Action.WIRE_VAPI)
    return await _page(request, current)


async def _change(request: Request, what: str) -> Response:
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.WIRE_VAPI)
    wanted = (form.get("id") or "").strip()
    ids = [wanted] if wanted else None
    change = json_api.wire if what == "wired" else json_api.unwire
    try:
        changes = await change(api_state(request), caller(current), ids)
    except ApiError as refused:
        return await _page(request, current, error=refused.message,
                           status=refused.status_code)
    return redirect(f"{PAGE}?notice={what}&changed={len(changes.changed)}")


@router.post(f"{PAGE}/wire")
async def wire(request: Request) -> Response:
    return await _change(request, "wired")


@router.post(f"{PAGE}/unwire")
async def unwire(request: Request) -> Response:
    return await _change(request, "unwired")
