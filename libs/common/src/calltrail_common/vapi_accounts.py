"""Connected Vapi accounts (contract section 6) and the `vapi_accounts` table: every
statement that writes it is here (decision 5: one owner per table). The CLI, the api and
metrics-sync connect, disconnect and ask for syncs through this module, and metrics-sync
leases accounts through it.

- Connect checks the key against Vapi first (`GET /assistant?limit=1`), stores it only
  sealed (`calltrail_common.crypto`), registers the account's phone numbers, learns its Vapi
  org id and queues a first sync run (trigger `connect`).
- Disconnect deletes the key row (not a flag), marks the account disconnected and fails
  the runs still queued for it.
- A sync request is a queued run (`calltrail_common.sync_runs`) and a command that wakes
  metrics-sync. Opening the dashboard asks for one when the account's last sync is older
  than the interval (`request_sync_if_stale`).
- Leases: metrics-sync claims due accounts with `FOR UPDATE SKIP LOCKED` and holds each by
  a lease (owner, until) that its replica renews while it syncs, so two replicas never sync
  one account at once, and a dead replica's accounts are free again when its leases run
  out. A run's end releases the lease: due again at its next slot, backed off, or
  disconnected (a 401: its polling stops).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aio_pika.abc import AbstractChannel

from calltrail_common import phone_numbers, sync_runs, vapi_keys
from calltrail_common.crypto import KeyRing
from calltrail_common.handback import hand_back_matching
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology
from calltrail_common.vapi import VapiClient, VapiUnauthorized

log = get_logger(__name__)

DISCONNECTED_BY_USER = "disconnected"
INVALID_API_KEY = "invalid_api_key"

CONNECT = """
    INSERT INTO vapi_accounts (org_id, status, api_base_url, connected_at, next_sync_at,
                               calls_watermark)
    VALUES ($1, 'connected', $2, now(), now(), NULL)
    ON CONFLICT (org_id) DO UPDATE SET
        status = 'connected', disconnected_reason = NULL, api_base_url = EXCLUDED.api_base_url,
        connected_at = now(), next_sync_at = now(), backoff_until = NULL, failures = 0,
        -- Another key may be another Vapi account: learn everything again.
        calls_watermark = NULL, vapi_org_id = NULL"""
DISCONNECT = """
    UPDATE vapi_accounts SET status = 'disconnected', disconnected_reason = $2,
        lease_owner = NULL, lease_until = NULL
    WHERE org_id = $1"""
STATUS = "SELECT status FROM vapi_accounts WHERE org_id = $1"
ACCOUNT = """
    SELECT status, disconnected_reason, vapi_org_id, last_synced_at, connected_at
    FROM vapi_accounts WHERE org_id = $1"""
KNOWN_VAPI_ORG = "SELECT vapi_org_id FROM vapi_accounts WHERE org_id = $1"
LEARN_VAPI_ORG = """
    UPDATE vapi_accounts SET vapi_org_id = $2
    WHERE org_id = $1 AND vapi_org_id IS DISTINCT FROM $2"""

# Both arms are index conditions (a BitmapOr of vapi_accounts_due and the primary key), so
# a claim reads the due and requested accounts only. A correlated EXISTS here made every
# claim read every connected account once accounts were spread over the interval (6 ms at
# 5,000 accounts, 20 ms at 20,000, against 0.2-0.4 ms for this form at both).
CLAIM_DUE = """
    WITH due AS (
        SELECT a.org_id FROM vapi_accounts a
        WHERE a.status = 'connected'
          AND (a.lease_until IS NULL OR a.lease_until < now())
          AND (a.backoff_until IS NULL OR a.backoff_until <= now())
          AND (a.next_sync_at <= now()
               OR a.org_id = ANY (ARRAY(SELECT r.org_id FROM sync_runs r
                                        WHERE r.status = 'queued')))
        ORDER BY a.next_sync_at
        LIMIT $2
        FOR UPDATE OF a SKIP LOCKED
    )
    UPDATE vapi_accounts a
    SET lease_owner = $1, lease_until = now() + make_interval(secs => $3)
    FROM due WHERE a.org_id = due.org_id
    RETURNING a.org_id, a.api_base_url, a.calls_watermark, a.failures, a.vapi_org_id,
              a.next_sync_at"""
RENEW_LEASE = """
    UPDATE vapi_accounts SET lease_until = now() + make_interval(secs => $3)
    WHERE org_id = $1 AND lease_owner = $2 AND lease_until >= now()
    RETURNING org_id"""
RELEASE_SUCCEEDED = """
    UPDATE vapi_accounts SET lease_owner = NULL, lease_until = NULL, failures = 0,
        backoff_until = NULL, next_sync_at = $3, calls_watermark = $4, last_synced_at = now()
    WHERE org_id = $1 AND lease_owner = $2
    RETURNING org_id"""
RELEASE_FAILED = """
    UPDATE vapi_accounts SET lease_owner = NULL, lease_until = NULL,
        failures = failures + 1, backoff_until = now() + make_interval(secs => $3)
    WHERE org_id = $1 AND lease_owner = $2
    RETURNING org_id"""
RELEASE_UNAUTHORIZED = f"""
    UPDATE vapi_accounts SET lease_owner = NULL, lease_until = NULL,
        status = 'disconnected', disconnected_reason = '{INVALID_API_KEY}'
    WHERE org_id = $1 AND lease_owner = $2
    RETURNING org_id"""  # noqa: S608 - a constant
RELEASE_QUIETLY = """
    UPDATE vapi_accounts SET lease_owner = NULL, lease_until = NULL
    WHERE org_id = $1 AND lease_owner = $2"""
SCHEDULE_LAG = """
    SELECT coalesce(extract(epoch FROM now() - min(next_sync_at)), 0)::float8
    FROM vapi_accounts
    WHERE status = 'connected' AND next_sync_at < now()
      AND (backoff_until IS NULL OR backoff_until <= now())"""


class AccountError(Exception):
    """An account operation could not be done; the message says why and holds no secret."""


class KeyRefused(AccountError):
    """Vapi answered 401 to the key check: the key is wrong, revoked or the public one."""


class NoSuchOrganization(AccountError):
    pass


class NotConnected(AccountError):
    pass


@dataclass(frozen=True)
class RegisteredNumbers:
    numbers: tuple[str, ...]  # E.164 numbers (and SIP ids without a number) now registered
    conflicts: int  # numbers another organization has: recorded, not claimed
    vapi_org_id: str | None


@dataclass(frozen=True)
class ConnectedAccount:
    org_id: uuid.UUID
    vapi_org_id: str | None
    phone_numbers: tuple[str, ...]
    sync_id: uuid.UUID
    events_handed_back: int


@dataclass(frozen=True)
class ClaimedAccount:
    """An account leased by a metrics-sync replica, as it was when claimed."""

    org_id: uuid.UUID
    api_base_url: str | None
    calls_watermark: dt.datetime | None
    failures: int
    vapi_org_id: str | None


def vapi_org_id_of(items: Iterable[Mapping[str, Any]]) -> str | None:
    """The Vapi org id that phone numbers, assistants or calls of one account name: the one
    most of them name (the first of those on a tie), so an odd item cannot decide it."""
    counts: dict[str, int] = {}
    for item in items:
        value = item.get("orgId")
        if isinstance(value, str) and value:
            counts[value] = counts.get(value, 0) + 1
    return max(counts, key=lambda value: counts[value]) if counts else None


def is_stale(last_synced_at: dt.datetime | None, now: dt.datetime,
             interval_seconds: float) -> bool:
    """Whether an account's last sync is older than the sync interval (or never was)."""
    since = now - dt.timedelta(seconds=interval_seconds)
    return last_synced_at is None or last_synced_at <= since


