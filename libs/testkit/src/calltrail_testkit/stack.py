"""What the processor and end-to-end benchmarks share: their own broker prefix and database,
organizations, the services as processes, and events published exactly as ingest does.

`BenchStack` creates `AMQP_PREFIX=bench-<id>` (the whole topology) and the database
`calltrail_bench_<id>` (migrated with `calltrail_common.db.migrate`), and removes both on
exit, with the processes it started and its temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import asyncpg

from bench.ingest import (  # noqa: F401 - peak_rss_mib is re-exported for the others
    AMQP_URL,
    HOST,
    POSTGRES_URL,
    REPO_ROOT,
    Server,
    admin_execute,
    free_port,
    peak_rss_mib,
)
from bench.lifecycles import Event, Organization, fake_uuid
from calltrail_common.broker import connect as connect_broker
from calltrail_common.db import connect, migrate
from calltrail_common.envelope import SHARED_ENDPOINT, EventEnvelope, partition_of
from calltrail_common.organizations import create_organization
from calltrail_common.phone_numbers import register
from calltrail_common.topology import (
    CALL_PROCESSOR,
    Topology,
    declare_topology,
    delete_topology,
)
from ingest.payload import read_envelope

PUBLISH_WINDOW = 500  # publishes awaiting their confirm at once
HEARTBEAT_SECONDS = 30  # the harness's own broker connection


def event_envelope(event: Event, message_id: str, received_ms: int) -> EventEnvelope:
    """The envelope ingest gives this event (with ingest's own reader of the body)."""
    read = read_envelope(event.body)
    return EventEnvelope(
        message_id=message_id,
        message_type=read.message_type,
        received_at_ms=received_ms,
        endpoint_id=SHARED_ENDPOINT if event.shared else event.org.endpoint_id,
        partition=partition_of(read.caller_key, message_id),
        org_id=None if event.shared else event.org.org_id,
        dedupe_key=read.dedupe_key,
    )


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 2)
    return None


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


