"""The observable state of calls, leads and statistics, and the invariants between them."""

from __future__ import annotations

import asyncpg

CALL_COLUMNS = """id, org_id, direction, status, ended_reason, created_at, started_at, ended_at,
    duration_seconds, cost, cost_breakdown, costs, customer_number, customer_name,
    customer_email, phone_number_id, assistant_id, transcript, summary, structured_data,
    success_evaluation, recording_url, stereo_recording_url, metadata, report_received,
    last_event_at, stats_day, structured_outputs, scorecards, output_name, output_email,
    deleted, erased_at IS NOT NULL AS erased"""
_QUALIFIED = ", ".join(f"calls.{c.strip()}" for c in CALL_COLUMNS.split(","))


async def snapshot(connection: asyncpg.Connection) -> dict:
    """Everything a user can see, with random ids replaced by what they stand for."""
    calls = await connection.fetch(
        f"SELECT {_QUALIFIED}, l.phone_number AS lead_number FROM calls "  # noqa: S608
        "LEFT JOIN leads l ON l.id = calls.lead_id ORDER BY calls.id")
    leads = await connection.fetch(
        "SELECT org_id, phone_number, name, email, first_call_at, last_call_at, call_count,"
        " first_inbound_at FROM leads ORDER BY org_id, phone_number")
    stats = await connection.fetch(
        "SELECT * FROM daily_stats WHERE calls <> 0 OR new_leads <> 0 OR cost <> 0"
        " OR duration_seconds <> 0 ORDER BY org_id, day")
    return {"calls": [dict(r) for r in calls], "leads": [dict(r) for r in leads],
            "stats": [dict(r) for r in stats]}


# The calls that count, each with the organization's day it counts on (decision 45): the
# day, in the zone the organization's figures count by, of the first known of its creation,
# start, end and last event (call_processor.calls.counted_at), said here in SQL.
_COUNTED_CALLS = """(
    SELECT calls.*, (coalesce(calls.created_at, calls.started_at, calls.ended_at,
                              calls.last_event_at) AT TIME ZONE o.figures_time_zone)::date
               AS local_day
    FROM calls JOIN organizations o ON o.id = calls.org_id
    WHERE calls.stats_day IS NOT NULL)"""

STATS_FROM_AGGREGATES = f"""
    WITH by_calls AS (
        SELECT org_id, local_day AS day, count(*) AS calls,
               count(*) FILTER (WHERE direction = 'inboundPhoneCall') AS inbound,
               count(*) FILTER (WHERE direction = 'outboundPhoneCall') AS outbound,
               count(*) FILTER (WHERE direction = 'webCall') AS web,
               coalesce(sum(duration_seconds), 0) AS duration_seconds,
               coalesce(sum(cost), 0) AS cost
        FROM {_COUNTED_CALLS} AS counted GROUP BY 1, 2
    ), by_leads AS (
        SELECT l.org_id, (l.first_inbound_at AT TIME ZONE o.figures_time_zone)::date AS day,
               count(*) AS new_leads
        FROM leads l JOIN organizations o ON o.id = l.org_id
        WHERE l.first_inbound_at IS NOT NULL GROUP BY 1, 2
    )
    SELECT coalesce(c.org_id, l.org_id) AS org_id, coalesce(c.day, l.day) AS day,
           coalesce(c.calls, 0) AS calls, coalesce(c.inbound, 0) AS inbound,
           coalesce(c.outbound, 0) AS outbound, coalesce(c.web, 0) AS web,
           coalesce(l.new_leads, 0) AS new_leads,
           coalesce(c.duration_seconds, 0) AS duration_seconds, coalesce(c.cost, 0) AS cost
    FROM by_calls c FULL JOIN by_leads l ON l.org_id = c.org_id AND l.day = c.day
    ORDER BY 1, 2"""  # noqa: S608 - a constant


