"""Fault suite (`make chaos`): one fault at a time under a steady load of real call lifecycles.

    .venv/bin/python -m bench.chaos [--faults a,b,...] [--short] [--rate R] [--duration S]
                                    [--fault-seconds S] [--no-direct-write]

The world of each fault is new: its own `AMQP_PREFIX` and database (`BenchStack`), on a
RabbitMQ node of the suite's own (`bench.rabbit_node`: the machine's shared node is never
touched, and this one can be restarted for real); `calltrail-ingest` and two
`calltrail-processor` replicas as processes, each link that can be cut behind its own TCP
proxy (`bench.tcp_proxy`):

    ingest    --proxy-->  broker        ingest    --proxy-->  Postgres (endpoint secrets)
    processor --proxy-->  broker        processor --proxy-->  Postgres

The load (`bench.vapi_sender`): `--rate` webhooks/s, open loop, for `--duration` s, real
lifecycles (`bench.lifecycles`: several organizations, both endpoints, status-updates,
chatter, reports); every webhook not answered 200 is retried with a back-off plan like
Vapi's (`backoffPlan`: exponential from 1 s, at most 10 s apart, 8 retries). At
`fault_at` s into the load the fault starts; the scenario function returns when the fault
is over and everything is back (its end). Faults:

    broker-cut-ingest     ingest's broker link cut (connections reset, new ones refused)
    broker-cut-processor  the processors' broker link cut
    broker-partition      both broker links stalled: no RST, no FIN, nothing gets through
    broker-restart        the suite's node stopped for real, then started on the same data
    processor-kill        every processor SIGKILLed every `kill_every` s and restarted
    postgres-cut          Postgres cut for the processors and ingest
    ingest-kill           ingest's broker link cut (so it spools to disk), ingest SIGKILLed
                          half-way and restarted, then the link restored
    spool-full            ingest's SPOOL_DIR on a small tmpfs, filled while ingest's broker
                          link is cut: ingest must answer 503, never a 200 it cannot keep;
                          once the link is back the replay frees the disk, and no webhook
                          may be answered 503 more than 5 s after that (`last 503`)
    processor-scale       three processors drain under load; one is SIGKILLed (its
                          partitions wait for its membership to age out), then the count
                          goes to 1 (SIGTERM: handed over at once), to 4, to 2, a quarter of
                          the fault each (at least 4 s); `stall` is the longest the archive
                          stood still with a backlog waiting (goal: under 3 s, never stalls)
    cluster-failover      on a three-node RabbitMQ cluster of the suite's own (every service
                          given the three addresses): the node leading most of the
                          processors' queues stopped for real, then started; then the node
                          leading most by then frozen (SIGSTOP: silent to peers and clients), then
                          thawed; each for half the fault's seconds, at least 15 s. The
                          load runs on until 45 s after both halves.

Then metrics-sync's faults (`bench.chaos_sync`, a table of their own: two replicas syncing
Vapi accounts from the fake Vapi): sync-replica-kill, sync-broker-cut, sync-postgres-cut,
sync-vapi-5xx, sync-vapi-hang.

What each row says (the README explains the table):

    sent      webhooks sent (each counted once, however often it was retried)
    200       webhooks finally answered 200; `gave up`: never answered 200 after all retries
    calls     call rows stored / calls with a call event (status-update, report) answered 200
    lost      answered 200 but missing: the body is not in the `events` archive, or its call
              is missing, or (for a 200-answered end-of-call-report) the call lacks the
              report's final values (cost, ended reason, status ended, report_received)
    twice     counted twice: daily_stats calls above the call rows, new leads above the
              leads, duplicate call or lead rows; `stats=agg`: daily_stats equal the
              aggregate over calls and leads, leads' counts and links right (the tests'
              `assert_invariants`)
    drained   seconds from the fault's end until the backlog is gone: the queue and the
              archive gap (200s minus events archived) at most a quarter second's load, and
              ingest's spool empty
    resumed   seconds from the fault's end until a call whose first webhook was sent at
              that moment is visible as a row: processing resumed on its own, end to end
    during    attempts sent during the fault, by answer, and their p99 answer time

The baseline row runs `bench.direct_write` (the design Calltrail replaces: one function that
writes to Postgres inline) under the same load with its Postgres behind a proxy cut for the
same time, once without retries (Vapi's default: a non-200 answer is gone) and once with the
same back-off plan.

Goals: 0 lost, 0 counted twice, stats equal aggregates, resumed within 10 s, every time.
The exit status is non-zero if a goal is missed. Results: `bench/results/chaos-<UTC>.json`.
Everything the suite creates (node, databases, prefixes, processes, mounts, temp dirs) is
removed at the end, also when a run fails.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import structlog

from bench.chaos_sync import (
    SYNC_FAULTS,
    SYNC_FULL,
    SYNC_SHORT,
    SyncPlan,
    print_sync_summary,
    print_sync_table,
    run_sync_fault,
)
from bench.direct_write import create_schema, seed_organizations
from bench.end_to_end import _run, http_request, wait_ready
from bench.ingest import (
    DEFAULT_SAMPLES,
    HOST,
    POSTGRES_URL,
    REPO_ROOT,
    RESULTS_DIR,
    Server,
    admin_execute,
    free_port,
    machine_info,
)
from bench.lifecycles import Call, CallFactory, Event, Organization, fake_uuid, interleave
from bench.rabbit_node import RabbitCluster, RabbitNode
from bench.stack import BenchStack
from bench.tcp_proxy import TcpProxy
from bench.vapi_sender import NO_RETRIES, BackoffPlan, Sender
from call_processor.events import CALL_EVENT_TYPES
from calltrail_common.topology import CALL_PROCESSOR
from tests.support.state import assert_invariants

POSTGRES_PORT = 5432
RESUME_GOAL_SECONDS = 10
CONCURRENT_CALLS = 40
PROCESSOR_BATCH = 200
PROCESSOR_BATCH_WAIT_MS = 20
SEED = 20261106
SAMPLE_SECONDS = 0.25
READY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Plan:
    rate: float  # webhooks/s
    duration: float  # seconds of load
    fault_at: float  # seconds into the load
    fault_seconds: float
    kill_every: float  # processor-kill: seconds between kills
    processors: int = 2
    organizations: int = 3
    spool_bytes: int = 1024 * 1024  # spool-full: the tmpfs size
    resume_bound: float = 60.0  # a probe not visible after this long never was
    settle_timeout: float = 120.0  # after the last retry, for the backlog to drain

    @property
    def retry_window(self) -> float:
        """Longest a delivery can take with the ingest back-off plan, plus the schedule."""
        plan = BackoffPlan()
        return sum(plan.delay(r) for r in range(plan.max_retries)) + 30


FULL = Plan(rate=300, duration=60, fault_at=15, fault_seconds=20, kill_every=5)
SHORT = Plan(rate=50, duration=8, fault_at=2, fault_seconds=3, kill_every=2,
             organizations=2, spool_bytes=256 * 1024, resume_bound=30, settle_timeout=60)


# ---------------------------------------------------------------------------------------
# Where the services run


@contextlib.contextmanager
def tmpfs(directory: Path, size_bytes: int) -> Iterator[None]:
    """A small tmpfs mounted on `directory` (root only), always unmounted afterwards."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs",
                    str(directory)], check=True, timeout=10)

    def unmount() -> None:
        if subprocess.run(["umount", str(directory)], timeout=10,
                          capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(directory)], timeout=10, capture_output=True)

    atexit.register(unmount)
    try:
        yield
    finally:
        unmount()
        atexit.unregister(unmount)


