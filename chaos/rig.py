"""The world of one webhook fault: its sizes (`Plan`), the services and the links a fault
cuts (`Rig`), the load of real call lifecycles, and what is sampled while it runs.

The world of each fault is new: its own `AMQP_PREFIX` and database (`Stack`), on a
RabbitMQ node of the suite's own (`calltrail_testkit.rabbit_node`: the machine's shared
node is never touched, and this one can be restarted for real), or a cluster of three;
`calltrail-ingest` and two `calltrail-processor` replicas as processes, each link that a
fault cuts behind its own TCP proxy (`calltrail_testkit.tcp_proxy`):

    ingest    --proxy-->  broker        ingest    --proxy-->  Postgres (endpoint secrets)
    processor --proxy-->  broker        processor --proxy-->  Postgres
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import hashlib
import itertools
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import httpx

from calltrail_common.topology import CALL_PROCESSOR
from calltrail_testkit.lifecycles import Call, CallFactory, Event, interleave
from calltrail_testkit.processes import HOST, Server, free_port
from calltrail_testkit.rabbit_node import RabbitCluster, RabbitNode
from calltrail_testkit.stack import Stack
from calltrail_testkit.tcp_proxy import TcpProxy
from calltrail_testkit.vapi_sender import BackoffPlan, Sender, org_request, shared_request

POSTGRES_PORT = 5432
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


async def sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


class World:
    """A world built on entry (`_enter`, each step pushing its undoing on `_exit`) and
    taken down in reverse on exit, also when building it failed half-way."""

    def __init__(self) -> None:
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        try:
            await self._enter()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _enter(self) -> None:
        raise NotImplementedError

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()


# ---------------------------------------------------------------------------------------
# Where the services run, the load, what is sampled


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
Link = BrokerLinks | TcpProxy


async def break_links(until: float, *links: Link, stall: bool = False) -> None:
    """Cut `links` (connections reset, new ones refused) or, with `stall`, partition them
    (nothing gets through, no RST, no FIN), and restore them at `until` (monotonic)."""
    for link in links:
        await (link.stall() if stall else link.cut())
    await sleep_until(until)
    for link in links:
        await link.restore()


class Rig(World):
    """One fault's world: prefix, database, proxies, ingest and the processors."""

    def __init__(self, broker: Broker, plan: Plan, samples: Path, *,
                 proxied: frozenset[str] = PROXIED_LINKS, spool_on_tmpfs: bool = False,
                 keep_logs: Path | None = None) -> None:
        super().__init__()
        self.proxied = proxied
        self.cluster = broker if isinstance(broker, RabbitCluster) else None
        nodes = broker.nodes if isinstance(broker, RabbitCluster) else [broker]
        self.node = nodes[0]
        self.keep_logs = keep_logs
        self.plan = plan
        self.samples = samples
        self.spool_on_tmpfs = spool_on_tmpfs
        self.shared_secret = secrets.token_urlsafe(24)
        self.stack = Stack(broker.url)
        self.ingest_broker = BrokerLinks(nodes)
        self.processor_broker = BrokerLinks(nodes)
        self.database = TcpProxy(HOST, POSTGRES_PORT)
        self.processors: list[Server] = []
        self.client = httpx.AsyncClient(timeout=5)
        self._reconnect_broker = False

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
        await self.stack.wait_ready(self.client, self.ingest, self.processors[0],
                                   ready_probe)
        await self.processors_ready()
        connection = await self.stack.db()
        try:
            self.archived_before = int(await connection.fetchval(
                "SELECT count(*) FROM events"))
        finally:
            await connection.close()

    def request(self, event: Event) -> bytes:
        if event.shared:
            return shared_request(event, self.ingest.port, self.shared_secret)
        return org_request(event, event.org, self.ingest.port)

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
