"""Connected accounts' Vapi API keys, stored only sealed (`calltrail_common.crypto`).

One row per organization in `vapi_api_keys`; disconnecting deletes it.

`rotate_keys` is `calltrail keys rotate`: it re-seals under ENCRYPTION_KEY every row sealed
under another key (ENCRYPTION_KEY_PREVIOUS; a row under a key the ring lacks is reported in
`failed` and left alone). Each row is re-sealed in its own short transaction under
`SELECT ... FOR UPDATE`, so a connect (whose upsert also locks the row) or a second rotation
running at the same time waits for it, and neither overwrites the other's write. Rotate once
every process that writes keys runs with the new ENCRYPTION_KEY: a process still sealing
under the old key after the rotation passed its row leaves that row behind (running the
rotation again picks it up).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from calltrail_common.crypto import CryptoError, KeyRing

STORE_KEY = """
    INSERT INTO vapi_api_keys (org_id, sealed) VALUES ($1, $2)
    ON CONFLICT (org_id) DO UPDATE SET sealed = EXCLUDED.sealed, updated_at = now()"""
LOAD_KEY = "SELECT sealed FROM vapi_api_keys WHERE org_id = $1"
DELETE_KEY = "DELETE FROM vapi_api_keys WHERE org_id = $1 RETURNING org_id"
ALL_KEYS = "SELECT org_id, sealed FROM vapi_api_keys ORDER BY org_id"
LOCK_KEY = "SELECT sealed FROM vapi_api_keys WHERE org_id = $1 FOR UPDATE"
# updated_at is when the API key was connected: a re-seal does not change the key.
RESEAL_KEY = "UPDATE vapi_api_keys SET sealed = $2 WHERE org_id = $1"


@dataclass
class Rotation:
    rotated: int = 0
    already_current: int = 0
    failed: list[str] = field(default_factory=list)  # org ids whose key could not be opened


def _uuid(org_id: uuid.UUID | str) -> uuid.UUID:
    return org_id if isinstance(org_id, uuid.UUID) else uuid.UUID(org_id)


async def store_key(connection: asyncpg.Connection, keyring: KeyRing,
                    org_id: uuid.UUID | str, api_key: str) -> None:
    """Seal and upsert; the organization's `vapi_accounts` row must exist (else
    asyncpg.ForeignKeyViolationError)."""
    org = _uuid(org_id)
    await connection.execute(STORE_KEY, org, keyring.seal(api_key, org_id=org))


async def load_key(connection: asyncpg.Connection, keyring: KeyRing,
                   org_id: uuid.UUID | str) -> str | None:
    """The API key, or None when none is stored; CryptoError when it cannot be opened."""
    org = _uuid(org_id)
    sealed = await connection.fetchval(LOAD_KEY, org)
    return None if sealed is None else keyring.open(sealed, org_id=org)


async def delete_key(connection: asyncpg.Connection, org_id: uuid.UUID | str) -> bool:
    """Delete the stored key; True when there was one."""
    return await connection.fetchval(DELETE_KEY, _uuid(org_id)) is not None


async def rotate_keys(pool_or_connection: asyncpg.Pool | asyncpg.Connection,
                      keyring: KeyRing) -> Rotation:
    """Re-seal under the current key every row that is not; safe to repeat and to run
    concurrently. A row that cannot be opened is listed in `failed` and left as it is."""
    if isinstance(pool_or_connection, asyncpg.Pool):
        async with pool_or_connection.acquire() as connection:
            return await _rotate(connection, keyring)
    return await _rotate(pool_or_connection, keyring)


async def _rotate(connection: asyncpg.Connection, keyring: KeyRing) -> Rotation:
    rotation = Rotation()
    for row in await connection.fetch(ALL_KEYS):
        org_id: uuid.UUID = row["org_id"]
        if keyring.is_current(row["sealed"]):
            rotation.already_current += 1
            continue
        async with connection.transaction():
            sealed = await connection.fetchval(LOCK_KEY, org_id)
            if sealed is None:  # disconnected meanwhile
                continue
            if keyring.is_current(sealed):  # another rotation or a connect got here first
                rotation.already_current += 1
                continue
            try:
                api_key = keyring.open(sealed, org_id=org_id)
            except CryptoError:
                rotation.failed.append(str(org_id))
                continue
            await connection.execute(RESEAL_KEY, org_id, keyring.seal(api_key, org_id=org_id))
            rotation.rotated += 1
    return rotation
