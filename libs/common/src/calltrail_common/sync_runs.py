"""The `sync_runs` table: every statement that writes it, the reads the api and the CLI
share, and the "sync now" command that wakes metrics-sync (decision 5: one owner per table).

A run's life:

    queued ──(a replica leases its account)──> running ──> succeeded | failed
      │                                          ├──> queued again (the replica stops: `requeue`)
      └──> failed (account disconnected,         └──> failed "abandoned" (`reap`: its lease ran
           replaced by a new connect,                 out; or `start`: the account is leased
           no connected account: `reap`)              again; the replica whose run it was may
                                                      still finish it with its true end)

A sync request is a `queued` row plus a `sync-now` command on the broker; the row is what
counts, so a lost command only delays the run to metrics-sync's next scheduling tick.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel

from calltrail_common.topology import SYNC_NOW_ROUTING_KEY, Topology

ABANDONED = "abandoned: the replica running it stopped or lost the account"

QUEUE = """
    INSERT INTO sync_runs (id, org_id, trigger, status) VALUES ($1, $2, $3, 'queued')"""
# A command names its run: the row is written again in case the command came first.
ENSURE_QUEUED = """
    INSERT INTO sync_runs (id, org_id, trigger, status) VALUES ($1, $2, 'manual', 'queued')
    ON CONFLICT (id) DO NOTHING"""
FAIL_QUEUED = """
    UPDATE sync_runs SET status = 'failed', finished_at = now(), reason = $2
    WHERE org_id = $1 AND status = 'queued'"""
# The account was just leased, so no run of it is still being run under a lease: one still
# 'running' lost its end (its replica could not write it, Postgres being away) and would
# stay so while the account is leased again and again, out of the reaper's reach.
ABANDON_RUNNING = f"""
    UPDATE sync_runs SET status = 'failed', finished_at = now(), reason = '{ABANDONED}'
    WHERE org_id = $1 AND status = 'running'"""  # noqa: S608 - a constant
START_QUEUED = """
    UPDATE sync_runs SET status = 'running', started_at = now(), worker = $2
    WHERE org_id = $1 AND status = 'queued'
    RETURNING id"""
START_SCHEDULED = """
    INSERT INTO sync_runs (id, org_id, trigger, status, started_at, worker)
    VALUES ($1, $2, 'schedule', 'running', now(), $3)"""
# A run the reaper failed as abandoned (its lease ran out, say while Postgres was cut) is
# still this replica's if no other took the account meanwhile: its true end replaces the
# reaper's guess, so a run that did its work is never shown as failed.
FINISH = f"""
    UPDATE sync_runs SET status = $2, finished_at = now(), calls_seen = $3,
        calls_published = $4, days_updated = $5, requests = $6, reason = $7
    WHERE id = ANY($1::uuid[])
      AND (status = 'running' OR (status = 'failed' AND reason = '{ABANDONED}'))"""  # noqa: S608 - a constant
REQUEUE = """
    UPDATE sync_runs SET status = 'queued', started_at = NULL, worker = NULL
    WHERE id = ANY($1::uuid[]) AND status = 'running'"""
REAP_ABANDONED = f"""
    UPDATE sync_runs r SET status = 'failed', finished_at = now(),
        reason = '{ABANDONED}'
    FROM vapi_accounts a
    WHERE r.org_id = a.org_id AND r.status = 'running'
      AND (a.lease_until IS NULL OR a.lease_until < now()
           OR a.lease_owner IS DISTINCT FROM r.worker)
    RETURNING r.id"""  # noqa: S608 - a constant
REAP_QUEUED_WITHOUT_ACCOUNT = """
    UPDATE sync_runs r SET status = 'failed', finished_at = now(),
        reason = 'no connected Vapi account'
    WHERE r.status = 'queued' AND NOT EXISTS (
        SELECT 1 FROM vapi_accounts a WHERE a.org_id = r.org_id AND a.status = 'connected')
    RETURNING r.id"""
PRUNE = """
    DELETE FROM sync_runs
    WHERE status IN ('succeeded', 'failed')
      AND finished_at < now() - make_interval(days => $1)"""

_RUN_COLUMNS = """
    id, org_id, trigger, status, requested_at, started_at, finished_at, calls_seen,
    calls_published, days_updated, requests, reason"""
RUN = f"SELECT {_RUN_COLUMNS} FROM sync_runs WHERE id = $1"  # noqa: S608 - constant columns
RUN_OF_ORG = f"SELECT {_RUN_COLUMNS} FROM sync_runs WHERE id = $2 AND org_id = $1"  # noqa: S608
LATEST = f"""
    SELECT {_RUN_COLUMNS} FROM sync_runs WHERE org_id = $1
    ORDER BY requested_at DESC LIMIT 1"""  # noqa: S608 - constant columns
PENDING_SINCE = """
    SELECT EXISTS (SELECT 1 FROM sync_runs WHERE org_id = $1
                   AND status IN ('queued', 'running') AND requested_at > $2)"""


@dataclass(frozen=True)
class RunCounts:
    """What a run did, recorded with its end."""

    calls_seen: int = 0
    calls_published: int = 0
    days_updated: int = 0
    requests: int = 0


# --- writes -----------------------------------------------------------------------------


async def queue(connection: asyncpg.Connection, run_id: uuid.UUID, org_id: uuid.UUID,
                trigger: str) -> None:
    await connection.execute(QUEUE, run_id, org_id, trigger)


async def ensure_queued(connection: asyncpg.Connection, run_id: uuid.UUID,
                        org_id: uuid.UUID) -> None:
    """The run a sync-now command names, queued unless it is known already; raises
    asyncpg.ForeignKeyViolationError when the organization does not exist."""
    await connection.execute(ENSURE_QUEUED, run_id, org_id)


async def fail_queued(connection: asyncpg.Connection, org_id: uuid.UUID, reason: str) -> None:
    """The organization's queued runs will never run (disconnected, or replaced)."""
    await connection.execute(FAIL_QUEUED, org_id, reason)