def can_mount() -> bool:
    return os.geteuid() == 0 and sys.platform.startswith("linux")


def shared_request(event: Event, port: int, secret: str) -> bytes:
    """A webhook to the shared endpoint, with the shared secret as a Bearer credential."""
    head = (f"POST /webhooks/vapi HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Authorization: Bearer {secret}\r\n"
            f"Content-Length: {len(event.body)}\r\n\r\n")
    return head.encode() + event.body


def body_digest(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def new_calls(factory: CallFactory, now_ms: int) -> Iterator[Call]:
    for _ in itertools.count():
        yield factory.call(created_ms=now_ms)


def load_events(factory: CallFactory, count: int) -> list[Event]:
    now_ms = int(time.time() * 1000)
    return list(itertools.islice(
        interleave(new_calls(factory, now_ms), random.Random(SEED), CONCURRENT_CALLS), count))


@dataclass
class Sample:
    at: float  # monotonic
    accepted: int  # webhooks answered 200 so far
    archived: int | None  # rows in the events archive (ingest's world) or None
    queue: int | None  # ready messages in the processors' queue
    spool: float | None  # ingest's spool depth


@dataclass
class FaultWindow:
    start: float = 0.0
    end: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


# The links a fault can cut, each behind a proxy of its own.
INGEST_BROKER, PROCESSOR_BROKER, DATABASE = "ingest-broker", "processor-broker", "database"
PROXIED_LINKS = frozenset({INGEST_BROKER, PROCESSOR_BROKER, DATABASE})


class BrokerLinks:
    """One side's links to the broker: a proxy to each node, cut or stalled together; its
    `url` names every proxy, as `AMQP_URL` names a cluster's nodes."""

    def __init__(self, nodes: list[RabbitNode]) -> None:
        self.proxies = [TcpProxy(HOST, node.port) for node in nodes]

    @property
    def url(self) -> str:
        return ",".join(f"amqp://guest:guest@{HOST}:{p.port}/" for p in self.proxies)

    async def _each(self, action: str) -> None:
        await asyncio.gather(*(getattr(proxy, action)() for proxy in self.proxies))

    async def start(self) -> None:
        await self._each("start")

    async def close(self) -> None:
        await self._each("close")

    async def cut(self) -> None:
        await self._each("cut")

    async def stall(self) -> None:
        await self._each("stall")

    async def restore(self) -> None:
        await self._each("restore")


Broker = RabbitNode | RabbitCluster


class Rig:
    """One fault's world: prefix, database, proxies, ingest and the processors."""

    def __init__(self, broker: Broker, plan: Plan, samples: Path, *,
                 proxied: frozenset[str] = PROXIED_LINKS, spool_on_tmpfs: bool = False,
                 keep_logs: Path | None = None) -> None:
        self.proxied = proxied
        self.cluster = broker if isinstance(broker, RabbitCluster) else None
        nodes = broker.nodes if isinstance(broker, RabbitCluster) else [broker]
        self.node = nodes[0]
        self.keep_logs = keep_logs
        self.plan = plan
        self.samples = samples
        self.spool_on_tmpfs = spool_on_tmpfs
        self.shared_secret = secrets.token_urlsafe(24)
        self._exit = contextlib.AsyncExitStack()
        self.stack = BenchStack(broker.url)
        self.ingest_broker = BrokerLinks(nodes)
        self.processor_broker = BrokerLinks(nodes)
        self.database = TcpProxy(HOST, POSTGRES_PORT)
        self.processors: list[Server] = []
        self.client = httpx.AsyncClient(timeout=5)
        self._reconnect_broker = False

    async def __aenter__(self) -> Rig:
        try:
            await self._enter()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _enter(self) -> None:
        self._exit.push_async_callback(self.client.aclose)
        await self._exit.enter_async_context(self.stack)
        for proxy in (self.ingest_broker, self.processor_broker, self.database):
            await proxy.start()
            self._exit.push_async_callback(proxy.close)
        self.organizations = await self.stack.create_organizations(self.plan.organizations)
        spool = self.stack.workdir / "spool"
        if self.spool_on_tmpfs:
            self._exit.enter_context(tmpfs(spool, self.plan.spool_bytes))
        if self.keep_logs is not None:  # after the processes stopped (LIFO): whole logs
            self._exit.callback(self.stack.copy_logs, self.keep_logs)
        # Stop the processes before the mount goes (LIFO) or the proxies close.
        self._exit.push_async_callback(self.stack.stop_servers)
        # Only the links this fault cuts go through a proxy: the proxies run in this
        # process's event loop beside the sender, and on a busy machine each round trip
        # through them costs the processors more than the fault does.
        database_url = (f"postgresql://postgres@{HOST}:{self.database.port}/"
                        f"{self.stack.database}" if DATABASE in self.proxied
                        else self.stack.database_url)
        ingest_amqp = self.ingest_broker.url if INGEST_BROKER in self.proxied \
            else self.stack.amqp_url
        processor_amqp = self.processor_broker.url if PROCESSOR_BROKER in self.proxied \
            else self.stack.amqp_url
        self.ingest = self.stack.ingest(shared_secret=self.shared_secret)
        self.ingest.env.update({
            "AMQP_URL": ingest_amqp,
            "DATABASE_URL": database_url, "SPOOL_DIR": str(spool)})
        self._processor_env = {"AMQP_URL": processor_amqp, "DATABASE_URL": database_url,
                               "PROCESSOR_HOST": HOST, "LOG_LEVEL": "info"}
        for _ in range(self.plan.processors):
            self.add_processor()
        self.factory = CallFactory(self.samples, self.organizations, seed=SEED,
                                   now_ms=int(time.time() * 1000), shared_share=0.3)
        for server in (self.ingest, *self.processors):
            server.env["LOG_LEVEL"] = "info"  # reconnects and replays are logged at info
            server.start()
        ready_probe = self.factory.call(created_ms=int(time.time() * 1000)).events[0]
        self.ready_probe_call = ready_probe.call_id  # a call row of its own
        await wait_ready(self.client, self.stack, self.ingest, self.processors[0], ready_probe)
        await self.processors_ready()
        connection = await self.stack.db()
        try:
            self.archived_before = int(await connection.fetchval(
                "SELECT count(*) FROM events"))
        finally:
            await connection.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()

    def request(self, event: Event) -> bytes:
        if event.shared:
            return shared_request(event, self.ingest.port, self.shared_secret)
        return http_request(event, event.org, self.ingest.port)

    def probe_event(self) -> Event:
        """The first webhook of a new call: the one that creates its row."""
        return self.factory.call(created_ms=int(time.time() * 1000)).events[0]

    # -- the services ------------------------------------------------------------------

    def add_processor(self) -> Server:
        """Another `calltrail-processor` replica, not started."""
        processor = self.stack.processor(f"processor-{len(self.stack.servers)}",
                                         batch_size=PROCESSOR_BATCH,
                                         batch_wait_ms=PROCESSOR_BATCH_WAIT_MS)
        processor.port = free_port()
        processor.env.update({**self._processor_env,
                              "PROCESSOR_METRICS_PORT": str(processor.port)})
        self.processors.append(processor)
        return processor

    async def stop_processors(self, processors: list[Server]) -> None:
        """SIGTERM, as a scale-down does: they finish their batches and hand over."""
        await self.stack.stop_servers([p.name for p in processors])
        for processor in processors:
            self.processors.remove(processor)

    async def live_members(self) -> int:
        connection = await self.stack.db()
        try:
            return int(await connection.fetchval(
                "SELECT count(*) FROM processor_members"
                " WHERE heartbeat_at > now() - interval '2 seconds'"))
        finally:
            await connection.close()

    async def processors_ready(self, limit: float = READY_TIMEOUT_SECONDS) -> float:
        """Until every processor's /readyz says 200 (consuming); seconds it took."""
        started = time.monotonic()
        pending = list(self.processors)
        while pending:
            for processor in list(pending):
                if processor.exited():
                    raise RuntimeError(f"{processor.name} exited:\n{processor.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await self.client.get(
                        f"http://{HOST}:{processor.port}/readyz")
                    if response.status_code == 200:
                        pending.remove(processor)
            if pending:
                if time.monotonic() - started > limit:
                    raise RuntimeError(f"not ready after {limit} s: "
                                       f"{[p.name for p in pending]}")
                await asyncio.sleep(0.1)
        return time.monotonic() - started

    async def ingest_healthy(self, limit: float = READY_TIMEOUT_SECONDS) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.ingest.exited():
                raise RuntimeError(f"ingest exited:\n{self.ingest.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get(
                        f"http://{HOST}:{self.ingest.port}/healthz")).status_code == 200:
                    return time.monotonic() - started
            await asyncio.sleep(0.05)
        raise RuntimeError(f"ingest not healthy after {limit} s:\n{self.ingest.log_tail()}")

    async def spool_depth(self) -> float | None:
        with contextlib.suppress(httpx.HTTPError):
            text = (await self.client.get(f"http://{HOST}:{self.ingest.port}/metrics")).text
            found = re.search(r"^calltrail_ingest_spool_depth (\S+)$", text, re.MULTILINE)
            return float(found.group(1)) if found else None
        return None

    async def queue_depth(self, name: str | None = None) -> int | None:
        """Ready messages in a queue, or None while the broker cannot say (bounded)."""
        try:
            async with asyncio.timeout(3):
                if self._reconnect_broker:
                    await self.stack.reconnect()
                    self._reconnect_broker = False
                return await self.stack.queue_depth(name)
        except Exception:  # the broker is away, or slow: no reading this time
            # A timed-out RPC closes its channel, a restart the connection: start afresh.
            self._reconnect_broker = True
            return None

    async def dead_letters(self) -> int | None:
        names = [self.stack.topology.dead_letter_queue(CALL_PROCESSOR),
                 *(self.stack.topology.retry_queue(CALL_PROCESSOR, d)
                   for d in CALL_PROCESSOR.retry_delays_ms)]
        for _ in range(5):  # a reading can fail once, e.g. on a channel from before a restart
            depths = [await self.queue_depth(name) for name in names]
            if None not in depths:
                return sum(d or 0 for d in depths)
            await asyncio.sleep(1)
        return None

    # -- measuring ---------------------------------------------------------------------

    async def monitor(self, sender: Sender, samples: list[Sample]) -> None:
        connection = await self.stack.db()
        try:
            while True:
                archived = int(await connection.fetchval("SELECT count(*) FROM events"))
                samples.append(Sample(
                    time.monotonic(), sum(d.accepted for d in sender.deliveries),
                    archived - self.archived_before, await self.queue_depth(),
                    await self.spool_depth()))
                await asyncio.sleep(SAMPLE_SECONDS)
        finally:
            await connection.close()

    async def archived(self) -> int:
        """Events in the archive now (the processors' progress)."""
        connection = await self.stack.db()
        try:
            return int(await connection.fetchval("SELECT count(*) FROM events"))
        finally:
            await connection.close()

    async def visible_after(self, event: Event, since: float, bound: float) -> float | None:
        """Seconds from `since` until the call of `event` has a row; None past `bound`."""
        connection = await self.stack.db()
        try:
            while time.monotonic() - since < bound:
                if await connection.fetchval("SELECT 1 FROM calls WHERE id = $1",
                                             event.call_id):
                    return round(time.monotonic() - since, 2)
                await asyncio.sleep(0.05)
        finally:
            await connection.close()
        return None

    async def settled(self, sender: Sender, limit: float) -> bool:
        """Until every 200 is archived, the queue is empty and the spool too (bounded)."""
        accepted = {body_digest(d.event.body) for d in sender.deliveries if d.accepted}
        deadline = time.monotonic() + limit
        connection = await self.stack.db()
        try:
            while time.monotonic() < deadline:
                # Cheap checks first; the digest of every archived body only when they pass.
                if await self.queue_depth() == 0 and await self.spool_depth() == 0 \
                        and await connection.fetchval("SELECT count(*) FROM events") \
                        - self.archived_before >= len(accepted) \
                        and accepted <= {r[0] for r in await connection.fetch(
                            "SELECT DISTINCT md5(body) FROM events")}:
                    return True
                await asyncio.sleep(1)
        finally:
            await connection.close()
        return False

    async def account(self, sender: Sender) -> dict[str, Any]:
        connection = await self.stack.db()
        try:
            archived = {r[0] for r in await connection.fetch(
                "SELECT DISTINCT md5(body) FROM events")}
            calls = {r["id"]: r for r in await connection.fetch(
                "SELECT id, org_id::text AS org_id, status, report_received, cost,"
                " ended_reason FROM calls")}
            totals = await connection.fetchrow(TOTALS)
            try:
                await assert_invariants(connection)
                invariants = True
            except AssertionError:
                invariants = False
        finally:
            await connection.close()
        calls.pop(self.ready_probe_call, None)
        result = check_deliveries(sender, archived, calls, totals)
        result["calls_stored"] = len(calls)
        result["stats_equal_aggregates"] = invariants and result["stats_equal_aggregates"]
        result["dead_letters"] = await self.dead_letters()
        return result


