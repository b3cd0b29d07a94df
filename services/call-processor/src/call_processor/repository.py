"""The call processor's SQL, each statement named and visible here, and nothing else.

Lock order inside a batch's transaction, the same in every replica: calls (by id), then
leads (by organization and number), then daily_stats (by organization and day), then
daily_call_outcomes and daily_assistants (by organization, day and key).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from call_processor.calls import (
    CALL_FIELDS,
    CallState,
    DayContribution,
    contribution,
    stats_day,
)
from calltrail_common.phone_numbers import ASSIGNMENT_LOCK_KEY

ORGANIZATIONS_BY_ID = "SELECT id FROM organizations WHERE id = ANY($1::uuid[])"
ORGANIZATIONS_BY_PHONE_NUMBER_ID = """
    SELECT vapi_phone_number_id, org_id FROM phone_numbers
    WHERE vapi_phone_number_id = ANY($1::text[])"""
ORGANIZATIONS_BY_NUMBER = """
    SELECT number, org_id FROM phone_numbers WHERE number = ANY($1::text[])"""
ORGANIZATIONS_BY_VAPI_ORG = """
    SELECT vapi_org_id, org_id FROM vapi_accounts
    WHERE vapi_org_id = ANY($1::text[]) AND status = 'connected'"""

ARCHIVE_EVENTS = """
    INSERT INTO events (message_id, org_id, received_at, message_type, call_id, dedupe_key,
                        endpoint_id, body)
    SELECT * FROM unnest($1::text[], $2::uuid[], $3::timestamptz[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::bytea[])
    ON CONFLICT (message_id) DO UPDATE SET org_id = EXCLUDED.org_id
        WHERE events.org_id IS NULL AND EXCLUDED.org_id IS NOT NULL"""
KEEP_UNASSIGNED = """
    INSERT INTO unassigned_events (message_id, received_at, phone_number_id, dialled_number,
                                   vapi_org_id, metadata_org_ids)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (message_id) DO NOTHING"""
FORGET_UNASSIGNED = "DELETE FROM unassigned_events WHERE message_id = ANY($1::text[])"
HOLD_ASSIGNMENT_LOCK = "SELECT pg_advisory_xact_lock_shared($1)"

# The statements on calls are built from the constant field list so that CALL_FIELDS stays
# the one list of call fields; each column goes as one array: one round trip per batch.
_FIELD_TYPES = {
    "direction": "text", "created_at": "timestamptz", "started_at": "timestamptz",
    "ended_at": "timestamptz", "ended_reason": "text", "cost": "numeric",
    "cost_breakdown": "jsonb", "costs": "jsonb", "customer_number": "text",
    "customer_name": "text", "customer_email": "text", "phone_number_id": "text",
    "assistant_id": "text", "transcript": "text", "summary": "text", "structured_data": "jsonb",
    "success_evaluation": "text", "recording_url": "text", "stereo_recording_url": "text",
    "metadata": "jsonb",
}
_COLUMN_TYPES = {**{name: _FIELD_TYPES[name] for name in CALL_FIELDS},
                 "status": "text", "duration_seconds": "numeric", "report_received": "boolean",
                 "last_event_at": "timestamptz", "stats_day": "date", "field_versions": "jsonb"}
_COLUMNS = tuple(_COLUMN_TYPES)
_JSONB_COLUMNS = frozenset(c for c, t in _COLUMN_TYPES.items() if t == "jsonb")
# jsonb travels as text: asyncpg cannot tell a JSON array inside a jsonb[] from a dimension.
_UNNEST_COLUMNS = ", ".join(f"${i}::{'text' if t == 'jsonb' else t}[]"
                            for i, t in enumerate(_COLUMN_TYPES.values(), start=3))


def _given(column: str) -> str:
    return f"u.{column}::jsonb" if column in _JSONB_COLUMNS else f"u.{column}"


LOCK_CALLS = (
    "SELECT id, org_id, "  # noqa: S608 - column names are code constants
    + ", ".join(_COLUMNS) + " FROM calls WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE")
# A call not stored yet is inserted whole, never as an empty claim updated later; one that
# another transaction inserted meanwhile is not returned, and is locked and merged instead.
INSERT_CALLS = (
    "INSERT INTO calls (id, org_id, "  # noqa: S608 - column names are code constants
    + ", ".join(_COLUMNS) + ") SELECT u.id, u.org_id, " + ", ".join(map(_given, _COLUMNS))
    + f" FROM unnest($1::text[], $2::uuid[], {_UNNEST_COLUMNS})"
    + f" AS u (id, org_id, {', '.join(_COLUMNS)})"
    + " ORDER BY u.id ON CONFLICT (id) DO NOTHING RETURNING id")
# Only the fields whose value changed are written (bit i of `changed` is CALL_FIELDS[i]);
# the others keep their stored value, so an unchanged transcript is neither sent nor
# re-toasted. A changed customer number unlinks the call from its old lead (the link step
# relinks it).
SAVE_CALLS = (
    "UPDATE calls c SET "  # noqa: S608 - column names are code constants, values parameters
    + ", ".join(f"{f} = CASE WHEN u.changed & {1 << i} <> 0 THEN {_given(f)} ELSE c.{f} END"
                for i, f in enumerate(CALL_FIELDS))
    + ", " + ", ".join(f"{c} = {_given(c)}" for c in _COLUMNS[len(CALL_FIELDS):])
    + f", lead_id = CASE WHEN u.changed & {1 << CALL_FIELDS.index('customer_number')} <> 0"
    + " AND c.customer_number IS DISTINCT FROM u.customer_number THEN NULL ELSE c.lead_id END"
    + f", updated_at = now() FROM unnest($1::text[], $2::int[], {_UNNEST_COLUMNS})"
    + f" AS u (id, changed, {', '.join(_COLUMNS)}) WHERE c.id = u.id")

CREATE_LEADS = """
    INSERT INTO leads (id, org_id, phone_number)
    SELECT gen_random_uuid(), org_id, number
    FROM unnest($1::uuid[], $2::text[]) AS caller (org_id, number) ORDER BY org_id, number
    ON CONFLICT (org_id, phone_number) DO NOTHING
    RETURNING org_id, phone_number"""
# The calls of this batch whose number or direction may have changed, and every call with
# the number of a lead created now (stored before it existed). Any other call is linked.
LINK_CALLS_TO_LEADS = """
    WITH candidate AS (
        SELECT id FROM unnest($1::text[]) AS changed (id)
        UNION
        SELECT c.id FROM calls c, unnest($2::uuid[], $3::text[]) AS created (org_id, number)
        WHERE c.org_id = created.org_id AND c.customer_number = created.number
    )
    UPDATE calls c SET lead_id = l.id
    FROM candidate, leads l
    WHERE c.id = candidate.id AND l.org_id = c.org_id AND l.phone_number = c.customer_number
      AND c.lead_id IS DISTINCT FROM l.id"""
# A lead is derived from its calls: counts and times, and name and email from the newest
# call that has them (customer object first, then the analysis' structured data).
REFRESH_LEADS = """
    WITH target AS (
        SELECT l.id, l.first_inbound_at AS old_first_inbound_at
        FROM leads l, unnest($1::uuid[], $2::text[]) AS caller (org_id, number)
        WHERE l.org_id = caller.org_id AND l.phone_number = caller.number
        ORDER BY l.id FOR UPDATE OF l
    ), linked AS (
        SELECT c.id, c.lead_id, c.direction, c.created_at, c.started_at, c.customer_name,
               c.customer_email, c.structured_data
        FROM calls c JOIN target t ON c.lead_id = t.id
    ), totals AS (
        SELECT lead_id, count(*) AS call_count,
               min(coalesce(started_at, created_at)) AS first_call_at,
               max(coalesce(started_at, created_at)) AS last_call_at,
               min(coalesce(created_at, started_at))
                   FILTER (WHERE direction = 'inboundPhoneCall') AS first_inbound_at
        FROM linked GROUP BY lead_id
    ), named AS (
        SELECT DISTINCT ON (lead_id) lead_id,
               coalesce(customer_name, structured_data ->> 'name') AS name
        FROM linked WHERE coalesce(customer_name, structured_data ->> 'name') IS NOT NULL
        ORDER BY lead_id, (customer_name IS NOT NULL) DESC, created_at DESC NULLS LAST, id DESC
    ), mailed AS (
        SELECT DISTINCT ON (lead_id) lead_id,
               coalesce(customer_email, structured_data ->> 'email') AS email
        FROM linked WHERE coalesce(customer_email, structured_data ->> 'email') IS NOT NULL
        ORDER BY lead_id, (customer_email IS NOT NULL) DESC, created_at DESC NULLS LAST, id DESC
    )
    UPDATE leads l SET
        call_count = coalesce(totals.call_count, 0),
        first_call_at = totals.first_call_at,
        last_call_at = totals.last_call_at,
        first_inbound_at = totals.first_inbound_at,
        name = named.name,
        email = mailed.email,
        updated_at = now()
    FROM target
    LEFT JOIN totals ON totals.lead_id = target.id
    LEFT JOIN named ON named.lead_id = target.id
    LEFT JOIN mailed ON mailed.lead_id = target.id
    WHERE l.id = target.id
    RETURNING l.id, l.org_id, target.old_first_inbound_at, l.first_inbound_at"""
# A lead exists while an inbound call has its number: one whose last inbound call changed
# number goes (its calls are unlinked by the foreign key), and stops counting as new.
DROP_LEADS_WITHOUT_INBOUND_CALLS = """
    DELETE FROM leads WHERE id = ANY($1::uuid[]) AND first_inbound_at IS NULL"""

ADD_TO_DAILY_STATS = """
    INSERT INTO daily_stats AS s (org_id, day, calls, inbound, outbound, web, new_leads,
                                  duration_seconds, cost)
    SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[], $4::int[], $5::int[], $6::int[],
                         $7::int[], $8::numeric[], $9::numeric[])
    ORDER BY 1, 2
    ON CONFLICT (org_id, day) DO UPDATE SET
        calls = s.calls + EXCLUDED.calls,
        inbound = s.inbound + EXCLUDED.inbound,
        outbound = s.outbound + EXCLUDED.outbound,
        web = s.web + EXCLUDED.web,
        new_leads = s.new_leads + EXCLUDED.new_leads,
        duration_seconds = s.duration_seconds + EXCLUDED.duration_seconds,
        cost = s.cost + EXCLUDED.cost"""

# The overview's breakdowns per day (migration 0008): keyed by the md5 of the values, which
# are unbounded text from Vapi; a row whose count reaches zero is deleted.
ADD_TO_DAILY_CALL_OUTCOMES = """
    INSERT INTO daily_call_outcomes AS o (org_id, day, outcome_key, ended_reason,
                                          success_evaluation, calls)
    SELECT d.org_id, d.day, md5(ROW(d.ended_reason, d.success_evaluation)::text)::uuid,
           d.ended_reason, d.success_evaluation, d.calls
    FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[], $5::int[])
         AS d (org_id, day, ended_reason, success_evaluation, calls)
    ORDER BY 1, 2, 3
    ON CONFLICT (org_id, day, outcome_key) DO UPDATE SET calls = o.calls + EXCLUDED.calls"""
DROP_EMPTY_CALL_OUTCOMES = """
    DELETE FROM daily_call_outcomes o
    USING unnest($1::uuid[], $2::date[], $3::text[], $4::text[])
          AS d (org_id, day, ended_reason, success_evaluation)
    WHERE o.org_id = d.org_id AND o.day = d.day
      AND o.outcome_key = md5(ROW(d.ended_reason, d.success_evaluation)::text)::uuid
      AND o.calls = 0"""
ADD_TO_DAILY_ASSISTANTS = """
    INSERT INTO daily_assistants AS a (org_id, day, assistant_key, assistant_id, calls,
                                       duration_seconds, cost)
    SELECT d.org_id, d.day, md5(ROW(d.assistant_id)::text)::uuid, d.assistant_id, d.calls,
           d.duration_seconds, d.cost
    FROM unnest($1::uuid[], $2::date[], $3::text[], $4::int[], $5::numeric[], $6::numeric[])
         AS d (org_id, day, assistant_id, calls, duration_seconds, cost)
    ORDER BY 1, 2, 3
    ON CONFLICT (org_id, day, assistant_key) DO UPDATE SET
        calls = a.calls + EXCLUDED.calls,
        duration_seconds = a.duration_seconds + EXCLUDED.duration_seconds,
        cost = a.cost + EXCLUDED.cost"""
DROP_EMPTY_ASSISTANTS = """
    DELETE FROM daily_assistants a
    USING unnest($1::uuid[], $2::date[], $3::text[]) AS d (org_id, day, assistant_id)
    WHERE a.org_id = d.org_id AND a.day = d.day
      AND a.assistant_key = md5(ROW(d.assistant_id)::text)::uuid AND a.calls = 0"""

PRUNE_EVENTS = """
    DELETE FROM events WHERE message_id IN (
        SELECT e.message_id FROM events e
        WHERE e.received_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM unassigned_events u WHERE u.message_id = e.message_id)
        LIMIT $2)"""


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    message_id: str
    org_id: uuid.UUID | None
    received_at: dt.datetime
    message_type: str
    call_id: str | None
    dedupe_key: str | None
    endpoint_id: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class StoredCall:
    org_id: uuid.UUID
    state: CallState


@dataclass(frozen=True, slots=True)
class CallChange:
    """A call's state before and after this batch, and the organization that owns it."""

    org_id: uuid.UUID
    before: CallState | None  # None: not stored before this batch
    after: CallState


