"""Stored Vapi API keys against real Postgres: sealed at rest, deleted on disconnect, rotated
under concurrent connects and rotations without losing a write."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from calltrail_common import db
from calltrail_common.crypto import KeyRing, TamperedCiphertext, UnknownKey
from calltrail_common.vapi_keys import Rotation, delete_key, load_key, rotate_keys, store_key

OLD_KEY = "old-encryption-key-" + "o" * 32
NEW_KEY = "new-encryption-key-" + "n" * 32
old_ring = KeyRing(OLD_KEY)
new_ring = KeyRing(NEW_KEY)
rotating_ring = KeyRing(NEW_KEY, previous=OLD_KEY)


def api_key_for(org_id: uuid.UUID) -> str:
    return f"vapi-private-{org_id.hex}"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await db.create_pool(database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def connected_account(connection: asyncpg.Connection) -> uuid.UUID:
    org_id = uuid.uuid4()
    await connection.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Acme')", org_id)
    await connection.execute(
        "INSERT INTO vapi_accounts (org_id, vapi_org_id) VALUES ($1, $2)", org_id, str(org_id))
    return org_id


async def accounts_with_old_keys(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    async with pool.acquire() as connection:
        orgs = [await connected_account(connection) for _ in range(count)]
        for org_id in orgs:
            await store_key(connection, old_ring, org_id, api_key_for(org_id))
    return sorted(orgs)


async def sealed_keys(pool: asyncpg.Pool) -> dict[uuid.UUID, bytes]:
    rows = await pool.fetch("SELECT org_id, sealed FROM vapi_api_keys")
    return {row["org_id"]: row["sealed"] for row in rows}


async def wait_until_blocked_on_a_lock(pool: asyncpg.Pool) -> None:
    deadline = time.monotonic() + 10
    while not await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND datname = current_database()"):
        assert time.monotonic() < deadline, "the rotation never reached the locked row"
        await asyncio.sleep(0.01)


async def test_store_load_delete(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        org_id = await connected_account(connection)
        assert await load_key(connection, new_ring, org_id) is None
        await store_key(connection, new_ring, org_id, "first-key")
        assert await load_key(connection, new_ring, str(org_id)) == "first-key"
        await store_key(connection, new_ring, str(org_id), "second-key")  # reconnect: replaced
        assert await load_key(connection, new_ring, org_id) == "second-key"
        assert await connection.fetchval("SELECT count(*) FROM vapi_api_keys") == 1
        assert await delete_key(connection, org_id) is True
        assert await load_key(connection, new_ring, org_id) is None
        assert await connection.fetchval("SELECT count(*) FROM vapi_api_keys") == 0
        assert await delete_key(connection, org_id) is False  # idempotent


async def test_a_key_needs_a_connected_account(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await store_key(connection, new_ring, uuid.uuid4(), "orphan-key")


async def test_a_key_copied_to_another_organization_does_not_open(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        victim, thief = await connected_account(connection), await connected_account(connection)
        await store_key(connection, new_ring, victim, "victims-key")
        await store_key(connection, new_ring, thief, "thiefs-key")
        await connection.execute(
            "UPDATE vapi_api_keys SET sealed = (SELECT sealed FROM vapi_api_keys "
            "WHERE org_id = $1) WHERE org_id = $2", victim, thief)
        with pytest.raises(TamperedCiphertext):
            await load_key(connection, new_ring, thief)


async def test_the_plaintext_key_is_nowhere_in_a_dump_of_the_table(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 3)
    dump = io.BytesIO()
    async with pool.acquire() as connection:
        await connection.copy_from_table("vapi_api_keys", output=dump)  # what pg_dump reads
    text_dump = dump.getvalue()
    sealed = await sealed_keys(pool)
    for org_id in orgs:
        plaintext = api_key_for(org_id).encode()
        assert plaintext not in sealed[org_id]
        assert plaintext not in text_dump and plaintext.hex().encode() not in text_dump


async def test_rotation_reseals_every_key_under_the_current_key(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 5)
    before = await sealed_keys(pool)

    assert await rotate_keys(pool, rotating_ring) == Rotation(rotated=5, already_current=0,
                                                              failed=[])

    after = await sealed_keys(pool)
    async with pool.acquire() as connection:
        for org_id in orgs:
            assert after[org_id] != before[org_id]
            assert rotating_ring.is_current(after[org_id])
            # ENCRYPTION_KEY_PREVIOUS can now be dropped.
            assert await load_key(connection, new_ring, org_id) == api_key_for(org_id)
            with pytest.raises(UnknownKey):
                await load_key(connection, old_ring, org_id)

    again = await rotate_keys(pool, rotating_ring)
    assert again == Rotation(rotated=0, already_current=5, failed=[])
    assert await sealed_keys(pool) == after


async def test_rotation_takes_a_single_connection(pool: asyncpg.Pool) -> None:
    await accounts_with_old_keys(pool, 2)
    async with pool.acquire() as connection:
        rotation = await rotate_keys(connection, rotating_ring)
    assert rotation == Rotation(rotated=2, already_current=0, failed=[])


async def test_two_rotations_at_once_end_consistent(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 40)

    first, second = await asyncio.gather(rotate_keys(pool, rotating_ring),
                                         rotate_keys(pool, rotating_ring))

    assert first.rotated + second.rotated == 40
    assert first.rotated + first.already_current == 40
    assert second.rotated + second.already_current == 40
    assert first.failed == second.failed == []
    sealed = await sealed_keys(pool)
    async with pool.acquire() as connection:
        for org_id in orgs:
            assert new_ring.is_current(sealed[org_id])
            assert await load_key(connection, new_ring, org_id) == api_key_for(org_id)


async def test_keys_stay_readable_while_a_rotation_is_under_way(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 6)
    held = orgs[3]
    async with pool.acquire() as holder:
        transaction = holder.transaction()
        await transaction.start()
        await holder.execute("SELECT 1 FROM vapi_api_keys WHERE org_id = $1 FOR UPDATE", held)
        rotation = asyncio.create_task(rotate_keys(pool, rotating_ring))
        await wait_until_blocked_on_a_lock(pool)

        sealed = await sealed_keys(pool)
        assert [rotating_ring.is_current(sealed[o]) for o in orgs] == [True] * 3 + [False] * 3
        async with pool.acquire() as reader:
            for org_id in orgs:  # processes already on the new ring read every row
                assert await load_key(reader, rotating_ring, org_id) == api_key_for(org_id)
            for org_id in orgs[3:]:  # and those not yet restarted read the rows not yet done
                assert await load_key(reader, old_ring, org_id) == api_key_for(org_id)
        await transaction.rollback()
    assert await rotation == Rotation(rotated=6, already_current=0, failed=[])


async def test_a_connect_during_a_rotation_is_never_overwritten(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 4)
    reconnected = orgs[1]
    async with pool.acquire() as connect:
        transaction = connect.transaction()
        await transaction.start()
        await store_key(connect, rotating_ring, reconnected, "the-new-api-key")
        rotation = asyncio.create_task(rotate_keys(pool, rotating_ring))
        await wait_until_blocked_on_a_lock(pool)
        await transaction.commit()
    assert await rotation == Rotation(rotated=3, already_current=1, failed=[])
    async with pool.acquire() as connection:
        assert await load_key(connection, new_ring, reconnected) == "the-new-api-key"


async def test_a_key_under_an_unknown_key_is_reported_not_fatal(pool: asyncpg.Pool) -> None:
    orgs = await accounts_with_old_keys(pool, 3)
    stranger = KeyRing("a-key-nobody-configured-" + "x" * 32)
    lost = orgs[1]
    async with pool.acquire() as connection:
        await store_key(connection, stranger, lost, "unreadable")
    lost_sealed = (await sealed_keys(pool))[lost]

    rotation = await rotate_keys(pool, rotating_ring)

    assert rotation == Rotation(rotated=2, already_current=0, failed=[str(lost)])
    sealed = await sealed_keys(pool)
    assert sealed[lost] == lost_sealed  # left as it was, for an operator to decide
    assert all(new_ring.is_current(sealed[o]) for o in orgs if o != lost)
    assert (await rotate_keys(pool, rotating_ring)).failed == [str(lost)]
