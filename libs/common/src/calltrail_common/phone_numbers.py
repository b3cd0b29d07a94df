"""The `phone_numbers` table: numbers registered to organizations (by the CLI, and from a
connected account's number list), which the processor finds events' organizations by.

Registering a number takes the assignment lock exclusively (the call processor holds it
shared while it sets an event aside as unassigned), so once `register` returns, every event
that this number would have matched is already committed to `unassigned_events`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from calltrail_common.e164 import to_e164
from calltrail_common.logging import get_logger

log = get_logger(__name__)

ASSIGNMENT_LOCK_KEY = 0x61737369  # the same key as call_processor.repository's

REGISTER_NUMBER = """
    INSERT INTO phone_numbers (id, org_id, number, vapi_phone_number_id)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT DO NOTHING
    RETURNING id"""
NUMBER_OWNER = """
    SELECT org_id FROM phone_numbers WHERE number = $1 OR vapi_phone_number_id = $2"""
ORG_NUMBERS = """
    SELECT number, vapi_phone_number_id FROM phone_numbers WHERE org_id = $1"""


class NumberTaken(Exception):
    """The number (or Vapi phone number id) is already registered to another organization."""


@dataclass(frozen=True)
class AccountNumbers:
    numbers: tuple[str, ...]  # E.164 numbers (and SIP ids without a number) now registered
    taken: int  # numbers another organization had already registered: left alone


def number_keys(item: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(E.164 number, Vapi phone number id) of one item of Vapi's phone number list."""
    vapi_id = item.get("id")
    return to_e164(item.get("number")), vapi_id if isinstance(vapi_id, str) else None


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


async def register_account_numbers(connection: asyncpg.Connection, org_id: uuid.UUID,
                                   numbers: Sequence[Mapping[str, Any]]) -> AccountNumbers:
    """Register each number of an account's list (Vapi's `GET /phone-number`) to `org_id`;
    one another organization has is left to it."""
    registered: list[str] = []
    taken = 0
    # A sync re-reads numbers that are already ours: registering one again would change
    # nothing, so only the others take the lock (a quiet round costs one query here).
    ours_numbers, ours_ids = await org_numbers(connection, org_id)
    for item in numbers:
        number, vapi_id = number_keys(item)
        if number is None and vapi_id is None:
            continue
        if (number is None or number in ours_numbers) and (vapi_id is None
                                                            or vapi_id in ours_ids):
            registered.append(number or vapi_id or "")
            continue
        try:
            await register(connection, org_id, number, vapi_id)
        except NumberTaken:
            taken += 1
            log.warning("phone_number_taken", org_id=str(org_id), vapi_phone_number_id=vapi_id)
            continue
        except asyncpg.UniqueViolationError:
            # The number is ours under another Vapi id (or the reverse): keep what is there.
            taken += 1
            continue
        registered.append(number or vapi_id or "")
    return AccountNumbers(tuple(registered), taken)


async def org_numbers(connection: asyncpg.Connection, org_id: uuid.UUID
                      ) -> tuple[frozenset[str], frozenset[str]]:
    """The numbers and the Vapi phone number ids registered to `org_id`."""
    rows = await connection.fetch(ORG_NUMBERS, org_id)
    return (frozenset(r["number"] for r in rows if r["number"] is not None),
            frozenset(r["vapi_phone_number_id"] for r in rows
                      if r["vapi_phone_number_id"] is not None))