@dataclass
class StatsDelta:
    calls: int = 0
    inbound: int = 0
    outbound: int = 0
    web: int = 0
    new_leads: int = 0
    duration_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    def add(self, part: DayContribution) -> None:
        self.calls += part.calls
        self.inbound += part.inbound
        self.outbound += part.outbound
        self.web += part.web
        self.duration_seconds += part.duration_seconds
        self.cost += part.cost

    def is_zero(self) -> bool:
        return not (self.calls or self.inbound or self.outbound or self.web or self.new_leads
                    or self.duration_seconds or self.cost)


OutcomeKey = tuple[uuid.UUID, dt.date, str | None, str | None]
AssistantKey = tuple[uuid.UUID, dt.date, str | None]


@dataclass
class BreakdownDeltas:
    """What a batch adds to daily_call_outcomes and daily_assistants: each changed call's
    old contribution subtracted, its new one added."""

    outcomes: dict[OutcomeKey, int] = field(default_factory=lambda: defaultdict(int))
    assistants: dict[AssistantKey, StatsDelta] = field(
        default_factory=lambda: defaultdict(StatsDelta))

    def add(self, org_id: uuid.UUID, state: CallState | None, sign: int) -> None:
        part = contribution(state)
        if state is None or part is None:
            return
        self.outcomes[(org_id, part.day, state.get("ended_reason"),
                       state.get("success_evaluation"))] += sign
        self.assistants[(org_id, part.day, state.get("assistant_id"))].add(
            part if sign > 0 else part.negated())


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _columns(states: Iterable[CallState], changed: Sequence[int] | None = None
             ) -> list[list[Any]]:
    """The `_COLUMNS` of each state, column by column; with `changed`, a field whose bit is
    clear goes as NULL (it is not written)."""
    columns: list[list[Any]] = [[] for _ in _COLUMNS]
    for index, state in enumerate(states):
        mask = -1 if changed is None else changed[index]
        for bit, name in enumerate(CALL_FIELDS):
            value = state.values.get(name) if mask & (1 << bit) else None
            columns[bit].append(_json(value) if name in _JSONB_COLUMNS else value)
        derived = (state.status, state.duration_seconds, state.report_received,
                   state.last_event_at, stats_day(state),
                   _json({name: list(v) for name, v in state.versions.items()}))
        for offset, value in enumerate(derived, start=len(CALL_FIELDS)):
            columns[offset].append(value)
    return columns