class BenchStack:
    """Prefix, database, organizations and processes of one benchmark invocation."""

    def __init__(self, amqp_url: str = AMQP_URL) -> None:
        bench_id = uuid.uuid4().hex[:8]
        # The fault suite runs on a RabbitMQ node of its own, or a cluster (several URLs).
        self.amqp_url = amqp_url
        self.prefix = f"bench-{bench_id}"
        self.database = f"calltrail_bench_{bench_id}"
        self.database_url = f"{POSTGRES_URL}/{self.database}"
        self.topology = Topology(self.prefix)
        self.workdir = Path(tempfile.mkdtemp(prefix="calltrail-bench-"))
        self.servers: list[Server] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> BenchStack:
        self._exit.callback(shutil.rmtree, self.workdir, ignore_errors=True)
        self._connection = await connect_broker(self.amqp_url, heartbeat_seconds=HEARTBEAT_SECONDS)
        self._exit.push_async_callback(self._delete_topology)
        self.channel = await self._connection.channel(publisher_confirms=True)
        await declare_topology(self.channel, self.topology)
        await admin_execute(f'CREATE DATABASE "{self.database}"')
        self._exit.push_async_callback(
            admin_execute, f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        await migrate(self.database_url)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for server in self.servers:
            server.stop()
        await self._exit.aclose()

    async def reconnect(self) -> None:
        """A new broker connection and channel (after the broker was restarted)."""
        old = self._connection
        self._connection = await connect_broker(self.amqp_url, heartbeat_seconds=HEARTBEAT_SECONDS)
        self.channel = await self._connection.channel(publisher_confirms=True)
        if old is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.close(), 2)

    async def _delete_topology(self) -> None:
        assert self._connection is not None
        try:
            channel = await self._connection.channel()
            await delete_topology(channel, self.topology)
        finally:
            await self._connection.close()

    # -- database ------------------------------------------------------------------------

    async def create_organizations(self, count: int) -> list[Organization]:
        """Organizations with their endpoint, secret and a registered Vapi number each."""
        connection = await connect(self.database_url)
        organizations = []
        try:
            for index in range(count):
                created = await create_organization(connection, f"Bench roofing {index + 1}")
                number, number_id = f"+1415555{1000 + index:04d}", str(uuid.uuid4())
                await register(connection, created.org_id, number, number_id)
                organizations.append(Organization(
                    org_id=str(created.org_id), endpoint_id=created.endpoint_id,
                    webhook_secret=created.webhook_secret,
                    vapi_org_id=fake_uuid(random.Random(index)),
                    phone_number=number, phone_number_id=number_id))
        finally:
            await connection.close()
        return organizations

    async def stop_servers(self, names: Sequence[str] | None = None) -> None:
        """SIGTERM to every process (or those named) at once, then wait without blocking
        the loop (a fault suite's proxies run in it, and a service shutting down still talks
        through them); SIGKILL what is still running after 15 s."""
        running = [s.process for s in self.servers
                   if s.process is not None and s.process.poll() is None
                   and (names is None or s.name in names)]
        for process in running:
            process.terminate()
        await asyncio.gather(*(asyncio.to_thread(p.wait, 15) for p in running),
                             return_exceptions=True)
        for process in running:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait, 5)

    def copy_logs(self, directory: Path) -> None:
        """The processes' logs (info level, JSON lines) kept in `directory` for diagnosis."""
        directory.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            with contextlib.suppress(OSError):
                shutil.copy(server.log_path, directory / server.log_path.name)

    async def db(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.database_url, timeout=10)

    async def reset(self, truncate: str) -> None:
        """A fresh start for the next measurement: `truncate` run, a checkpoint (so no
        measurement pays for the last one's dirty pages), every queue purged."""
        connection = await self.db()
        try:
            await connection.execute(truncate)
            await connection.execute("CHECKPOINT")
        finally:
            await connection.close()
        await self.purge_all()

    # -- broker --------------------------------------------------------------------------

    async def open_channel(self) -> aio_pika.abc.AbstractChannel:
        """Another channel on the harness's connection (the caller closes it)."""
        assert self._connection is not None
        return await self._connection.channel()

    async def queue_depth(self, name: str | None = None) -> int:
        """Ready messages in a queue (unless named, in all of the call processor's: its
        partitions and its overflow queue)."""
        assert self.channel is not None
        total = 0
        for queue_name in [name] if name else self.topology.work_queues(CALL_PROCESSOR):
            queue = await self.channel.declare_queue(queue_name, passive=True)
            total += queue.declaration_result.message_count or 0
        return total

    async def dead_letters(self) -> dict[str, int]:
        """Messages in the dead-letter queue and in each retry queue."""
        names = [self.topology.dead_letter_queue(CALL_PROCESSOR),
                 *(self.topology.retry_queue(CALL_PROCESSOR, d)
                   for d in CALL_PROCESSOR.retry_delays_ms)]
        return {name: await self.queue_depth(name) for name in names}

    async def purge_all(self) -> None:
        assert self.channel is not None
        for name in self.topology.all_queues():
            await (await self.channel.declare_queue(name, passive=True)).purge()

    async def publish(self, events: Sequence[Event], run_tag: str) -> float:
        """Publish every event as ingest would (persistent, confirmed); seconds it took."""
        assert self.channel is not None
        exchange = await self.channel.get_exchange(self.topology.events_exchange)
        started = time.perf_counter()

        async def one(index: int, event: Event) -> None:
            envelope = event_envelope(event, f"{run_tag}-{index:06d}", int(time.time() * 1000))
            await exchange.publish(envelope.message(event.body), routing_key=envelope.routing_key,
                                   mandatory=True)

        for start in range(0, len(events), PUBLISH_WINDOW):
            await asyncio.gather(*(one(start + offset, event) for offset, event
                                   in enumerate(events[start:start + PUBLISH_WINDOW])))
        return time.perf_counter() - started

    # -- processes -----------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
                "HOME": os.environ.get("HOME", str(self.workdir)),
                "DATABASE_URL": self.database_url, "AMQP_URL": self.amqp_url,
                "AMQP_PREFIX": self.prefix, "LOG_LEVEL": "warning", "LOG_FORMAT": "json"}

    def processor(self, name: str, *, batch_size: int, batch_wait_ms: int,
                  database_url: str | None = None) -> Server:
        """A `calltrail-processor` process, not started (run in the temp dir: no `.env`; no
        probe port, so replicas never collide on one), on `database_url` if given (a
        proxy's)."""
        env = {**self._env(), "PROCESSOR_BATCH_SIZE": str(batch_size),
               "PROCESSOR_BATCH_WAIT_MS": str(batch_wait_ms), "PROCESSOR_METRICS_PORT": "0"}
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        server = Server(name, [str(Path(sys.executable).parent / "calltrail-processor")], env,
                        self.workdir, 0, self.workdir / f"{name}.log")
        self.servers.append(server)
        return server

    def bare_consumer(self, name: str, *, batch_size: int, batch_wait_ms: int) -> Server:
        """The processor's ceiling (`bench.bare_consumer`), not started, with the same env."""
        env = {**self._env(), "PROCESSOR_BATCH_SIZE": str(batch_size),
               "PROCESSOR_BATCH_WAIT_MS": str(batch_wait_ms)}
        server = Server(name, [sys.executable, "-m", "bench.bare_consumer"], env, REPO_ROOT, 0,
                        self.workdir / f"{name}.log")
        self.servers.append(server)
        return server

    def metrics_sync(self, name: str, *, vapi_base_url: str, encryption_key: str,
                     concurrency: int) -> Server:
        """A `calltrail-metrics-sync` process against `vapi_base_url`, not started (no probe
        port, so replicas and other benchmarks never collide on one)."""
        env = {**self._env(), "ENCRYPTION_KEY": encryption_key,
               "VAPI_API_BASE_URL": vapi_base_url, "SYNC_CONCURRENCY": str(concurrency),
               "METRICS_SYNC_METRICS_PORT": "0"}
        server = Server(name, [str(Path(sys.executable).parent / "calltrail-metrics-sync")],
                        env, self.workdir, 0, self.workdir / f"{name}.log")
        self.servers.append(server)
        return server

    def fake_vapi(self, *, latency: float) -> Server:
        """`bench.fake_vapi` on a free port with `latency` seconds per API request, not
        started (a process of its own: its CPU is not the client's, its latency real HTTP)."""
        port = free_port()
        server = Server("fake-vapi", [sys.executable, "-m", "bench.fake_vapi", "--port",
                                      str(port), "--latency", str(latency)],
                        self._env(), REPO_ROOT, port, self.workdir / "fake-vapi.log")
        self.servers.append(server)
        return server

    def ingest(self, *, shared_secret: str) -> Server:
        """A `calltrail-ingest` process on a free port, not started."""
        port = free_port()
        env = {**self._env(), "INGEST_HOST": HOST, "INGEST_PORT": str(port),
               "VAPI_WEBHOOK_SECRET": shared_secret,
               "SPOOL_DIR": str(self.workdir / "spool")}
        server = Server("ingest", [str(Path(sys.executable).parent / "calltrail-ingest")], env,
                        self.workdir, port, self.workdir / "ingest.log")
        self.servers.append(server)
        return server
