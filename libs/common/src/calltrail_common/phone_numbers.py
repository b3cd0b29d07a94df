"""The `phone_numbers` table: numbers registered to organizations, by hand (the CLI) or learnt
from a connected account's number list, which the shared endpoint's events are attributed by
(`calltrail_common.attribution`); and `phone_number_conflicts`, the numbers an account lists
that another organization already has.

- A number registered by hand has no Vapi org and counts for every event; one learnt from
  an account carries the account's Vapi org id and is keyed by Vapi's phone-number id
  within it (migration 0011, decision 33).
- An account claims only the items of its number list whose `orgId` is its own Vapi org.
  One that another organization has already (the same number, or the same phone-number id
  within that Vapi org or by hand) is not claimed: it is recorded as a conflict, shown to
  the operator (`calltrail phone-number conflicts`, `conflicts` for the settings page),
  until a later pass of the account no longer meets it.

Registering takes the assignment lock exclusively (the call processor holds it shared while
it sets an event aside as unassigned), so once a registration commits, every event that it
would have matched is already committed to `unassigned_events`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from calltrail_common.attribution import Known, Registration, Routing, metadata_uuids
from calltrail_common.e164 import to_e164
from calltrail_common.logging import get_logger

log = get_logger(__name__)

ASSIGNMENT_LOCK_KEY = 0x61737369  # the same key as call_processor.repository's
TAKE_ASSIGNMENT_LOCK = "SELECT pg_advisory_xact_lock($1)"

REGISTER_NUMBER = """
    INSERT INTO phone_numbers (id, org_id, number, vapi_phone_number_id, vapi_org_id)
    VALUES ($1, $2, $3, $4, $5)"""
# Who has a number, or a phone-number id by hand or within a Vapi org (any, when $3 is NULL).
NUMBER_OWNERS = """
    SELECT DISTINCT org_id FROM phone_numbers
    WHERE number = $1
       OR (vapi_phone_number_id = $2
           AND ($3::text IS NULL OR vapi_org_id IS NULL OR vapi_org_id = $3))"""
# A row of this organization's that its account lists, registered by hand (or before
# migration 0011) or learnt from a Vapi account it had before: learnt from this account now,
# so it counts only for events of the account's Vapi org.
ADOPT_NUMBER = """
    UPDATE phone_numbers p
    SET vapi_org_id = $3, vapi_phone_number_id = coalesce(p.vapi_phone_number_id, $4)
    WHERE p.org_id = $1 AND p.vapi_org_id IS DISTINCT FROM $3
      AND (p.number = $2 OR p.vapi_phone_number_id = $4)
      AND NOT EXISTS (SELECT 1 FROM phone_numbers o
                      WHERE o.vapi_org_id = $3 AND o.vapi_phone_number_id = $4)"""
ORG_NUMBERS = """
    SELECT number, vapi_phone_number_id, vapi_org_id FROM phone_numbers WHERE org_id = $1"""
RECORD_CONFLICT = """
    INSERT INTO phone_number_conflicts (id, org_id, vapi_org_id, vapi_phone_number_id, number,
                                        held_by)
    VALUES ($1, $2, $3, $4, $5, $6)
    ON CONFLICT (org_id, held_by, coalesce(vapi_phone_number_id, ''), coalesce(number, ''))
    DO UPDATE SET last_seen_at = now(), vapi_org_id = EXCLUDED.vapi_org_id
    RETURNING id"""
FORGET_CONFLICTS = """
    DELETE FROM phone_number_conflicts WHERE org_id = $1 AND id <> ALL($2::uuid[])"""
HAS_CONFLICTS = "SELECT EXISTS (SELECT 1 FROM phone_number_conflicts WHERE org_id = $1)"
CONFLICTS = """
    SELECT org_id, held_by, vapi_org_id, vapi_phone_number_id, number, first_seen_at,
           last_seen_at
    FROM phone_number_conflicts
    WHERE $1::uuid IS NULL OR org_id = $1 OR held_by = $1
    ORDER BY first_seen_at, id
    LIMIT $2"""

# What the shared endpoint's events offer to be attributed by, all looked up at once.
ROUTING_LOOKUP = """
    SELECT 'org' AS kind, id::text AS key, id AS org_id, NULL::text AS vapi_org_id
    FROM organizations WHERE id = ANY($1::uuid[])
    UNION ALL
    SELECT 'phone_number_id', vapi_phone_number_id, org_id, vapi_org_id FROM phone_numbers
    WHERE vapi_phone_number_id = ANY($2::text[])
    UNION ALL
    SELECT 'number', number, org_id, vapi_org_id FROM phone_numbers
    WHERE number = ANY($3::text[])
    UNION ALL
    SELECT 'account', vapi_org_id, org_id, vapi_org_id FROM vapi_accounts
    WHERE vapi_org_id = ANY($4::text[]) AND status = 'connected'"""


class NumberTaken(Exception):
    """The number (or Vapi phone number id) is already registered to another organization."""


@dataclass(frozen=True)
class AccountNumbers:
    numbers: tuple[str, ...]  # E.164 numbers (and SIP ids without a number) now registered
    conflicts: int  # numbers another organization has: recorded, not claimed


@dataclass(frozen=True)
class NumberConflict:
    """A number `org_id`'s account lists that `held_by` has: not claimed, to be settled."""

    org_id: uuid.UUID
    held_by: uuid.UUID
    vapi_org_id: str
    vapi_phone_number_id: str | None
    number: str | None
    first_seen_at: dt.datetime
    last_seen_at: dt.datetime


