"""Failed sign-ins, per account and per address (table `sign_in_failures`), read and written
for the throttle (`api.dashboard.throttle` is the rule). A key is `account:<email>` or
`address:<ip>`; rows older than the window are pruned whenever a failure is written, so the
table holds only the failures that still count."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

RECENT = """
    SELECT now() AS now, key, at FROM sign_in_failures
    WHERE key = ANY($1::text[]) AND at > now() - $2::interval
    UNION ALL SELECT now(), NULL, NULL"""

RECORD = """
    INSERT INTO sign_in_failures (key) SELECT unnest($1::text[])"""

PRUNE = """
    DELETE FROM sign_in_failures WHERE at <= now() - $1::interval"""

CLEAR = """
    DELETE FROM sign_in_failures WHERE key = $1"""


async def recent(pool: asyncpg.Pool, keys: Sequence[str], window: timedelta
                 ) -> tuple[datetime, dict[str, list[datetime]]]:
    """The database's time now, and each key's failures within the window."""
    rows = await pool.fetch(RECENT, list(keys), window)
    failures: dict[str, list[datetime]] = {key: [] for key in keys}
    for row in rows:
        if row["key"] is not None:
            failures[row["key"]].append(row["at"])
    return rows[0]["now"], failures


async def record(pool: asyncpg.Pool, keys: Sequence[str], window: timedelta) -> None:
    """One failure for each key; failures older than the window go."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(RECORD, list(keys))
        await connection.execute(PRUNE, window)


async def clear(pool: asyncpg.Pool, key: str) -> None:
    await pool.execute(CLEAR, key)
