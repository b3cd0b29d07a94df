"""The figures over a period: the overview (calls, leads, minutes, cost, how calls ended)
and usage and billing (the synced Vapi metrics)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api import routes as json_api
from api.dashboard import charts
from api.dashboard.page import Session, api_state, open_page, parse_day, render
from api.errors import ApiError
from api.routes import ApiState

PERIODS = (7, 30, 90)

Figures = TypeVar("Figures")

router = APIRouter()


def _period(request: Request) -> tuple[date | None, date | None, str | None]:
    raw_start, raw_end = request.query_params.get("startDate"), request.query_params.get(
        "endDate")
    start, end = parse_day(raw_start), parse_day(raw_end)
    if (raw_start and start is None) or (raw_end and end is None):
        return None, None, "Dates are written YYYY-MM-DD; showing the last 30 days."
    return start, end, None


def _period_links(path: str, today: date | None = None) -> list[tuple[str, str]]:
    today = today or datetime.now(UTC).date()
    return [(f"{days} days", f"{path}?" + urlencode({
        "startDate": (today - timedelta(days=days - 1)).isoformat(),
        "endDate": today.isoformat()})) for days in PERIODS]


async def _over_period(
        request: Request,
        figures: Callable[[ApiState, uuid.UUID, date | None, date | None], Awaitable[Figures]]
) -> tuple[Session, Figures, str | None]:
    """The page's session, the API's figures over the period asked for (the last 30 days,
    and the reason, when the API refuses that period), and what to say about it."""
    current = await open_page(request)
    start, end, error = _period(request)
    state = api_state(request)
    try:
        return current, await figures(state, current.org_id, start, end), error
    except ApiError as problem:
        return current, await figures(state, current.org_id, None, None), problem.message


def _daily_labels(days: list[date]) -> list[str]:
    return [d.strftime("%b %-d") for d in days]


@router.get("/")
async def overview(request: Request) -> Response:
    current, stats, error = await _over_period(request, json_api.stats_overview)
    labels = _daily_labels([d.date for d in stats.daily])
    ended = stats.ended_reasons
    outcomes = [("Completed", ended.completed), ("Voicemail", ended.voicemail),
                ("No answer", ended.no_answer), ("Busy", ended.busy),
                ("Failed", ended.failed), ("Other", ended.other)]
    return render(request, "overview.html", {
        "title": "Overview", "nav": "overview", "stats": stats, "error": error,
        "periods": _period_links(
            "/", (await json_api.organization_day(api_state(request), current.org_id))[0]),
        "calls_chart": charts.bar_chart([d.calls for d in stats.daily], labels,
                                        unit=" calls", whole=True),
        "outcomes": outcomes, "outcomes_total": sum(n for _, n in outcomes)},
        current=current)


@router.get("/usage")
async def usage(request: Request) -> Response:
    current, metrics, error = await _over_period(request, json_api.usage_metrics)
    account = await json_api.get_connection(api_state(request), current.org_id)
    labels = _daily_labels([d.date for d in metrics.daily])
    return render(request, "usage.html", {
        "title": "Usage and billing", "nav": "usage", "metrics": metrics, "error": error,
        "account": account, "periods": _period_links("/usage"),
        "minutes_chart": charts.bar_chart([d.minutes for d in metrics.daily], labels,
                                          unit=" min", fmt="{:,.1f}"),
        "cost_chart": charts.bar_chart([current.costs.primary(d.cost) for d in metrics.daily],
                                       labels,
                                       fmt="${:,.2f}"),
        "components": sorted(metrics.cost_by_component.items(), key=lambda kv: -kv[1])},
        current=current)