# --- the account's life: connect, disconnect, ask for a sync ------------------------------


async def connect_account(pool: asyncpg.Pool, keyring: KeyRing, client: VapiClient,
                          org_id: uuid.UUID, api_key: str, *, api_base_url: str | None = None,
                          channel: AbstractChannel | None = None,
                          topology: Topology | None = None) -> ConnectedAccount:
    """Check `api_key` with Vapi, store it sealed, register the numbers, queue a first sync.

    With a broker `channel`, the events the numbers now match are handed back and the sync
    command is published; without one, a metrics-sync replica finds the queued run on its
    next tick. Raises KeyRefused, NoSuchOrganization, or the client's VapiError.
    """
    try:
        await client.verify()
    except VapiUnauthorized:
        raise KeyRefused("Vapi refused the API key (401): use the account's private key"
                         ) from None
    numbers = await client.phone_numbers()
    vapi_org_id = vapi_org_id_of(numbers) or vapi_org_id_of(await client.assistants())
    sync_id = uuid.uuid4()
    async with pool.acquire() as connection:
        try:
            async with connection.transaction():
                await connection.execute(CONNECT, org_id, api_base_url)
                await vapi_keys.store_key(connection, keyring, org_id, api_key)
                await sync_runs.fail_queued(connection, org_id, "replaced by a new connect")
                await sync_runs.queue(connection, sync_id, org_id, "connect")
        except asyncpg.ForeignKeyViolationError:
            raise NoSuchOrganization(f"no organization {org_id}") from None
        registered = await register_numbers(connection, org_id, numbers, vapi_org_id)
        handed_back = 0
        if channel is not None and topology is not None:
            handed_back = await hand_back_matching(connection, channel, topology, numbers,
                                                   registered.vapi_org_id)
    if channel is not None and topology is not None:
        await sync_runs.publish_command(channel, topology, org_id, sync_id)
    log.info("vapi_account_connected", org_id=str(org_id), numbers=len(registered.numbers),
             sync_id=str(sync_id))
    return ConnectedAccount(org_id, registered.vapi_org_id, registered.numbers, sync_id,
                            handed_back)


