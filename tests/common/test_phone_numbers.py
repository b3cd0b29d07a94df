"""Numbers learnt from accounts and registered by hand, and their conflicts (issue 17),
against real Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from calltrail_common import db, phone_numbers
from calltrail_common.organizations import create_organization


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(database_url)
    yield connection
    await connection.close()


def item(vapi_org: str, vapi_id: str, number: str | None) -> dict[str, Any]:
    return {"id": vapi_id, "orgId": vapi_org, **({"number": number} if number else {})}


async def rows(connection: asyncpg.Connection) -> set[tuple[Any, ...]]:
    return {tuple(r) for r in await connection.fetch(
        "SELECT org_id, number, vapi_phone_number_id, vapi_org_id FROM phone_numbers")}


async def test_an_account_claims_its_own_vapi_orgs_numbers_and_records_conflicts(
        connection: asyncpg.Connection) -> None:
    a, b = [(await create_organization(connection, n)).org_id for n in ("A", "B")]
    assert await phone_numbers.register(connection, b, "+15550000002", None)
    listed = [item("vapi-a", "pn-1", "+15550000001"), item("vapi-a", "pn-2", "+15550000002"),
              item("vapi-b", "pn-3", "+15550000003"), item("vapi-a", "pn-sip", None)]
    claimed = await phone_numbers.register_account_numbers(connection, a, "vapi-a", listed)
    assert claimed == phone_numbers.AccountNumbers(("+15550000001", "pn-sip"), 1)
    assert await rows(connection) == {(a, "+15550000001", "pn-1", "vapi-a"),
                                      (a, None, "pn-sip", "vapi-a"),
                                      (b, "+15550000002", None, None)}
    (conflict,) = await phone_numbers.conflicts(connection, b)
    assert (conflict.org_id, conflict.held_by, conflict.number,
            conflict.vapi_phone_number_id) == (a, b, "+15550000002", "pn-2")
    assert await phone_numbers.conflicts(connection, a) == [conflict]
    assert await phone_numbers.conflicts(connection, None) == [conflict]
    # Again: the same, the conflict seen again (not twice).
    again = await phone_numbers.register_account_numbers(connection, a, "vapi-a", listed)
    assert again == claimed
    assert len(await phone_numbers.conflicts(connection, a)) == 1
    # The account no longer lists it: the conflict is forgotten; a quiet pass changes nothing.
    for _ in range(2):
        quiet = await phone_numbers.register_account_numbers(
            connection, a, "vapi-a", [listed[0], listed[3]])
        assert quiet == phone_numbers.AccountNumbers(("+15550000001", "pn-sip"), 0)
        assert await phone_numbers.conflicts(connection, a) == []


async def test_phone_number_ids_are_keyed_within_their_vapi_org(
        connection: asyncpg.Connection) -> None:
    a, b = [(await create_organization(connection, n)).org_id for n in ("A", "B")]
    await phone_numbers.register_account_numbers(connection, a, "vapi-a",
                                                 [item("vapi-a", "pn", "+15550000001")])
    claimed = await phone_numbers.register_account_numbers(
        connection, b, "vapi-b", [item("vapi-b", "pn", "+15550000002")])
    assert claimed.numbers == ("+15550000002",) and claimed.conflicts == 0
    # By hand, an id another organization has anywhere is refused.
    c = (await create_organization(connection, "C")).org_id
    with pytest.raises(phone_numbers.NumberTaken):
        await phone_numbers.register(connection, c, "+15550000009", "pn")


async def test_a_number_registered_by_hand_is_learnt_once_its_account_lists_it(
        connection: asyncpg.Connection) -> None:
    a = (await create_organization(connection, "A")).org_id
    assert await phone_numbers.register(connection, a, "+15550000001", None)
    assert not await phone_numbers.register(connection, a, "+15550000001", None)
    claimed = await phone_numbers.register_account_numbers(
        connection, a, "vapi-a", [item("vapi-a", "pn-1", "+15550000001")])
    assert claimed.numbers == ("+15550000001",)
    assert await rows(connection) == {(a, "+15550000001", "pn-1", "vapi-a")}
