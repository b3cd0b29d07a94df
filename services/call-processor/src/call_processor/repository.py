"""The call processor's SQL, each statement named and visible here, and nothing else.

A batch is one transaction of four to seven round trips (`CallRepository`):

1. `BEGIN` with the batch's advisory locks (`begin_with_locks`), taken in one fixed order:
   its shard (the daily-figure rows it adds to), then the number of every caller it
   names. Every transaction that changes what a lead is computed from holds its number's
   lock, so leads and the links to them change one transaction at a time per caller.
2. `LOCK_CALLS`: the stored calls of the batch, locked in id order.
   (`TRY_LOCK_NUMBERS` when a stored call names a number the batch did not: it does not
   wait, and if another transaction holds the lock the batch starts over, asking for it
   in step 1.)
3. `FIGURES_ZONES` (when the batch changes calls): the zone each of its organizations'
   figures count by, under a key-share lock on the organization's row, held to the commit:
   the figures' rebuild takes the row FOR UPDATE (`rebuild`, decision 45), so a batch's
   deltas are keyed by the zone the rows it adds to are keyed by, before or after a
   rebuild, never across one. (The calls' foreign key takes the same lock on insert.)
4. `WRITE_BATCH`: new calls inserted whole, changed ones updated, each linked to its lead;
   leads created for new inbound callers and older calls linked to them; the events
   archived; the daily figures' deltas added to the shard's rows. It also answers what the
   outbound endpoints of the batch's organizations want (usually nothing).
5. `REFRESH_LEADS` (when a lead's calls changed): each touched lead recomputed from its
   calls, new leads counted, leads without an inbound call dropped; the leads of the
   organizations whose endpoints want lead events come back.
6. `RECORD_OUTBOUND` (only when an endpoint wants one of the batch's events): the outbox.
7. `COMMIT`.

No step waits on a lock out of that order, so replicas and batches in flight cannot
deadlock: the locks a transaction may wait for are its advisory locks (sorted, all in step
1), its calls' rows (sorted, all in step 2) and its organizations' rows (sorted, step 3:
only a rebuild conflicts, and it holds nothing else while it waits); a call row is only
ever held by a transaction that also holds its number's lock or is about to roll back. In
practice they do not even wait: the partitions route every event of a caller to one replica, which
applies one batch of a partition at a time, and a batch's shard is its partition.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from call_processor.calls import CALL_FIELDS, CallState, stats_day
from call_processor.changes import BatchWrite, StoredCall, changed_mask
from call_processor.figures import DailyFigures
from call_processor.outbound import (
    NOBODY,
    DayFigures,
    OutboundEvent,
    RefreshedLead,
    Subscriptions,
)
from calltrail_common.attribution import Known, Routing
from calltrail_common.caller_locks import NUMBER_LOCK_CLASS, number_lock_key
from calltrail_common.erasure import withheld_fields
from calltrail_common.phone_numbers import ASSIGNMENT_LOCK_KEY, known_for
from calltrail_common.structured_outputs import contact
from calltrail_common.time_zones import zone

# Advisory lock classes (the first key of pg_advisory_xact_lock(int, int)); "ct" in front so
# no other user of the database picks the same by chance. A caller's number lock is
# libs/common's: erasing a caller (calltrail_common.erasure) takes it too.
SHARD_LOCK_CLASS = 0x63740001


def begin_with_locks(shard: int, numbers: Iterable[str]) -> str:
    """`BEGIN` and the batch's advisory locks, in one round trip (a simple query: the keys
    are integers written into it)."""
    keys = [(SHARD_LOCK_CLASS, int(shard))]
    keys += sorted({(NUMBER_LOCK_CLASS, number_lock_key(n)) for n in numbers})
    values = ", ".join(f"({cls}, {key})" for cls, key in keys)
    locks = f"SELECT pg_advisory_xact_lock(c, k) FROM (VALUES {values}) AS l (c, k)"  # noqa: S608
    return f"BEGIN; {locks}"


TRY_LOCK_NUMBERS = f"""
    SELECT bool_and(pg_try_advisory_xact_lock({NUMBER_LOCK_CLASS}, k))
    FROM unnest($1::integer[]) AS k"""  # noqa: S608 - a constant

HOLD_ASSIGNMENT_LOCK = "SELECT pg_advisory_xact_lock_shared($1)"

# Step 3 (decision 45). KEY SHARE does not wait for other changes to an organization (a new
# name, a new `time_zone`), only for the rebuild's FOR UPDATE.
FIGURES_ZONES = """
    SELECT id, figures_time_zone FROM organizations WHERE id = ANY($1::uuid[])
    ORDER BY id FOR KEY SHARE"""

# The statements on calls are built from the constant field list so that CALL_FIELDS stays
# the one list of call fields; each column goes as one array: one round trip per batch.
_FIELD_TYPES = {
    "direction": "text", "created_at": "timestamptz", "started_at": "timestamptz",
    "ended_at": "timestamptz", "ended_reason": "text", "cost": "numeric",
    "cost_breakdown": "jsonb", "costs": "jsonb", "customer_number": "text",
    "customer_name": "text", "customer_email": "text", "phone_number_id": "text",
    "assistant_id": "text", "transcript": "text", "summary": "text", "structured_data": "jsonb",
    "success_evaluation": "text", "recording_url": "text", "stereo_recording_url": "text",
    "metadata": "jsonb", "structured_outputs": "jsonb", "scorecards": "jsonb",
}
_COLUMN_TYPES = {**{name: _FIELD_TYPES[name] for name in CALL_FIELDS},
                 "status": "text", "duration_seconds": "numeric", "report_received": "boolean",
                 "last_event_at": "timestamptz", "stats_day": "date", "field_versions": "jsonb",
                 "output_name": "text", "output_email": "text", "deleted": "boolean"}
_COLUMNS = tuple(_COLUMN_TYPES)
_JSONB_COLUMNS = frozenset(c for c, t in _COLUMN_TYPES.items() if t == "jsonb")
_NUMBER_BIT = 1 << CALL_FIELDS.index("customer_number")


def _unnest(first: int) -> str:
    # jsonb travels as text: asyncpg cannot tell a JSON array inside a jsonb[] from a
    # dimension.
    return ", ".join(f"${i}::{'text' if t == 'jsonb' else t}[]"
                     for i, t in enumerate(_COLUMN_TYPES.values(), start=first))


def _given(column: str) -> str:
    return f"u.{column}::jsonb" if column in _JSONB_COLUMNS else f"u.{column}"


LOCK_CALLS = (
    "SELECT id, org_id, erased_at, content_purged_at, "  # noqa: S608 - code constants
    + ", ".join(_COLUMNS) + " FROM calls WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE")

# The markup an organization's own token sees (calltrail_common.organizations): a client's.
_MARKUP = "CASE WHEN o.agency_id IS NULL THEN 0 ELSE o.markup_percent END"

# Parameters of WRITE_BATCH, in order (CallRepository.write passes them so).
_N = len(_COLUMNS)
_P_CREATE_ORGS, _P_CREATE_NUMBERS, _P_LEAD_ORGS, _P_LEAD_NUMBERS = 1, 2, 3, 4
_P_NEW_IDS, _P_NEW_ORGS, _P_NEW_COLUMNS = 5, 6, 7
_P_SAVED_IDS, _P_SAVED_CHANGED, _P_SAVED_COLUMNS = 7 + _N, 8 + _N, 9 + _N
_P_ARCHIVE = 9 + 2 * _N  # 8 arrays
_P_KEEP = _P_ARCHIVE + 8  # 7 arrays
_P_FORGET = _P_KEEP + 7
_P_SHARD = _P_FORGET + 1
_P_STATS = _P_SHARD + 1  # 8 arrays
_P_OUTCOMES = _P_STATS + 8  # 5 arrays
_P_ASSISTANTS = _P_OUTCOMES + 5  # 6 arrays
_P_SIGNALS = _P_ASSISTANTS + 6  # 7 arrays
_P_OUTBOUND_ORGS = _P_SIGNALS + 7
_P_GONE = _P_OUTBOUND_ORGS + 1  # 2 arrays

# One statement; its parts cannot see each other's rows except through RETURNING, which is
# why a call is linked through `lead_of` (the leads created now, and those that exist).
# (Column names and parameter numbers are code constants.)
WRITE_BATCH = f"""
WITH created_leads AS (
    -- A lead for each new inbound caller (contract 5).
    INSERT INTO leads (id, org_id, phone_number)
    SELECT gen_random_uuid(), caller.org_id, caller.number
    FROM unnest(${_P_CREATE_ORGS}::uuid[], ${_P_CREATE_NUMBERS}::text[])
         AS caller (org_id, number)
    ORDER BY caller.org_id, caller.number
    ON CONFLICT (org_id, phone_number) DO NOTHING
    RETURNING id, org_id, phone_number
), lead_of AS (
    SELECT id, org_id, phone_number FROM created_leads
    UNION ALL
    SELECT l.id, l.org_id, l.phone_number
    FROM leads l, unnest(${_P_LEAD_ORGS}::uuid[], ${_P_LEAD_NUMBERS}::text[])
         AS caller (org_id, number)
    WHERE l.org_id = caller.org_id AND l.phone_number = caller.number
), inserted AS (
    -- A call not stored yet is inserted whole; one another transaction inserted since this
    -- one locked the batch's calls is left alone and not returned (the batch starts over).
    INSERT INTO calls (id, org_id, lead_id, {", ".join(_COLUMNS)})
    SELECT u.id, u.org_id, lead_of.id, {", ".join(map(_given, _COLUMNS))}
    FROM unnest(${_P_NEW_IDS}::text[], ${_P_NEW_ORGS}::uuid[], {_unnest(_P_NEW_COLUMNS)})
         AS u (id, org_id, {", ".join(_COLUMNS)})
    LEFT JOIN lead_of
           ON lead_of.org_id = u.org_id AND lead_of.phone_number = u.customer_number
    ORDER BY u.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), saved AS (
    -- Only the fields whose value changed are written (bit i of `changed` is
    -- CALL_FIELDS[i]); the others keep their stored value, so an unchanged transcript is
    -- neither sent nor re-toasted.
    UPDATE calls c SET {", ".join(
        f"{f} = CASE WHEN u.changed & {1 << i} <> 0 THEN {_given(f)} ELSE c.{f} END"
        for i, f in enumerate(CALL_FIELDS))},
        {", ".join(f"{c} = {_given(c)}" for c in _COLUMNS[len(CALL_FIELDS):])},
        lead_id = (SELECT lead_of.id FROM lead_of WHERE lead_of.org_id = c.org_id
                   AND lead_of.phone_number = CASE WHEN u.changed & {_NUMBER_BIT} <> 0
                       THEN u.customer_number ELSE c.customer_number END),
        updated_at = now()
    FROM unnest(${_P_SAVED_IDS}::text[], ${_P_SAVED_CHANGED}::integer[],
                {_unnest(_P_SAVED_COLUMNS)})
         AS u (id, changed, {", ".join(_COLUMNS)})
    WHERE c.id = u.id
), relinked AS (
    -- Calls stored before their caller's lead existed (outbound ones, say) join it now.
    UPDATE calls c SET lead_id = created_leads.id
    FROM created_leads
    WHERE c.org_id = created_leads.org_id AND c.customer_number = created_leads.phone_number
      AND c.lead_id IS DISTINCT FROM created_leads.id
      AND c.id <> ALL(${_P_SAVED_IDS}::text[])
), archived AS (
    -- Not the events of a call stored as deleted or erased (decision 44): chatter about one
    -- names no call this batch changes (changes.unarchived_calls covers those).
    INSERT INTO events (message_id, org_id, received_at, message_type, call_id, dedupe_key,
                        endpoint_id, body)
    SELECT * FROM unnest(${_P_ARCHIVE}::text[], ${_P_ARCHIVE + 1}::uuid[],
                         ${_P_ARCHIVE + 2}::timestamptz[], ${_P_ARCHIVE + 3}::text[],
                         ${_P_ARCHIVE + 4}::text[], ${_P_ARCHIVE + 5}::text[],
                         ${_P_ARCHIVE + 6}::text[], ${_P_ARCHIVE + 7}::bytea[])
         AS a (message_id, org_id, received_at, message_type, call_id, dedupe_key,
               endpoint_id, body)
    WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.id = a.call_id AND c.org_id = a.org_id
                      AND (c.deleted OR c.erased_at IS NOT NULL))
    ON CONFLICT (message_id) DO UPDATE SET org_id = EXCLUDED.org_id
        WHERE events.org_id IS NULL AND EXCLUDED.org_id IS NOT NULL
), kept_aside AS (
    -- Events without an organization yet, with the reason (their ids as a JSON array
    -- each: arrays of different lengths do not fit one SQL array).
    INSERT INTO unassigned_events (message_id, received_at, phone_number_id, dialled_number,
                                   vapi_org_id, metadata_org_ids, reason)
    SELECT k.message_id, k.received_at, k.phone_number_id, k.dialled_number, k.vapi_org_id,
           ARRAY(SELECT jsonb_array_elements_text(k.metadata_org_ids::jsonb)), k.reason
    FROM unnest(${_P_KEEP}::text[], ${_P_KEEP + 1}::timestamptz[], ${_P_KEEP + 2}::text[],
                ${_P_KEEP + 3}::text[], ${_P_KEEP + 4}::text[], ${_P_KEEP + 5}::text[],
                ${_P_KEEP + 6}::text[])
         AS k (message_id, received_at, phone_number_id, dialled_number, vapi_org_id,
               metadata_org_ids, reason)
    ON CONFLICT (message_id) DO UPDATE SET reason = EXCLUDED.reason
        WHERE unassigned_events.reason IS DISTINCT FROM EXCLUDED.reason
), forgotten AS (
    DELETE FROM unassigned_events WHERE message_id = ANY(${_P_FORGET}::text[])
), stats AS (
    INSERT INTO daily_stats_shards AS s (org_id, day, shard, calls, inbound, outbound, web,
                                         duration_seconds, cost)
    SELECT d.org_id, d.day, ${_P_SHARD}::smallint, d.calls, d.inbound, d.outbound, d.web,
           d.duration_seconds, d.cost
    FROM unnest(${_P_STATS}::uuid[], ${_P_STATS + 1}::date[], ${_P_STATS + 2}::integer[],
                ${_P_STATS + 3}::integer[], ${_P_STATS + 4}::integer[],
                ${_P_STATS + 5}::integer[], ${_P_STATS + 6}::numeric[],
                ${_P_STATS + 7}::numeric[])
         AS d (org_id, day, calls, inbound, outbound, web, duration_seconds, cost)
    ORDER BY d.org_id, d.day
    ON CONFLICT (org_id, day, shard) DO UPDATE SET
        calls = s.calls + EXCLUDED.calls,
        inbound = s.inbound + EXCLUDED.inbound,
        outbound = s.outbound + EXCLUDED.outbound,
        web = s.web + EXCLUDED.web,
        duration_seconds = s.duration_seconds + EXCLUDED.duration_seconds,
        cost = s.cost + EXCLUDED.cost
), outcomes AS (
    -- Keyed by the md5 of the values, which are unbounded text from Vapi (migration 0008).
    INSERT INTO daily_call_outcome_shards AS o (org_id, day, shard, outcome_key,
                                                ended_reason, success_evaluation, calls)
    SELECT d.org_id, d.day, ${_P_SHARD}::smallint,
           md5(ROW(d.ended_reason, d.success_evaluation)::text)::uuid,
           d.ended_reason, d.success_evaluation, d.calls
    FROM unnest(${_P_OUTCOMES}::uuid[], ${_P_OUTCOMES + 1}::date[],
                ${_P_OUTCOMES + 2}::text[], ${_P_OUTCOMES + 3}::text[],
                ${_P_OUTCOMES + 4}::integer[])
         AS d (org_id, day, ended_reason, success_evaluation, calls)
    ORDER BY 1, 2, 4
    ON CONFLICT (org_id, day, outcome_key, shard) DO UPDATE SET calls = o.calls + EXCLUDED.calls
), assistants AS (
    INSERT INTO daily_assistant_shards AS a (org_id, day, shard, assistant_key, assistant_id,
                                             calls, duration_seconds, cost)
    SELECT d.org_id, d.day, ${_P_SHARD}::smallint, md5(ROW(d.assistant_id)::text)::uuid,
           d.assistant_id, d.calls, d.duration_seconds, d.cost
    FROM unnest(${_P_ASSISTANTS}::uuid[], ${_P_ASSISTANTS + 1}::date[],
                ${_P_ASSISTANTS + 2}::text[], ${_P_ASSISTANTS + 3}::integer[],
                ${_P_ASSISTANTS + 4}::numeric[], ${_P_ASSISTANTS + 5}::numeric[])
         AS d (org_id, day, assistant_id, calls, duration_seconds, cost)
    ORDER BY 1, 2, 4
    ON CONFLICT (org_id, day, assistant_key, shard) DO UPDATE SET
        calls = a.calls + EXCLUDED.calls,
        duration_seconds = a.duration_seconds + EXCLUDED.duration_seconds,
        cost = a.cost + EXCLUDED.cost
), signals AS (
    -- Each boolean structured output and scorecard score of the calls (migration 0014).
    INSERT INTO daily_success_signal_shards AS g (org_id, day, shard, signal_key, kind,
                                                  source_id, value, success_evaluation, calls)
    SELECT d.org_id, d.day, ${_P_SHARD}::smallint,
           md5(ROW(d.kind, d.source_id, d.value, d.success_evaluation)::text)::uuid,
           d.kind, d.source_id, d.value, d.success_evaluation, d.calls
    FROM unnest(${_P_SIGNALS}::uuid[], ${_P_SIGNALS + 1}::date[], ${_P_SIGNALS + 2}::text[],
                ${_P_SIGNALS + 3}::text[], ${_P_SIGNALS + 4}::numeric[],
                ${_P_SIGNALS + 5}::text[], ${_P_SIGNALS + 6}::integer[])
         AS d (org_id, day, kind, source_id, value, success_evaluation, calls)
    ORDER BY 1, 2, 4
    ON CONFLICT (org_id, day, signal_key, shard) DO UPDATE SET calls = g.calls + EXCLUDED.calls
), gone AS (
    SELECT * FROM unnest(${_P_GONE}::uuid[], ${_P_GONE + 1}::text[]) AS g (org_id, call_id)
), unarchived AS (
    -- A call Vapi deleted leaves the archive (decision 44), and the outbox.
    DELETE FROM events e USING gone g WHERE e.org_id = g.org_id AND e.call_id = g.call_id
), unsent AS (
    DELETE FROM outbound_events o USING gone g
    WHERE o.org_id = g.org_id AND o.type LIKE 'call.%' AND o.data ->> 'id' = g.call_id
)
SELECT array(SELECT id FROM inserted) AS inserted,
       -- What the enabled outbound endpoints of the batch's organizations want, and the
       -- markup each such organization's token sees (a client's: calltrail_common.
       -- organizations): usually nothing at all (outbound.Subscriptions).
       (SELECT jsonb_object_agg(w.org_id, jsonb_build_object(
                   'types', w.types, 'markup', {_MARKUP}::text))
        FROM (SELECT e.org_id, array_agg(DISTINCT t.type) AS types
              FROM outbound_endpoints e, unnest(e.event_types) AS t (type)
              WHERE e.org_id = ANY(${_P_OUTBOUND_ORGS}::uuid[]) AND e.disabled_at IS NULL
              GROUP BY e.org_id) w
        JOIN organizations o ON o.id = w.org_id) AS outbound"""  # noqa: S608

# A lead is derived from its calls: counts and times, and name and email from the newest
# call that has them (customer object first, then what its structured outputs carry:
# `output_name`/`output_email`, from calltrail_common.structured_outputs.contact; then the
# analysis' structured data). A lead exists while an inbound call has its number: one whose
# last inbound call changed number or was deleted goes (its calls are unlinked by the
# foreign key), with its outbound events. Its first inbound call's day, before and after,
# is what the daily figures count as a new lead.
# The leads kept of the organizations in $4 come back, with their name and email before
# (outbound.RefreshedLead): a lead without a first inbound call before was created by this
# transaction (every lead has one once its transaction commits).
REFRESH_LEADS = """
WITH target AS (
    SELECT l.id, l.org_id, l.first_inbound_at AS old_first_inbound_at,
           l.name AS old_name, l.email AS old_email
    FROM leads l, unnest($1::uuid[], $2::text[]) AS caller (org_id, number)
    WHERE l.org_id = caller.org_id AND l.phone_number = caller.number
), linked AS (
    SELECT c.id, c.lead_id, c.direction, c.created_at, c.started_at, c.customer_name,
           c.customer_email, c.structured_data, c.output_name, c.output_email
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
           coalesce(customer_name, output_name, structured_data ->> 'name') AS name
    FROM linked
    WHERE coalesce(customer_name, output_name, structured_data ->> 'name') IS NOT NULL
    ORDER BY lead_id, (customer_name IS NOT NULL) DESC, (output_name IS NOT NULL) DESC,
             created_at DESC NULLS LAST, id DESC
), mailed AS (
    SELECT DISTINCT ON (lead_id) lead_id,
           coalesce(customer_email, output_email, structured_data ->> 'email') AS email
    FROM linked
    WHERE coalesce(customer_email, output_email, structured_data ->> 'email') IS NOT NULL
    ORDER BY lead_id, (customer_email IS NOT NULL) DESC, (output_email IS NOT NULL) DESC,
             created_at DESC NULLS LAST, id DESC
), recomputed AS (
    SELECT target.id, target.org_id, target.old_first_inbound_at,
           coalesce(totals.call_count, 0) AS call_count, totals.first_call_at,
           totals.last_call_at, totals.first_inbound_at, named.name, mailed.email
    FROM target
    LEFT JOIN totals ON totals.lead_id = target.id
    LEFT JOIN named ON named.lead_id = target.id
    LEFT JOIN mailed ON mailed.lead_id = target.id
), kept AS (
    UPDATE leads l SET
        call_count = r.call_count, first_call_at = r.first_call_at,
        last_call_at = r.last_call_at, first_inbound_at = r.first_inbound_at,
        name = r.name, email = r.email, updated_at = now()
    FROM recomputed r
    WHERE l.id = r.id AND r.first_inbound_at IS NOT NULL
    RETURNING l.id, l.org_id, l.phone_number, l.name, l.email, l.first_call_at,
              l.last_call_at, l.call_count, l.created_at
), dropped AS (
    DELETE FROM leads l USING recomputed r WHERE l.id = r.id AND r.first_inbound_at IS NULL
    RETURNING l.id, l.org_id
), unsent AS (
    -- A lead that is gone (its last inbound call deleted in Vapi, or now another
    -- caller's) leaves no outbound event holding its number behind (decision 44).
    DELETE FROM outbound_events o USING dropped d
    WHERE o.org_id = d.org_id AND o.type LIKE 'lead.%' AND o.data ->> 'id' = d.id::text
), new_leads AS (
    -- On the organization's day, in the zone its figures count by (step 3 locked it).
    SELECT moved.org_id, moved.day, sum(moved.delta)::integer AS delta FROM (
        SELECT r.org_id, (r.old_first_inbound_at AT TIME ZONE o.figures_time_zone)::date
                   AS day, -1 AS delta
        FROM recomputed r JOIN organizations o ON o.id = r.org_id
        WHERE r.old_first_inbound_at IS NOT NULL
        UNION ALL
        SELECT r.org_id, (r.first_inbound_at AT TIME ZONE o.figures_time_zone)::date, 1
        FROM recomputed r JOIN organizations o ON o.id = r.org_id
        WHERE r.first_inbound_at IS NOT NULL
    ) AS moved
    GROUP BY moved.org_id, moved.day
    HAVING sum(delta) <> 0
), counted AS (
    INSERT INTO daily_stats_shards AS s (org_id, day, shard, new_leads)
    SELECT org_id, day, $3::smallint, delta FROM new_leads ORDER BY org_id, day
    ON CONFLICT (org_id, day, shard) DO UPDATE SET new_leads = s.new_leads + EXCLUDED.new_leads
)
SELECT kept.*, target.old_first_inbound_at IS NULL AS created, target.old_name,
       target.old_email
FROM kept JOIN target ON target.id = kept.id WHERE kept.org_id = ANY($4::uuid[])"""

# The outbox (migration 0015, decision 40): the events given, each with one delivery per
# enabled endpoint of its organization that wants its type and existed when it happened;
# an event no endpoint wants is not recorded at all. An event recorded before (the same
# id: a day another replica closed) is left as it is, with its deliveries. A call's event
# carries the call's lead as stored now. (data goes as text: see _unnest.)
RECORD_OUTBOUND = """
WITH given AS (
    SELECT g.id, g.org_id, g.type, coalesce(g.occurred_at, now()) AS occurred_at,
           g.call_id, g.data
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::text[],
                $6::text[]) AS g (id, org_id, type, occurred_at, call_id, data)
), wanted AS (
    SELECT g.id AS event_id, e.id AS endpoint_id
    FROM given g JOIN outbound_endpoints e
      ON e.org_id = g.org_id AND e.disabled_at IS NULL AND g.type = ANY(e.event_types)
     AND e.created_at <= g.occurred_at
), recorded AS (
    INSERT INTO outbound_events (id, org_id, type, occurred_at, data)
    SELECT g.id, g.org_id, g.type, g.occurred_at,
           CASE WHEN g.call_id IS NULL THEN g.data::jsonb
                ELSE g.data::jsonb || jsonb_build_object('leadId', c.lead_id) END
    FROM given g LEFT JOIN calls c ON c.id = g.call_id
    WHERE g.id IN (SELECT event_id FROM wanted)
    ORDER BY g.id
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
INSERT INTO outbound_deliveries (endpoint_id, event_id)
SELECT w.endpoint_id, w.event_id FROM wanted w JOIN recorded r ON r.id = w.event_id
ORDER BY w.event_id, w.endpoint_id"""

# The figures' rebuild (call_processor.rebuild, decision 45): one organization at a time,
# in one transaction that holds its row FOR UPDATE (batches wait in step 3): its shard rows
# go, and the aggregates over its calls and leads, keyed by its new zone, are written in
# shard 0. Transcripts and summaries are not read: they count for nothing.
ORGS_TO_REBUILD = """
    SELECT id FROM organizations WHERE time_zone <> figures_time_zone ORDER BY id"""
LOCK_ORG_FOR_REBUILD = """
    SELECT time_zone, figures_time_zone FROM organizations WHERE id = $1 FOR UPDATE"""
_NOT_COUNTED = frozenset({"transcript", "summary"})
CALLS_TO_COUNT = (
    "SELECT id, erased_at, content_purged_at, "  # noqa: S608 - column names are code constants
    + ", ".join(f"NULL::{_COLUMN_TYPES[c]} AS {c}" if c in _NOT_COUNTED else c
                for c in _COLUMNS)
    + " FROM calls WHERE org_id = $1")
FORGET_FIGURES = """
WITH stats AS (DELETE FROM daily_stats_shards WHERE org_id = $1),
     outcomes AS (DELETE FROM daily_call_outcome_shards WHERE org_id = $1),
     assistants AS (DELETE FROM daily_assistant_shards WHERE org_id = $1)
DELETE FROM daily_success_signal_shards WHERE org_id = $1"""
# The parameters are WRITE_BATCH's figures (without the organization: it is $1), then the
# zone; new leads are counted on the day of their first inbound call, as REFRESH_LEADS does.
REBUILT_FIGURES = """
WITH new_leads AS (
    SELECT (first_inbound_at AT TIME ZONE $24)::date AS day, count(*)::integer AS n
    FROM leads WHERE org_id = $1 AND first_inbound_at IS NOT NULL GROUP BY 1
), stats AS (
    INSERT INTO daily_stats_shards (org_id, day, shard, calls, inbound, outbound, web,
                                    new_leads, duration_seconds, cost)
    SELECT $1, coalesce(d.day, l.day), 0, coalesce(d.calls, 0), coalesce(d.inbound, 0),
           coalesce(d.outbound, 0), coalesce(d.web, 0), coalesce(l.n, 0),
           coalesce(d.duration_seconds, 0), coalesce(d.cost, 0)
    FROM unnest($2::date[], $3::integer[], $4::integer[], $5::integer[], $6::integer[],
                $7::numeric[], $8::numeric[])
         AS d (day, calls, inbound, outbound, web, duration_seconds, cost)
    FULL JOIN new_leads l ON l.day = d.day
), outcomes AS (
    INSERT INTO daily_call_outcome_shards (org_id, day, shard, outcome_key, ended_reason,
                                           success_evaluation, calls)
    SELECT $1, d.day, 0, md5(ROW(d.ended_reason, d.success_evaluation)::text)::uuid,
           d.ended_reason, d.success_evaluation, d.calls
    FROM unnest($9::date[], $10::text[], $11::text[], $12::integer[])
         AS d (day, ended_reason, success_evaluation, calls)
), assistants AS (
    INSERT INTO daily_assistant_shards (org_id, day, shard, assistant_key, assistant_id,
                                        calls, duration_seconds, cost)
    SELECT $1, d.day, 0, md5(ROW(d.assistant_id)::text)::uuid, d.assistant_id, d.calls,
           d.duration_seconds, d.cost
    FROM unnest($13::date[], $14::text[], $15::integer[], $16::numeric[], $17::numeric[])
         AS d (day, assistant_id, calls, duration_seconds, cost)
), signals AS (
    INSERT INTO daily_success_signal_shards (org_id, day, shard, signal_key, kind, source_id,
                                             value, success_evaluation, calls)
    SELECT $1, d.day, 0, md5(ROW(d.kind, d.source_id, d.value, d.success_evaluation)::text)::uuid,
           d.kind, d.source_id, d.value, d.success_evaluation, d.calls
    FROM unnest($18::date[], $19::text[], $20::text[], $21::numeric[], $22::text[],
                $23::integer[])
         AS d (day, kind, source_id, value, success_evaluation, calls)
)
UPDATE organizations SET figures_time_zone = $24 WHERE id = $1"""

# Closing days (outbound.days_to_close): the organizations with an enabled endpoint that
# wants them, since the first such endpoint was created, by the database's clock (the
# replicas' clocks may differ); then the figures of the days not closed yet, summed over
# the shards as the api's overview reads them.
DAY_CLOSING_ORGS = """
    SELECT e.org_id, min(e.created_at) AS since, now() AS now, o.figures_time_zone
    FROM outbound_endpoints e JOIN organizations o ON o.id = e.org_id
    WHERE e.disabled_at IS NULL AND 'usage.day_closed' = ANY(e.event_types)
    GROUP BY e.org_id, o.figures_time_zone"""
OPEN_DAY_FIGURES = f"""
    SELECT d.id, d.org_id, d.day, {_MARKUP} AS markup_percent,
           coalesce(sum(s.calls), 0)::integer AS calls,
           coalesce(sum(s.inbound), 0)::integer AS inbound,
           coalesce(sum(s.outbound), 0)::integer AS outbound,
           coalesce(sum(s.web), 0)::integer AS web,
           coalesce(sum(s.new_leads), 0)::integer AS new_leads,
           coalesce(sum(s.duration_seconds), 0) AS duration_seconds,
           coalesce(sum(s.cost), 0) AS cost
    FROM unnest($1::uuid[], $2::uuid[], $3::date[]) AS d (id, org_id, day)
    JOIN organizations o ON o.id = d.org_id
    LEFT JOIN daily_stats_shards s ON s.org_id = d.org_id AND s.day = d.day
    WHERE NOT EXISTS (SELECT 1 FROM outbound_events e WHERE e.id = d.id)
    GROUP BY d.id, d.org_id, d.day, o.agency_id, o.markup_percent"""  # noqa: S608

# Delivered deliveries past retention go, then events past retention that no delivery
# needs any more; a delivery that failed for good or was skipped stays (it may be sent
# again) until its endpoint is deleted.
PRUNE_DELIVERED = """
    DELETE FROM outbound_deliveries WHERE id IN (
        SELECT id FROM outbound_deliveries
        WHERE state = 'succeeded' AND created_at < now() - make_interval(days => $1)
        LIMIT $2)"""
PRUNE_OUTBOUND_EVENTS = """
    DELETE FROM outbound_events WHERE id IN (
        SELECT e.id FROM outbound_events e
        WHERE e.occurred_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM outbound_deliveries d WHERE d.event_id = e.id)
        LIMIT $2)"""

# Processor replicas (migration 0010): each renews its row and reads the others renewed
# lately, by the database's clock (the replicas' clocks may differ).
HEARTBEAT = """
    WITH beat AS (
        INSERT INTO processor_members (member_id) VALUES ($1)
        ON CONFLICT (member_id) DO UPDATE SET heartbeat_at = now()
    )
    SELECT member_id FROM processor_members
    WHERE heartbeat_at > now() - make_interval(secs => $2) AND member_id <> $1"""
LEAVE = "DELETE FROM processor_members WHERE member_id = $1"
FORGET_GONE_MEMBERS = """
    DELETE FROM processor_members WHERE heartbeat_at < now() - interval '1 hour'"""

PRUNE_EVENTS = """
    DELETE FROM events WHERE message_id IN (
        SELECT e.message_id FROM events e
        WHERE e.received_at < now() - make_interval(days => $1)
          AND NOT EXISTS (SELECT 1 FROM unassigned_events u WHERE u.message_id = e.message_id)
        LIMIT $2)"""


class NumbersBusy(Exception):
    """A stored call names a caller's number another transaction holds: start over, asking
    for these numbers' locks in the first step."""

    def __init__(self, numbers: Iterable[str]) -> None:
        super().__init__("a caller's number is held by another transaction")
        self.numbers = frozenset(numbers)