def number_keys(item: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(E.164 number, Vapi phone number id) of one item of Vapi's phone number list."""
    vapi_id = item.get("id")
    return to_e164(item.get("number")), vapi_id if isinstance(vapi_id, str) else None


async def register(connection: asyncpg.Connection, org_id: uuid.UUID, number: str | None,
                   vapi_phone_number_id: str | None) -> bool:
    """Register by hand; True when new, False when this organization already had it.
    Raises NumberTaken when another organization has the number or the phone-number id."""
    async with connection.transaction():
        await connection.execute(TAKE_ASSIGNMENT_LOCK, ASSIGNMENT_LOCK_KEY)
        owners = {r["org_id"] for r in await connection.fetch(
            NUMBER_OWNERS, number, vapi_phone_number_id, None)}
        if owners - {org_id}:
            raise NumberTaken("that number is registered to another organization")
        if owners:
            return False
        await connection.execute(REGISTER_NUMBER, uuid.uuid4(), org_id, number,
                                 vapi_phone_number_id, None)
    return True


def _claimable(items: Iterable[Mapping[str, Any]], org_id: uuid.UUID, vapi_org_id: str
               ) -> list[tuple[str | None, str | None]]:
    """The (number, id) of each item of the account's own Vapi org; the others are left."""
    claimable = []
    for item in items:
        number, vapi_id = number_keys(item)
        if number is None and vapi_id is None:
            continue
        if item.get("orgId") != vapi_org_id:
            log.warning("phone_number_of_another_vapi_org", org_id=str(org_id),
                        vapi_phone_number_id=vapi_id)
            continue
        claimable.append((number, vapi_id))
    return claimable


async def register_account_numbers(connection: asyncpg.Connection, org_id: uuid.UUID,
                                   vapi_org_id: str, items: Sequence[Mapping[str, Any]]
                                   ) -> AccountNumbers:
    """Register to `org_id` each item of its account's number list (Vapi's `GET
    /phone-number`) whose `orgId` is the account's `vapi_org_id`; record a conflict for each
    one another organization has, and forget the conflicts this pass no longer meets."""
    claimable = _claimable(items, org_id, vapi_org_id)
    # A sync re-reads numbers that are already ours: when all are, and nothing conflicted
    # before, nothing changes and the lock is not taken (a quiet round costs two queries).
    ours = {(r["number"], r["vapi_phone_number_id"])
            for r in await connection.fetch(ORG_NUMBERS, org_id)
            if r["vapi_org_id"] == vapi_org_id}
    ours_numbers = {n for n, _ in ours if n is not None}
    ours_ids = {i for _, i in ours if i is not None}
    if all((n is None or n in ours_numbers) and (i is None or i in ours_ids)
           for n, i in claimable) \
            and not await connection.fetchval(HAS_CONFLICTS, org_id):
        return AccountNumbers(tuple(n or i or "" for n, i in claimable), 0)
    registered: list[str] = []
    conflicts: list[uuid.UUID] = []
    async with connection.transaction():
        await connection.execute(TAKE_ASSIGNMENT_LOCK, ASSIGNMENT_LOCK_KEY)
        for number, vapi_id in claimable:
            owners = {r["org_id"] for r in await connection.fetch(
                NUMBER_OWNERS, number, vapi_id, vapi_org_id)}
            for held_by in sorted(owners - {org_id}):
                conflicts.append(await connection.fetchval(
                    RECORD_CONFLICT, uuid.uuid4(), org_id, vapi_org_id, vapi_id, number,
                    held_by))
                log.warning("phone_number_conflict", org_id=str(org_id),
                            held_by=str(held_by), vapi_phone_number_id=vapi_id)
            if owners - {org_id}:
                continue
            if owners:
                await connection.execute(ADOPT_NUMBER, org_id, number, vapi_org_id, vapi_id)
            else:
                await connection.execute(REGISTER_NUMBER, uuid.uuid4(), org_id, number,
                                         vapi_id, vapi_org_id)
            registered.append(number or vapi_id or "")
        await connection.execute(FORGET_CONFLICTS, org_id, conflicts)
    return AccountNumbers(tuple(registered), len(conflicts))


async def conflicts(connection: asyncpg.Connection, org_id: uuid.UUID | None,
                    limit: int = 1000) -> list[NumberConflict]:
    """The conflicts that involve `org_id` (its account lists a number another organization
    has, or another's account lists one of its numbers), oldest first; every conflict when
    `org_id` is None. For the operator's CLI and the dashboard's settings page."""
    return [NumberConflict(r["org_id"], r["held_by"], r["vapi_org_id"],
                           r["vapi_phone_number_id"], r["number"], r["first_seen_at"],
                           r["last_seen_at"])
            for r in await connection.fetch(CONFLICTS, org_id, limit)]


async def known_for(connection: asyncpg.Connection, routings: Iterable[Routing]) -> Known:
    """What the database holds about the keys these events offer, in one query."""
    routings = list(routings)
    rows = await connection.fetch(
        ROUTING_LOOKUP,
        sorted({u for r in routings for u in metadata_uuids(r)}),
        sorted({r.phone_number_id for r in routings if r.phone_number_id}),
        sorted({r.dialled_number for r in routings if r.dialled_number}),
        sorted({r.vapi_org_id for r in routings if r.vapi_org_id}))
    return known_from_rows(rows)


def known_from_rows(rows: Iterable[Mapping[str, Any]]) -> Known:
    organizations: set[uuid.UUID] = set()
    accounts: dict[str, uuid.UUID] = {}
    by_id: dict[str, list[Registration]] = defaultdict(list)
    by_number: dict[str, list[Registration]] = defaultdict(list)
    for row in rows:
        kind, key, org_id = row["kind"], row["key"], row["org_id"]
        if kind == "org":
            organizations.add(org_id)
        elif kind == "account":
            accounts[key] = org_id
        else:
            (by_id if kind == "phone_number_id" else by_number)[key].append(
                Registration(org_id, row["vapi_org_id"]))
    return Known(frozenset(organizations), accounts, dict(by_id), dict(by_number))
