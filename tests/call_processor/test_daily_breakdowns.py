"""The per-day breakdowns (daily_call_outcomes, daily_assistants) follow a call that changes
its ended reason, assistant or day: its count leaves the old row and joins the new one."""

from __future__ import annotations

import copy
from datetime import date

from tests.call_processor.test_handlers import apply
from tests.support.samples import sample

REPORT = "inbound-7-end-of-call-report"


def report(call_id: str, *, timestamp_offset_ms: int = 0, ended_reason: str,
           assistant_id: str, created_at: str) -> dict:
    body = copy.deepcopy(sample(REPORT))
    message = body["message"]
    message["timestamp"] += timestamp_offset_ms
    message["endedReason"] = ended_reason
    message["call"].update(id=call_id, assistantId=assistant_id, createdAt=created_at)
    return body


async def outcomes(connection) -> set[tuple[date, str, int]]:
    return {(r["day"], r["ended_reason"], r["calls"]) for r in await connection.fetch(
        "SELECT day, ended_reason, calls FROM daily_call_outcomes")}


async def assistants(connection) -> set[tuple[date, str, int]]:
    return {(r["day"], r["assistant_id"], r["calls"]) for r in await connection.fetch(
        "SELECT day, assistant_id, calls FROM daily_assistants")}


async def test_a_call_moves_between_rows_when_its_reason_assistant_or_day_changes(
        connection, org_id) -> None:
    first, second = date(2026, 11, 3), date(2026, 11, 4)
    await apply(connection, org_id,
                report("a", ended_reason="customer-ended-call", assistant_id="asst-1",
                       created_at="2026-11-03T15:04:05.000Z"),
                report("b", ended_reason="customer-ended-call", assistant_id="asst-1",
                       created_at="2026-11-03T16:04:05.000Z"))
    assert await outcomes(connection) == {(first, "customer-ended-call", 2)}
    assert await assistants(connection) == {(first, "asst-1", 2)}

    # A later report of call b says otherwise: its count leaves the rows it was in.
    await apply(connection, org_id,
                report("b", timestamp_offset_ms=1000, ended_reason="voicemail",
                       assistant_id="asst-2", created_at="2026-11-03T16:04:05.000Z"))
    assert await outcomes(connection) == {(first, "customer-ended-call", 1),
                                          (first, "voicemail", 1)}
    assert await assistants(connection) == {(first, "asst-1", 1), (first, "asst-2", 1)}

    # Call a moves to the next day: the rows it emptied are gone.
    await apply(connection, org_id,
                report("a", timestamp_offset_ms=1000, ended_reason="customer-ended-call",
                       assistant_id="asst-1", created_at="2026-11-04T00:00:01.000Z"))
    assert await outcomes(connection) == {(first, "voicemail", 1),
                                          (second, "customer-ended-call", 1)}
    assert await assistants(connection) == {(first, "asst-2", 1), (second, "asst-1", 1)}


async def test_unbounded_values_are_stored_whole(connection, org_id) -> None:
    """Ended reason and success evaluation are any text Vapi sends (an index on them as they
    are would fail the insert past 2,704 bytes); the assistant id is cut at 255 by the parser."""
    long_reason, long_evaluation = "x" * 8192, "y" * 8192
    body = report("a", ended_reason=long_reason, assistant_id="a" * 255,
                  created_at="2026-11-03T15:04:05.000Z")
    body["message"]["analysis"]["successEvaluation"] = long_evaluation
    await apply(connection, org_id, body)
    assert await connection.fetchval(
        "SELECT success_evaluation FROM daily_call_outcomes") == long_evaluation
    assert await outcomes(connection) == {(date(2026, 11, 3), long_reason, 1)}
    assert await assistants(connection) == {(date(2026, 11, 3), "a" * 255, 1)}