class CallsInsertedMeanwhile(Exception):
    """Another transaction stored some of the batch's new calls after they were locked:
    start over (they are locked and merged then)."""


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
        carried = contact(state.values.get("structured_outputs"))
        derived = (state.status, state.duration_seconds, state.report_received,
                   state.last_event_at, stats_day(state),
                   _json({name: list(v) for name, v in state.versions.items()}),
                   carried.name, carried.email, state.deleted)
        for offset, value in enumerate(derived, start=len(CALL_FIELDS)):
            columns[offset].append(value)
    return columns


def _transposed(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows \
        else [[] for _ in range(width)]


def _subscriptions(outbound: dict[str, Any] | None) -> Subscriptions:
    if not outbound:
        return NOBODY
    return Subscriptions(
        types={uuid.UUID(org): frozenset(o["types"]) for org, o in outbound.items()},
        markups={uuid.UUID(org): Decimal(o["markup"]) for org, o in outbound.items()})


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
        deleted=row["deleted"],
        withheld=withheld_fields(row["erased_at"] is not None,
                                 row["content_purged_at"] is not None),
    )


class CallRepository:
    """Everything one batch does, on the connection of its transaction."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    @contextlib.asynccontextmanager
    async def transaction(self, shard: int, numbers: Iterable[str]) -> AsyncIterator[None]:
        """Step 1 and step 5: begin holding the locks; commit, or roll back on an error."""
        await self._db.execute(begin_with_locks(shard, numbers))
        try:
            yield
        except Exception:
            # A broken connection cannot roll back; the pool discards it (and Postgres ends
            # the transaction with it).
            with contextlib.suppress(Exception):
                await self._db.execute("ROLLBACK")
            raise
        # A cancelled batch leaves its transaction open: the pool rolls it back on release.
        await self._db.execute("COMMIT")

    async def known(self, routings: Sequence[Routing]) -> Known:
        """What the database holds about the keys shared-endpoint events offer (the query
        is `calltrail_common.phone_numbers.ROUTING_LOOKUP`: its tables are libs/common's)."""
        return await known_for(self._db, routings)

    async def hold_assignment_lock(self) -> None:
        """Shared with every processor; `phone-number add` takes it exclusively, so that an
        event found unmatched here is committed before the CLI looks for unmatched events."""
        await self._db.execute(HOLD_ASSIGNMENT_LOCK, ASSIGNMENT_LOCK_KEY)

    async def lock_calls(self, ids: Iterable[str]) -> dict[str, StoredCall]:
        """Step 2: lock the stored rows among `ids` (in id order) and return them."""
        return {row["id"]: StoredCall(row["org_id"], _state_from_row(row))
                for row in await self._db.fetch(LOCK_CALLS, sorted(ids))}

    async def try_lock_numbers(self, numbers: Iterable[str]) -> None:
        """Take these numbers' locks if free now; raise `NumbersBusy` if any is not."""
        wanted = sorted(set(numbers))
        keys = sorted({number_lock_key(n) for n in wanted})
        if keys and not await self._db.fetchval(TRY_LOCK_NUMBERS, keys):
            raise NumbersBusy(wanted)

    async def figures_zones(self, orgs: Iterable[uuid.UUID]) -> dict[uuid.UUID, dt.tzinfo]:
        """Step 3: the zone each organization's figures count by, locked against a rebuild
        until the commit."""
        wanted = sorted(set(orgs))
        if not wanted:
            return {}
        return {row["id"]: zone(row["figures_time_zone"])
                for row in await self._db.fetch(FIGURES_ZONES, wanted)}

    async def write(self, batch: BatchWrite) -> Subscriptions:
        """Step 3; raises `CallsInsertedMeanwhile` when a new call was stored meanwhile.
        What the outbound endpoints of the batch's organizations want."""
        new_ids = [c.after.call_id for c in batch.new_calls]
        changed = [changed_mask(c) for c in batch.saved_calls]
        archived = _transposed([(e.message_id, e.org_id, e.received_at, e.message_type,
                                 e.call_id, e.dedupe_key, e.endpoint_id, e.body)
                                for e in batch.archived], 8)
        unassigned = _transposed([(u.message_id, u.received_at, u.phone_number_id,
                                   u.dialled_number, u.vapi_org_id,
                                   _json(list(u.metadata_org_ids)), u.reason)
                                  for u in batch.unassigned], 7)
        figures = batch.figures
        stats = _transposed([(org, day, d.calls, d.inbound, d.outbound, d.web,
                              d.duration_seconds, d.cost)
                             for (org, day), d in figures.stats_rows()], 8)
        outcomes = _transposed([(*key, calls) for key, calls in figures.outcome_rows()], 5)
        assistants = _transposed([(*key, d.calls, d.duration_seconds, d.cost)
                                  for key, d in figures.assistant_rows()], 6)
        signals = _transposed([(*key, calls) for key, calls in figures.signal_rows()], 7)
        row = await self._db.fetchrow(
            WRITE_BATCH,
            *_transposed(sorted(batch.new_inbound_callers), 2),
            *_transposed(sorted(set(batch.lead_numbers)), 2),
            new_ids, [c.org_id for c in batch.new_calls],
            *_columns(c.after for c in batch.new_calls),
            [c.after.call_id for c in batch.saved_calls], changed,
            *_columns((c.after for c in batch.saved_calls), changed),
            *archived, *unassigned, list(batch.assigned), batch.shard,
            *stats, *outcomes, *assistants, *signals, sorted(set(batch.orgs)),
            *_transposed(list(batch.gone_calls), 2))
        if len(row["inserted"]) != len(new_ids):
            raise CallsInsertedMeanwhile
        return _subscriptions(row["outbound"])

    async def refresh_leads(self, callers: Iterable[tuple[uuid.UUID, str]], shard: int,
                            watched: Sequence[uuid.UUID] = ()) -> list[RefreshedLead]:
        """Step 4: recompute the leads of these callers (organization, number); those of
        the `watched` organizations, as they are now."""
        orgs, numbers = _transposed(sorted(set(callers)), 2)
        if not orgs:
            return []
        rows = await self._db.fetch(REFRESH_LEADS, orgs, numbers, shard, list(watched))
        return [RefreshedLead(**dict(row)) for row in rows]

    async def record_outbound(self, events: Sequence[OutboundEvent]) -> None:
        """Step 5 (when an endpoint may want some of the batch's events): the outbox."""
        await record_outbound(self._db, events)


async def orgs_to_rebuild(connection: asyncpg.Connection) -> list[uuid.UUID]:
    return [row["id"] for row in await connection.fetch(ORGS_TO_REBUILD)]


async def lock_org_for_rebuild(connection: asyncpg.Connection, org_id: uuid.UUID
                               ) -> tuple[str, str] | None:
    """(its zone, the zone its figures count by), its row locked until the commit."""
    row = await connection.fetchrow(LOCK_ORG_FOR_REBUILD, org_id)
    return None if row is None else (row["time_zone"], row["figures_time_zone"])


async def calls_to_count(connection: asyncpg.Connection, org_id: uuid.UUID,
                         prefetch: int = 2000) -> AsyncIterator[CallState]:
    """The organization's calls as stored (in a transaction: a cursor)."""
    async for row in connection.cursor(CALLS_TO_COUNT, org_id, prefetch=prefetch):
        yield _state_from_row(row)


async def write_rebuilt_figures(connection: asyncpg.Connection, org_id: uuid.UUID,
                                figures: DailyFigures, time_zone: str) -> None:
    """Replace the organization's figures with `figures` (keyed by `time_zone`) and its new
    leads counted by `time_zone`; its figures count by `time_zone` from now on."""
    await connection.execute(FORGET_FIGURES, org_id)
    stats = _transposed([(day, d.calls, d.inbound, d.outbound, d.web, d.duration_seconds,
                          d.cost) for (_, day), d in figures.stats_rows()], 7)
    outcomes = _transposed([(*key[1:], n) for key, n in figures.outcome_rows()], 4)
    assistants = _transposed([(*key[1:], d.calls, d.duration_seconds, d.cost)
                              for key, d in figures.assistant_rows()], 5)
    signals = _transposed([(*key[1:], n) for key, n in figures.signal_rows()], 6)
    await connection.execute(REBUILT_FIGURES, org_id, *stats, *outcomes, *assistants,
                             *signals, time_zone)


async def heartbeat(connection: asyncpg.Connection, member_id: str, ttl_seconds: float
                    ) -> list[str]:
    """Renew `member_id`; the live members, itself included."""
    others = await connection.fetch(HEARTBEAT, member_id, ttl_seconds)
    return sorted([member_id, *(r["member_id"] for r in others)])


async def leave(connection: asyncpg.Connection, member_id: str) -> None:
    await connection.execute(LEAVE, member_id)
    await connection.execute(FORGET_GONE_MEMBERS)


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


async def record_outbound(connection: asyncpg.Connection, events: Sequence[OutboundEvent]
                          ) -> None:
    """Record `events` where an endpoint wants them (`RECORD_OUTBOUND`)."""
    if events:
        await connection.execute(
            RECORD_OUTBOUND, [e.id for e in events], [e.org_id for e in events],
            [e.type for e in events], [e.occurred_at for e in events],
            [e.call_id for e in events], [_json(e.data) for e in events])


async def open_days(connection: asyncpg.Connection
                    ) -> tuple[dict[uuid.UUID, dt.datetime], dt.datetime,
                               dict[uuid.UUID, dt.tzinfo]]:
    """The organizations whose days an endpoint wants closed, each with the creation of
    its first such endpoint; the database's time; and the zone each one's figures count
    by (decision 45)."""
    rows = await connection.fetch(DAY_CLOSING_ORGS)
    now = rows[0]["now"] if rows else await connection.fetchval("SELECT now()")
    return ({row["org_id"]: row["since"] for row in rows}, now,
            {row["org_id"]: zone(row["figures_time_zone"]) for row in rows})


async def open_day_figures(connection: asyncpg.Connection,
                           days: Sequence[tuple[uuid.UUID, uuid.UUID, dt.date]]
                           ) -> list[tuple[uuid.UUID, dt.date, DayFigures, Decimal]]:
    """(organization, day, its figures, the organization's markup) of those of `days`
    (event id, organization, day) not closed yet."""
    ids, orgs, dates = _transposed(days, 3)
    rows = await connection.fetch(OPEN_DAY_FIGURES, ids, orgs, dates)
    return [(row["org_id"], row["day"],
             DayFigures(calls=row["calls"], inbound=row["inbound"], outbound=row["outbound"],
                        web=row["web"], new_leads=row["new_leads"],
                        duration_seconds=row["duration_seconds"], cost=row["cost"]),
             row["markup_percent"]) for row in rows]


async def prune_outbound(connection: asyncpg.Connection, retention_days: int,
                         batch: int = 5000) -> int:
    """Delete delivered deliveries past retention, then the events past retention no
    delivery needs; how many rows were."""
    total = 0
    for statement in (PRUNE_DELIVERED, PRUNE_OUTBOUND_EVENTS):
        while True:
            result = await connection.execute(statement, retention_days, batch)
            deleted = int(result.split()[-1])
            total += deleted
            if deleted < batch:
                break
    return total
