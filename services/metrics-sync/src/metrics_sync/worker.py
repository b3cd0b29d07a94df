"""The metrics-sync service: which account is synced when, by whom, and what a run's end
means for the account.

- Scheduling: every tick (and at once when a "sync now" command arrives) the replica leases
  as many due accounts as it has free slots (`SYNC_CONCURRENCY`); each runs in its own task,
  so a slow or failing account holds one slot and never delays the others.
- Outcomes, in full:
  succeeded                 runs recorded, account due again at its next slot, watermark on;
  401 from Vapi             account disconnected (`invalid_api_key`), its polling stops;
  429 / 5xx / timeouts      runs failed with the reason, account backed off (honouring
                            Retry-After), retried;
  broker or database gone   runs failed, account retried in a few seconds;
  lease lost                (another replica has the account) nothing recorded by this one;
  SIGTERM                   runs in progress get `SHUTDOWN_GRACE` to finish, the rest are
                            queued again for any replica, never left half-recorded.
- "Sync now" commands come from the broker (`{prefix}.metrics-sync.commands`): each names a
  queued run; the command only wakes the scheduler (the queued row in Postgres is what
  counts), so it is acknowledged once the row is known to exist. A command that is not
  JSON, or names no organization, is dead-lettered; one that meets a database outage goes
  to the retry queue (calltrail_common.settlement, the processor's policy too).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import Awaitable

import aio_pika
import asyncpg
import httpx
import orjson
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.crypto import CryptoError, KeyRing
from calltrail_common.db import TRANSIENT_ERRORS, create_pool
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings
from calltrail_common.settlement import Settlement
from calltrail_common.topology import METRICS_SYNC_COMMANDS, Topology
from calltrail_common.vapi import (
    VapiBadResponse,
    VapiRateLimited,
    VapiUnauthorized,
    VapiUnavailable,
)
from metrics_sync.metrics import SyncMetrics
from metrics_sync.repository import ClaimedAccount, SyncRepository
from metrics_sync.schedule import backoff_seconds, next_sync_after
from metrics_sync.sync import AccountSync, KeyMissing, RunProgress, SyncConfig

log = get_logger("metrics_sync")

DATABASE_ERRORS = TRANSIENT_ERRORS
INFRASTRUCTURE_RETRY_SECONDS = 5.0  # the broker or Postgres failed a run: not the account
SHUTDOWN_GRACE_SECONDS = 10.0
REAP_EVERY_SECONDS = 5.0
_PRUNE_EVERY_SECONDS = 3600.0
_CHANNEL_WAIT_SECONDS = 10.0
_BACKFILLS_AT_ONCE = 32


class BrokerUnavailable(Exception):
    pass


class LeaseLost(Exception):
    """Another replica took the account (this one could not renew its lease in time)."""


def backfills_at_once(concurrency: int) -> int:
    """First syncs (a backfill each) a replica runs at once. A backfill is CPU (its calls
    parsed, published, summed) and memory (its history held until published): past 32 at
    once a replica is no faster, only bigger (`bench.metrics_sync`)."""
    return min(concurrency, _BACKFILLS_AT_ONCE)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class HttpClients:
    """One small httpx client for each run in progress, kept for the next run.

    A run's requests to Vapi go one after another, so one connection (kept alive) is all a
    run needs. One client shared by every run would hold a pool of some 2 x
    SYNC_CONCURRENCY connections, and httpcore walks its whole pool (is each connection
    idle, has it expired?) on every request and every answer: at 64 runs that walk was 40%
    of the service's CPU in `bench.metrics_sync` (py-spy). The clients share one TLS context.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = httpx.Timeout(timeout_seconds)
        self._limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
        self._tls = httpx.create_ssl_context()
        self._free: list[httpx.AsyncClient] = []
        self._all: list[httpx.AsyncClient] = []

    def take(self) -> httpx.AsyncClient:
        if self._free:
            return self._free.pop()
        client = httpx.AsyncClient(timeout=self._timeout, limits=self._limits,
                                   verify=self._tls)
        self._all.append(client)
        return client

    def give_back(self, client: httpx.AsyncClient) -> None:
        self._free.append(client)

    async def aclose(self) -> None:
        for client in self._all:
            with contextlib.suppress(Exception):
                await client.aclose()


