"""The api's reads over Postgres. Every query is scoped by the token's organization: an id
of another organization finds nothing, exactly like an id that does not exist. The api
writes no table itself: connected accounts and sync runs change through their owners
(`calltrail_common.vapi_accounts`, `calltrail_common.sync_runs`: decision 5), whose reads
it shares too."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import date, datetime

import asyncpg

from api.cursors import Position
from calltrail_common import sync_runs, vapi_accounts

# The digest is looked up through the unique index on api_tokens.token_sha256: the
# comparison happens on the digest, so its timing tells nothing about the token itself.
USAGE_DAYS = """
    SELECT day, calls, minutes, cost FROM vapi_usage_daily
    WHERE org_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day"""

STATS_DAYS = """
    SELECT day, calls, inbound, outbound, web, new_leads, duration_seconds, cost
    FROM daily_stats WHERE org_id = $1 AND day BETWEEN $2 AND $3 ORDER BY day"""

_CALL_SUMMARY_COLUMNS = """
    c.id, c.direction, c.status, c.ended_reason, c.created_at, c.started_at, c.ended_at,
    c.duration_seconds, c.cost, c.customer_number, c.customer_name, c.assistant_id,
    c.phone_number_id, c.lead_id, an.name AS assistant_name, pn.name AS phone_number_name"""
# What the account calls the call's assistant and number (metrics-sync's `vapi_names`,
# decision 43): one primary-key probe each per row, NULL while unknown.
_CALL_NAMES = """
    LEFT JOIN vapi_names an ON an.org_id = c.org_id AND an.kind = 'assistant'
                           AND an.vapi_id = c.assistant_id
    LEFT JOIN vapi_names pn ON pn.org_id = c.org_id AND pn.kind = 'phone_number'
                           AND pn.vapi_id = c.phone_number_id"""

# Newest first over the index calls_org_created (org_id, created_at DESC, id DESC), where a
# call whose creation time is not known yet comes first. The page starts strictly after the
# cursor's (created_at, id).
_CALLS_PAGE = """
    SELECT {columns} FROM calls c {names}
    WHERE c.org_id = $1 AND NOT c.deleted
      AND ($2::text IS NULL OR c.direction = $2)
      AND ($3::text IS NULL OR c.status = $3)
      AND ($4::uuid IS NULL OR c.lead_id = $4)
      AND ($5::timestamptz IS NULL OR c.created_at >= $5)
      AND ($6::timestamptz IS NULL OR c.created_at < $6)
      {after}
    ORDER BY c.created_at DESC, c.id DESC
    LIMIT $7"""  # constant fragments; every value is a parameter
_AFTER_DATED = ("AND c.created_at IS NOT NULL"
                " AND (c.created_at, c.id) < ($8::timestamptz, $9::text)")
_AFTER_UNDATED = "AND (c.created_at IS NOT NULL OR c.id < $8::text)"
_PAGE = {"columns": _CALL_SUMMARY_COLUMNS, "names": _CALL_NAMES}
CALLS_FIRST_PAGE = _CALLS_PAGE.format(**_PAGE, after="")
CALLS_AFTER_DATED = _CALLS_PAGE.format(**_PAGE, after=_AFTER_DATED)
CALLS_AFTER_UNDATED = _CALLS_PAGE.format(**_PAGE, after=_AFTER_UNDATED)

# An export reads the list's pages (same filters, same order, same index) with a few more
# columns, EXPORT_BATCH_ROWS at a time, each page a query of its own: a slow reader holds
# no pool connection between pages, and, as for the list, none is skipped or repeated while
# calls arrive. Not one cursor over the whole query: Postgres plans that for every row (a
# sort of all the organization's calls before the first comes out), and it would hold a
# connection for as long as the client takes to read.
EXPORT_BATCH_ROWS = 1000
_CALL_EXPORT_COLUMNS = f"{_CALL_SUMMARY_COLUMNS}, c.summary, c.success_evaluation"
CALLS_EXPORT_FIRST = _CALLS_PAGE.format(columns=_CALL_EXPORT_COLUMNS, names=_CALL_NAMES,
                                        after="")
CALLS_EXPORT_AFTER_DATED = _CALLS_PAGE.format(columns=_CALL_EXPORT_COLUMNS, names=_CALL_NAMES,
                                              after=_AFTER_DATED)
CALLS_EXPORT_AFTER_UNDATED = _CALLS_PAGE.format(columns=_CALL_EXPORT_COLUMNS,
                                                names=_CALL_NAMES, after=_AFTER_UNDATED)

CALL = f"""
    SELECT c.*, an.name AS assistant_name, pn.name AS phone_number_name
    FROM calls c {_CALL_NAMES} WHERE c.org_id = $1 AND c.id = $2 AND NOT c.deleted"""  # noqa: S608

# The live board (decision 46): a call as a board shows it, the caller by its lead's name.
_LIVE_COLUMNS = """
    c.org_id, c.id, c.direction, c.status, c.ended_reason, c.success_evaluation,
    c.created_at, c.started_at, c.ended_at, c.customer_number, c.assistant_id,
    coalesce(l.name, c.customer_name) AS caller_name"""
# What a board shows when it opens: the calls not ended and those ended within the linger
# ($3 seconds), over the index calls_org_created: among the calls created within $2 seconds
# (or not dated yet), the longest a call can last, so a call whose end never came leaves.
LIVE_BOARD = f"""
    SELECT {_LIVE_COLUMNS} FROM calls c LEFT JOIN leads l ON l.id = c.lead_id
    WHERE c.org_id = $1 AND NOT c.deleted
      AND (c.created_at IS NULL OR c.created_at >= now() - make_interval(secs => $2))
      AND (c.status IS DISTINCT FROM 'ended' OR c.ended_at >= now() - make_interval(secs => $3))
    ORDER BY c.created_at DESC, c.id DESC
    LIMIT $4"""  # noqa: S608 - constant columns
# The rows of changed calls, by (organization, call id).
LIVE_CALLS = f"""
    SELECT {_LIVE_COLUMNS}
    FROM unnest($1::uuid[], $2::text[]) AS changed(org_id, id)
    JOIN calls c ON c.id = changed.id AND c.org_id = changed.org_id AND NOT c.deleted
    LEFT JOIN leads l ON l.id = c.lead_id"""  # noqa: S608 - constant columns

CALL_RECORDINGS = """
    SELECT c.recording_url, c.stereo_recording_url FROM calls c
    WHERE c.org_id = $1 AND c.id = $2 AND NOT c.deleted"""

_LEAD_COLUMNS = """
    l.id, l.phone_number, l.name, l.email, l.first_call_at, l.last_call_at, l.call_count,
    l.created_at"""

LEAD = f"SELECT {_LEAD_COLUMNS} FROM leads l WHERE l.org_id = $1 AND l.id = $2"  # noqa: S608

# Newest lead first over leads_org_created (org_id, created_at DESC, id DESC): created_at
# never changes, so pages neither skip nor repeat while leads are added or updated.
_LEADS_PAGE = f"""
    SELECT {_LEAD_COLUMNS} FROM leads l
    WHERE l.org_id = $1
      AND ($2::text IS NULL OR l.name ILIKE $2 OR l.email ILIKE $2 OR l.phone_number LIKE $2)
      {{after}}
    ORDER BY l.created_at DESC, l.id DESC
    LIMIT $3"""  # noqa: S608
LEADS_FIRST_PAGE = _LEADS_PAGE.format(after="")
LEADS_AFTER = _LEADS_PAGE.format(
    after="AND (l.created_at, l.id) < ($4::timestamptz, $5::uuid)")

LEAD_CALLS = f"""
    SELECT {_CALL_SUMMARY_COLUMNS} FROM calls c {_CALL_NAMES}
    WHERE c.org_id = $1 AND c.lead_id = $2 AND NOT c.deleted
    ORDER BY c.created_at DESC, c.id DESC
    LIMIT $3"""  # noqa: S608

# The overview's breakdowns count the calls daily_stats counts: those of the organization's
# day (decision 45). The processor keeps them per day (migration 0008), so a range reads a
# few rows per day, not every call of the range.
CALL_OUTCOMES = """
    SELECT ended_reason, success_evaluation, sum(calls) AS calls FROM daily_call_outcomes
    WHERE org_id = $1 AND day BETWEEN $2 AND $3
    GROUP BY outcome_key, ended_reason, success_evaluation"""

# The organization's success measure and what the calls of the range that carry its source
# say (migration 0014): no row without a measure, one with NULL calls when no call has it.
# Read with the figures, never baked into them, so a new choice applies to every past day.
# The shards of the chosen source only (daily_success_signals_by_source), summed over the
# range: the view would sum every source of every day first.
_SOURCE_SIGNALS = """
        SELECT g.value, g.success_evaluation, sum(g.calls)::bigint AS calls
        FROM daily_success_signal_shards g
        WHERE g.org_id = m.org_id AND g.kind = m.kind AND g.source_id = m.source_id
          AND g.day BETWEEN $2 AND $3
        GROUP BY g.value, g.success_evaluation
        HAVING sum(g.calls) <> 0"""
SUCCESS_SIGNALS = f"""
    SELECT m.kind, m.source_id, m.pass_mark, s.value, s.success_evaluation, s.calls
    FROM success_measures m
    LEFT JOIN LATERAL ({_SOURCE_SIGNALS}) s ON true
    WHERE m.org_id = $1"""  # noqa: S608 - a constant

ASSISTANTS = """
    SELECT a.assistant_id, n.name AS assistant_name, a.calls, a.seconds, a.cost
    FROM (SELECT assistant_id, sum(calls) AS calls, sum(duration_seconds) AS seconds,
                 sum(cost) AS cost
          FROM daily_assistants WHERE org_id = $1 AND day BETWEEN $2 AND $3
          GROUP BY assistant_key, assistant_id
          ORDER BY sum(calls) DESC, assistant_id NULLS LAST LIMIT $4) a
    LEFT JOIN vapi_names n ON n.org_id = $1 AND n.kind = 'assistant'
                          AND n.vapi_id = a.assistant_id
    ORDER BY a.calls DESC, a.assistant_id NULLS LAST"""

# Vapi's `costBreakdown` per component over the days, from the daily usage metrics-sync
# keeps; only the components that are money (Vapi's object also holds token counts).
COST_COMPONENTS = """
    SELECT part.key AS component, sum(part.value::numeric) AS cost
    FROM vapi_usage_daily d, jsonb_each_text(d.cost_breakdown) AS part
    WHERE d.org_id = $1 AND d.day BETWEEN $2 AND $3
      AND jsonb_typeof(d.cost_breakdown) = 'object' AND part.key = ANY($4::text[])
      AND part.value ~ '^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]+)?$'
    GROUP BY part.key"""

# An agency's roll-up in one query: each client's sums over the daily figures its overview
# reads, its evaluations (verdicts with their calls), and its success measure with what the
# calls carrying its source say (as SUCCESS_SIGNALS); `api.rollup` counts them.
CLIENT_FIGURES = f"""
    SELECT o.id, o.name, o.markup_percent,
           coalesce(s.calls, 0) AS calls, coalesce(s.seconds, 0) AS seconds,
           coalesce(s.cost, 0) AS cost, coalesce(s.new_leads, 0) AS new_leads,
           coalesce(e.verdicts, '{{}}') AS verdicts, coalesce(e.counts, '{{}}') AS verdict_calls,
           m.kind AS measure_kind, m.source_id AS measure_source_id, m.pass_mark,
           coalesce(g.values, '{{}}') AS signal_values,
           coalesce(g.evaluations, '{{}}') AS signal_evaluations,
           coalesce(g.counts, '{{}}') AS signal_calls
    FROM organizations o
    LEFT JOIN LATERAL (
        SELECT sum(d.calls)::bigint AS calls, sum(d.duration_seconds) AS seconds,
               sum(d.cost) AS cost, sum(d.new_leads)::bigint AS new_leads
        FROM daily_stats d WHERE d.org_id = o.id AND d.day BETWEEN $2 AND $3) s ON true
    LEFT JOIN LATERAL (
        SELECT array_agg(v.success_evaluation) AS verdicts, array_agg(v.calls) AS counts
        FROM (SELECT c.success_evaluation, sum(c.calls)::bigint AS calls
              FROM daily_call_outcomes c
              WHERE c.org_id = o.id AND c.day BETWEEN $2 AND $3
                AND c.success_evaluation IS NOT NULL
              GROUP BY c.success_evaluation) v) e ON true
    LEFT JOIN success_measures m ON m.org_id = o.id
    LEFT JOIN LATERAL (
        SELECT array_agg(x.value) AS values, array_agg(x.success_evaluation) AS evaluations,
               array_agg(x.calls) AS counts
        FROM ({_SOURCE_SIGNALS}) x) g ON true
    WHERE o.agency_id = $1
    ORDER BY lower(o.name), o.id"""  # noqa: S608 - constants

# A client's markup, for its own token's answers (0: not a client).
ORG_KIND = "SELECT kind FROM organizations WHERE id = $1"

WEBHOOK_ENDPOINT = """
    SELECT id, secret FROM webhook_endpoints
    WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT 1"""

READY = "SELECT 1"


class Repository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def vapi_account(self, org_id: uuid.UUID) -> asyncpg.Record | None:
        return await vapi_accounts.find(self._pool, org_id)

    async def sync_run(self, org_id: uuid.UUID, sync_id: uuid.UUID) -> asyncpg.Record | None:
        return await sync_runs.find(self._pool, sync_id, org_id)

    async def usage_days(self, org_id: uuid.UUID, start: date, end: date
                         ) -> list[asyncpg.Record]:
        return await self._pool.fetch(USAGE_DAYS, org_id, start, end)

    async def stats_days(self, org_id: uuid.UUID, start: date, end: date
                         ) -> list[asyncpg.Record]:
        return await self._pool.fetch(STATS_DAYS, org_id, start, end)

    async def call_outcomes(self, org_id: uuid.UUID, start: date, end: date
                            ) -> list[asyncpg.Record]:
        return await self._pool.fetch(CALL_OUTCOMES, org_id, start, end)

    async def success_signals(self, org_id: uuid.UUID, start: date, end: date
                              ) -> list[asyncpg.Record]:
        return await self._pool.fetch(SUCCESS_SIGNALS, org_id, start, end)

    async def assistants(self, org_id: uuid.UUID, start: date, end: date, limit: int
                         ) -> list[asyncpg.Record]:
        return await self._pool.fetch(ASSISTANTS, org_id, start, end, limit)

    async def cost_components(self, org_id: uuid.UUID, start: date, end: date,
                              components: list[str]) -> list[asyncpg.Record]:
        return await self._pool.fetch(COST_COMPONENTS, org_id, start, end, components)

    async def client_figures(self, agency_id: uuid.UUID, start: date, end: date
                             ) -> list[asyncpg.Record]:
        return await self._pool.fetch(CLIENT_FIGURES, agency_id, start, end)

    async def is_agency(self, org_id: uuid.UUID) -> bool:
        return await self._pool.fetchval(ORG_KIND, org_id) == "agency"

    async def latest_sync_run(self, org_id: uuid.UUID) -> asyncpg.Record | None:
        return await sync_runs.latest(self._pool, org_id)

    async def webhook_endpoint(self, org_id: uuid.UUID) -> asyncpg.Record | None:
        """The organization's newest active endpoint (its id and secret): for its own
        settings page only."""
        return await self._pool.fetchrow(WEBHOOK_ENDPOINT, org_id)

    async def calls_page(self, org_id: uuid.UUID, *, call_type: str | None,
                         status: str | None, lead_id: uuid.UUID | None,
                         created_from: datetime | None, created_to: datetime | None,
                         after: Position | None, limit: int) -> list[asyncpg.Record]:
        args = [org_id, call_type, status, lead_id, created_from, created_to, limit]
        if after is None:
            return await self._pool.fetch(CALLS_FIRST_PAGE, *args)
        if after.created_at is None:
            return await self._pool.fetch(CALLS_AFTER_UNDATED, *args, after.id)
        return await self._pool.fetch(CALLS_AFTER_DATED, *args, after.created_at, after.id)

    async def export_calls(self, org_id: uuid.UUID, *, call_type: str | None,
                           status: str | None, lead_id: uuid.UUID | None,
                           created_from: datetime | None, created_to: datetime | None
                           ) -> AsyncIterator[asyncpg.Record]:
        """Every call the filters match, newest first, a page at a time."""
        args = [org_id, call_type, status, lead_id, created_from, created_to,
                EXPORT_BATCH_ROWS]
        rows = await self._pool.fetch(CALLS_EXPORT_FIRST, *args)
        while rows:
            for row in rows:
                yield row
            if len(rows) < EXPORT_BATCH_ROWS:
                return
            last = rows[-1]
            rows = await (
                self._pool.fetch(CALLS_EXPORT_AFTER_UNDATED, *args, last["id"])
                if last["created_at"] is None else
                self._pool.fetch(CALLS_EXPORT_AFTER_DATED, *args, last["created_at"],
                                 last["id"]))

    async def export_leads(self, org_id: uuid.UUID, *, pattern: str | None
                           ) -> AsyncIterator[asyncpg.Record]:
        """Every lead the search finds, newest first, a page at a time."""
        rows = await self._pool.fetch(LEADS_FIRST_PAGE, org_id, pattern, EXPORT_BATCH_ROWS)
        while rows:
            for row in rows:
                yield row
            if len(rows) < EXPORT_BATCH_ROWS:
                return
            rows = await self._pool.fetch(LEADS_AFTER, org_id, pattern, EXPORT_BATCH_ROWS,
                                          rows[-1]["created_at"], rows[-1]["id"])

    async def call(self, org_id: uuid.UUID, call_id: str
                   ) -> tuple[asyncpg.Record, asyncpg.Record | None] | None:
        async with self._pool.acquire() as connection:
            call = await connection.fetchrow(CALL, org_id, call_id)
            if call is None:
                return None
            lead = (None if call["lead_id"] is None
                    else await connection.fetchrow(LEAD, org_id, call["lead_id"]))
        return call, lead

    async def call_recordings(self, org_id: uuid.UUID, call_id: str
                              ) -> asyncpg.Record | None:
        """The call's stored recording URLs; None when the organization has no such call."""
        async with self._pool.acquire() as connection:
            row: asyncpg.Record | None = await connection.fetchrow(CALL_RECORDINGS, org_id,
                                                                   call_id)
        return row

    async def leads_page(self, org_id: uuid.UUID, *, pattern: str | None,
                         after: tuple[datetime, uuid.UUID] | None, limit: int
                         ) -> list[asyncpg.Record]:
        if after is None:
            return await self._pool.fetch(LEADS_FIRST_PAGE, org_id, pattern, limit)
        return await self._pool.fetch(LEADS_AFTER, org_id, pattern, limit, *after)

    async def lead(self, org_id: uuid.UUID, lead_id: uuid.UUID, call_limit: int
                   ) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
        async with self._pool.acquire() as connection:
            lead = await connection.fetchrow(LEAD, org_id, lead_id)
            if lead is None:
                return None
            calls = await connection.fetch(LEAD_CALLS, org_id, lead_id, call_limit)
        return lead, calls

    async def live_board(self, org_id: uuid.UUID, *, since_seconds: float,
                         linger_seconds: float, limit: int) -> list[asyncpg.Record]:
        return await self._pool.fetch(LIVE_BOARD, org_id, since_seconds, linger_seconds,
                                      limit)

    async def live_calls(self, calls: Sequence[tuple[uuid.UUID, str]]
                         ) -> list[asyncpg.Record]:
        return await self._pool.fetch(LIVE_CALLS, [org for org, _ in calls],
                                      [call_id for _, call_id in calls])

    async def ready(self) -> bool:
        return await self._pool.fetchval(READY) == 1