TOTALS = """
SELECT (SELECT count(*) FROM calls) AS calls,
       (SELECT count(DISTINCT (org_id, id)) FROM calls) AS distinct_calls,
       (SELECT count(*) FROM leads) AS leads,
       (SELECT count(DISTINCT (org_id, phone_number)) FROM leads) AS distinct_leads,
       (SELECT count(*) FROM leads WHERE first_inbound_at IS NOT NULL) AS inbound_leads,
       (SELECT coalesce(sum(calls), 0) FROM daily_stats) AS stats_calls,
       (SELECT coalesce(sum(new_leads), 0) FROM daily_stats) AS stats_new_leads,
       (SELECT coalesce(sum(cost), 0) FROM daily_stats) AS stats_cost,
       (SELECT coalesce(sum(cost), 0) FROM calls WHERE stats_day IS NOT NULL) AS calls_cost
"""


def report_values(body: bytes) -> tuple[Decimal | None, str | None]:
    message = orjson.loads(body)["message"]
    cost = message.get("cost")
    return (None if cost is None else Decimal(str(cost))), message.get("endedReason")


def cost_matches(stored: Decimal | None, sent: Decimal | None) -> bool:
    """Equal to the cent's hundredth: direct-write stores a float's binary expansion."""
    if sent is None:
        return True
    return stored is not None and abs(stored - sent) < Decimal("0.000001")


