"""metrics-sync's faults in the fault suite (`make chaos` runs them after the webhook faults).

    .venv/bin/python -m chaos --faults sync-replica-kill,sync-vapi-5xx [--short]

The world of each fault is new (`SyncRig`): its own `AMQP_PREFIX` and database (`Stack`) on
the suite's RabbitMQ node; the fake Vapi served for real over HTTP in a thread of this
process (`calltrail_testkit.fake_vapi.serve`) with `latency` seconds per request (so
runs are in flight when a fault strikes), holding N accounts of K calls over the last
week; N organizations connected to them as the CLI connects them (key checked, stored
sealed, a 'connect' run queued); two `calltrail-metrics-sync` replicas as processes, each
link behind a TCP proxy that can be cut, and one `calltrail-processor` (so the call
snapshots metrics-sync publishes become call rows):

    metrics-sync x2  --proxy-->  broker          processor  -->  broker
    metrics-sync x2  --proxy-->  Postgres        processor  -->  Postgres
    metrics-sync x2  -->  fake Vapi (faults set on its accounts)

Before the fault, every account has synced once and its usage is exact. Faults:

    sync-replica-kill  one replica SIGKILLed while it holds leases of runs in flight, and
                       restarted at the fault's end. Its accounts must be synced by the
                       other replica once their lease has run out (`takeover_s`, goal:
                       within one interval, or the lease plus a run when the interval is
                       shorter than the lease), its runs failed as abandoned, never left
                       'running'
    sync-broker-cut    the replicas' broker link cut (connections reset, new ones refused)
    sync-postgres-cut  the replicas' Postgres link cut
    sync-vapi-5xx      every account's requests answered 500, 502 or 503
    sync-vapi-hang     half the accounts' requests hang (until the client gives up)

At the fault's end new data is made on the fake, as Vapi would show it: `new_calls` calls
per account that just ended (updatedAt now), and one older call of each account repriced
(its updatedAt moves to now). Then the row is measured:

    resumed   seconds from the fault's end until every account has a succeeded run that
              started after the new data existed: syncing resumed on its own
    usage     vapi_usage_daily equals the fake's truth (calls, minutes to 1e-6, cost) for
              every account and day
    missing   calls on the fake without their row in `calls` (snapshot -> processor), and
              (`wrong`) rows whose cost is not the call's latest
    stuck     runs 'running' although their lease had run out (or another replica held
              the account) once syncing converged, and still 'running' one reaper's
              period (5 s) and a tick later
    runs      runs finished from the fault's start until resumed, by outcome and reason
              (failures are expected)

Problems (each fails the suite): a missed goal, usage not exact, a call missing or wrong, a
stuck run, an account disconnected or still counting failures at the end, a run failed
after syncing resumed, a dead letter, a service that exited.

The resume goal: one interval plus the fault's own back-off bound, plus one tick and one
run (`RUN_SLACK_SECONDS`: the scheduler ticks every second, a run takes a few requests). The
back-off bound is what the service's own rules allow after an outage of F seconds:
- Vapi 5xx: an account failing again and again backs off 5, 10, 20... s (at most 600),
  each back-off at least half its ceiling C_k = 5 * 2^(k-1); the k-th failure is then at
  least (C_k - 5) / 2 s after the first, so the last one inside the outage has
  C_k <= 2F + 5 and the account waits at most that long after the end: bound 2F + 5.
- Vapi hanging: the same, with F lengthened by a request timeout (a request that started
  hanging before the end fails up to VAPI_REQUEST_TIMEOUT_SECONDS, T, after it):
  2(F + T) + 5 + T.
- broker cut: a run that could not publish retries its account after 5 s, and the replica
  reconnects at most 5 s after the broker is back: 10 s.
- Postgres cut, replica killed: a run that could not be recorded leaves its account leased
  until the lease (SYNC_LEASE_SECONDS) runs out: the lease.
Why the interval as well: an account whose run started before the new data existed and
ended after it is not due again for half an interval to one and a half (runs of one
account are kept at least half an interval apart); every bound above is at least half an
interval, so one interval plus the bound covers that too. In the full plan the figures
are 10 s + (45, 51, 10, 5) s + 3 s; the suite's table prints each fault's goal.
Results go to the suite's JSON with the webhook faults' rows; everything is removed at the
end (processes by pid, proxies, the fake's thread, database, prefix), also on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import asyncpg

from calltrail_common.broker import RECONNECT_MAX_SECONDS
from calltrail_common.organizations import create_organization
from calltrail_testkit.fake_vapi import FakeAccount, FakeVapi, serve
from calltrail_testkit.processes import HOST, Server, free_port
from calltrail_testkit.rabbit_node import RabbitNode
from calltrail_testkit.samples import format_instant, parse_instant
from calltrail_testkit.stack import Stack
from calltrail_testkit.tcp_proxy import TcpProxy
from chaos.rig import POSTGRES_PORT, World, break_links, sleep_until
from chaos.verdict import fmt
from metrics_sync.failures import INFRASTRUCTURE_RETRY_SECONDS
from metrics_sync.schedule import FIRST_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS
from metrics_sync.usage import MINUTES_QUANTUM
from metrics_sync.worker import REAP_EVERY_SECONDS

SEED = 20261201
CALL_DAYS = 7
ENCRYPTION_KEY = "chaos-metrics-sync-encryption-key-" + "0" * 16
TICK_SECONDS = 1.0  # the service's scheduler tick
RUN_SLACK_SECONDS = 3.0  # one tick, and one run of a few requests
POLL_SECONDS = 0.25
HANG_SECONDS = 3600.0  # a hung request waits until the client gives up
OUTAGE_STATUSES = (500, 502, 503)
LATE_BOUND_SECONDS = 30.0  # past its goal, how much longer a resumption is waited for


@dataclass(frozen=True)
class SyncPlan:
    accounts: int
    calls: int  # per account, over the last CALL_DAYS days
    new_calls: int  # per account, made at the fault's end
    interval: int  # SYNC_INTERVAL_SECONDS
    lease: int  # SYNC_LEASE_SECONDS (the service's minimum is 5)
    request_timeout: float  # VAPI_REQUEST_TIMEOUT_SECONDS
    concurrency: int  # SYNC_CONCURRENCY of each replica
    fault_at: float  # seconds of steady syncing between the first sync and the fault
    fault_seconds: float
    latency: float  # seconds the fake adds to every request: runs are in flight at a fault
    hang_share: float = 0.5  # sync-vapi-hang: share of the accounts that hang
    baseline_timeout: float = 90.0  # for the first sync of every account, calls included
    converge_timeout: float = 60.0  # after resuming, for usage and calls to be exact


SYNC_FULL = SyncPlan(accounts=60, calls=40, new_calls=3, interval=10, lease=5,
                     request_timeout=2.0, concurrency=16, fault_at=5, fault_seconds=20,
                     latency=0.2)
SYNC_SHORT = SyncPlan(accounts=12, calls=20, new_calls=2, interval=4, lease=5,
                      request_timeout=1.0, concurrency=8, fault_at=1, fault_seconds=6,
                      latency=0.2, baseline_timeout=40, converge_timeout=30)


def backoff_bound(name: str, plan: SyncPlan) -> float:
    """The longest the service's own rules keep an account waiting after this fault's end
    (see the module's docstring)."""
    fault = plan.fault_seconds
    if name == "sync-vapi-5xx":
        return min(MAX_BACKOFF_SECONDS, 2 * fault + FIRST_BACKOFF_SECONDS)
    if name == "sync-vapi-hang":
        late = plan.request_timeout
        return late + min(MAX_BACKOFF_SECONDS, 2 * (fault + late) + FIRST_BACKOFF_SECONDS)
    if name == "sync-broker-cut":
        return INFRASTRUCTURE_RETRY_SECONDS + RECONNECT_MAX_SECONDS
    return float(plan.lease)


def resume_goal(name: str, plan: SyncPlan) -> float:
    return plan.interval + backoff_bound(name, plan) + RUN_SLACK_SECONDS


def takeover_goal(plan: SyncPlan) -> float:
    """A killed replica's accounts are free once its leases run out: within one interval
    when the lease and a run fit in one, else the lease and a run."""
    return max(float(plan.interval), plan.lease + RUN_SLACK_SECONDS)


@dataclass
class SyncWindow:
    start: float  # monotonic
    db_start: dt.datetime  # on Postgres' clock, as sync_runs is
    end: float = 0.0
    db_end: dt.datetime | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    victim: str | None = None  # sync-replica-kill: the killed replica's workers, as LIKE

    async def restart(self, connection: asyncpg.Connection) -> None:
        """The fault strikes now (after waiting for runs in flight)."""
        self.db_start = await connection.fetchval("SELECT now()")
        self.start = time.monotonic()


@dataclass(frozen=True)
class Account:
    org_id: uuid.UUID
    fake: FakeAccount


# --- the world --------------------------------------------------------------------------


class SyncRig(World):
    """One sync fault's world: prefix, database, proxies, the fake Vapi, the accounts, two
    metrics-sync replicas and a processor."""

    def __init__(self, node: RabbitNode, plan: SyncPlan, *,
                 keep_logs: Path | None = None) -> None:
        super().__init__()
        self.node = node
        self.plan = plan
        self.keep_logs = keep_logs
        self.stack = Stack(node.url)
        self.broker = TcpProxy(HOST, node.port)
        self.database = TcpProxy(HOST, POSTGRES_PORT)
        self.fake = FakeVapi(seed=SEED, latency=plan.latency)
        self.accounts: list[Account] = []
        self.replicas: list[Server] = []

    async def _enter(self) -> None:
        await self._exit.enter_async_context(self.stack)
        for proxy in (self.broker, self.database):
            await proxy.start()
            self._exit.push_async_callback(proxy.close)
        self.base_url = self._exit.enter_context(serve(self.fake))
        if self.keep_logs is not None:  # after the processes stopped (LIFO): whole logs
            self._exit.callback(self.stack.copy_logs, self.keep_logs)
        # The processes stop before the fake, the proxies and the database go (LIFO).
        self._exit.push_async_callback(self.stack.stop_servers)
        await self.connect_accounts()
        processor = self.stack.processor("processor", batch_size=200, batch_wait_ms=20)
        processor.env.update({"PROCESSOR_HOST": HOST,
                              "PROCESSOR_METRICS_PORT": str(free_port())})
        self.processor = processor
        database_url = (f"postgresql://postgres@{HOST}:{self.database.port}/"
                        f"{self.stack.database}")
        for index in range(2):
            replica = self.stack.metrics_sync(
                f"metrics-sync-{index + 1}", vapi_base_url=self.base_url,
                encryption_key=ENCRYPTION_KEY, concurrency=self.plan.concurrency)
            replica.env.update({
                "AMQP_URL": f"amqp://guest:guest@{HOST}:{self.broker.port}/",
                "DATABASE_URL": database_url,
                "SYNC_INTERVAL_SECONDS": str(self.plan.interval),
                "SYNC_LEASE_SECONDS": str(self.plan.lease),
                "VAPI_REQUEST_TIMEOUT_SECONDS": str(self.plan.request_timeout),
                "LOG_LEVEL": "info"})  # failures, reaps and reconnects are logged at info
            self.replicas.append(replica)
        for server in (processor, *self.replicas):
            server.start()

    async def connect_accounts(self) -> None:
        """N fake accounts, N organizations, each connected as the CLI does (without a
        broker channel: the queued 'connect' runs wait for a replica's tick)."""
        connection = await self.stack.db()
        try:
            orgs = [(await create_organization(connection, f"Chaos roofing {i + 1}")).org_id
                    for i in range(self.plan.accounts)]
        finally:
            await connection.close()
        keys = [f"chaos-{index:03d}-{secrets.token_hex(12)}" for index in range(len(orgs))]
        fakes = [self.fake.add_account(key, seed=SEED + index, calls=self.plan.calls,
                                       days=CALL_DAYS) for index, key in enumerate(keys)]
        await self.stack.connect_vapi_accounts(orgs, keys, vapi_base_url=self.base_url,
                                               encryption_key=ENCRYPTION_KEY)
        self.accounts = [Account(org_id, fake) for org_id, fake in zip(orgs, fakes, strict=True)]

    def exited(self) -> list[str]:
        return [s.name for s in (self.processor, *self.replicas) if s.exited()]

    # --- new data, as Vapi would show it ------------------------------------------------

    def make_new_data(self, seed: int) -> int:
        """`new_calls` calls per account that just ended (updatedAt now), and one older
        call of each repriced (updatedAt now); the calls made."""
        now = dt.datetime.now(dt.UTC)
        stamp = format_instant(now)
        made = 0
        for index, account in enumerate(self.accounts):
            rng = random.Random(seed * 1000 + index)
            # Created 16-20 min ago: at most 15 min long, they have ended by now.
            for call in account.fake.add_calls(
                    self.plan.new_calls, rng=rng, start=now - dt.timedelta(minutes=20),
                    end=now - dt.timedelta(minutes=16)):
                account.fake.update_call(call["id"], updatedAt=stamp)
                made += 1
            # An older call whose last update is in the past (moving it back would be a
            # stale copy the service rightly ignores).
            older = [c for c in account.fake.calls.values()
                     if parse_instant(c["updatedAt"]) < now - dt.timedelta(seconds=5)]
            repriced = rng.choice(older)
            account.fake.update_call(repriced["id"], updatedAt=stamp,
                                     cost=round(float(repriced["cost"]) + 0.0137, 4))
        return made

    # --- what the database says ---------------------------------------------------------

    async def db_now(self, connection: asyncpg.Connection) -> dt.datetime:
        now: dt.datetime = await connection.fetchval("SELECT now()")
        return now

    async def synced_since(self, connection: asyncpg.Connection, since: dt.datetime,
                           orgs: list[uuid.UUID] | None = None) -> int:
        """Accounts (of `orgs`, or all) with a succeeded run started at or after `since`."""
        value = await connection.fetchval(
            "SELECT count(DISTINCT org_id) FROM sync_runs WHERE status = 'succeeded'"
            " AND started_at >= $1 AND ($2::uuid[] IS NULL OR org_id = ANY($2::uuid[]))",
            since, orgs)
        return int(value)

    async def usage_off(self, connection: asyncpg.Connection) -> list[str]:
        """Accounts whose daily usage is not the fake's truth, with the first day off."""
        rows: dict[uuid.UUID, dict[dt.date, asyncpg.Record]] = {}
        for row in await connection.fetch(
                "SELECT org_id, day, calls, minutes, cost FROM vapi_usage_daily"):
            rows.setdefault(row["org_id"], {})[row["day"]] = row
        off = []
        for account in self.accounts:
            stored = rows.get(account.org_id, {})
            truth = account.fake.daily_usage()
            if set(stored) != set(truth):
                off.append(f"{account.org_id}: days {len(stored)} of {len(truth)}")
                continue
            for day, usage in truth.items():
                row = stored[day]
                if (row["calls"], row["minutes"], row["cost"]) != (
                        usage.calls, usage.minutes.quantize(MINUTES_QUANTUM, ROUND_HALF_UP),
                        usage.cost):
                    off.append(f"{account.org_id} {day}: {row['calls']} calls, cost "
                               f"{row['cost']} (truth {usage.calls}, {usage.cost})")
                    break
        return off

    async def calls_off(self, connection: asyncpg.Connection) -> tuple[int, int, int]:
        """(calls on the fake, missing from `calls`, rows whose org or cost is not the
        call's latest)."""
        rows = {r["id"]: r for r in await connection.fetch(
            "SELECT id, org_id, cost FROM calls")}
        total = missing = wrong = 0
        for account in self.accounts:
            for call in list(account.fake.calls.values()):
                total += 1
                row = rows.get(call["id"])
                if row is None:
                    missing += 1
                elif row["org_id"] != account.org_id or (
                        call.get("cost") is not None
                        and row["cost"] != Decimal(str(call["cost"]))):
                    wrong += 1
        return total, missing, wrong

    async def stuck_runs(self, connection: asyncpg.Connection) -> int:
        """Runs 'running' although their replica no longer holds the account (its lease
        ran out, or another replica has it) that are still 'running' one reaper's period
        and a tick later: a run must not stay 'running' for ever."""
        lost = [r["id"] for r in await connection.fetch(
            "SELECT r.id FROM sync_runs r JOIN vapi_accounts a USING (org_id)"
            " WHERE r.status = 'running' AND (a.lease_until IS NULL OR a.lease_until < now()"
            "      OR a.lease_owner IS DISTINCT FROM r.worker)")]
        if not lost:
            return 0
        await asyncio.sleep(REAP_EVERY_SECONDS + TICK_SECONDS)
        value = await connection.fetchval(
            "SELECT count(*) FROM sync_runs WHERE id = ANY($1::uuid[]) AND status = 'running'",
            lost)
        return int(value)

    async def run_outcomes(self, connection: asyncpg.Connection, since: dt.datetime,
                           until: dt.datetime | None = None) -> dict[str, Any]:
        """Runs finished in [since, until): succeeded, and failed by reason."""
        rows = await connection.fetch(
            "SELECT status, split_part(coalesce(reason, ''), ':', 1) AS reason, count(*) AS n"
            " FROM sync_runs WHERE finished_at >= $1"
            " AND ($2::timestamptz IS NULL OR finished_at < $2) GROUP BY 1, 2", since, until)
        failed = {r["reason"]: int(r["n"]) for r in rows if r["status"] == "failed"}
        return {"succeeded": sum(int(r["n"]) for r in rows if r["status"] == "succeeded"),
                "failed": sum(failed.values()), "failed_by_reason": failed}

    async def dead_letters(self) -> int | None:
        for _ in range(5):
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    return sum((await self.stack.dead_letters()).values())
            await asyncio.sleep(1)
        return None

    async def wait_baseline(self, connection: asyncpg.Connection) -> float:
        """Until every account synced once, its usage exact and its calls processed."""
        started = time.monotonic()
        epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
        while True:
            if (await self.synced_since(connection, epoch) == len(self.accounts)
                    and not await self.usage_off(connection)
                    and (await self.calls_off(connection))[1:] == (0, 0)):
                return round(time.monotonic() - started, 2)
            if exited := self.exited():
                raise RuntimeError(f"exited before the first sync: {exited}")
            if time.monotonic() - started > self.plan.baseline_timeout:
                synced = await self.synced_since(connection, epoch)
                failed = await self.run_outcomes(connection, epoch)
                _, missing, wrong = await self.calls_off(connection)
                raise RuntimeError(
                    f"the first sync of every account took more than "
                    f"{self.plan.baseline_timeout:g} s: {synced} of {len(self.accounts)} "
                    f"synced, runs failed {failed['failed_by_reason']}, usage off for "
                    f"{len(await self.usage_off(connection))}, {missing} calls missing, "
                    f"{wrong} wrong")
            await asyncio.sleep(POLL_SECONDS)


# --- the faults: each starts at once and returns when the fault is over ----------------


async def in_flight(connection: asyncpg.Connection, plan: SyncPlan, owner: str = "%",
                    wanted: int = 1) -> list[uuid.UUID]:
    """Accounts whose run is in flight (leased, 'running') in the replicas named by the
    LIKE pattern `owner`: as soon as there are `wanted`, else at least one after an interval
    (none after two: the fault strikes anyway, and its row says so)."""
    started = time.monotonic()
    while True:
        held: list[uuid.UUID] = [r["org_id"] for r in await connection.fetch(
            "SELECT a.org_id FROM vapi_accounts a JOIN sync_runs r USING (org_id)"
            " WHERE a.lease_owner LIKE $1 AND a.lease_until > now()"
            " AND r.status = 'running' AND r.worker = a.lease_owner", owner)]
        waited = time.monotonic() - started
        if len(held) >= wanted or (held and waited > plan.interval) \
                or waited > 2 * plan.interval:
            return held
        await asyncio.sleep(0.02)


async def replica_kill(rig: SyncRig, plan: SyncPlan, window: SyncWindow,
                       connection: asyncpg.Connection) -> None:
    victim = rig.replicas[0]
    assert victim.process is not None
    owner = f"%:{victim.process.pid}:%"  # the worker name is host:pid:random
    held = await in_flight(connection, plan, owner, wanted=2)
    await window.restart(connection)  # the fault: from the kill to the restart
    victim.process.kill()
    await asyncio.to_thread(victim.process.wait, 10)
    killed = time.monotonic()
    killed_db = await rig.db_now(connection)
    window.victim = owner
    window.notes["leases_held"] = len(held)
    # Its accounts, synced by the other replica once the leases ran out.
    takeover: float | None = None
    bound = takeover_goal(plan) + LATE_BOUND_SECONDS
    while held and time.monotonic() - killed < bound:
        if await rig.synced_since(connection, killed_db, held) == len(held):
            takeover = round(time.monotonic() - killed, 2)
            break
        await asyncio.sleep(0.1)
    window.notes["takeover_s"] = takeover if held else None
    await sleep_until(window.start + plan.fault_seconds)
    victim.start()


async def broker_cut(rig: SyncRig, plan: SyncPlan, window: SyncWindow,
                     connection: asyncpg.Connection) -> None:
    window.notes["runs_in_flight"] = len(await in_flight(connection, plan))
    await window.restart(connection)
    await break_links(window.start + plan.fault_seconds, rig.broker)


async def postgres_cut(rig: SyncRig, plan: SyncPlan, window: SyncWindow,
                       connection: asyncpg.Connection) -> None:
    window.notes["runs_in_flight"] = len(await in_flight(connection, plan))
    await window.restart(connection)
    await break_links(window.start + plan.fault_seconds, rig.database)


async def vapi_5xx(rig: SyncRig, plan: SyncPlan, window: SyncWindow,
                   connection: asyncpg.Connection) -> None:
    for index, account in enumerate(rig.accounts):
        account.fake.fail_status = OUTAGE_STATUSES[index % len(OUTAGE_STATUSES)]
    await sleep_until(window.start + plan.fault_seconds)
    for account in rig.accounts:
        account.fake.fail_status = 0


async def vapi_hang(rig: SyncRig, plan: SyncPlan, window: SyncWindow,
                    connection: asyncpg.Connection) -> None:
    hanging = rig.accounts[:max(1, round(len(rig.accounts) * plan.hang_share))]
    healthy = [a.org_id for a in rig.accounts[len(hanging):]]
    for account in hanging:
        account.fake.hang_seconds = HANG_SECONDS
    await sleep_until(window.start + plan.fault_seconds)
    # One hanging account never delays the others: each healthy one synced meanwhile.
    window.notes.update(hanging=len(hanging), healthy=len(healthy),
                        healthy_synced_during=await rig.synced_since(
                            connection, window.db_start, healthy))
    for account in hanging:
        account.fake.hang_seconds = 0.0


SyncScenario = Callable[[SyncRig, SyncPlan, SyncWindow, asyncpg.Connection], Awaitable[None]]
SYNC_FAULTS: dict[str, SyncScenario] = {
    "sync-replica-kill": replica_kill,
    "sync-broker-cut": broker_cut,
    "sync-postgres-cut": postgres_cut,
    "sync-vapi-5xx": vapi_5xx,
    "sync-vapi-hang": vapi_hang,
}


# --- one fault, from a new world to its row ---------------------------------------------


async def run_sync_fault(name: str, plan: SyncPlan, node: RabbitNode,
                         logs: Path | None = None) -> dict[str, Any]:
    """One metrics-sync fault in a world of its own; its row (see the module docstring)."""
    scenario = SYNC_FAULTS[name]
    started_at = dt.datetime.now(dt.UTC).isoformat()
    goal = resume_goal(name, plan)
    problems: list[str] = []
    async with SyncRig(node, plan, keep_logs=None if logs is None else logs / name) as rig:
        connection = await rig.stack.db()
        try:
            baseline_s = await rig.wait_baseline(connection)
            await asyncio.sleep(plan.fault_at)
            window = SyncWindow(start=time.monotonic(), db_start=await rig.db_now(connection))
            await scenario(rig, plan, window, connection)
            window.end = time.monotonic()
            window.db_end = await rig.db_now(connection)
            new_calls = rig.make_new_data(seed=1)
            data_at = await rig.db_now(connection)
            resumed: float | None = None
            while time.monotonic() - window.end < goal + LATE_BOUND_SECONDS:
                if await rig.synced_since(connection, data_at) == len(rig.accounts):
                    resumed = round(time.monotonic() - window.end, 2)
                    break
                await asyncio.sleep(POLL_SECONDS)
            resumed_db = await rig.db_now(connection)
            converged: float | None = None
            usage_off: list[str] = []
            calls = missing = wrong = 0
            converge_start = time.monotonic()
            while True:
                usage_off = await rig.usage_off(connection)
                calls, missing, wrong = await rig.calls_off(connection)
                if not usage_off and not missing and not wrong:
                    converged = round(time.monotonic() - window.end, 2)
                    break
                if time.monotonic() - converge_start > plan.converge_timeout:
                    break
                await asyncio.sleep(POLL_SECONDS)
            stuck = await rig.stuck_runs(connection)
            accounts = await connection.fetchrow(
                "SELECT count(*) FILTER (WHERE status <> 'connected') AS disconnected,"
                " count(*) FILTER (WHERE failures > 0) AS failing FROM vapi_accounts")
            during = await rig.run_outcomes(connection, window.db_start, resumed_db)
            after = await rig.run_outcomes(connection, resumed_db)
            if window.victim is not None:
                window.notes["abandoned_runs"] = int(await connection.fetchval(
                    "SELECT count(*) FROM sync_runs WHERE worker LIKE $1"
                    " AND status = 'failed' AND reason LIKE 'abandoned%'", window.victim))
            failed_after_resume = int(await connection.fetchval(
                "SELECT count(*) FROM sync_runs WHERE status = 'failed'"
                " AND started_at >= $1", resumed_db))
            runs_total = int(await connection.fetchval("SELECT count(*) FROM sync_runs"))
        finally:
            await connection.close()
        dead = await rig.dead_letters()
        exited = rig.exited()
        server_logs = {s.name: s.log_summary() for s in rig.stack.servers}
    notes = window.notes
    if resumed is None or resumed > goal:
        problems.append(f"syncing resumed after {resumed} s (goal {goal:g} s)")
    if name == "sync-replica-kill":
        if not notes.get("leases_held"):
            problems.append("the replica held no lease when it was killed")
        elif notes.get("takeover_s") is None or notes["takeover_s"] > takeover_goal(plan):
            problems.append(f"its accounts were taken over after {notes.get('takeover_s')}"
                            f" s (goal {takeover_goal(plan):g} s)")
    if name == "sync-vapi-hang" and plan.fault_seconds >= 1.5 * plan.interval \
            + RUN_SLACK_SECONDS and notes["healthy_synced_during"] < notes["healthy"]:
        problems.append(f"only {notes['healthy_synced_during']} of {notes['healthy']} "
                        "healthy accounts synced while the others hung")
    if usage_off:
        problems.append(f"usage not exact for {len(usage_off)} accounts "
                        f"(e.g. {usage_off[0]})")
    if missing or wrong:
        problems.append(f"{missing} calls missing, {wrong} calls not at their latest cost")
    if stuck:
        problems.append(f"{stuck} runs stuck 'running' past their lease")
    if accounts["disconnected"] or accounts["failing"]:
        problems.append(f"at the end {accounts['disconnected']} accounts disconnected, "
                        f"{accounts['failing']} still counting failures")
    if failed_after_resume:
        problems.append(f"{failed_after_resume} runs failed after syncing resumed")
    if dead is None:
        problems.append("the dead-letter and retry queues could not be read")
    elif dead:
        problems.append(f"{dead} dead letters")
    if exited:
        problems.append(f"exited: {', '.join(exited)}")
    return {
        "fault": name,
        "kind": "sync",
        "started_at": started_at,
        "accounts": len(rig.accounts),
        "calls": calls,
        "new_calls": new_calls,
        "baseline_s": baseline_s,
        "fault_seconds": round(window.end - window.start, 2),
        "runs_until_resumed": during,
        "runs_after_resumed": after,
        "runs_total": runs_total,
        "resumed_s": resumed,
        "resume_goal_s": goal,
        "backoff_bound_s": backoff_bound(name, plan),
        "converged_s": converged,
        "usage_exact": not usage_off,
        "usage_off": usage_off[:5],
        "calls_missing": missing,
        "calls_wrong": wrong,
        "stuck_runs": stuck,
        "disconnected": int(accounts["disconnected"]),
        "failing_accounts": int(accounts["failing"]),
        "failed_after_resume": failed_after_resume,
        "dead_letters": dead,
        "notes": notes,
        "problems": problems,
        "server_logs": server_logs,
    }


# --- printing ---------------------------------------------------------------------------


def print_sync_table(rows: list[dict[str, Any]], plan: SyncPlan) -> None:
    print()
    print(f"metrics-sync faults: {plan.accounts} accounts x {plan.calls} calls, 2 replicas, "
          f"SYNC_INTERVAL_SECONDS={plan.interval}, SYNC_LEASE_SECONDS={plan.lease}, "
          f"VAPI_REQUEST_TIMEOUT_SECONDS={plan.request_timeout:g}; each fault "
          f"{plan.fault_seconds:g} s; then {plan.new_calls} new calls and a repriced one "
          "per account")
    print(f"{'fault':<20}{'accounts':>9}{'calls':>7}{'runs ok':>8}{'failed':>7}"
          f"{'resumed s':>10}{'goal s':>7}{'usage=':>7}{'missing':>8}{'stuck':>6}"
          "  failed by reason; notes")
    for row in rows:
        if "error" in row:
            print(f"{row['fault']:<20}ERROR: {row['error']}")
            continue
        during = row["runs_until_resumed"]
        reasons = ", ".join(f"{k}: {v}" for k, v in during["failed_by_reason"].items())
        notes = ", ".join(f"{k} {v}" for k, v in row["notes"].items())
        print(f"{row['fault']:<20}{row['accounts']:>9}{row['calls']:>7}"
              f"{during['succeeded']:>8}{during['failed']:>7}{fmt(row['resumed_s']):>10}"
              f"{row['resume_goal_s']:>7g}{'yes' if row['usage_exact'] else 'NO':>7}"
              f"{row['calls_missing'] + row['calls_wrong']:>8}{row['stuck_runs']:>6}"
              f"  {reasons or '-'}" + (f"; {notes}" if notes else ""))
        for problem in row["problems"]:
            print(f"{'':<20}  ! {problem}")
    print("(runs ok/failed: finished from the fault's start until resumed; resumed: from "
          "the fault's end until every account had a succeeded run started after the new "
          "data; goal: one interval + the fault's back-off bound + a tick and a run; "
          "missing: calls without their row, or not at their latest cost; stuck: runs "
          "'running' past their lease)")


def print_sync_summary(row: dict[str, Any]) -> None:
    if "error" in row:
        print(f"  {row['error']}", flush=True)
        return
    print(f"  resumed {row['resumed_s']} s (goal {row['resume_goal_s']:g}), usage "
          f"{'exact' if row['usage_exact'] else 'NOT exact'}, {row['calls_missing']} calls "
          f"missing, {row['stuck_runs']} stuck"
          + (f"; {'; '.join(row['problems'])}" if row["problems"] else ""), flush=True)