async def start(connection: asyncpg.Connection, org_id: uuid.UUID, worker: str
                ) -> list[uuid.UUID]:
    """Start the account's queued runs under `worker`, or one new scheduled run when none
    was queued; their ids. Runs of it still 'running' are failed as abandoned first (the
    account was just leased, in the same transaction)."""
    await connection.execute(ABANDON_RUNNING, org_id)
    runs = [r["id"] for r in await connection.fetch(START_QUEUED, org_id, worker)]
    if runs:
        return runs
    run_id = uuid.uuid4()
    await connection.execute(START_SCHEDULED, run_id, org_id, worker)
    return [run_id]


async def finish(connection: asyncpg.Connection, runs: Sequence[uuid.UUID], status: str,
                 counts: RunCounts, reason: str | None) -> None:
    await connection.execute(FINISH, list(runs), status, counts.calls_seen,
                             counts.calls_published, counts.days_updated, counts.requests,
                             reason)


async def requeue(connection: asyncpg.Connection, runs: Sequence[uuid.UUID]) -> None:
    """Runs given back untouched: queued again, for any replica to run from the start."""
    await connection.execute(REQUEUE, list(runs))


async def reap(connection: asyncpg.Connection) -> int:
    """Fail the running runs whose lease ran out and the queued runs of accounts no longer
    connected; how many."""
    abandoned = await connection.fetch(REAP_ABANDONED)
    orphaned = await connection.fetch(REAP_QUEUED_WITHOUT_ACCOUNT)
    return len(abandoned) + len(orphaned)


async def prune(connection: asyncpg.Connection, retention_days: int) -> None:
    await connection.execute(PRUNE, retention_days)


# --- reads (a pool or a connection) ------------------------------------------------------


async def find(db: Any, run_id: uuid.UUID, org_id: uuid.UUID | None = None
               ) -> asyncpg.Record | None:
    """A run by its id (within `org_id` when given: another organization's finds nothing)."""
    if org_id is None:
        return await db.fetchrow(RUN, run_id)
    return await db.fetchrow(RUN_OF_ORG, org_id, run_id)


async def latest(db: Any, org_id: uuid.UUID) -> asyncpg.Record | None:
    return await db.fetchrow(LATEST, org_id)


async def pending_since(db: Any, org_id: uuid.UUID, since: dt.datetime) -> bool:
    """Whether a run requested after `since` is still queued or running."""
    return bool(await db.fetchval(PENDING_SINCE, org_id, since))


# --- the sync-now command ----------------------------------------------------------------


def command_body(org_id: uuid.UUID, run_id: uuid.UUID) -> bytes:
    return orjson.dumps({"type": "sync-now", "orgId": str(org_id), "syncId": str(run_id)})


def read_command(body: bytes) -> tuple[uuid.UUID, uuid.UUID]:
    """(organization, run) of a sync-now command; ValueError when it is not one."""
    try:
        command = orjson.loads(body)
        return uuid.UUID(str(command["orgId"])), uuid.UUID(str(command["syncId"]))
    except (KeyError, TypeError, ValueError):  # orjson.JSONDecodeError is a ValueError
        raise ValueError("not a sync-now command") from None


async def publish_command(channel: AbstractChannel, topology: Topology, org_id: uuid.UUID,
                          run_id: uuid.UUID) -> None:
    """Wake a metrics-sync replica for this queued run (persistent, on `channel`)."""
    exchange = await channel.get_exchange(topology.commands_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(command_body(org_id, run_id), content_type="application/json",
                         message_id=str(run_id),
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=SYNC_NOW_ROUTING_KEY)
