"""PostgreSQL: the connection pool every service uses, and the migration runner.

Migrations are the numbered `migrations/NNNN_name.sql` files next to this module, applied in
order, each in its own transaction, under a session advisory lock: running `calltrail
migrate` twice, or from several processes at once, applies each file exactly once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources
from urllib.parse import urlsplit

import asyncpg
import orjson

_MIGRATION_LOCK_KEY = 0x63616C6C  # "call": any constant shared by every migrating process
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str


def bundled_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("calltrail_common.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, encoded with orjson.
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
    )


# A statement or a connect that takes longer than this is treated as a lost connection:
# without a bound, a half-open connection (a peer gone without a FIN) hangs its caller.
DEFAULT_COMMAND_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      command_timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        command_timeout=command_timeout, timeout=CONNECT_TIMEOUT_SECONDS,
    )


async def connect(dsn: str, *, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS
                  ) -> asyncpg.Connection:
    connection = await asyncpg.connect(dsn, command_timeout=command_timeout,
                                       timeout=CONNECT_TIMEOUT_SECONDS)
    await _init_connection(connection)
    return connection


async def create_database_if_missing(dsn: str) -> bool:
    """Create the database `dsn` names when it does not exist; True when this call created it.

    Safe from several processes at once: a concurrent CREATE DATABASE fails with a duplicate
    (the other won) or with template1 busy (try again).
    """
    name = urlsplit(dsn).path.lstrip("/")
    if not name or '"' in name:
        raise ValueError("the database URL must name a database")
    for _ in range(50):
        try:
            connection = await asyncpg.connect(dsn)
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            await connection.close()
            return False
        admin = await asyncpg.connect(dsn, database="postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False
        except asyncpg.ObjectInUseError:
            await asyncio.sleep(0.1)  # template1 is being copied by a concurrent CREATE
            continue
        finally:
            await admin.close()
        return True
    raise TimeoutError(f"could not create database {name!r}: template1 stayed busy")


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet applied; return the names of those applied now."""
    migrations = bundled_migrations() if migrations is None else migrations
    connection = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        await connection.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version text PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        applied = {r["version"] for r in await connection.fetch(
            "SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in applied:
                continue
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            applied_now.append(migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
        await connection.close()
    return applied_now
