"""One sync run of one Vapi account: what it reads from Vapi and what becomes of it.

In order, so that a run that fails half-way loses nothing (the watermark moves only at the
end, and everything before it is idempotent):
1. the account's phone numbers, registered to its organization, and its Vapi org id learnt;
   with its assistants (one bounded list request each), what it calls them stored (only
   the names that changed: decision 43);
2. the call list: the first run backfills `SYNC_BACKFILL_DAYS` by `createdAt`; later runs
   read only calls updated since the watermark (minus an overlap for clock skew), so a quiet
   account costs three requests (numbers, assistants, calls);
3. every call seen is published, confirmed, into the processing pipeline as a call snapshot,
   where the processor's rules merge it with the call's webhooks in any order;
4. each call's usage stored and every day it falls on recomputed exactly;
5. unassigned events that the numbers or the Vapi org id now match handed back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from aio_pika.abc import AbstractChannel

from calltrail_common import vapi_keys
from calltrail_common.broker import publish_event
from calltrail_common.crypto import KeyRing
from calltrail_common.envelope import EventEnvelope
from calltrail_common.handback import hand_back_matching
from calltrail_common.snapshots import snapshot_bundles
from calltrail_common.sync_runs import RunCounts
from calltrail_common.topology import Topology
from calltrail_common.vapi import VapiClient
from calltrail_common.vapi_accounts import ClaimedAccount, register_numbers, vapi_org_id_of
from metrics_sync.errors import KeyMissing
from metrics_sync.names import assistant_names, phone_number_names
from metrics_sync.repository import SyncRepository
from metrics_sync.usage import call_usage

# Snapshots published at once by one run (each waits for the broker's confirm).
_PUBLISH_CONCURRENCY = 64
_PUBLISH_TIMEOUT_SECONDS = 10.0


@dataclass
class RunProgress:
    """What a run has done so far; kept by the service so a failed run is recorded too."""

    client: VapiClient | None = None
    calls_seen: int = 0
    calls_published: int = 0
    days_updated: int = 0

    def counts(self) -> RunCounts:
        return RunCounts(self.calls_seen, self.calls_published, self.days_updated,
                         self.client.requests if self.client is not None else 0)


@dataclass(frozen=True)
class SyncConfig:
    default_base_url: str
    backfill_days: int
    overlap_seconds: int


class AccountSync:
    """Runs one account's sync; the service decides when, and records how it ended."""

    def __init__(self, *, pool: asyncpg.Pool, repository: SyncRepository, keyring: KeyRing,
                 http: httpx.AsyncClient, topology: Topology, config: SyncConfig,
                 channel: Callable[[], Awaitable[AbstractChannel]],
                 backfills: asyncio.Semaphore) -> None:
        self._pool = pool
        self._repository = repository
        self._keyring = keyring
        self._http = http
        self._topology = topology
        self._config = config
        self._channel = channel  # the current confirming channel (waits for a reconnect)
        self._backfills = backfills  # shared by the replica's runs

    async def run(self, account: ClaimedAccount, progress: RunProgress) -> dt.datetime:
        """Sync `account`; return its new watermark. Raises what Vapi, the broker or the
        database raised; `progress` says how far it got."""
        async with self._pool.acquire() as connection:
            api_key = await vapi_keys.load_key(connection, self._keyring, account.org_id)
            # The end of what this run asks for, and its watermark: before any request.
            now = await self._repository.database_now(connection)
        if api_key is None:
            raise KeyMissing("the account has no stored API key")
        client = VapiClient(self._http, api_key,
                            base_url=account.api_base_url or self._config.default_base_url)
        progress.client = client
        del api_key

        numbers = await client.phone_numbers()
        await self._repository.record_names(
            account.org_id,
            [*assistant_names(await client.assistants()), *phone_number_names(numbers)])
        overlap = dt.timedelta(seconds=self._config.overlap_seconds)
        if account.calls_watermark is not None:
            calls = await client.calls(field="updatedAt",
                                       start=account.calls_watermark - overlap,
                                       end=now + overlap)
            return await self._take_in(account, progress, numbers, calls, now)
        # A backfill holds the account's history in memory until it is published: fewer of
        # them at once than runs, so memory does not grow with SYNC_CONCURRENCY.
        async with self._backfills:
            calls = await client.calls(
                field="createdAt", start=now - dt.timedelta(days=self._config.backfill_days),
                end=now + overlap)
            return await self._take_in(account, progress, numbers, calls, now)

    async def _take_in(self, account: ClaimedAccount, progress: RunProgress,
                       numbers: Sequence[Mapping[str, Any]],
                       calls: Sequence[Mapping[str, Any]], now: dt.datetime) -> dt.datetime:
        """Steps 1, 3, 4 and 5 for what the run read; return the new watermark."""
        progress.calls_seen = len(calls)
        vapi_org_id = vapi_org_id_of(numbers) or vapi_org_id_of(calls) or account.vapi_org_id
        async with self._pool.acquire() as connection:
            registered = await register_numbers(connection, account.org_id, numbers,
                                                vapi_org_id)

        channel = await self._channel()
        progress.calls_published = await self._publish(channel, account, calls, now)
        usages = [u for u in (call_usage(call) for call in calls) if u is not None]
        progress.days_updated = await self._repository.record_usage(account.org_id, usages)
        async with self._pool.acquire() as connection:
            await hand_back_matching(connection, channel, self._topology, numbers,
                                     registered.vapi_org_id)
        return now

    async def _publish(self, channel: AbstractChannel, account: ClaimedAccount,
                       calls: Sequence[Mapping[str, Any]], now: dt.datetime) -> int:
        """Every call with an id, as bundles of snapshots (one partition's calls each),
        confirmed; how many calls."""
        exchange = self._topology.events_exchange
        limit = asyncio.Semaphore(_PUBLISH_CONCURRENCY)

        async def publish(envelope: EventEnvelope, body: bytes) -> None:
            async with limit:
                await publish_event(channel, exchange, envelope, body,
                                    confirm_timeout=_PUBLISH_TIMEOUT_SECONDS)

        usable = [call for call in calls
                  if isinstance(call.get("id"), str) and call["id"].strip()]
        await asyncio.gather(*(publish(envelope, body) for envelope, body
                               in snapshot_bundles(account.org_id, usable, received_at=now)))
        return len(usable)