def check_deliveries(sender: Sender, archived: set[str], calls: dict[str, Any],
                     totals: Any) -> dict[str, Any]:
    """Lost and counted-twice figures of one run, from what the sender saw answered 200."""
    accepted = [d for d in sender.deliveries if d.accepted]
    lost_events = [d for d in accepted if body_digest(d.event.body) not in archived]
    # A call must have a row once one of its call events (a status-update, a report) was
    # answered 200; chatter alone (speech, conversation updates) is archived, not a call.
    expected = {d.event.call_id: d.event.org.org_id for d in accepted
                if d.event.message_type in CALL_EVENT_TYPES}
    missing = [c for c, org in expected.items()
               if c not in calls or calls[c]["org_id"] != org]
    wrong = []
    for delivery in accepted:
        event = delivery.event
        row = calls.get(event.call_id)
        if event.message_type != "end-of-call-report" or row is None:
            continue
        cost, reason = report_values(event.body)
        if not (row["report_received"] and row["status"] == "ended"
                and row["ended_reason"] == reason
                and cost_matches(row["cost"], cost)):
            wrong.append(event.call_id)
    twice = (max(0, totals["stats_calls"] - totals["calls"])
             + max(0, totals["stats_new_leads"] - totals["inbound_leads"])
             + totals["calls"] - totals["distinct_calls"]
             + totals["leads"] - totals["distinct_leads"])
    return {
        "sent": len(sender.deliveries),
        "answered_200": len(accepted),
        "gave_up": len(sender.deliveries) - len(accepted),
        "attempts": sum(len(d.attempts) for d in sender.deliveries),
        "calls_expected": len(expected),
        "calls_stored": int(totals["calls"]),
        "lost": len(lost_events) + len(set(missing) | set(wrong)),
        "lost_events": len(lost_events),
        "calls_missing": len(missing),
        "calls_wrong": len(set(wrong)),
        "lost_examples": [{"call_id": d.event.call_id, "type": d.event.message_type}
                          for d in lost_events[:5]] + [{"call_id": c} for c in missing[:5]],
        "counted_twice": int(twice),
        "stats_equal_aggregates": (totals["stats_calls"] == totals["calls"]
                                   and totals["stats_new_leads"] == totals["inbound_leads"]
                                   and totals["stats_cost"] == totals["calls_cost"]),
        "totals": {k: (float(v) if isinstance(v, Decimal) else int(v))
                   for k, v in dict(totals).items()},
    }


# ---------------------------------------------------------------------------------------
# The faults: each starts at once and returns when the fault is over and all is restored


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


