"""A day's cost breakdown is, component by component, the sum over the account's calls of
that day, exact, however the calls were seen (issue 16: a recompute that dropped one
component passed every other test, which compared calls, minutes and cost only)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from calltrail_common import db
from calltrail_testkit.fake_vapi import FakeVapi
from metrics_sync.repository import SyncRepository
from metrics_sync.usage import call_usage
from tests.metrics_sync.conftest import fetch, new_org

DAY = dt.datetime(2026, 11, 20, 9, tzinfo=dt.UTC)


def breakdown_by_day(calls: Iterable[Mapping[str, Any]]) -> dict[dt.date, dict[str, Decimal]]:
    """The truth, from Vapi's call objects: per UTC day of createdAt, each costBreakdown
    component that is a number, summed as the decimal Vapi wrote."""
    days: dict[dt.date, dict[str, Decimal]] = {}
    for call in calls:
        day = dt.datetime.fromisoformat(call["createdAt"].replace("Z", "+00:00")).date()
        parts = days.setdefault(day, {})
        for name, value in (call.get("costBreakdown") or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                parts[name] = parts.get(name, Decimal(0)) + Decimal(str(value))
    return days


async def stored_breakdowns(database_url: str, org_id: uuid.UUID
                            ) -> dict[dt.date, dict[str, Decimal]]:
    rows = await fetch(database_url, "SELECT day, cost_breakdown::text AS parts "
                       "FROM vapi_usage_daily WHERE org_id = $1", org_id)
    return {r["day"]: json.loads(r["parts"], parse_float=Decimal, parse_int=Decimal)
            for r in rows}


def _call(call_id: str, created: dt.datetime, breakdown: dict[str, Any] | None
          ) -> dict[str, Any]:
    call: dict[str, Any] = {"id": call_id, "createdAt": created.isoformat(),
                            "updatedAt": created.isoformat(), "cost": 0.5}
    if breakdown is not None:
        call["costBreakdown"] = breakdown
    return call


async def test_each_days_breakdown_is_the_sum_of_its_calls_component_by_component(
        database_url: str) -> None:
    account = FakeVapi(seed=21).add_account("key", seed=21, calls=80, days=4,
                                            now=DAY + dt.timedelta(days=4))
    calls: list[dict[str, Any]] = list(account.calls.values())
    # Components only one call has, one only some days have, and what is not a number.
    calls += [
        _call("rare-1", DAY, {"llm": 0.25, "knowledgeBase": 0.0123,
                              "analysisCostBreakdown": {"summary": 0.01}, "voicemail": None}),
        _call("rare-2", DAY + dt.timedelta(hours=3), {"transfer": 1, "llmPromptTokens": 1200}),
        _call("no-breakdown", DAY + dt.timedelta(hours=4), None),
        _call("flag", DAY + dt.timedelta(hours=5), {"tts": True, "stt": 0.001}),
    ]
    org_id = await new_org(database_url)
    pool = await db.create_pool(database_url, max_size=2)
    try:
        repository = SyncRepository(pool, "breakdown-test", lease_seconds=30)
        usages = [u for u in (call_usage(c) for c in calls) if u is not None]
        # In two runs, as two syncs would see them: each run recomputes its days whole.
        await repository.record_usage(org_id, usages[::2])
        await repository.record_usage(org_id, usages[1::2])
        truth = breakdown_by_day(calls)
        assert len(truth) >= 4 and {"knowledgeBase", "transfer", "vapi"} <= {
            name for parts in truth.values() for name in parts}
        assert await stored_breakdowns(database_url, org_id) == truth

        # A call revised in Vapi: a component changed, one gone, one new; its day again.
        revised = dict(calls[-4], costBreakdown={"llm": 0.5, "tts": 0.02},
                       updatedAt=(DAY + dt.timedelta(days=1)).isoformat())
        calls[-4] = revised
        usage = call_usage(revised)
        assert usage is not None
        await repository.record_usage(org_id, [usage])
        assert await stored_breakdowns(database_url, org_id) == breakdown_by_day(calls)
    finally:
        await pool.close()