async def disconnect_account(pool: asyncpg.Pool, org_id: uuid.UUID,
                             reason: str = DISCONNECTED_BY_USER) -> bool:
    """Delete the key, mark the account disconnected; False when the organization never
    connected one (an account Vapi disconnected with a 401 still has its key deleted)."""
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval(STATUS, org_id)
        await vapi_keys.delete_key(connection, org_id)
        await connection.execute(DISCONNECT, org_id, reason)
        await sync_runs.fail_queued(connection, org_id, f"account {reason}")
    log.info("vapi_account_disconnected", org_id=str(org_id), reason=reason)
    return status is not None


async def request_sync(pool: asyncpg.Pool, org_id: uuid.UUID, *,
                       channel: AbstractChannel | None, topology: Topology | None,
                       trigger: str = "manual") -> uuid.UUID:
    """Queue a sync run of a connected account and wake metrics-sync; return the run id."""
    sync_id = uuid.uuid4()
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval(STATUS, org_id)
        if status != "connected":
            raise NotConnected(f"organization {org_id} has no connected Vapi account")
        await sync_runs.queue(connection, sync_id, org_id, trigger)
    if channel is not None and topology is not None:
        await sync_runs.publish_command(channel, topology, org_id, sync_id)
    return sync_id


async def request_sync_if_stale(pool: asyncpg.Pool, org_id: uuid.UUID, *,
                                interval_seconds: float, trigger: str) -> uuid.UUID | None:
    """Queue a sync when the account is connected, its last sync is older than the interval
    and no run asked for since is waiting (the dashboard's rule, contract section 7); the
    run's id, or None. The caller wakes metrics-sync; its own schedule is the backstop."""
    account = await find(pool, org_id)
    if account is None or account["status"] != "connected":
        return None
    now = dt.datetime.now(dt.UTC)
    if not is_stale(account["last_synced_at"], now, interval_seconds):
        return None
    since = now - dt.timedelta(seconds=interval_seconds)
    try:
        if await sync_runs.pending_since(pool, org_id, since):
            return None
        return await request_sync(pool, org_id, channel=None, topology=None, trigger=trigger)
    except NotConnected:
        return None


async def find(db: Any, org_id: uuid.UUID) -> asyncpg.Record | None:
    """The account's status, reason, Vapi org id and sync times (a pool or a connection)."""
    return await db.fetchrow(ACCOUNT, org_id)


# --- what a sync learns ------------------------------------------------------------------


