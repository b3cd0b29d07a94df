"""The archive of events, and the events kept aside as unassigned, as the CLI and
metrics-sync read them to hand them back to the processor (`calltrail_common.handback`).
The call processor alone writes both tables (`call_processor.repository`: decision 5)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from calltrail_common.attribution import Routing

UNASSIGNED = """
    SELECT u.message_id, u.received_at, e.message_type, e.call_id, u.phone_number_id,
           u.dialled_number, u.vapi_org_id, u.metadata_org_ids, u.reason
    FROM unassigned_events u JOIN events e USING (message_id)
    ORDER BY u.received_at, u.message_id
    LIMIT $1"""
UNASSIGNED_MATCHING = """
    SELECT e.message_id, e.message_type, e.dedupe_key, e.endpoint_id, e.received_at, e.body,
           u.metadata_org_ids, u.phone_number_id, u.dialled_number, u.vapi_org_id
    FROM unassigned_events u JOIN events e USING (message_id)
    WHERE u.dialled_number = ANY($1::text[]) OR u.phone_number_id = ANY($2::text[])
       OR u.vapi_org_id = $3
    ORDER BY u.received_at, u.message_id"""
ARCHIVED_FOR_ORG = """
    SELECT message_id, message_type, dedupe_key, endpoint_id, received_at, body
    FROM events WHERE org_id = $1 AND received_at >= $2
    ORDER BY received_at, message_id"""


@dataclass(frozen=True)
class StoredEvent:
    message_id: str
    message_type: str
    dedupe_key: str | None
    endpoint_id: str | None
    received_at: dt.datetime
    body: bytes


@dataclass(frozen=True)
class WaitingEvent:
    """An unassigned event and what it offers to be attributed by."""

    event: StoredEvent
    routing: Routing


async def unassigned(connection: asyncpg.Connection, limit: int = 1000
                     ) -> list[dict[str, Any]]:
    return [dict(r) for r in await connection.fetch(UNASSIGNED, limit)]


def _stored(rows: list[asyncpg.Record]) -> list[StoredEvent]:
    return [StoredEvent(r["message_id"], r["message_type"], r["dedupe_key"],
                        r["endpoint_id"], r["received_at"], bytes(r["body"])) for r in rows]


async def unassigned_matching(connection: asyncpg.Connection, numbers: Sequence[str],
                              vapi_phone_number_ids: Sequence[str],
                              vapi_org_id: str | None) -> list[WaitingEvent]:
    """The unassigned events any of these numbers, Vapi phone number ids or the Vapi org id
    match, in the order they were received: one query for a whole account. Whether each
    now has an organization is `handback.releasable`'s to decide."""
    rows = await connection.fetch(UNASSIGNED_MATCHING, list(numbers),
                                  list(vapi_phone_number_ids), vapi_org_id)
    return [WaitingEvent(event, Routing(tuple(r["metadata_org_ids"]), r["phone_number_id"],
                                        r["dialled_number"], r["vapi_org_id"]))
            for event, r in zip(_stored(rows), rows, strict=True)]


async def archived_for(connection: asyncpg.Connection, org_id: uuid.UUID,
                       since: dt.datetime) -> list[StoredEvent]:
    return _stored(await connection.fetch(ARCHIVED_FOR_ORG, org_id, since))