async def broker_cut_ingest(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.cut()
    await sleep_until(window.start + plan.fault_seconds)
    await rig.ingest_broker.restore()


async def broker_cut_processor(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.processor_broker.cut()
    await sleep_until(window.start + plan.fault_seconds)
    await rig.processor_broker.restore()


async def broker_partition(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.stall()
    await rig.processor_broker.stall()
    await sleep_until(window.start + plan.fault_seconds)
    await rig.ingest_broker.restore()
    await rig.processor_broker.restore()


async def broker_restart(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    window.notes["stop_s"] = round(await asyncio.to_thread(rig.node.stop), 2)
    await sleep_until(window.start + plan.fault_seconds)
    window.notes["start_s"] = round(await asyncio.to_thread(rig.node.start), 2)
    await rig.stack.reconnect()


async def processor_kill(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    kills = 0
    while True:
        for processor in rig.processors:
            assert processor.process is not None
            processor.process.kill()
            await asyncio.to_thread(processor.process.wait, 10)
            processor.start()
            kills += 1
        if time.monotonic() + plan.kill_every >= window.start + plan.fault_seconds:
            break
        await asyncio.sleep(plan.kill_every)
    window.notes["kills"] = kills
    await sleep_until(window.start + plan.fault_seconds)


async def postgres_cut(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.database.cut()
    await sleep_until(window.start + plan.fault_seconds)
    await rig.database.restore()


async def ingest_kill(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.cut()  # so that what ingest accepts is on disk when it dies
    await sleep_until(window.start + plan.fault_seconds / 2)
    window.notes["spool_at_kill"] = await rig.spool_depth()
    assert rig.ingest.process is not None
    rig.ingest.process.kill()
    await asyncio.to_thread(rig.ingest.process.wait, 10)
    killed = time.monotonic()
    rig.ingest.start()
    await rig.ingest_healthy()
    window.notes["ingest_down_s"] = round(time.monotonic() - killed, 2)
    await sleep_until(window.start + plan.fault_seconds)
    await rig.ingest_broker.restore()


async def spool_full(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.cut()
    await sleep_until(window.start + plan.fault_seconds)
    window.notes["spool_at_end"] = await rig.spool_depth()
    await rig.ingest_broker.restore()


async def processor_scale(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    """Three replicas under load: one killed, then 1, 4 and 2 replicas, a phase each."""
    phase = scale_phase_seconds(plan)
    window.notes["phase_s"] = phase
    killed = rig.processors[0]
    assert killed.process is not None
    killed.process.kill()
    await asyncio.to_thread(killed.process.wait, 10)
    rig.processors.remove(killed)
    counts = []

    async def hold(label: str) -> None:
        await asyncio.sleep(phase)
        counts.append((label, len(rig.processors), await rig.live_members()))

    await hold("3, one killed")
    await rig.stop_processors(rig.processors[1:])
    await hold("1")
    for _ in range(3):
        rig.add_processor().start()
    await hold("4")
    await rig.stop_processors(rig.processors[2:])
    await hold("2")
    window.notes["replicas"] = [{"phase": label, "running": running, "members_seen": seen}
                                for label, running, seen in counts]


async def cluster_failover(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    """On a three-node cluster: the node leading the most of the processors' quorum queues
    (its partitions and its overflow) stopped for real for the first half, then started;
    then the node leading the most of them now frozen (SIGSTOP: neither its peers nor any
    client get an answer from it, as if its network were gone) for the second half, then
    thawed."""
    assert rig.cluster is not None
    queues = rig.stack.topology.work_queues(CALL_PROCESSOR)
    phase = cluster_phase_seconds(plan)
    stopped, led = await asyncio.to_thread(rig.cluster.busiest_leader, queues)
    window.notes["stopped_leader"] = stopped.name
    window.notes["stopped_led"] = led
    window.notes["stop_s"] = round(await asyncio.to_thread(stopped.stop), 2)
    # Events archived while a node is away: processing goes on on the other two.
    before = await rig.archived()
    await asyncio.sleep(phase)
    window.notes["archived_while_stopped"] = await rig.archived() - before
    window.notes["start_s"] = round(await asyncio.to_thread(stopped.start), 2)
    frozen, led = await asyncio.to_thread(rig.cluster.busiest_leader, queues)
    window.notes["frozen_leader"] = frozen.name
    window.notes["frozen_led"] = led
    frozen.freeze()
    try:
        before = await rig.archived()
        await asyncio.sleep(phase)
        window.notes["archived_while_frozen"] = await rig.archived() - before
    finally:
        frozen.thaw()
    window.notes["leader_after"] = (await asyncio.to_thread(rig.cluster.busiest_leader,
                                                            queues))[0].name


Scenario = Callable[[Rig, Plan, FaultWindow], Awaitable[None]]
FAULTS: dict[str, Scenario] = {
    "broker-cut-ingest": broker_cut_ingest,
    "broker-cut-processor": broker_cut_processor,
    "broker-partition": broker_partition,
    "broker-restart": broker_restart,
    "processor-kill": processor_kill,
    "postgres-cut": postgres_cut,
    "ingest-kill": ingest_kill,
    "spool-full": spool_full,
    "processor-scale": processor_scale,
}
NEEDS_ROOT = frozenset({"spool-full"})
# The links each fault cuts: only these go through a proxy (the rest are direct).
FAULT_LINKS: dict[str, frozenset[str]] = {
    "broker-cut-ingest": frozenset({INGEST_BROKER}),
    "broker-cut-processor": frozenset({PROCESSOR_BROKER}),
    "broker-partition": frozenset({INGEST_BROKER, PROCESSOR_BROKER}),
    "broker-restart": frozenset(),
    "processor-kill": frozenset(),
    "postgres-cut": frozenset({DATABASE}),
    "ingest-kill": frozenset({INGEST_BROKER}),
    "spool-full": frozenset({INGEST_BROKER}),
    "processor-scale": frozenset(),
    "cluster-failover": frozenset(),  # a node stopped or frozen for real
}
# Faults run on a RabbitMQ cluster of the suite's own (three nodes) instead of one node.
CLUSTER_FAULTS: dict[str, Scenario] = {"cluster-failover": cluster_failover}
# Each half of the cluster fault lasts at least this long: a silent node is noticed by
# missed heartbeats (3 x AMQP_HEARTBEAT_SECONDS) or a confirm timeout, and by its peers after
# net_ticktime (10 s on the suite's nodes), so a shorter freeze would end before anyone
# fails over and show nothing.
CLUSTER_PHASE_MIN_SECONDS = 15.0
# On top of its two halves, a node's real stop and start (up to ~40 s on a busy 2-core
# machine): the load goes on this much longer, so "drained" is measured under it.
CLUSTER_OVERRUN_SECONDS = 45.0


# processor-scale: each of its four phases lasts at least this long, so that a phase outlasts
# a replica's start and the others' next heartbeat (PROCESSOR_MEMBER_HEARTBEAT_SECONDS), and
# the first the killed replica's TTL (PROCESSOR_MEMBER_TTL_SECONDS, 5 s).
SCALE_PHASE_MIN_SECONDS = 6.0
SCALE_REPLICAS = 3
SCALE_STALL_GOAL_SECONDS = 3.0
# spool-full: once the broker is back, the replay frees the disk; ingest answers 200 again.
SPOOL_FULL_503_GOAL_SECONDS = 5.0


def scale_phase_seconds(plan: Plan) -> float:
    return max(plan.fault_seconds / 4, SCALE_PHASE_MIN_SECONDS)


def scale_plan(plan: Plan) -> Plan:
    """The plan of processor-scale: three replicas, and the load on through its phases."""
    return replace(plan, processors=SCALE_REPLICAS,
                   duration=max(plan.duration, plan.fault_at + 4 * scale_phase_seconds(plan)
                                + 10))


def longest_stall(samples: list[Sample], start: float, end: float) -> float:
    """The longest time within [start, end] that the archive did not grow while accepted
    webhooks waited for it: processing stood still."""
    longest, moved_at = 0.0, start
    last: int | None = None
    for sample in samples:
        if sample.at < start or sample.archived is None:
            continue
        if sample.at > end:
            break
        if sample.archived != last or sample.accepted <= sample.archived:
            moved_at = sample.at  # it grew, or there was nothing to do
        else:
            longest = max(longest, sample.at - moved_at)
        last = sample.archived
    return round(longest, 2)


def cluster_phase_seconds(plan: Plan) -> float:
    return max(plan.fault_seconds / 2, CLUSTER_PHASE_MIN_SECONDS)


def cluster_plan(plan: Plan) -> Plan:
    return replace(plan, duration=max(plan.duration, plan.fault_at + CLUSTER_OVERRUN_SECONDS
                                      + 2 * cluster_phase_seconds(plan)))


def drained_seconds(samples: list[Sample], end: float, threshold: float) -> float | None:
    for sample in samples:
        if sample.at < end or sample.queue is None or sample.archived is None:
            continue
        if sample.queue <= threshold and sample.accepted - sample.archived <= threshold \
                and sample.spool == 0:
            return round(sample.at - end, 2)
    return None


async def run_fault(name: str, plan: Plan, broker: Broker,
                    samples_dir: Path = DEFAULT_SAMPLES,
                    logs: Path | None = None) -> dict[str, Any]:
    """One fault under load, from a new world to its figures; the logs kept in `logs`."""
    scenario = {**FAULTS, **CLUSTER_FAULTS}[name]
    if name == "processor-scale":
        plan = scale_plan(plan)
    started_at = dt.datetime.now(dt.UTC).isoformat()
    async with Rig(broker, plan, samples_dir, proxied=FAULT_LINKS[name],
                   spool_on_tmpfs=name == "spool-full",
                   keep_logs=None if logs is None else logs / name) as rig:
        events = load_events(rig.factory, int(plan.rate * plan.duration))
        sender = Sender(rig.ingest.port, rig.request, BackoffPlan())
        samples: list[Sample] = []
        monitor = asyncio.create_task(rig.monitor(sender, samples))
        t0 = time.monotonic() + 0.2
        load = asyncio.create_task(sender.run_schedule(events, plan.rate, t0))
        try:
            await sleep_until(t0 + plan.fault_at)
            window = FaultWindow(start=time.monotonic())
            await scenario(rig, plan, window)
            window.end = time.monotonic()
            # Processing resumed on its own: a call that starts now must become visible.
            probe = sender.submit(rig.probe_event(), probe=True)
            resumed = await rig.visible_after(probe.event, window.end, plan.resume_bound)
            await asyncio.wait_for(load, plan.duration + 30)
            all_done = await sender.join(plan.retry_window)
            settled = await rig.settled(sender, plan.settle_timeout)
            if name == "processor-kill":
                window.notes["ready_after_s"] = round(await rig.processors_ready(), 2)
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            load.cancel()
            await sender.close()
        result = await rig.account(sender)
        logs = {server.name: server.log_summary() for server in rig.stack.servers}
    threshold = max(10.0, plan.rate * 0.25)
    during = sender.answers(window.start, window.end)
    problems = goal_problems(result, resumed)
    if name == "spool-full":
        answered_503 = [a.sent + (a.seconds or 0.0) for d in sender.deliveries
                        for a in d.attempts if a.status == 503]
        last = round(max(answered_503) - window.end, 2) if answered_503 else None
        window.notes["last_503_after_s"] = last
        if last is not None and last > SPOOL_FULL_503_GOAL_SECONDS:
            problems.append(f"a 503 {last} s after the disk had room again "
                            f"(goal {SPOOL_FULL_503_GOAL_SECONDS} s)")
    if name == "processor-scale":
        window.notes["stall_s"] = longest_stall(samples, window.start, window.end)
        if window.notes["stall_s"] > SCALE_STALL_GOAL_SECONDS:
            problems.append(f"processing stood still for {window.notes['stall_s']} s "
                            f"(goal under {SCALE_STALL_GOAL_SECONDS} s)")
    if not all_done:
        problems.append("deliveries still retrying when the sender stopped")
    if not settled:
        problems.append("the backlog did not drain (queue, spool or archive)")
    if result["dead_letters"] is None:
        problems.append("the dead-letter and retry queues could not be read")
    elif result["dead_letters"]:
        problems.append(f"{result['dead_letters']} dead letters")
    # Ingest answers 200 (durable), 503 (cannot keep it: Vapi may retry) or a 4xx for the
    # request itself; a 500 means an error escaped it.
    by_answer: dict[str, int] = sender.answers()["by_answer"]  # type: ignore[assignment]
    server_errors = sum(count for answer, count in by_answer.items()
                        if answer.startswith("5") and answer != "503")
    if server_errors:
        problems.append(f"{server_errors} answers were a server error other than 503")
    return {
        "fault": name,
        "started_at": started_at,
        **result,
        "drained_s": drained_seconds(samples, window.end, threshold),
        "resumed_s": resumed,
        "fault_seconds": round(window.end - window.start, 2),
        "during_fault": during,
        "all_answers": sender.answers(),
        "notes": window.notes,
        "problems": problems,
        "server_logs": logs,
        "samples": [asdict(s) | {"at": round(s.at - t0, 2)} for s in samples],
        "fault_window_s": [round(window.start - t0, 2), round(window.end - t0, 2)],
    }


def goal_problems(result: dict[str, Any], resumed: float | None) -> list[str]:
    problems = []
    if result["lost"]:
        problems.append(f"{result['lost']} lost ({result['lost_events']} events not archived,"
                        f" {result['calls_missing']} calls missing,"
                        f" {result['calls_wrong']} calls without their report's values)")
    if result["counted_twice"]:
        problems.append(f"{result['counted_twice']} counted twice")
    if not result["stats_equal_aggregates"]:
        problems.append("daily_stats differ from the aggregate over calls and leads")
    if resumed is None or resumed > RESUME_GOAL_SECONDS:
        problems.append(f"processing resumed after {resumed} s (goal {RESUME_GOAL_SECONDS} s)")
    return problems


# ---------------------------------------------------------------------------------------
# The design it replaces: direct writes to Postgres in the request, under the same cut

DIRECT_TOTALS = """
SELECT (SELECT count(*) FROM bench_calls) AS calls,
       (SELECT count(*) FROM bench_leads) AS leads,
       (SELECT coalesce(sum(calls), 0) FROM bench_daily_stats) AS stats_calls,
       (SELECT coalesce(sum(new_leads), 0) FROM bench_daily_stats) AS stats_new_leads,
       (SELECT coalesce(sum(cost), 0) FROM bench_daily_stats) AS stats_cost,
       (SELECT coalesce(sum(cost), 0) FROM bench_calls) AS calls_cost,
       (SELECT coalesce(sum(call_count), 0) FROM bench_leads) AS lead_calls,
       (SELECT count(*) FROM bench_calls WHERE lead_id IS NOT NULL) AS linked_calls
"""


async def run_direct_write(plan: Plan, retries: BackoffPlan,
                           samples_dir: Path = DEFAULT_SAMPLES) -> dict[str, Any]:
    """`bench.direct_write` under the load, its Postgres cut for `fault_seconds`."""
    name = f"calltrail_chaos_dw_{uuid.uuid4().hex[:8]}"
    database_url = f"{POSTGRES_URL}/{name}"
    secret = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="calltrail-chaos-dw-"))
    proxy = TcpProxy(HOST, POSTGRES_PORT)
    rng = random.Random(SEED)
    organizations = [Organization(org_id=str(uuid.uuid4()), endpoint_id="", webhook_secret="",
                                  vapi_org_id=fake_uuid(rng),
                                  phone_number=f"+1415555{2000 + index:04d}",
                                  phone_number_id=str(uuid.uuid4()))
                     for index in range(plan.organizations)]
    await admin_execute(f'CREATE DATABASE "{name}"')
    server: Server | None = None
    try:
        await create_schema(database_url)
        await seed_organizations(database_url, [(o.org_id, o.phone_number)
                                                for o in organizations])
        await proxy.start()
        port = free_port()
        server = Server("direct-write", [sys.executable, "-m", "bench.direct_write"],
                        {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
                         "BENCH_PORT": str(port), "BENCH_WEBHOOK_SECRET": secret,
                         "BENCH_DATABASE_URL": f"postgresql://postgres@{HOST}:{proxy.port}/"
                                               f"{name}"},
                        REPO_ROOT, port, workdir / "direct-write.log")
        server.start()
        # Every call names its organization in its metadata, the way this handler resolves.
        factory = CallFactory(samples_dir, organizations, seed=SEED,
                              now_ms=int(time.time() * 1000), shared_share=1.0)

        def request(event: Event) -> bytes:
            head = (f"POST /webhooks/vapi HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"Content-Type: application/json\r\nX-Vapi-Secret: {secret}\r\n"
                    f"Content-Length: {len(event.body)}\r\n\r\n")
            return head.encode() + event.body

        await wait_answering(server, request, factory)
        events = load_events(factory, int(plan.rate * plan.duration))
        sender = Sender(port, request, retries)
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            t0 = time.monotonic() + 0.2
            load = asyncio.create_task(sender.run_schedule(events, plan.rate, t0))
            await sleep_until(t0 + plan.fault_at)
            window = FaultWindow(start=time.monotonic())
            await proxy.cut()
            await sleep_until(window.start + plan.fault_seconds)
            await proxy.restore()
            window.end = time.monotonic()
            probe = sender.submit(factory.call(created_ms=int(time.time() * 1000)).events[0],
                                  probe=True)
            resumed = None
            while time.monotonic() - window.end < plan.resume_bound:
                if await connection.fetchval("SELECT 1 FROM bench_calls WHERE id = $1",
                                             probe.event.call_id):
                    resumed = round(time.monotonic() - window.end, 2)
                    break
                await asyncio.sleep(0.05)
            await asyncio.wait_for(load, plan.duration + 30)
            await sender.join(plan.retry_window)
            await sender.close()
            archived = {r[0] for r in await connection.fetch(
                "SELECT DISTINCT md5(body) FROM bench_events")}
            calls = {r["id"]: r for r in await connection.fetch(
                "SELECT id, org_id::text AS org_id, status, report_received, cost,"
                " ended_reason FROM bench_calls")}
            totals = await connection.fetchrow(DIRECT_TOTALS)
        finally:
            await connection.close()
        accepted = [d for d in sender.deliveries if d.accepted]
        lost_events = [d for d in accepted if body_digest(d.event.body) not in archived]
        missing = {d.event.call_id for d in accepted if d.event.call_id not in calls}
        wrong = set()
        for delivery in accepted:
            row = calls.get(delivery.event.call_id)
            if delivery.event.message_type == "end-of-call-report" and row is not None:
                cost, _ = report_values(delivery.event.body)
                if not row["report_received"] or not cost_matches(row["cost"], cost):
                    wrong.add(delivery.event.call_id)
        gave_up = [d for d in sender.deliveries if not d.accepted]
        off = {"calls": int(totals["stats_calls"] - totals["calls"]),
               "cost": float(totals["stats_cost"] - totals["calls_cost"]),
               "lead_calls": int(totals["lead_calls"] - totals["linked_calls"])}
        return {
            "fault": "direct-write postgres-cut" + (" (retries)" if retries.max_retries
                                                    else " (no retries)"),
            "sent": len(sender.deliveries),
            "answered_200": len(accepted),
            "gave_up": len(gave_up),
            "gave_up_call_events": sum(d.event.message_type in ("status-update",
                                                                  "end-of-call-report")
                                       for d in gave_up),
            "attempts": sum(len(d.attempts) for d in sender.deliveries),
            "calls_expected": len({d.event.call_id for d in accepted}),
            "calls_stored": int(totals["calls"]),
            # Not retried (Vapi's default) or given up, a non-200 event is gone for good.
            "lost": len(gave_up) + len(lost_events) + len(missing | wrong),
            "lost_events": len(lost_events),
            "calls_missing": len(missing),
            "calls_wrong": len(wrong),
            "counted_twice": max(0, off["calls"]) + max(0, off["lead_calls"]),
            "stats_off": off,
            "stats_equal_aggregates": off["calls"] == 0 and off["cost"] == 0
                                      and off["lead_calls"] == 0,
            "drained_s": None,
            "resumed_s": resumed,
            "fault_seconds": round(window.end - window.start, 2),
            "during_fault": sender.answers(window.start, window.end),
            "all_answers": sender.answers(),
            "server_logs": {"direct-write": server.log_summary()},
            "problems": [],
        }
    finally:
        if server is not None:
            server.stop()
        await proxy.close()
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


async def wait_answering(server: Server, request: Callable[[Event], bytes],
                         factory: CallFactory) -> None:
    sender = Sender(server.port, request, NO_RETRIES, timeout=5)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if server.exited():
                raise RuntimeError(f"direct-write exited:\n{server.log_tail()}")
            delivery = sender.submit(factory.call().events[0])
            await sender.join(10)
            if delivery.accepted:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"direct-write not answering:\n{server.log_tail()}")
    finally:
        await sender.close()


# ---------------------------------------------------------------------------------------
# The suite


def print_table(rows: list[dict[str, Any]], plan: Plan, sync_plan: SyncPlan) -> None:
    sync_rows = [row for row in rows if row["fault"] in SYNC_FAULTS]
    rows = [row for row in rows if row["fault"] not in SYNC_FAULTS]
    if rows:
        print_webhook_table(rows, plan)
    if sync_rows:
        print_sync_table(sync_rows, sync_plan)


def print_webhook_table(rows: list[dict[str, Any]], plan: Plan) -> None:
    print()
    print(f"faults under {plan.rate:g} webhooks/s for {plan.duration:g} s, each fault "
          f"{plan.fault_seconds:g} s from {plan.fault_at:g} s (processor kill every "
          f"{plan.kill_every:g} s); retries: exponential from 1 s, <= 10 s apart, 8 retries")
    header = (f"{'fault':<36}{'sent':>7}{'200':>7}{'gave up':>8}{'calls':>13}{'lost':>6}"
              f"{'twice':>6}{'stats=agg':>10}{'drained s':>10}{'resumed s':>10}"
              f"  during the fault: answers, p99 ms")
    print(header)
    for row in rows:
        if "skipped" in row:
            print(f"{row['fault']:<36}skipped: {row['skipped']}")
            continue
        if "error" in row:
            print(f"{row['fault']:<36}ERROR: {row['error']}")
            continue
        during = row["during_fault"]
        answers = ", ".join(f"{k}: {v}" for k, v in during["by_answer"].items())
        calls = f"{row['calls_stored']}/{row['calls_expected']}"
        print(f"{row['fault']:<36}{row['sent']:>7}{row['answered_200']:>7}{row['gave_up']:>8}"
              f"{calls:>13}{row['lost']:>6}{row['counted_twice']:>6}"
              f"{'yes' if row['stats_equal_aggregates'] else 'NO':>10}"
              f"{_fmt(row['drained_s']):>10}{_fmt(row['resumed_s']):>10}"
              f"  {answers}; p99 {_fmt(during['p99_ms'])}")
        for problem in row.get("problems", []):
            print(f"{'':<36}  ! {problem}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


async def suite(faults: list[str], plan: Plan, direct_write: bool,
                samples_dir: Path, logs: Path, sync_plan: SyncPlan = SYNC_FULL
                ) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if any(f in FAULTS or f in SYNC_FAULTS for f in faults):
        with RabbitNode() as node:
            print(f"RabbitMQ node {node.name} on :{node.port} (the suite's own)", flush=True)
            for name in (f for f in faults if f in FAULTS):
                if name in NEEDS_ROOT and not can_mount():
                    rows.append({"fault": name, "skipped": "mounting a tmpfs needs root"})
                    continue
                print(f"{name} ...", flush=True)
                try:
                    rows.append(await run_fault(name, plan, node, samples_dir, logs))
                except Exception as error:  # the other faults still run; the row says why
                    rows.append({"fault": name, "error": f"{type(error).__name__}: {error}"})
                print_row_summary(rows[-1])
            # metrics-sync's faults, on the same node, each in a world of its own.
            for name in (f for f in faults if f in SYNC_FAULTS):
                print(f"{name} ...", flush=True)
                try:
                    rows.append(await run_sync_fault(name, sync_plan, node, logs))
                except Exception as error:  # the other faults still run; the row says why
                    rows.append({"fault": name, "kind": "sync",
                                 "error": f"{type(error).__name__}: {error}"})
                print_sync_summary(rows[-1])
    for name in (f for f in faults if f in CLUSTER_FAULTS):
        print(f"{name}: starting a three-node RabbitMQ cluster of the suite's own ...",
              flush=True)
        try:
            with RabbitCluster() as cluster:
                rows.append(await run_fault(name, cluster_plan(plan), cluster, samples_dir,
                                            logs))
        except Exception as error:  # the other faults still run; the row says why
            rows.append({"fault": name, "error": f"{type(error).__name__}: {error}"})
        print_row_summary(rows[-1])
    if direct_write:
        for retries in (NO_RETRIES, BackoffPlan()):
            print(f"direct-write postgres-cut ({retries.max_retries} retries) ...",
                  flush=True)
            try:
                rows.append(await run_direct_write(plan, retries, samples_dir))
            except Exception as error:
                rows.append({"fault": "direct-write postgres-cut",
                             "error": f"{type(error).__name__}: {error}"})
            print_row_summary(rows[-1])
    return rows


def print_row_summary(row: dict[str, Any]) -> None:
    if "skipped" in row:
        print(f"  skipped: {row['skipped']}", flush=True)
        return
    if "error" in row:
        print(f"  {row['error']}", flush=True)
        return
    print(f"  sent {row['sent']}, 200 {row['answered_200']}, lost {row['lost']}, twice "
          f"{row['counted_twice']}, drained {row['drained_s']} s, resumed {row['resumed_s']} s"
          + (f"; {'; '.join(row['problems'])}" if row["problems"] else ""), flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos",
                                     description=__doc__.split("\n\n")[0])
    every = [*FAULTS, *CLUSTER_FAULTS, *SYNC_FAULTS]
    parser.add_argument("--faults", default=",".join(every),
                        help=f"comma-separated, of: {', '.join(every)} (default: all)")
    parser.add_argument("--short", action="store_true",
                        help="the small sizes the tests use (50/s for 8 s, 3 s faults; "
                             "12 accounts and 6 s sync faults)")
    parser.add_argument("--rate", type=float, help="webhooks/s (default 300)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 60)")
    parser.add_argument("--fault-at", type=float, help="seconds into the load (default 15)")
    parser.add_argument("--fault-seconds", type=float,
                        help="fault length, sync faults' too (default 20)")
    parser.add_argument("--no-direct-write", action="store_true",
                        help="skip the direct-write baseline rows")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES)
    args = parser.parse_args(argv)
    args.faults = [name for name in args.faults.split(",") if name]  # "" : baseline only
    unknown = set(args.faults) - set(every)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The harness's own broker client retries through the faults it causes: not news.
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # The sync faults connect accounts as the CLI does, which logs each: errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    plan = SHORT if args.short else FULL
    sync_plan = SYNC_SHORT if args.short else SYNC_FULL
    if args.fault_seconds is not None:
        sync_plan = replace(sync_plan, fault_seconds=args.fault_seconds)
    overrides = {k: v for k, v in (("rate", args.rate), ("duration", args.duration),
                                   ("fault_at", args.fault_at),
                                   ("fault_seconds", args.fault_seconds)) if v is not None}
    plan = replace(plan, **overrides)
    faults = args.faults
    started_at = dt.datetime.now(dt.UTC)
    stamp = started_at.strftime('%Y%m%dT%H%M%SZ')
    logs = RESULTS_DIR / f"chaos-{stamp}-logs"
    rows = _run(suite(faults, plan, not args.no_direct_write, args.samples, logs, sync_plan))
    print_table(rows, plan, sync_plan)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"chaos-{stamp}.json"
    path.write_text(json.dumps({"started_at": started_at.isoformat(),
                                "command": " ".join(sys.argv), "plan": asdict(plan),
                                "sync_plan": asdict(sync_plan),
                                "machine": {**machine_info(), "load_average_end":
                                            os.getloadavg()},
                                "rows": rows}, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}, services' logs in "
          f"{logs.relative_to(REPO_ROOT)}/")
    failed = [r["fault"] for r in rows if not r["fault"].startswith("direct-write")
              and "skipped" not in r and ("error" in r or r["problems"])]
    if failed:
        print(f"goals NOT met: {', '.join(failed)}")
        return 1
    if any(f in FAULTS or f in CLUSTER_FAULTS for f in faults):
        print("goals met: 0 lost, 0 counted twice, stats equal aggregates, resumed within "
              f"{RESUME_GOAL_SECONDS} s, for every webhook fault")
    if any(f in SYNC_FAULTS for f in faults):
        print("goals met: usage exact, no call missing, no run stuck, syncing resumed "
              "within its goal, for every metrics-sync fault")
    return 0


if __name__ == "__main__":
    sys.exit(main())
