"""The overview's derived figures (averages, success rate, how calls ended, per assistant)
and the usage's cost per component: over the same UTC days as the daily totals."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from api.outcomes import ended_reason_bucket, is_success
from tests.api.conftest import RunningApi, insert_call, insert_vapi_name

DAY = date(2026, 5, 1)


@pytest.mark.parametrize(("reason", "bucket"), [
    ("customer-ended-call", "completed"), ("assistant-said-end-call-phrase", "completed"),
    ("silence-timed-out", "completed"), ("voicemail", "voicemail"),
    ("customer-did-not-answer", "noAnswer"), ("customer-busy", "busy"),
    ("pipeline-error-openai-llm-failed", "failed"), ("twilio-failed-to-connect-call", "failed"),
    ("something-new", "other")])
def test_ended_reason_buckets(reason: str, bucket: str) -> None:
    assert ended_reason_bucket(reason) == bucket


def test_success_verdicts() -> None:
    assert is_success("true") is True and is_success(" False ") is False
    assert is_success("8") is None and is_success("") is None


async def _call(api: RunningApi, org_id: object, *, day: date, **fields: object) -> None:
    call_id = await insert_call(api.connection, org_id,  # type: ignore[arg-type]
                                created_at=datetime(day.year, day.month, day.day, 12,
                                                    tzinfo=UTC), **fields)
    await api.connection.execute("UPDATE calls SET stats_day = $2 WHERE id = $1", call_id, day)


# What the processor keeps per day (migration 0008), derived here from the calls inserted
# by hand, as daily_stats is written by hand.
_DERIVE_BREAKDOWNS = """
    INSERT INTO daily_call_outcome_shards (org_id, day, outcome_key, ended_reason,
                                           success_evaluation, calls)
    SELECT org_id, stats_day, md5(ROW(ended_reason, success_evaluation)::text)::uuid,
           ended_reason, success_evaluation, count(*)
    FROM calls WHERE stats_day IS NOT NULL GROUP BY 1, 2, 4, 5;
    INSERT INTO daily_assistant_shards (org_id, day, assistant_key, assistant_id, calls,
                                        duration_seconds, cost)
    SELECT org_id, stats_day, md5(ROW(assistant_id)::text)::uuid, assistant_id, count(*),
           coalesce(sum(duration_seconds), 0), coalesce(sum(cost), 0)
    FROM calls WHERE stats_day IS NOT NULL GROUP BY 1, 2, 4"""


async def test_overview_breakdowns(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    await api.connection.execute(
        """INSERT INTO daily_stats_shards (org_id, day, calls, inbound, outbound, web,
                                           new_leads, duration_seconds, cost)
           VALUES ($1, $2, 4, 4, 0, 0, 2, 360, 1.00)""", tenant.org_id, DAY)
    await _call(api, tenant.org_id, day=DAY, ended_reason="customer-ended-call",
                success_evaluation="true", assistant_id="asst-a",
                duration_seconds=Decimal(120), cost=Decimal("0.40"))
    await _call(api, tenant.org_id, day=DAY, ended_reason="voicemail",
                success_evaluation="false", assistant_id="asst-a",
                duration_seconds=Decimal(60), cost=Decimal("0.20"))
    await _call(api, tenant.org_id, day=DAY, ended_reason="customer-busy",
                success_evaluation="true", assistant_id="asst-b",
                duration_seconds=Decimal(120), cost=Decimal("0.30"))
    await _call(api, tenant.org_id, day=DAY, ended_reason="pipeline-error-x",
                assistant_id="asst-b", duration_seconds=Decimal(60), cost=Decimal("0.10"))
    await _call(api, tenant.org_id, day=date(2026, 4, 1), ended_reason="voicemail",
                success_evaluation="false")  # outside the range
    await _call(api, other.org_id, day=DAY, ended_reason="voicemail")  # another org
    await api.connection.execute(_DERIVE_BREAKDOWNS)
    # Named in the tenant's account; the other organization's name for the same id never
    # shows here.
    await insert_vapi_name(api.connection, tenant.org_id, "assistant", "asst-a", "Front desk")
    await insert_vapi_name(api.connection, other.org_id, "assistant", "asst-b", "Not yours")
    body = (await tenant.client.get("/api/stats/overview", params={
        "startDate": "2026-05-01", "endDate": "2026-05-02"})).json()
    assert body["averageDurationSeconds"] == 90.0
    assert body["costPerCall"] == 0.25
    assert body["evaluatedCalls"] == 3
    assert body["successRate"] == pytest.approx(2 / 3, abs=1e-6)
    assert body["endedReasons"] == {"completed": 1, "voicemail": 1, "noAnswer": 0, "busy": 1,
                                    "failed": 1, "other": 0}
    assert body["assistants"] == [
        {"assistantId": "asst-a", "assistantName": "Front desk", "calls": 2, "minutes": 3.0,
         "cost": 0.6},
        {"assistantId": "asst-b", "assistantName": None, "calls": 2, "minutes": 3.0,
         "cost": 0.4}]
    empty = (await tenant.client.get("/api/stats/overview", params={
        "startDate": "2026-06-01", "endDate": "2026-06-02"})).json()
    assert empty["successRate"] is None and empty["averageDurationSeconds"] is None
    assert empty["costPerCall"] is None and empty["assistants"] == []


async def test_usage_cost_by_component(api: RunningApi) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    rows = [
        (tenant.org_id, DAY, {
            "transport": 0.01, "stt": "0.02", "llm": 0.1, "tts": 0.03, "vapi": 0.05,
            "total": 0.21, "llmPromptTokens": 900}),
        (tenant.org_id, date(2026, 5, 2), {"llm": 0.2, "stt": "n/a"}),
        (tenant.org_id, date(2026, 5, 3), {}),
        (tenant.org_id, date(2026, 5, 4), {"llm": 5}),  # outside the range
        (other.org_id, DAY, {"llm": 7})]
    await api.connection.executemany(
        """INSERT INTO vapi_usage_daily (org_id, day, calls, minutes, cost, cost_breakdown)
           VALUES ($1, $2, 1, 1, 0.2, $3)""", rows)
    body = (await tenant.client.get("/api/vapi/metrics", params={
        "startDate": "2026-05-01", "endDate": "2026-05-03"})).json()
    assert body["costByComponent"] == pytest.approx(
        {"transport": 0.01, "stt": 0.02, "llm": 0.3, "tts": 0.03, "vapi": 0.05})