async def learn_vapi_org(connection: asyncpg.Connection, org_id: uuid.UUID,
                         vapi_org_id: str) -> str | None:
    """Record the account's Vapi org id, under the assignment lock (events it matches are
    then found by `hand_back_matching`); None when another organization's account has it."""
    known = await connection.fetchval(KNOWN_VAPI_ORG, org_id)
    if known == vapi_org_id:  # learnt before: nothing to assign anew
        return vapi_org_id
    try:
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)",
                                     phone_numbers.ASSIGNMENT_LOCK_KEY)
            await connection.execute(LEARN_VAPI_ORG, org_id, vapi_org_id)
    except asyncpg.UniqueViolationError:
        log.warning("vapi_org_connected_elsewhere", org_id=str(org_id))
        return None
    return vapi_org_id


async def register_numbers(connection: asyncpg.Connection, org_id: uuid.UUID,
                           numbers: Sequence[Mapping[str, Any]],
                           vapi_org_id: str | None) -> RegisteredNumbers:
    """Learn the account's Vapi org id, then register to `org_id` the numbers of its list
    that are of that Vapi org (`phone_numbers.register_account_numbers`: a number another
    organization has is recorded as a conflict), under the assignment lock, so no event is
    set aside as unassigned in between without being found by `hand_back_matching`. An
    account whose Vapi org another organization's account has claims nothing."""
    learned = None
    if vapi_org_id is not None:
        learned = await learn_vapi_org(connection, org_id, vapi_org_id)
    if learned is None:
        return RegisteredNumbers((), 0, None)
    registered = await phone_numbers.register_account_numbers(connection, org_id, learned,
                                                              numbers)
    return RegisteredNumbers(registered.numbers, registered.conflicts, learned)


# --- leases (metrics-sync) ---------------------------------------------------------------


async def claim_due(connection: asyncpg.Connection, worker: str, limit: int,
                    lease_seconds: float) -> list[ClaimedAccount]:
    """Lease up to `limit` accounts that are due (or have a queued run) to `worker`."""
    return [ClaimedAccount(row["org_id"], row["api_base_url"], row["calls_watermark"],
                           row["failures"], row["vapi_org_id"])
            for row in await connection.fetch(CLAIM_DUE, worker, limit, lease_seconds)]


async def renew_lease(connection: asyncpg.Connection, org_id: uuid.UUID, worker: str,
                      lease_seconds: float) -> bool:
    """Extend the lease; False when `worker` no longer holds the account."""
    return await connection.fetchval(RENEW_LEASE, org_id, worker, lease_seconds) is not None


async def release_synced(connection: asyncpg.Connection, org_id: uuid.UUID, worker: str, *,
                         next_sync_at: dt.datetime, watermark: dt.datetime | None) -> bool:
    """A run succeeded: due again at `next_sync_at`, its calls known up to `watermark`.
    False (nothing changed) when `worker` no longer holds the account."""
    return await connection.fetchval(RELEASE_SUCCEEDED, org_id, worker, next_sync_at,
                                     watermark) is not None


async def release_backed_off(connection: asyncpg.Connection, org_id: uuid.UUID, worker: str,
                             retry_in: float) -> bool:
    """A run failed: no run for `retry_in` seconds, one failure more in a row."""
    return await connection.fetchval(RELEASE_FAILED, org_id, worker,
                                     float(retry_in)) is not None


async def release_disconnected(connection: asyncpg.Connection, org_id: uuid.UUID,
                               worker: str) -> bool:
    """Vapi refused the key (401): disconnected as `invalid_api_key`, its polling stops."""
    return await connection.fetchval(RELEASE_UNAUTHORIZED, org_id, worker) is not None


async def release(connection: asyncpg.Connection, org_id: uuid.UUID, worker: str) -> None:
    """Give the account back untouched (its replica is stopping)."""
    await connection.execute(RELEASE_QUIETLY, org_id, worker)


async def schedule_lag(connection: asyncpg.Connection) -> float:
    """How far the most overdue connected account is behind its schedule, in seconds."""
    lag: float = await connection.fetchval(SCHEDULE_LAG)
    return lag
