"""What counts as a call's success (decision 41): the organization's success measure, the
boolean structured outputs and scorecards its newest calls carry to choose from, and the
form that sets it (admins and owners), through the JSON API's own handlers, audited with
the person as actor."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import routes as json_api
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
from calltrail_common import success_measures
from calltrail_common.access import Action

router = APIRouter()

_NOTICES = {"set": "Saved: the overview's success rate now counts it, for past days too.",
            "cleared": "Saved: the overview's success rate counts analysis.successEvaluation."}


async def _page(request: Request, current: Session, *, error: str | None = None,
                status: int = 200) -> Response:
    settings = await json_api.get_success_measure(api_state(request), current.org_id)
    names = {(s.kind, s.source_id): s.name for s in settings.sources}
    measure = settings.measure
    return render(request, "success.html", {
        "title": "Call success", "nav": "settings", "settings": settings,
        "measure_name": None if measure is None else names.get(
            (measure.kind, measure.source_id)),
        "default_pass_mark": success_measures.DEFAULT_PASS_MARK,
        "notice": _NOTICES.get(request.query_params.get("notice") or ""), "error": error},
        current=current, status=status)


@router.get("/settings/success")
async def success_page(request: Request) -> Response:
    return await _page(request, await open_page(request))


@router.post("/settings/success")
async def choose(request: Request) -> Response:
    """The form's `source` is `kind:id` from the list, or `other` with `kind` and
    `sourceId` typed in; `passMark` for a scorecard."""
    current = await signed_in(request)
    form = await posted_form(request, current)
    require(current, Action.SET_SUCCESS_MEASURE)
    source = (form.get("source") or "").strip()
    if source == "other":
        kind, source_id = form.get("kind") or "", form.get("sourceId") or ""
    else:
        kind, _, source_id = source.partition(":")
    if not source:
        return await _page(request, current, status=400,
                           error="Choose an output or a scorecard.")
    try:
        measure = success_measures.measure_of(kind, source_id,
                                              (form.get("passMark") or "").strip() or None
                                              if kind == "scorecard" else None)
    except ValueError as problem:
        return await _page(request, current, status=400, error=f"{str(problem).capitalize()}.")
    await json_api.choose_success_measure(api_state(request), caller(current), measure)
    return redirect("/settings/success?notice=set")


@router.post("/settings/success/clear")
async def clear(request: Request) -> Response:
    current = await signed_in(request)
    await posted_form(request, current)
    require(current, Action.SET_SUCCESS_MEASURE)
    await json_api.choose_success_measure(api_state(request), caller(current), None)
    return redirect("/settings/success?notice=cleared")