def _state_from_row(row: asyncpg.Record) -> CallState:
    versions = {name: (int(v[0]), int(v[1])) for name, v in row["field_versions"].items()}
    return CallState(
        call_id=row["id"],
        status=row["status"],
        report_received=row["report_received"],
        last_event_ms=int(row["last_event_at"].timestamp() * 1000) if row["last_event_at"]
        else 0,
        values={name: row[name] for name in versions},
        versions=versions,
    )


class CallRepository:
    """Everything one batch does, on the connection of its transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def existing_organizations(self, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not ids:
            return set()
        return {r["id"] for r in await self._db.fetch(ORGANIZATIONS_BY_ID, list(ids))}

    async def organizations_by(self, query: str, keys: Iterable[str]) -> dict[str, uuid.UUID]:
        keys = sorted(set(keys))
        if not keys:
            return {}
        return {r[0]: r[1] for r in await self._db.fetch(query, keys)}

    async def hold_assignment_lock(self) -> None:
        """Shared with every processor; `phone-number add` takes it exclusively, so that an
        event found unmatched here is committed before the CLI looks for unmatched events."""
        await self._db.execute(HOLD_ASSIGNMENT_LOCK, ASSIGNMENT_LOCK_KEY)

    async def archive(self, events: Sequence[ArchivedEvent]) -> None:
        if not events:
            return
        columns = list(zip(*((e.message_id, e.org_id, e.received_at, e.message_type,
                              e.call_id, e.dedupe_key, e.endpoint_id, e.body)
                             for e in events), strict=True))
        await self._db.execute(ARCHIVE_EVENTS, *[list(c) for c in columns])

    async def keep_unassigned(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            await self._db.executemany(KEEP_UNASSIGNED, rows)

    async def forget_unassigned(self, message_ids: Sequence[str]) -> None:
        if message_ids:
            await self._db.execute(FORGET_UNASSIGNED, list(message_ids))

    async def lock_calls(self, ids: Sequence[str]) -> dict[str, StoredCall]:
        """Lock the stored rows among `ids` (in id order) and return them."""
        return {row["id"]: StoredCall(row["org_id"], _state_from_row(row))
                for row in await self._db.fetch(LOCK_CALLS, sorted(ids))}

    async def insert_calls(self, calls: dict[str, tuple[uuid.UUID, CallState]]) -> set[str]:
        """Insert calls not stored yet, whole; the ids inserted (a call another transaction
        inserted meanwhile is left alone)."""
        ids = sorted(calls)
        columns = _columns(calls[i][1] for i in ids)
        return {r["id"] for r in await self._db.fetch(
            INSERT_CALLS, ids, [calls[i][0] for i in ids], *columns)}

    async def save_calls(self, changes: Sequence[CallChange]) -> None:
        """Write what changed in stored calls (the rows are locked by `lock_calls`)."""
        if not changes:
            return
        changed = []
        for change in changes:
            assert change.before is not None
            mask = 0
            for bit, name in enumerate(CALL_FIELDS):
                if change.after.values.get(name) is not change.before.values.get(name):
                    mask |= 1 << bit
            changed.append(mask)
        columns = _columns((c.after for c in changes), changed)
        await self._db.execute(SAVE_CALLS, [c.after.call_id for c in changes], changed,
                               *columns)

    async def refresh_leads(self, inbound_callers: set[tuple[uuid.UUID, str]],
                            callers: set[tuple[uuid.UUID, str]], relinked: Iterable[str]
                            ) -> list[tuple[uuid.UUID, dt.datetime | None, dt.datetime | None]]:
        """Create leads for inbound callers, link calls (`relinked`: the calls whose number or
        direction may have changed), recompute each touched lead, and drop a lead no inbound
        call has any more.

        Returns (org, first inbound call before, after) per touched lead, for statistics.
        """
        created = []
        if inbound_callers:
            orgs, numbers = zip(*sorted(inbound_callers), strict=True)
            created = await self._db.fetch(CREATE_LEADS, list(orgs), list(numbers))
        if not callers:
            return []
        await self._db.execute(LINK_CALLS_TO_LEADS, sorted(relinked),
                               [r["org_id"] for r in created],
                               [r["phone_number"] for r in created])
        orgs, numbers = zip(*sorted(callers), strict=True)
        rows = await self._db.fetch(REFRESH_LEADS, list(orgs), list(numbers))
        orphaned = [r["id"] for r in rows if r["first_inbound_at"] is None]
        if orphaned:
            await self._db.execute(DROP_LEADS_WITHOUT_INBOUND_CALLS, orphaned)
        return [(r["org_id"], r["old_first_inbound_at"], r["first_inbound_at"]) for r in rows]

    async def add_to_daily_stats(self, deltas: dict[tuple[uuid.UUID, dt.date], StatsDelta]
                                 ) -> None:
        keys = sorted(k for k, d in deltas.items() if not d.is_zero())
        if not keys:
            return
        columns: list[list[Any]] = [[] for _ in range(9)]
        for org_id, day in keys:
            d = deltas[(org_id, day)]
            for column, value in zip(columns, (org_id, day, d.calls, d.inbound, d.outbound,
                                               d.web, d.new_leads, d.duration_seconds,
                                               d.cost), strict=True):
                column.append(value)
        await self._db.execute(ADD_TO_DAILY_STATS, *columns)

    async def add_to_breakdowns(self, deltas: BreakdownDeltas) -> None:
        """Apply the deltas (the SQL orders rows by key), then delete the rows a negative
        delta may have emptied."""
        outcomes = [(*k, n) for k, n in deltas.outcomes.items() if n]
        if outcomes:
            columns = [list(c) for c in zip(*outcomes, strict=True)]
            await self._db.execute(ADD_TO_DAILY_CALL_OUTCOMES, *columns)
            emptied = [k for k, n in deltas.outcomes.items() if n < 0]
            if emptied:
                await self._db.execute(DROP_EMPTY_CALL_OUTCOMES,
                                       *[list(c) for c in zip(*emptied, strict=True)])
        assistants = [(*k, d.calls, d.duration_seconds, d.cost)
                      for k, d in deltas.assistants.items() if not d.is_zero()]
        if assistants:
            columns = [list(c) for c in zip(*assistants, strict=True)]
            await self._db.execute(ADD_TO_DAILY_ASSISTANTS, *columns)
            emptied_ids = [k for k, d in deltas.assistants.items() if d.calls < 0]
            if emptied_ids:
                await self._db.execute(DROP_EMPTY_ASSISTANTS,
                                       *[list(c) for c in zip(*emptied_ids, strict=True)])


async def prune_events(connection: asyncpg.Connection, retention_days: int,
                       batch: int = 5000) -> int:
    """Delete archived events past retention (never unassigned ones); how many were."""
    total = 0
    while True:
        result = await connection.execute(PRUNE_EVENTS, retention_days, batch)
        deleted = int(result.split()[-1])
        total += deleted
        if deleted < batch:
            return total
