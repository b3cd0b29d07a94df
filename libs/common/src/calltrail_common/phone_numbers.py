"""Phone numbers registered to organizations, and the archived events waiting for one.

Registering a number takes the assignment lock exclusively (the call processor holds it
shared while it sets an event aside as unassigned), so once `register` returns, every event
that this number would have matched is already committed to `unassigned_events`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

ASSIGNMENT_LOCK_KEY = 0x61737369  # the same key as call_processor.repository's

REGISTER_NUMBER = """
    INSERT INTO phone_numbers (id, org_id, number, vapi_phone_number_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING
    RETURNING id"""
NUMBER_OWNER = """
    SELECT org_id FROM phone_numbers WHERE number = $1 OR vapi_phone_number_id = $2"""
UNASSIGNED = """
    SELECT u.message_id, u.received_at, e.message_type, e.call_id, u.phone_number_id,
           u.dialled_number, u.vapi_org_id, u.metadata_org_ids
    FROM unassigned_events u JOIN events e USING (message_id)
    ORDER BY u.received_at, u.message_id
    LIMIT $1"""
UNASSIGNED_MATCHING = """
    SELECT e.message_id, e.message_type, e.dedupe_key, e.endpoint_id, e.received_at, e.body
    FROM unassigned_events u JOIN events e USING (message_id)
    WHERE u.dialled_number = ANY($1::text[]) OR u.phone_number_id = ANY($2::text[])
       OR u.vapi_org_id = $3
    ORDER BY u.received_at, u.message_id"""
ORG_NUMBERS = """
    SELECT number, vapi_phone_number_id FROM phone_numbers WHERE org_id = $1"""
ARCHIVED_FOR_ORG = """
    SELECT message_id, message_type, dedupe_key, endpoint_id, received_at, body
    FROM events WHERE org_id = $1 AND received_at >= $2
    ORDER BY received_at, message_id"""


class NumberTaken(Exception):
    """The number (or Vapi phone number id) is already registered to another organization."""


@dataclass(frozen=True)
class StoredEvent:
    message_id: str
    message_type: str
    dedupe_key: str | None
    endpoint_id: str | None
    received_at: dt.datetime
    body: bytes


async def register(connection: asyncpg.Connection, org_id: uuid.UUID, number: str | None,
                   vapi_phone_number_id: str | None) -> bool:
    """Register; True when new, False when this organization already had it."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", ASSIGNMENT_LOCK_KEY)
        created = await connection.fetchval(REGISTER_NUMBER, uuid.uuid4(), org_id, number,
                                            vapi_phone_number_id)
        if created is None:
            owners = {r["org_id"] for r in await connection.fetch(
                NUMBER_OWNER, number, vapi_phone_number_id)}
            if owners - {org_id}:
                raise NumberTaken("that number is registered to another organization")
            return False
    return True


async def unassigned(connection: asyncpg.Connection, limit: int = 1000
                     ) -> list[dict[str, Any]]:
    return [dict(r) for r in await connection.fetch(UNASSIGNED, limit)]


def _stored(rows: list[asyncpg.Record]) -> list[StoredEvent]:
    return [StoredEvent(r["message_id"], r["message_type"], r["dedupe_key"],
                        r["endpoint_id"], r["received_at"], bytes(r["body"])) for r in rows]


async def unassigned_matching(connection: asyncpg.Connection, numbers: Sequence[str],
                                  vapi_phone_number_ids: Sequence[str],
                                  vapi_org_id: str | None) -> list[StoredEvent]:
    """The unassigned events any of these numbers, Vapi phone number ids or the Vapi org id
    match, in the order they were received: one query for a whole account."""
    return _stored(await connection.fetch(UNASSIGNED_MATCHING, list(numbers),
                                          list(vapi_phone_number_ids), vapi_org_id))


async def org_numbers(connection: asyncpg.Connection, org_id: uuid.UUID
                      ) -> tuple[frozenset[str], frozenset[str]]:
    """The numbers and the Vapi phone number ids registered to `org_id`."""
    rows = await connection.fetch(ORG_NUMBERS, org_id)
    return (frozenset(r["number"] for r in rows if r["number"] is not None),
            frozenset(r["vapi_phone_number_id"] for r in rows
                      if r["vapi_phone_number_id"] is not None))


async def archived_for(connection: asyncpg.Connection, org_id: uuid.UUID,
                       since: dt.datetime) -> list[StoredEvent]:
    return _stored(await connection.fetch(ARCHIVED_FOR_ORG, org_id, since))
