"""The metrics-sync service: which account is synced when, by whom, and what a run's end
means for the account.

- Scheduling: every tick (and at once when a "sync now" command arrives) the replica leases
  as many due accounts as it has free slots (`SYNC_CONCURRENCY`); each runs in its own task,
  so a slow or failing account holds one slot and never delays the others.
- Outcomes: a run that succeeds is recorded and its account is due again at its next
  slot, watermark on; a failed one is recorded with its reason, and its account backed off,
  disconnected or let go as the table in `failures` says; on SIGTERM runs in progress get
  `SHUTDOWN_GRACE` to finish, the rest are queued again for any replica, never left
  half-recorded.
- "Sync now" commands are taken by `commands.SyncCommands`, which wakes the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
import uuid

import asyncpg
from aio_pika.abc import AbstractChannel

from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.crypto import KeyRing
from calltrail_common.db import TRANSIENT_ERRORS, create_pool
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology
from calltrail_common.vapi_accounts import ClaimedAccount
from metrics_sync.commands import SyncCommands
from metrics_sync.errors import BrokerUnavailable, LeaseLost
from metrics_sync.failures import run_failure
from metrics_sync.http_clients import HttpClients
from metrics_sync.metrics import SyncMetrics
from metrics_sync.repository import SyncRepository
from metrics_sync.schedule import next_sync_after
from metrics_sync.sync import AccountSync, RunProgress, SyncConfig

log = get_logger("metrics_sync")

DATABASE_ERRORS = TRANSIENT_ERRORS
SHUTDOWN_GRACE_SECONDS = 10.0
REAP_EVERY_SECONDS = 5.0
_PRUNE_EVERY_SECONDS = 3600.0
_CHANNEL_WAIT_SECONDS = 10.0
_BACKFILLS_AT_ONCE = 32


def backfills_at_once(concurrency: int) -> int:
    """First syncs (a backfill each) a replica runs at once. A backfill is CPU (its calls
    parsed, published, summed) and memory (its history held until published): past 32 at
    once a replica is no faster, only bigger (`bench.metrics_sync`)."""
    return min(concurrency, _BACKFILLS_AT_ONCE)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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
        self._commands = SyncCommands(self._topology, self._ensure_queued, self._wake.set)
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
                try:  # after a time zone change (decision 45)
                    await repository.rekey_usage()
                except DATABASE_ERRORS:
                    raise
                except asyncpg.PostgresError as error:  # e.g. a zone Postgres does not know
                    log.error("usage_rekey_refused", error=type(error).__name__)
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
            failure = run_failure(error, account.failures + 1,
                                  self._settings.sync_interval_seconds)
            self.metrics.failures.labels(failure.kind).inc()
            self.metrics.runs.labels("failed").inc()
            log.warning("sync_failed", org_id=org, reason=failure.reason,
                        retry_in=None if failure.disconnects else round(failure.retry_in, 1),
                        requests=progress.counts().requests)
            with contextlib.suppress(*DATABASE_ERRORS, asyncpg.PostgresError):
                await repository.fail(account, runs, progress.counts(), failure.reason,
                                      retry_in=failure.retry_in,
                                      unauthorized=failure.disconnects)
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
        await self._commands.consume(link)
        self._channel = link.publisher
        self._channel_ready.set()
        try:
            await asyncio.Future()  # until the link is lost or stopped
        finally:
            self._channel_ready.clear()
            self._channel = None

    async def _ensure_queued(self, run_id: uuid.UUID, org_id: uuid.UUID) -> None:
        repository = await self._database()
        await repository.ensure_queued(run_id, org_id)
