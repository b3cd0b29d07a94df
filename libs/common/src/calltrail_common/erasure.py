"""Erasing a caller, and each organization's retention of call content (issue 19,
decision 44).

What is personal about a caller in a call (`PERSONAL_FIELDS`): the number, name and email,
the transcript, summary, structured data, structured outputs, recording URLs and metadata.
Erasing a caller (`erase_caller`) clears them on every call of that number in the
organization, turns its lead anonymous, and deletes the archived raw events and outbound
events of those calls; the counts, minutes and costs stay, so every daily figure is
unchanged:

- an erased call keeps its lead link through a pseudonym, `erased:<lead id>`, in place of
  the number, which is also the anonymous lead's number: the lead keeps its first inbound
  call (the day it counts as a new lead) and its number of calls;
- of the structured outputs, only the boolean results are kept (`anonymous_outputs`),
  without any text: they are what the success figures count.

The call processor never fills an erased field again (`call_processor.calls`, the call's
`withheld` fields); a new call from the same number is a new caller: a new lead.

Retention (`purge_expired_content`): an organization that sets `content_retention_days`
keeps transcripts, recordings and archived raw events that long; the processor's periodic
job clears what is older, in bounded batches, and the processor never fills a purged field
again. No figure reads them.

The call processor owns `calls`, `leads` and `events` (decision 5); this module is the one
other writer, for these two reasons only, and holds the processor's locks while it writes:
the caller's number lock (`calltrail_common.caller_locks`) and the calls' rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from calltrail_common import audit
from calltrail_common.caller_locks import LOCK_NUMBER, NUMBER_LOCK_CLASS, number_lock_key

PERSONAL_FIELDS = frozenset({
    "customer_number", "customer_name", "customer_email", "transcript", "summary",
    "structured_data", "structured_outputs", "recording_url", "stereo_recording_url",
    "metadata",
})
# What retention removes from calls older than the organization's setting.
RETAINED_CONTENT = frozenset({"transcript", "recording_url", "stereo_recording_url"})
# Withheld fields the processor still takes, with their content removed (anonymous_outputs).
REDACTED_FIELDS = frozenset({"structured_outputs"})

ERASED_NUMBER_PREFIX = "erased:"
LEAD_ERASED = "lead.erase"
RETENTION_SET = "retention.set"


def erased_number(lead_id: uuid.UUID) -> str:
    """What stands for the number on an erased lead and on its calls."""
    return f"{ERASED_NUMBER_PREFIX}{lead_id}"


def withheld_fields(erased: bool, purged: bool) -> frozenset[str]:
    """The fields of a call the processor never fills again."""
    return (PERSONAL_FIELDS if erased else frozenset()) | \
        (RETAINED_CONTENT if purged else frozenset())


def anonymous_outputs(structured_outputs: Any) -> dict[str, Any] | None:
    """The structured outputs of an erased call: those whose result is a boolean, as
    `{"result": ...}` (with the output's name), nothing else; None when none is left."""
    if not isinstance(structured_outputs, Mapping):
        return None
    kept = {}
    for output_id, item in structured_outputs.items():
        if isinstance(item, Mapping) and isinstance(item.get("result"), bool):
            name = item.get("name")
            kept[output_id] = {"result": item["result"],
                               **({"name": name} if isinstance(name, str) else {})}
    return kept or None


@dataclass(frozen=True)
class Erasure:
    lead_id: uuid.UUID | None  # the lead made anonymous, if the number had one
    calls: int  # how many calls had their personal data cleared


_LEAD = "SELECT id, phone_number FROM leads WHERE org_id = $1 AND id = $2"
_LEAD_OF_NUMBER = "SELECT id FROM leads WHERE org_id = $1 AND phone_number = $2"
_LOCK_CALLS = """
    SELECT id, structured_outputs FROM calls
    WHERE org_id = $1 AND (customer_number = $2 OR lead_id = $3) AND NOT deleted
    ORDER BY id FOR UPDATE"""
# The number's version stays when a pseudonym replaces it (the processor reads a field by
# its version), the other personal fields' versions go with their values.
_ERASE_CALLS = """
    UPDATE calls c SET
        customer_number = $3, customer_name = NULL, customer_email = NULL,
        transcript = NULL, summary = NULL, structured_data = NULL, metadata = NULL,
        recording_url = NULL, stereo_recording_url = NULL,
        structured_outputs = u.outputs::jsonb, output_name = NULL, output_email = NULL,
        field_versions = CASE WHEN u.outputs IS NULL
                              THEN c.field_versions - 'structured_outputs'
                              ELSE c.field_versions END
            - ARRAY['customer_name', 'customer_email', 'transcript', 'summary',
                    'structured_data', 'metadata', 'recording_url', 'stereo_recording_url']
            - CASE WHEN $3::text IS NULL THEN ARRAY['customer_number']
                   ELSE ARRAY[]::text[] END,
        erased_at = coalesce(c.erased_at, now()), updated_at = now()
    FROM unnest($1::text[], $2::text[]) AS u (id, outputs)
    WHERE c.id = u.id"""
_ERASE_LEAD = """
    UPDATE leads SET phone_number = $2, name = NULL, email = NULL, updated_at = now()
    WHERE id = $1"""
_DELETE_EVENTS = "DELETE FROM events WHERE org_id = $1 AND call_id = ANY($2::text[])"
_DELETE_OUTBOUND = """
    DELETE FROM outbound_events
    WHERE org_id = $1 AND ((type LIKE 'call.%' AND data ->> 'id' = ANY($2::text[]))
                           OR (type LIKE 'lead.%' AND data ->> 'id' = $3::text))"""


async def erase_caller(connection: asyncpg.Connection, org_id: uuid.UUID, actor: audit.Actor,
                       *, lead_id: uuid.UUID | None = None, number: str | None = None
                       ) -> Erasure | None:
    """Erase the caller of `lead_id` (or of the E.164 `number`) in `org_id`, in one
    transaction, and record who did it (the lead's id and the number of calls, never the
    number). None when the organization has no such lead (or no lead nor call of that
    number); an erased lead erased again clears nothing more."""
    async with connection.transaction():
        if lead_id is not None:
            lead = await connection.fetchrow(_LEAD, org_id, lead_id)
            if lead is None:
                return None
            number = lead["phone_number"]
        elif number is not None:
            lead_id = await connection.fetchval(_LEAD_OF_NUMBER, org_id, number)
        else:
            raise ValueError("a lead id or a number is needed")
        assert number is not None
        # The processor's order: the number's lock first, then the calls' rows by id.
        await connection.execute(LOCK_NUMBER, NUMBER_LOCK_CLASS, number_lock_key(number))
        rows = await connection.fetch(_LOCK_CALLS, org_id, number, lead_id)
        if lead_id is None and not rows:
            return None
        pseudonym = erased_number(lead_id) if lead_id is not None else None
        await connection.execute(
            _ERASE_CALLS, [r["id"] for r in rows],
            [_json(anonymous_outputs(r["structured_outputs"])) for r in rows], pseudonym)
        if lead_id is not None:
            await connection.execute(_ERASE_LEAD, lead_id, pseudonym)
        call_ids = [r["id"] for r in rows]
        await connection.execute(_DELETE_EVENTS, org_id, call_ids)
        await connection.execute(_DELETE_OUTBOUND, org_id, call_ids,
                                 None if lead_id is None else str(lead_id))
        await audit.record(connection, org_id, actor, LEAD_ERASED,
                           None if lead_id is None else str(lead_id), {"calls": len(rows)})
    return Erasure(lead_id, len(rows))


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


# -- retention ------------------------------------------------------------------------------

_RETENTION = "SELECT content_retention_days FROM organizations WHERE id = $1"
_SET_RETENTION = "UPDATE organizations SET content_retention_days = $2 WHERE id = $1"

# The calls of organizations with a retention, created before it, whose content is still
# there; rows a processor batch holds are left for the next round.
PURGE_CALL_CONTENT = """
    UPDATE calls c SET transcript = NULL, recording_url = NULL, stereo_recording_url = NULL,
        field_versions = c.field_versions
            - ARRAY['transcript', 'recording_url', 'stereo_recording_url'],
        content_purged_at = now(), updated_at = now()
    WHERE c.id IN (
        SELECT x.id FROM calls x JOIN organizations o ON o.id = x.org_id
        WHERE o.content_retention_days IS NOT NULL AND x.content_purged_at IS NULL
          AND NOT x.deleted
          AND coalesce(x.created_at, x.inserted_at)
              < now() - make_interval(days => o.content_retention_days)
        LIMIT $1 FOR UPDATE OF x SKIP LOCKED)"""
PURGE_ARCHIVED_EVENTS = """
    DELETE FROM events WHERE message_id IN (
        SELECT e.message_id FROM organizations o JOIN events e ON e.org_id = o.id
        WHERE o.content_retention_days IS NOT NULL
          AND e.received_at < now() - make_interval(days => o.content_retention_days)
          AND NOT EXISTS (SELECT 1 FROM unassigned_events u WHERE u.message_id = e.message_id)
        LIMIT $1)"""


async def content_retention(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                            ) -> int | None:
    """The organization's retention of call content in days; None: forever."""
    days: int | None = await db.fetchval(_RETENTION, org_id)
    return days


def parse_retention(value: str | int | None) -> int | None:
    """A retention as people write it: a number of days (1 to 36500), or empty/"forever";
    ValueError otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "forever")):
        return None
    try:
        days = int(value)
    except ValueError:
        raise ValueError("retention must be a number of days or 'forever'") from None
    if not 1 <= days <= 36500:
        raise ValueError("retention must be between 1 and 36500 days")
    return days


async def set_content_retention(connection: asyncpg.Connection, org_id: uuid.UUID,
                                days: int | None, actor: audit.Actor) -> None:
    async with connection.transaction():
        await connection.execute(_SET_RETENTION, org_id, days)
        await audit.record(connection, org_id, actor, RETENTION_SET, None,
                           {"days": days})


async def purge_expired_content(connection: asyncpg.Connection, batch: int = 1000
                                ) -> tuple[int, int]:
    """Clear the content past each organization's retention, `batch` rows per statement
    (each its own short transaction); (calls purged, archived events deleted)."""
    totals = [0, 0]
    for index, statement in enumerate((PURGE_CALL_CONTENT, PURGE_ARCHIVED_EVENTS)):
        while True:
            done = int((await connection.execute(statement, batch)).split()[-1])
            totals[index] += done
            if done < batch:
                break
    return totals[0], totals[1]
