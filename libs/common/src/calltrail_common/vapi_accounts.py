"""Connected Vapi accounts (contract section 6): connect, disconnect, ask for a sync, and
register an account's phone numbers. Shared by the CLI, the api and metrics-sync, so each
does it the same way.

- Connect checks the key against Vapi first (`GET /assistant?limit=1`), stores it only
  sealed (`calltrail_common.crypto`), registers the account's phone numbers, learns its Vapi
  org id and queues a first sync run (trigger `connect`).
- Disconnect deletes the key row (not a flag), marks the account disconnected and fails
  the runs still queued for it.
- A sync request is a `queued` row in `sync_runs` plus a command on the broker that wakes a
  metrics-sync replica; the row is what counts, so a lost command only delays the run to
  the next scheduling tick.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import orjson
from aio_pika.abc import AbstractChannel

from calltrail_common import phone_numbers, vapi_keys
from calltrail_common.crypto import KeyRing
from calltrail_common.e164 import to_e164
from calltrail_common.handback import republish
from calltrail_common.logging import get_logger
from calltrail_common.topology import SYNC_NOW_ROUTING_KEY, Topology
from calltrail_common.vapi import VapiClient, VapiUnauthorized

log = get_logger(__name__)

DISCONNECTED_BY_USER = "disconnected"
INVALID_API_KEY = "invalid_api_key"

UPSERT_ACCOUNT = """
    INSERT INTO vapi_accounts (org_id, status, api_base_url, connected_at, next_sync_at,
                               calls_watermark)
    VALUES ($1, 'connected', $2, now(), now(), NULL)
    ON CONFLICT (org_id) DO UPDATE SET
        status = 'connected', disconnected_reason = NULL, api_base_url = EXCLUDED.api_base_url,
        connected_at = now(), next_sync_at = now(), backoff_until = NULL, failures = 0,
        -- Another key may be another Vapi account: learn everything again.
        calls_watermark = NULL, vapi_org_id = NULL"""
QUEUE_RUN = """
    INSERT INTO sync_runs (id, org_id, trigger, status) VALUES ($1, $2, $3, 'queued')"""
DISCONNECT = """
    UPDATE vapi_accounts SET status = 'disconnected', disconnected_reason = $2,
        lease_owner = NULL, lease_until = NULL
    WHERE org_id = $1"""
FAIL_QUEUED_RUNS = """
    UPDATE sync_runs SET status = 'failed', finished_at = now(), reason = $2
    WHERE org_id = $1 AND status = 'queued'"""
ACCOUNT_STATUS = "SELECT status FROM vapi_accounts WHERE org_id = $1"
KNOWN_VAPI_ORG = "SELECT vapi_org_id FROM vapi_accounts WHERE org_id = $1"
LEARN_VAPI_ORG = """
    UPDATE vapi_accounts SET vapi_org_id = $2
    WHERE org_id = $1 AND vapi_org_id IS DISTINCT FROM $2"""


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
    taken: int  # numbers another organization had already registered: left alone
    vapi_org_id: str | None


@dataclass(frozen=True)
class ConnectedAccount:
    org_id: uuid.UUID
    vapi_org_id: str | None
    phone_numbers: tuple[str, ...]
    sync_id: uuid.UUID
    events_handed_back: int


def vapi_org_id_of(items: Iterable[Mapping[str, Any]]) -> str | None:
    """The Vapi org id that phone numbers, assistants or calls of one account name."""
    for item in items:
        value = item.get("orgId")
        if isinstance(value, str) and value:
            return value
    return None


async def register_numbers(connection: asyncpg.Connection, org_id: uuid.UUID,
                           numbers: Sequence[Mapping[str, Any]],
                           vapi_org_id: str | None) -> RegisteredNumbers:
    """Register each of the account's phone numbers to `org_id` and learn its Vapi org id,
    under the assignment lock (`phone_numbers.register`), so no event is set aside as
    unassigned in between without being found by `events_now_matching`."""
    registered: list[str] = []
    taken = 0
    # A sync re-reads numbers that are already ours: registering one again would change
    # nothing, so only the others take the lock (a quiet round costs one query here).
    ours_numbers, ours_ids = await phone_numbers.org_numbers(connection, org_id)
    for item in numbers:
        number = to_e164(item.get("number"))
        vapi_id = item.get("id") if isinstance(item.get("id"), str) else None
        if number is None and vapi_id is None:
            continue
        if (number is None or number in ours_numbers) and (vapi_id is None
                                                            or vapi_id in ours_ids):
            registered.append(number or vapi_id or "")
            continue
        try:
            await phone_numbers.register(connection, org_id, number, vapi_id)
        except phone_numbers.NumberTaken:
            taken += 1
            log.warning("phone_number_taken", org_id=str(org_id), vapi_phone_number_id=vapi_id)
            continue
        except asyncpg.UniqueViolationError:
            # The number is ours under another Vapi id (or the reverse): keep what is there.
            taken += 1
            continue
        registered.append(number or vapi_id or "")
    learned = None
    if vapi_org_id is not None:
        known = await connection.fetchval(KNOWN_VAPI_ORG, org_id)
        if known == vapi_org_id:  # learnt before: nothing to assign anew
            learned = vapi_org_id
        else:
            try:
                async with connection.transaction():
                    await connection.execute("SELECT pg_advisory_xact_lock($1)",
                                             phone_numbers.ASSIGNMENT_LOCK_KEY)
                    await connection.execute(LEARN_VAPI_ORG, org_id, vapi_org_id)
                learned = vapi_org_id
            except asyncpg.UniqueViolationError:
                log.warning("vapi_org_connected_elsewhere", org_id=str(org_id))
    return RegisteredNumbers(tuple(registered), taken, learned)


async def hand_back_matching(connection: asyncpg.Connection, channel: AbstractChannel,
                             topology: Topology, org_id: uuid.UUID,
                             numbers: Sequence[Mapping[str, Any]],
                             vapi_org_id: str | None) -> int:
    """Hand the unassigned events that these numbers or this Vapi org id now match back to
    the processor, which assigns them (as `calltrail phone-number add` does)."""
    keys = [(to_e164(item.get("number")), item.get("id")) for item in numbers]
    waiting = await phone_numbers.unassigned_matching(
        connection, [n for n, _ in keys if n is not None],
        [i for _, i in keys if isinstance(i, str)], vapi_org_id)
    if not waiting:
        return 0
    return await republish(channel, topology, waiting)  # in the order received


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
                await connection.execute(UPSERT_ACCOUNT, org_id, api_base_url)
                await vapi_keys.store_key(connection, keyring, org_id, api_key)
                await connection.execute(FAIL_QUEUED_RUNS, org_id, "replaced by a new connect")
                await connection.execute(QUEUE_RUN, sync_id, org_id, "connect")
        except asyncpg.ForeignKeyViolationError:
            raise NoSuchOrganization(f"no organization {org_id}") from None
        registered = await register_numbers(connection, org_id, numbers, vapi_org_id)
        handed_back = 0
        if channel is not None and topology is not None:
            handed_back = await hand_back_matching(connection, channel, topology, org_id,
                                                   numbers, registered.vapi_org_id)
    if channel is not None and topology is not None:
        await publish_sync_command(channel, topology, org_id, sync_id)
    log.info("vapi_account_connected", org_id=str(org_id), numbers=len(registered.numbers),
             sync_id=str(sync_id))
    return ConnectedAccount(org_id, registered.vapi_org_id, registered.numbers, sync_id,
                            handed_back)


async def disconnect_account(pool: asyncpg.Pool, org_id: uuid.UUID,
                             reason: str = DISCONNECTED_BY_USER) -> bool:
    """Delete the key, mark the account disconnected; False when the organization never
    connected one (an account Vapi disconnected with a 401 still has its key deleted)."""
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval(ACCOUNT_STATUS, org_id)
        await vapi_keys.delete_key(connection, org_id)
        await connection.execute(DISCONNECT, org_id, reason)
        await connection.execute(FAIL_QUEUED_RUNS, org_id, f"account {reason}")
    log.info("vapi_account_disconnected", org_id=str(org_id), reason=reason)
    return status is not None


async def request_sync(pool: asyncpg.Pool, org_id: uuid.UUID, *,
                       channel: AbstractChannel | None, topology: Topology | None,
                       trigger: str = "manual") -> uuid.UUID:
    """Queue a sync run of a connected account and wake metrics-sync; return the run id."""
    sync_id = uuid.uuid4()
    async with pool.acquire() as connection, connection.transaction():
        status = await connection.fetchval(ACCOUNT_STATUS, org_id)
        if status != "connected":
            raise NotConnected(f"organization {org_id} has no connected Vapi account")
        await connection.execute(QUEUE_RUN, sync_id, org_id, trigger)
    if channel is not None and topology is not None:
        await publish_sync_command(channel, topology, org_id, sync_id)
    return sync_id


async def publish_sync_command(channel: AbstractChannel, topology: Topology,
                               org_id: uuid.UUID, sync_id: uuid.UUID) -> None:
    body = orjson.dumps({"type": "sync-now", "orgId": str(org_id), "syncId": str(sync_id)})
    exchange = await channel.get_exchange(topology.commands_exchange, ensure=False)
    await exchange.publish(
        aio_pika.Message(body, content_type="application/json", message_id=str(sync_id),
                         delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
        routing_key=SYNC_NOW_ROUTING_KEY)