# Rows of the per-day breakdowns (migration 0008) that are not the aggregate over calls,
# either way; a row keyed by anything but the md5 of its values counts as wrong.
BREAKDOWNS_NOT_FROM_CALLS = {
    "daily_call_outcomes": f"""
        WITH expected AS (
            SELECT org_id, local_day AS day, ended_reason, success_evaluation,
                   count(*)::int AS calls
            FROM {_COUNTED_CALLS} AS counted GROUP BY 1, 2, 3, 4
        ), stored AS (
            SELECT org_id, day, ended_reason, success_evaluation, calls
            FROM daily_call_outcomes
            WHERE outcome_key = md5(ROW(ended_reason, success_evaluation)::text)::uuid
            UNION ALL
            SELECT org_id, day, ended_reason, success_evaluation, NULL FROM daily_call_outcomes
            WHERE outcome_key <> md5(ROW(ended_reason, success_evaluation)::text)::uuid
        )
        (SELECT 'missing' AS wrong, * FROM (TABLE expected EXCEPT ALL TABLE stored) AS m)
        UNION ALL
        (SELECT 'extra', * FROM (TABLE stored EXCEPT ALL TABLE expected) AS e)""",  # noqa: S608
    "daily_assistants": f"""
        WITH expected AS (
            SELECT org_id, local_day AS day, assistant_id, count(*)::int AS calls,
                   coalesce(sum(duration_seconds), 0) AS duration_seconds,
                   coalesce(sum(cost), 0) AS cost
            FROM {_COUNTED_CALLS} AS counted GROUP BY 1, 2, 3
        ), stored AS (
            SELECT org_id, day, assistant_id, calls, duration_seconds, cost
            FROM daily_assistants WHERE assistant_key = md5(ROW(assistant_id)::text)::uuid
            UNION ALL
            SELECT org_id, day, assistant_id, NULL, NULL, NULL FROM daily_assistants
            WHERE assistant_key <> md5(ROW(assistant_id)::text)::uuid
        )
        (SELECT 'missing' AS wrong, * FROM (TABLE expected EXCEPT ALL TABLE stored) AS m)
        UNION ALL
        (SELECT 'extra', * FROM (TABLE stored EXCEPT ALL TABLE expected) AS e)""",  # noqa: S608
    # Each boolean structured output and scorecard score of the calls (migration 0014), as
    # calltrail_common.structured_outputs.success_signals reads them, said here in SQL.
    "daily_success_signals": f"""
        WITH signal AS (
            SELECT c.org_id, c.local_day AS day, 'output' AS kind, o.key AS source_id,
                   CASE WHEN (o.value -> 'result')::boolean THEN 1 ELSE 0 END::numeric
                       AS value, c.success_evaluation
            FROM {_COUNTED_CALLS} AS c, jsonb_each(c.structured_outputs) o
            WHERE jsonb_typeof(o.value) = 'object'
              AND jsonb_typeof(o.value -> 'result') = 'boolean'
            UNION ALL
            SELECT c.org_id, c.local_day, 'scorecard', s.key,
                   round((s.value ->> 'scoreNormalized')::numeric, 2), c.success_evaluation
            FROM {_COUNTED_CALLS} AS c, jsonb_each(c.scorecards) s
            WHERE jsonb_typeof(s.value) = 'object'
              AND jsonb_typeof(s.value -> 'scoreNormalized') = 'number'
        ), expected AS (
            SELECT org_id, day, kind, source_id, value, success_evaluation,
                   count(*)::int AS calls
            FROM signal GROUP BY 1, 2, 3, 4, 5, 6
        ), stored AS (
            SELECT org_id, day, kind, source_id, value, success_evaluation, calls
            FROM daily_success_signals
            WHERE signal_key = md5(ROW(kind, source_id, value, success_evaluation)::text)::uuid
            UNION ALL
            SELECT org_id, day, kind, source_id, value, success_evaluation, NULL
            FROM daily_success_signals
            WHERE signal_key <> md5(ROW(kind, source_id, value, success_evaluation)::text)::uuid
        )
        (SELECT 'missing' AS wrong, * FROM (TABLE expected EXCEPT ALL TABLE stored) AS m)
        UNION ALL
        (SELECT 'extra', * FROM (TABLE stored EXCEPT ALL TABLE expected) AS e)""",  # noqa: S608
}


async def assert_invariants(connection: asyncpg.Connection) -> None:
    """Statistics and the per-day breakdowns equal the aggregates; leads agree with their
    calls; links are right."""
    expected = [dict(r) for r in await connection.fetch(STATS_FROM_AGGREGATES)]
    assert (await snapshot(connection))["stats"] == expected
    for table, query in BREAKDOWNS_NOT_FROM_CALLS.items():
        wrong = [dict(r) for r in await connection.fetch(query)]
        assert not wrong, (table, wrong)
    wrong_counts = await connection.fetch(
        "SELECT l.id FROM leads l WHERE l.call_count <>"
        " (SELECT count(*) FROM calls c WHERE c.lead_id = l.id)")
    assert not wrong_counts
    unlinked = await connection.fetch(
        "SELECT c.id FROM calls c JOIN leads l ON l.org_id = c.org_id"
        " AND l.phone_number = c.customer_number WHERE c.lead_id IS DISTINCT FROM l.id")
    assert not unlinked
    lead_without_inbound = await connection.fetch(
        "SELECT l.id FROM leads l WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE"
        " c.lead_id = l.id AND c.direction = 'inboundPhoneCall')")
    assert not lead_without_inbound
    # Decision 44: a deleted call keeps nothing and counts nowhere; an erased one keeps no
    # personal field (its number is its lead's pseudonym, or nothing).
    tombstones_with_data = await connection.fetch(
        "SELECT id FROM calls WHERE deleted AND (stats_day IS NOT NULL OR lead_id IS NOT NULL"
        " OR customer_number IS NOT NULL OR transcript IS NOT NULL OR status IS NOT NULL"
        " OR field_versions <> '{}')")
    assert not tombstones_with_data
    erased_with_data = await connection.fetch(
        "SELECT c.id FROM calls c WHERE c.erased_at IS NOT NULL AND (c.customer_name IS NOT"
        " NULL OR c.customer_email IS NOT NULL OR c.transcript IS NOT NULL OR c.summary IS"
        " NOT NULL OR c.structured_data IS NOT NULL OR c.recording_url IS NOT NULL OR"
        " c.stereo_recording_url IS NOT NULL OR c.metadata IS NOT NULL OR"
        " c.customer_number NOT LIKE 'erased:%')")
    assert not erased_with_data