class MetricsSync:
    def __init__(self, *, settings: Settings, keyring: KeyRing,
                 metrics: SyncMetrics | None = None, tick_seconds: float = 1.0,
                 shutdown_grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> None:
        self._settings = settings
        self._keyring = keyring
        self._topology = Topology(settings.amqp_prefix)
        self._tick = tick_seconds
        self._grace = shutdown_grace_seconds
        self.worker = worker_name()
        self.metrics = metrics or SyncMetrics()
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._running: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._link = BrokerLink(settings.amqp_url.get_secret_value(), self._topology,
                                heartbeat_seconds=settings.amqp_heartbeat_seconds,
                                name="metrics-sync")
        self._channel: AbstractChannel | None = None
        self._settlement: Settlement | None = None
        self._channel_ready = asyncio.Event()
        self._database_ok = False
        self._pool: asyncpg.Pool | None = None
        self._repository: SyncRepository | None = None
        self._backfills = asyncio.Semaphore(backfills_at_once(settings.sync_concurrency))

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def not_ready(self) -> list[str]:
        reasons = []
        if not self._channel_ready.is_set():
            reasons.append("not connected to the broker")
        if not self._database_ok:
            reasons.append("database unreachable")
        return reasons

    async def run(self) -> None:
        http = HttpClients(self._settings.vapi_request_timeout_seconds)
        link = asyncio.create_task(self._link.run(self._broker_session))
        try:
            await self._schedule(http)
        finally:
            await self._finish_running()
            self._link.stop()
            link.cancel()
            with contextlib.suppress(BaseException):
                await link
            await http.aclose()
            if self._pool is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._pool.close(), 5)

    # --- scheduling -------------------------------------------------------------------

    async def _database(self) -> SyncRepository:
        if self._repository is None:
            self._pool = await create_pool(
                self._settings.database_url, min_size=1,
                max_size=min(20, self._settings.sync_concurrency + 2),
                command_timeout=self._settings.database_command_timeout_seconds)
            self._repository = SyncRepository(self._pool, self.worker,
                                              self._settings.sync_lease_seconds)
        return self._repository

    async def _schedule(self, http: HttpClients) -> None:
        last_reap = last_prune = 0.0
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                repository = await self._database()
                now = time.monotonic()
                if now - last_reap >= REAP_EVERY_SECONDS:
                    last_reap = now
                    if reaped := await repository.reap():
                        log.info("sync_runs_reaped", runs=reaped)
                    self.metrics.lag_seconds.set(await repository.schedule_lag())
                if now - last_prune >= _PRUNE_EVERY_SECONDS:
                    last_prune = now
                    await repository.prune(self._settings.sync_run_retention_days)
                free = self._settings.sync_concurrency - len(self._running)
                for account, runs in await repository.claim_due(free):
                    self._start(http, repository, account, runs)
                self._database_ok = True
            except DATABASE_ERRORS as error:
                if self._database_ok:
                    log.warning("database_unreachable", error=type(error).__name__)
                self._database_ok = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)

    def _start(self, http: HttpClients, repository: SyncRepository,
               account: ClaimedAccount, runs: list[uuid.UUID]) -> None:
        assert self._pool is not None
        client = http.take()
        sync = AccountSync(
            pool=self._pool, repository=repository, keyring=self._keyring, http=client,
            topology=self._topology, channel=self._current_channel,
            backfills=self._backfills,
            config=SyncConfig(default_base_url=self._settings.vapi_api_base_url,
                              backfill_days=self._settings.sync_backfill_days,
                              overlap_seconds=self._settings.sync_overlap_seconds))
        task = asyncio.create_task(self._sync_one(sync, repository, account, runs))
        self._running[account.org_id] = task
        self.metrics.running.set(len(self._running))

        def done(_task: asyncio.Task[None]) -> None:
            http.give_back(client)
            self._running.pop(account.org_id, None)
            self.metrics.running.set(len(self._running))
            self._wake.set()  # a slot is free

        task.add_done_callback(done)

    async def _sync_one(self, sync: AccountSync, repository: SyncRepository,
                        account: ClaimedAccount, runs: list[uuid.UUID]) -> None:
        progress = RunProgress()
        started = time.monotonic()
        org = str(account.org_id)
        try:
            watermark = await self._run_holding_lease(sync, repository, account, progress)
        except asyncio.CancelledError:
            # Shutdown past the grace period: the runs go back to the queue, whole.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(repository.hand_back(account.org_id, runs), 5)
            log.info("sync_handed_back", org_id=org)
            raise
        except Exception as error:
            reason, retry_in, unauthorized = self._failure(error, account)
            self.metrics.failures.labels(reason.split(":", 1)[0]).inc()
            self.metrics.runs.labels("failed").inc()
            log.warning("sync_failed", org_id=org, reason=reason,
                        retry_in=None if unauthorized else round(retry_in, 1),
                        requests=progress.counts().requests)
            with contextlib.suppress(*DATABASE_ERRORS, asyncpg.PostgresError):
                await repository.fail(account, runs, progress.counts(), reason,
                                      retry_in=retry_in, unauthorized=unauthorized)
            return
        finally:
            self.metrics.run_seconds.observe(time.monotonic() - started)
        counts = progress.counts()
        next_at = next_sync_after(account.org_id, dt.datetime.now(dt.UTC),
                                  self._settings.sync_interval_seconds)
        try:
            recorded = await repository.succeed(account, runs, counts, next_sync_at=next_at,
                                                watermark=watermark)
        except (*DATABASE_ERRORS, asyncpg.PostgresError) as error:
            # Everything before was idempotent: the lease runs out, a replica redoes it.
            log.warning("sync_not_recorded", org_id=org, error=type(error).__name__)
            return
        self.metrics.runs.labels("succeeded" if recorded else "lease_lost").inc()
        self.metrics.calls_published.inc(counts.calls_published)
        log.info("sync_succeeded" if recorded else "sync_lease_lost", org_id=org,
                 calls=counts.calls_seen, days=counts.days_updated, requests=counts.requests,
                 seconds=round(time.monotonic() - started, 3))

    async def _run_holding_lease(self, sync: AccountSync, repository: SyncRepository,
                                 account: ClaimedAccount, progress: RunProgress
                                 ) -> dt.datetime:
        """The run, while its lease is renewed every third of its length; cancelled when
        the lease is lost or the run is past SYNC_RUN_TIMEOUT_SECONDS."""
        run = asyncio.create_task(sync.run(account, progress))
        deadline = time.monotonic() + self._settings.sync_run_timeout_seconds
        renew_every = self._settings.sync_lease_seconds / 3
        try:
            while True:
                done, _ = await asyncio.wait({run}, timeout=min(
                    renew_every, max(0.0, deadline - time.monotonic())))
                if done:
                    return run.result()
                if time.monotonic() >= deadline:
                    raise TimeoutError("the run took longer than SYNC_RUN_TIMEOUT_SECONDS")
                try:
                    held = await repository.renew(account.org_id)
                except DATABASE_ERRORS:
                    continue  # try again; past the lease, another replica takes over
                if not held:
                    raise LeaseLost("another replica holds the account")
        finally:
            if not run.done():
                run.cancel()
                with contextlib.suppress(BaseException):
                    await run

    def _failure(self, error: Exception, account: ClaimedAccount
                 ) -> tuple[str, float, bool]:
        """(reason, seconds before the account is tried again, disconnect?) for a failure."""
        failures = account.failures + 1
        if isinstance(error, VapiUnauthorized):
            return "invalid_api_key", 0.0, True
        if isinstance(error, VapiRateLimited):
            return "rate_limited", backoff_seconds(failures, error.retry_after), False
        if isinstance(error, VapiUnavailable):
            return "vapi_unavailable", backoff_seconds(failures), False
        if isinstance(error, VapiBadResponse):
            return f"vapi_bad_response: {error}", backoff_seconds(failures), False
        if isinstance(error, KeyMissing):
            return "no_api_key", float(self._settings.sync_interval_seconds), False
        if isinstance(error, CryptoError):
            return (f"api_key_unreadable: {type(error).__name__}",
                    float(self._settings.sync_interval_seconds), False)
        if isinstance(error, LeaseLost):
            return "lease_lost", 0.0, False
        if isinstance(error, TimeoutError):
            return "timeout", backoff_seconds(failures), False
        if isinstance(error, BrokerUnavailable | aio_pika.exceptions.AMQPError):
            return "broker_unavailable", INFRASTRUCTURE_RETRY_SECONDS, False
        if isinstance(error, DATABASE_ERRORS):
            return "database_unavailable", INFRASTRUCTURE_RETRY_SECONDS, False
        return f"error: {type(error).__name__}", backoff_seconds(failures), False

    async def _finish_running(self) -> None:
        if not self._running:
            return
        tasks = list(self._running.values())
        log.info("sync_draining", runs=len(tasks), grace=self._grace)
        _, pending = await asyncio.wait(tasks, timeout=self._grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- the broker -------------------------------------------------------------------

    async def _current_channel(self) -> AbstractChannel:
        try:
            await asyncio.wait_for(self._channel_ready.wait(), _CHANNEL_WAIT_SECONDS)
        except TimeoutError:
            raise BrokerUnavailable("no broker connection") from None
        assert self._channel is not None
        return self._channel

    async def _broker_session(self, link: LinkSession) -> None:
        """Publish snapshots on the link's channel (unroutable ones raise, never vanish) and
        take sync-now commands, until the link is lost (then this is cancelled)."""
        consuming = await link.channel(prefetch=20)
        queue = await consuming.get_queue(self._topology.queue(METRICS_SYNC_COMMANDS),
                                          ensure=False)
        self._settlement = Settlement(link.publisher, self._topology, METRICS_SYNC_COMMANDS)
        await queue.consume(self._on_command)
        self._channel = link.publisher
        self._channel_ready.set()
        try:
            await asyncio.Future()  # until the link is lost or stopped
        finally:
            self._channel_ready.clear()
            self._channel = None

    async def _on_command(self, message: AbstractIncomingMessage) -> None:
        settlement = self._settlement
        assert settlement is not None  # set before consuming starts
        try:
            command = orjson.loads(message.body)
            org_id = uuid.UUID(str(command["orgId"]))
            run_id = uuid.UUID(str(command["syncId"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            await self._settle(settlement.dead_letter(message, "not a sync-now command"))
            return
        try:
            repository = await self._database()
            await repository.ensure_queued(run_id, org_id)
        except asyncpg.ForeignKeyViolationError:
            await self._settle(settlement.dead_letter(message, "organization does not exist"))
            return
        except Exception as error:
            log.warning("command_deferred", error=type(error).__name__)
            await self._settle(settlement.retry_later(message, error))
            return
        self._wake.set()
        with contextlib.suppress(Exception):
            await message.ack()

    @staticmethod
    async def _settle(settling: Awaitable[object]) -> None:
        """A settlement that fails (the link is going) leaves the message unacknowledged:
        it is delivered again on the next link."""
        with contextlib.suppress(Exception):
            await settling
