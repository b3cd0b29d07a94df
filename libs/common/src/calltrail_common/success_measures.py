"""Which structured output or scorecard counts as a call's success for an organization
(decision 41): the owner of `success_measures` (migration 0014). Set from the dashboard, the
JSON API and the CLI; every change is written to the audit log in its transaction.

A measure names a source by its Vapi id: a boolean structured output (success when true),
or a scorecard with a pass mark (success when its normalized score is at or above it). An
organization without one counts `analysis.successEvaluation`, and so does a call without
the chosen source (the overview's rate: `api.outcomes.success_rate`). The choice is read
when figures are read, never baked into them, so a change applies to past days at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import asyncpg

from calltrail_common import audit
from calltrail_common.structured_outputs import SIGNAL_KINDS, SignalKind

DEFAULT_PASS_MARK = Decimal(80)
_ID_MAX_CHARS = 255


@dataclass(frozen=True, slots=True)
class SuccessMeasure:
    kind: SignalKind
    source_id: str
    pass_mark: Decimal | None = None  # a scorecard's, 0-100; None for an output


@dataclass(frozen=True, slots=True)
class Source:
    """A source an organization may choose, as its recent calls name it."""

    kind: SignalKind
    source_id: str
    name: str | None


def measure_of(kind: str, source_id: str, pass_mark: str | float | Decimal | None = None
               ) -> SuccessMeasure:
    """A measure from what a person or a machine gave; ValueError saying what is wrong."""
    if kind not in SIGNAL_KINDS:
        raise ValueError("the kind must be 'output' (a boolean structured output) or "
                         "'scorecard'")
    source_id = source_id.strip()
    if not source_id or len(source_id) > _ID_MAX_CHARS or "\x00" in source_id:
        raise ValueError(f"give the {'structured output' if kind == 'output' else kind}'s "
                         f"id from Vapi (1 to {_ID_MAX_CHARS} characters)")
    if kind == "output":
        if pass_mark not in (None, ""):
            raise ValueError("a pass mark is for a scorecard; a boolean output passes when "
                             "true")
        return SuccessMeasure("output", source_id)
    if pass_mark in (None, ""):
        mark = DEFAULT_PASS_MARK
    else:
        try:
            mark = Decimal(str(pass_mark).strip())
        except InvalidOperation:
            raise ValueError("the pass mark must be a number from 0 to 100") from None
    if not mark.is_finite() or not Decimal(0) <= mark <= Decimal(100):
        raise ValueError("the pass mark must be a number from 0 to 100")
    return SuccessMeasure("scorecard", source_id, mark.quantize(Decimal("0.01")))


def describe(measure: SuccessMeasure | None) -> str:
    """One line for the audit log and the CLI."""
    if measure is None:
        return "analysis.successEvaluation"
    if measure.kind == "output":
        return f"output {measure.source_id} is true"
    return f"scorecard {measure.source_id} scores at least {measure.pass_mark}"


FIND = "SELECT kind, source_id, pass_mark FROM success_measures WHERE org_id = $1"

CHOOSE = """
    INSERT INTO success_measures (org_id, kind, source_id, pass_mark) VALUES ($1, $2, $3, $4)
    ON CONFLICT (org_id) DO UPDATE SET kind = EXCLUDED.kind, source_id = EXCLUDED.source_id,
        pass_mark = EXCLUDED.pass_mark, updated_at = now()"""

CLEAR = "DELETE FROM success_measures WHERE org_id = $1"

# The boolean outputs and scorecards of the organization's newest calls, by name: what the
# settings page offers. The newest $2 calls over calls_org_created (a bounded read, however
# many calls have none); a source seen under several names is listed under its newest.
RECENT_SOURCES = """
    WITH recent AS (
        SELECT c.created_at, c.id, c.structured_outputs, c.scorecards FROM calls c
        WHERE c.org_id = $1
        ORDER BY c.created_at DESC, c.id DESC LIMIT $2
    ), seen AS (
        SELECT 'output' AS kind, o.key AS source_id, o.value ->> 'name' AS name,
               r.created_at, r.id
        FROM recent r, jsonb_each(CASE jsonb_typeof(r.structured_outputs) WHEN 'object'
                                  THEN r.structured_outputs ELSE '{}' END) o
        WHERE jsonb_typeof(o.value -> 'result') = 'boolean'
        UNION ALL
        SELECT 'scorecard', s.key, s.value ->> 'name', r.created_at, r.id
        FROM recent r, jsonb_each(CASE jsonb_typeof(r.scorecards) WHEN 'object'
                                  THEN r.scorecards ELSE '{}' END) s
        WHERE jsonb_typeof(s.value) = 'object'
    )
    SELECT DISTINCT ON (kind, source_id) kind, source_id, name FROM seen
    WHERE length(source_id) BETWEEN 1 AND 255
    ORDER BY kind, source_id, created_at DESC NULLS FIRST, id DESC"""
RECENT_CALLS = 1000


async def find(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
               ) -> SuccessMeasure | None:
    row = await db.fetchrow(FIND, org_id)
    if row is None:
        return None
    return SuccessMeasure(row["kind"], row["source_id"], row["pass_mark"])


async def choose(connection: asyncpg.Connection, org_id: uuid.UUID,
                 measure: SuccessMeasure | None, actor: audit.Actor) -> None:
    """Set (None: clear) the organization's measure, and audit it, in one transaction."""
    async with connection.transaction():
        if measure is None:
            await connection.execute(CLEAR, org_id)
        else:
            await connection.execute(CHOOSE, org_id, measure.kind, measure.source_id,
                                     measure.pass_mark)
        await audit.record(connection, org_id, actor, "success_measure.set",
                           describe(measure))


async def recent_sources(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID,
                         calls: int = RECENT_CALLS) -> list[Source]:
    """The sources the organization's newest calls carry, by kind, then name."""
    rows = await db.fetch(RECENT_SOURCES, org_id, calls)
    sources = [Source(r["kind"], r["source_id"], r["name"]) for r in rows]
    return sorted(sources, key=lambda s: (s.kind, (s.name or s.source_id).casefold(),
                                          s.source_id))

