"""PostgreSQL: the connection pool every service uses, and the migration runner.

Every connection of every process is made here, from `DATABASE_URL`, so what the URL says
reaches all of them: TLS (`sslmode`, `sslrootcert`, ... as libpq spells them), and
`pgbouncer=true`, Calltrail's own parameter (stripped before connecting) for an address that
is a pooler in transaction mode (PgBouncer, Supabase's pooler, RDS Proxy): there a session
lasts one transaction, so asyncpg's prepared-statement cache is off (a statement prepared on
one server connection would be missing on the next), and nothing relies on session state:
locks are transaction-scoped and ingest does not LISTEN (it reloads on its timer).

Migrations are the numbered `migrations/NNNN_name.sql` files next to this module, applied in
order, each in its own transaction holding a transaction-scoped advisory lock: running
`calltrail migrate` twice, or from several processes at once, even through a pooler, applies
each file exactly once.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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


POOLER_PARAMETER = "pgbouncer"


def behind_transaction_pooler(dsn: str) -> bool:
    """Whether `dsn` says it reaches Postgres through a transaction-mode pooler."""
    return any(name == POOLER_PARAMETER and value.lower() in ("true", "1", "yes")
               for name, value in parse_qsl(urlsplit(dsn).query))


def _connect_arguments(dsn: str) -> dict[str, Any]:
    """asyncpg's arguments for `dsn`: our own parameter out of the URL, into options."""
    parts = urlsplit(dsn)
    query = [(n, v) for n, v in parse_qsl(parts.query, keep_blank_values=True)
             if n != POOLER_PARAMETER]
    arguments: dict[str, Any] = {"dsn": urlunsplit(parts._replace(query=urlencode(query)))}
    if behind_transaction_pooler(dsn):
        arguments["statement_cache_size"] = 0
    return arguments


async def _init_connection(connection: asyncpg.Connection) -> None:
    # jsonb in and out as Python values, encoded with orjson.
    await connection.set_type_codec(
        "jsonb", schema="pg_catalog", format="text",
        encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
    )


# A failure of the database or of the way to it, not of what was asked (the one list every
# service uses): wait and try the same again. A deadlock or serialization failure is one
# too: the transaction was rolled back and can simply run again.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)

# A statement or a connect that takes longer than this is treated as a lost connection:
# without a bound, a half-open connection (a peer gone without a FIN) hangs its caller.
DEFAULT_COMMAND_TIMEOUT_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      command_timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        **_connect_arguments(dsn), min_size=min_size, max_size=max_size,
        init=_init_connection, command_timeout=command_timeout,
        timeout=CONNECT_TIMEOUT_SECONDS,
    )


async def _connect_raw(dsn: str, *, command_timeout: float | None = None,
                       **overrides: Any) -> asyncpg.Connection:
    return await asyncpg.connect(**_connect_arguments(dsn), command_timeout=command_timeout,
                                 timeout=CONNECT_TIMEOUT_SECONDS, **overrides)


async def connect(dsn: str, *, command_timeout: float = DEFAULT_COMMAND_TIMEOUT_SECONDS
                  ) -> asyncpg.Connection:
    connection = await _connect_raw(dsn, command_timeout=command_timeout)
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
            connection = await _connect_raw(dsn)
        except asyncpg.InvalidCatalogNameError:
            pass
        else:
            await connection.close()
            return False
        admin = await _connect_raw(dsn, database="postgres")
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


_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version text PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())"""


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations not yet applied; return the names of those applied now.

    Each one in a transaction of its own that first takes the migration lock (released by
    its commit), so concurrent runs queue, and whoever comes second finds it applied.
    """
    migrations = bundled_migrations() if migrations is None else migrations
    connection = await _connect_raw(dsn)
    applied_now: list[str] = []
    try:
        for migration in migrations:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock($1)",
                                         _MIGRATION_LOCK_KEY)
                await connection.execute(_MIGRATIONS_TABLE)
                if await connection.fetchval(
                        "SELECT 1 FROM schema_migrations WHERE version = $1",
                        migration.version):
                    continue
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            applied_now.append(migration.name)
    finally:
        await connection.close()
    return applied_now


async def pending_migrations(dsn: str, migrations: list[Migration] | None = None
                             ) -> list[str]:
    """The names of the bundled migrations the database at `dsn` has not applied yet."""
    migrations = bundled_migrations() if migrations is None else migrations
    connection = await _connect_raw(dsn)
    try:
        if await connection.fetchval("SELECT to_regclass('schema_migrations')") is None:
            return [m.name for m in migrations]
        applied = {r["version"] for r in await connection.fetch(
            "SELECT version FROM schema_migrations")}
    finally:
        await connection.close()
    return [m.name for m in migrations if m.version not in applied]
