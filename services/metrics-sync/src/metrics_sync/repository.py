"""metrics-sync's side of Postgres: the tables it owns (`vapi_call_usage`,
`vapi_usage_daily`, and `vapi_names`: what the account calls its assistants and numbers),
and the transactions in which a replica leases accounts and records their runs, with the
statements of those tables' owners (`calltrail_common.vapi_accounts`,
`calltrail_common.sync_runs`: decision 5).

Replicas coordinate through Postgres only: an account is leased by one replica at a time,
and a run is `running` only while its replica holds the lease; `reap` fails those whose
lease ran out, so no run stays running for ever.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from calltrail_common import sync_runs, vapi_accounts
from calltrail_common.logging import get_logger
from calltrail_common.sync_runs import RunCounts
from calltrail_common.time_zones import DEFAULT_TIME_ZONE, zone
from calltrail_common.vapi_accounts import ClaimedAccount
from metrics_sync.names import VapiName
from metrics_sync.usage import CallUsage

log = get_logger("metrics_sync")

DATABASE_NOW = "SELECT now()"
# The zone the organization's usage counts days by (decision 45), locked against its
# re-keying (`REKEY_CALL_USAGE`, which takes the row FOR UPDATE) until the commit.
USAGE_ZONE = "SELECT usage_time_zone FROM organizations WHERE id = $1 FOR KEY SHARE"
UPSERT_CALL_USAGE = """
    INSERT INTO vapi_call_usage (org_id, call_id, day, seconds, cost, cost_breakdown,
                                 updated_at, created_at)
    SELECT $1, u.call_id, u.day, u.seconds, u.cost, u.cost_breakdown, u.updated_at,
           u.created_at
    FROM unnest($2::text[], $3::date[], $4::numeric[], $5::numeric[], $6::jsonb[],
                $7::timestamptz[], $8::timestamptz[])
         AS u(call_id, day, seconds, cost, cost_breakdown, updated_at, created_at)
    ON CONFLICT (org_id, call_id) DO UPDATE SET
        day = EXCLUDED.day, seconds = EXCLUDED.seconds, cost = EXCLUDED.cost,
        cost_breakdown = EXCLUDED.cost_breakdown, updated_at = EXCLUDED.updated_at,
        created_at = coalesce(EXCLUDED.created_at, vapi_call_usage.created_at)
    -- An older copy of the call (a stale list answer) never replaces a newer one.
    WHERE vapi_call_usage.updated_at IS NULL OR EXCLUDED.updated_at IS NULL
       OR EXCLUDED.updated_at >= vapi_call_usage.updated_at"""
# Each touched day recomputed from every call of that day: exact, whatever was seen when.
RECOMPUTE_DAYS = """
    WITH touched AS (SELECT DISTINCT unnest($2::date[]) AS day),
    totals AS (
        SELECT u.day, count(*)::int AS calls, round(sum(u.seconds) / 60, 6) AS minutes,
               sum(u.cost) AS cost
        FROM vapi_call_usage u JOIN touched t USING (day)
        WHERE u.org_id = $1
        GROUP BY u.day),
    parts AS (
        SELECT day, jsonb_object_agg(name, total) AS breakdown FROM (
            SELECT u.day, e.key AS name, sum(e.value::numeric) AS total
            FROM vapi_call_usage u JOIN touched t USING (day),
                 jsonb_each_text(u.cost_breakdown) e
            WHERE u.org_id = $1 AND u.cost_breakdown IS NOT NULL
            GROUP BY u.day, e.key) per_name
        GROUP BY day)
    INSERT INTO vapi_usage_daily (org_id, day, calls, minutes, cost, cost_breakdown, synced_at)
    SELECT $1, totals.day, totals.calls, totals.minutes, totals.cost,
           coalesce(parts.breakdown, '{}'::jsonb), now()
    FROM totals LEFT JOIN parts USING (day)
    ON CONFLICT (org_id, day) DO UPDATE SET
        calls = EXCLUDED.calls, minutes = EXCLUDED.minutes, cost = EXCLUDED.cost,
        cost_breakdown = EXCLUDED.cost_breakdown, synced_at = EXCLUDED.synced_at"""

# Only names that are new or changed are written: a quiet round reads through the primary
# key and writes nothing. An id missing from the list is left as it was (its calls remain).
RECORD_NAMES = """
    INSERT INTO vapi_names (org_id, kind, vapi_id, name)
    SELECT $1, n.kind, n.vapi_id, n.name
    FROM unnest($2::text[], $3::text[], $4::text[]) AS n(kind, vapi_id, name)
    WHERE NOT EXISTS (SELECT 1 FROM vapi_names v
                      WHERE v.org_id = $1 AND v.kind = n.kind AND v.vapi_id = n.vapi_id
                        AND v.name = n.name)
    ON CONFLICT (org_id, kind, vapi_id) DO UPDATE SET
        name = EXCLUDED.name, updated_at = now()"""
# Re-keying an organization's usage to its new zone (decision 45), in one transaction that
# holds its row FOR UPDATE: each call's day from its createdAt (usage synced before
# migration 0018 has none and keeps its UTC day), then every day recomputed.
ORGS_TO_REKEY = """
    SELECT id FROM organizations WHERE time_zone <> usage_time_zone ORDER BY id"""
LOCK_ORG_FOR_REKEY = """
    SELECT time_zone, usage_time_zone FROM organizations WHERE id = $1 FOR UPDATE"""
REKEY_CALL_USAGE = """
    UPDATE vapi_call_usage SET day = (created_at AT TIME ZONE $2)::date
    WHERE org_id = $1 AND created_at IS NOT NULL
      AND day IS DISTINCT FROM (created_at AT TIME ZONE $2)::date"""
FORGET_USAGE_DAYS = "DELETE FROM vapi_usage_daily WHERE org_id = $1"
USAGE_DAYS_OF = "SELECT DISTINCT day FROM vapi_call_usage WHERE org_id = $1"
USAGE_REKEYED = "UPDATE organizations SET usage_time_zone = $2 WHERE id = $1"


class SyncRepository:
    def __init__(self, pool: asyncpg.Pool, worker: str, lease_seconds: float) -> None:
        self._pool = pool
        self.worker = worker
        self._lease = float(lease_seconds)

    async def claim_due(self, limit: int) -> list[tuple[ClaimedAccount, list[uuid.UUID]]]:
        """Lease up to `limit` accounts that are due (or have a queued run); each comes
        with the run ids it now runs: its queued runs, or one new scheduled run."""
        if limit <= 0:
            return []
        async with self._pool.acquire() as connection, connection.transaction():
            return [(account, await sync_runs.start(connection, account.org_id, self.worker))
                    for account in await vapi_accounts.claim_due(connection, self.worker,
                                                                 limit, self._lease)]

    async def renew(self, org_id: uuid.UUID) -> bool:
        """Extend the lease; False when this replica no longer holds the account."""
        async with self._pool.acquire() as connection:
            return await vapi_accounts.renew_lease(connection, org_id, self.worker,
                                                   self._lease)

    @staticmethod
    async def database_now(connection: asyncpg.Connection) -> dt.datetime:
        """Postgres' clock, the one watermarks and leases are on."""
        now: dt.datetime = await connection.fetchval(DATABASE_NOW)
        return now

    async def record_usage(self, org_id: uuid.UUID, usages: Sequence[CallUsage]) -> int:
        """Store each call's usage and recompute every day they fall on; return the days."""
        if not usages:
            return 0
        async with self._pool.acquire() as connection, connection.transaction():
            name = await connection.fetchval(USAGE_ZONE, org_id) or DEFAULT_TIME_ZONE
            usages = [u.on_day_of(zone(name)) for u in usages]
            days = sorted({u.day for u in usages})
            await connection.execute(
                UPSERT_CALL_USAGE, org_id, [u.call_id for u in usages],
                [u.day for u in usages], [u.seconds for u in usages],
                [u.cost for u in usages],
                [{k: str(v) for k, v in u.cost_breakdown.items()} or None for u in usages],
                [u.updated_at for u in usages], [u.created_at for u in usages])
            await connection.execute(RECOMPUTE_DAYS, org_id, days)
        return len(days)

    async def record_names(self, org_id: uuid.UUID, names: Sequence[VapiName]) -> int:
        """Store the account's assistant and number names; return how many changed."""
        if not names:
            return 0
        async with self._pool.acquire() as connection:
            status = await connection.execute(
                RECORD_NAMES, org_id, [n.kind for n in names], [n.vapi_id for n in names],
                [n.name for n in names])
        return int(status.rsplit(" ", 1)[1])
    async def rekey_usage(self) -> int:
        """Re-key the usage of every organization whose zone changed to its new zone's days
        (decision 45); how many organizations were. Replicas may race: the second finds
        the zones equal under the lock."""
        rekeyed = 0
        async with self._pool.acquire() as connection:
            for row in await connection.fetch(ORGS_TO_REKEY):
                async with connection.transaction():
                    zones = await connection.fetchrow(LOCK_ORG_FOR_REKEY, row["id"])
                    if zones is None or zones["time_zone"] == zones["usage_time_zone"]:
                        continue
                    wanted = zones["time_zone"]
                    await connection.execute(REKEY_CALL_USAGE, row["id"], wanted)
                    await connection.execute(FORGET_USAGE_DAYS, row["id"])
                    days = [r["day"] for r in await connection.fetch(USAGE_DAYS_OF,
                                                                     row["id"])]
                    await connection.execute(RECOMPUTE_DAYS, row["id"], days)
                    await connection.execute(USAGE_REKEYED, row["id"], wanted)
                rekeyed += 1
                log.info("usage_rekeyed", org_id=str(row["id"]), days=len(days))
        return rekeyed

    async def succeed(self, account: ClaimedAccount, runs: Sequence[uuid.UUID],
                      counts: RunCounts, *, next_sync_at: dt.datetime,
                      watermark: dt.datetime | None) -> bool:
        """Record the runs and release the account in one transaction; False (and nothing
        recorded) when the lease was lost meanwhile: another replica has the account."""
        async with self._pool.acquire() as connection, connection.transaction():
            if not await vapi_accounts.release_synced(connection, account.org_id, self.worker,
                                                      next_sync_at=next_sync_at,
                                                      watermark=watermark):
                return False
            await sync_runs.finish(connection, runs, "succeeded", counts, None)
        return True

    async def fail(self, account: ClaimedAccount, runs: Sequence[uuid.UUID],
                   counts: RunCounts, reason: str, *, retry_in: float | None,
                   unauthorized: bool = False) -> bool:
        """Record the runs as failed; back the account off for `retry_in` seconds, or
        disconnect it (`unauthorized`: 401, its polling stops)."""
        async with self._pool.acquire() as connection, connection.transaction():
            if unauthorized:
                held = await vapi_accounts.release_disconnected(connection, account.org_id,
                                                                self.worker)
            else:
                held = await vapi_accounts.release_backed_off(connection, account.org_id,
                                                              self.worker, retry_in or 0)
            if not held:
                return False
            await sync_runs.finish(connection, runs, "failed", counts, reason)
        return True

    async def hand_back(self, org_id: uuid.UUID, runs: Sequence[uuid.UUID]) -> None:
        """Give an account back untouched (shutdown): its runs are queued again, for any
        replica to run from the start."""
        async with self._pool.acquire() as connection, connection.transaction():
            await sync_runs.requeue(connection, runs)
            await vapi_accounts.release(connection, org_id, self.worker)

    async def reap(self) -> int:
        async with self._pool.acquire() as connection, connection.transaction():
            return await sync_runs.reap(connection)

    async def ensure_queued(self, run_id: uuid.UUID, org_id: uuid.UUID) -> None:
        async with self._pool.acquire() as connection:
            await sync_runs.ensure_queued(connection, run_id, org_id)

    async def prune(self, retention_days: int) -> None:
        async with self._pool.acquire() as connection:
            await sync_runs.prune(connection, retention_days)

    async def schedule_lag(self) -> float:
        async with self._pool.acquire() as connection:
            return await vapi_accounts.schedule_lag(connection)
