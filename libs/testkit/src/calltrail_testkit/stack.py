"""A world of its own for one benchmark, fault or test: a broker prefix, a migrated
database, organizations, the services as processes, and events published as ingest does.

`Stack` creates `AMQP_PREFIX=bench-<id>` (the whole topology) and the database
`calltrail_bench_<id>` (migrated with `calltrail_common.db.migrate`), and removes both on
exit, with the processes it started and its temp dir. Every service is started one way:
`stack.ingest()`, `stack.processor()`, `stack.metrics_sync()`, `stack.api()`,
`stack.dispatcher()`, `stack.fake_vapi()`, or `stack.service()` for any other command, each
with the stack's environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from calltrail_common.broker import connect as connect_broker
from calltrail_common.crypto import KeyRing
from calltrail_common.db import connect, create_pool, migrate
from calltrail_common.envelope import SHARED_ENDPOINT, EventEnvelope, partition_of
from calltrail_common.organizations import create_organization
from calltrail_common.phone_numbers import register
from calltrail_common.topology import (
    CALL_PROCESSOR,
    DISPATCHER,
    Topology,
    declare_topology,
    delete_topology,
)
from calltrail_common.vapi import VapiClient
from calltrail_common.vapi_accounts import connect_account
from calltrail_testkit.lifecycles import Event, Organization, fake_uuid
from calltrail_testkit.processes import HOST, Server, base_env, free_port
from ingest.payload import read_envelope

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
PUBLISH_WINDOW = 500  # publishes awaiting their confirm at once
HEARTBEAT_SECONDS = 30  # the stack's own broker connection
STARTUP_TIMEOUT_SECONDS = 30


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


async def admin_execute(sql: str) -> None:
    """`sql` on the machine's Postgres as its superuser (CREATE or DROP DATABASE)."""
    connection = await asyncpg.connect(f"{POSTGRES_URL}/postgres", timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def ingest_events(client: httpx.AsyncClient, server: Server) -> dict[str, float]:
    """Ingest's accepted-event counters by where each was kept (published, spooled)."""
    response = await client.get(f"http://{HOST}:{server.port}/metrics")
    response.raise_for_status()
    return {kept: float(value) for kept, value in re.findall(
        r'^calltrail_ingest_events_total\{kept="(\w+)"\} (\S+)$', response.text, re.MULTILINE)}


class Stack:
    """Prefix, database, organizations and processes of one benchmark, fault or test."""

    def __init__(self, amqp_url: str = AMQP_URL) -> None:
        bench_id = uuid.uuid4().hex[:8]
        # The fault suite runs on a RabbitMQ node of its own, or a cluster (several URLs).
        self.amqp_url = amqp_url
        self.prefix = f"bench-{bench_id}"
        self.database = f"calltrail_bench_{bench_id}"
        self.database_url = f"{POSTGRES_URL}/{self.database}"
        self.topology = Topology(self.prefix)
        # With a dispatcher's shortened retry delays: their queues are deleted too.
        self._topologies: list[Topology] = [self.topology]
        self.workdir = Path(tempfile.mkdtemp(prefix="calltrail-bench-"))
        self.servers: list[Server] = []
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self._exit = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Stack:
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
            for topology in self._topologies:
                await delete_topology(channel, topology)
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

    async def connect_vapi_accounts(self, orgs: Sequence[uuid.UUID], api_keys: Sequence[str], *,
                                    vapi_base_url: str, encryption_key: str,
                                    concurrency: int = 1) -> float:
        """Connect each organization to its Vapi account as `calltrail vapi connect` does (the
        key checked against `vapi_base_url`, stored sealed), but without the broker: the
        queued 'connect' runs wait for a metrics-sync tick. Seconds it took."""
        keyring = KeyRing(encryption_key)
        limit = asyncio.Semaphore(concurrency)
        started = time.perf_counter()
        pool = await create_pool(self.database_url, max_size=10)
        try:
            async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(
                    max_connections=concurrency)) as http:
                async def connect(org_id: uuid.UUID, key: str) -> None:
                    async with limit:
                        await connect_account(pool, keyring,
                                              VapiClient(http, key, base_url=vapi_base_url),
                                              org_id, key, channel=None)

                await asyncio.gather(*(connect(org_id, key) for org_id, key
                                       in zip(orgs, api_keys, strict=True)))
        finally:
            await pool.close()
        return time.perf_counter() - started

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

    def env(self) -> dict[str, str]:
        """What every process of this stack is given: its database, broker and prefix."""
        return {**base_env(self.workdir), "DATABASE_URL": self.database_url,
                "AMQP_URL": self.amqp_url, "AMQP_PREFIX": self.prefix,
                "LOG_LEVEL": "warning", "LOG_FORMAT": "json"}

    def service(self, name: str, command: list[str], *, env: dict[str, str] | None = None,
                port: int = 0, cwd: Path | None = None) -> Server:
        """A process of this stack (the stack's environment, and `env` on top), not started;
        stopped with the stack. It runs in the temp dir unless told (so no `.env` is read)."""
        server = Server(name, command, {**self.env(), **(env or {})}, cwd or self.workdir,
                        port, self.workdir / f"{name}.log")
        self.servers.append(server)
        return server

    def processor(self, name: str, *, batch_size: int, batch_wait_ms: int,
                  database_url: str | None = None) -> Server:
        """A `calltrail-processor` process (no probe port, so replicas never collide on one),
        on `database_url` if given (a proxy's)."""
        env = {"PROCESSOR_BATCH_SIZE": str(batch_size),
               "PROCESSOR_BATCH_WAIT_MS": str(batch_wait_ms), "PROCESSOR_METRICS_PORT": "0"}
        if database_url is not None:
            env["DATABASE_URL"] = database_url
        return self.service(name, [_script("calltrail-processor")], env=env)

    def metrics_sync(self, name: str, *, vapi_base_url: str, encryption_key: str,
                     concurrency: int) -> Server:
        """A `calltrail-metrics-sync` process against `vapi_base_url` (no probe port, so
        replicas and other benchmarks never collide on one)."""
        return self.service(name, [_script("calltrail-metrics-sync")], env={
            "ENCRYPTION_KEY": encryption_key, "VAPI_API_BASE_URL": vapi_base_url,
            "SYNC_CONCURRENCY": str(concurrency), "METRICS_SYNC_METRICS_PORT": "0"})

    def dispatcher(self, name: str, *, retry_delays_ms: Sequence[int] = (),
                   allow_private_targets: bool = True, metrics_port: int = 0,
                   env: dict[str, str] | None = None) -> Server:
        """A `calltrail-dispatcher` process (no probe port unless given, so replicas never
        collide on one). It may send to loopback (the test kit's receiver) unless told not
        to; `retry_delays_ms` shortens its day of retries (WEBHOOKS_RETRY_DELAYS_MS)."""
        settings = {"DISPATCHER_METRICS_PORT": str(metrics_port),
                    "WEBHOOKS_ALLOW_PRIVATE_TARGETS": str(allow_private_targets).lower()}
        if retry_delays_ms:
            settings["WEBHOOKS_RETRY_DELAYS_MS"] = ",".join(str(d) for d in retry_delays_ms)
            self._topologies.append(
                self.topology.with_retry_delays(DISPATCHER, tuple(retry_delays_ms)))
        return self.service(name, [_script("calltrail-dispatcher")], port=metrics_port,
                            env={**settings, **(env or {})})

    async def add_webhook_endpoint(self, org_id: str | uuid.UUID, url: str, secret: str, *,
                                   event_types: Sequence[str] = ("call.ended", "call.updated",
                                                                 "lead.created",
                                                                 "lead.updated")) -> uuid.UUID:
        """An outbound webhook endpoint of the organization, as the management screens add
        one (`secret`: a `whsec_` secret); its id."""
        connection = await self.db()
        try:
            endpoint_id: uuid.UUID = await connection.fetchval(
                "INSERT INTO outbound_endpoints (org_id, url, event_types, secret) "
                "VALUES ($1, $2, $3, $4) RETURNING id",
                uuid.UUID(str(org_id)), url, list(event_types), secret)
        finally:
            await connection.close()
        return endpoint_id

    def ingest(self, *, shared_secret: str) -> Server:
        """A `calltrail-ingest` process on a free port."""
        port = free_port()
        return self.service("ingest", [_script("calltrail-ingest")], port=port, env={
            "INGEST_HOST": HOST, "INGEST_PORT": str(port), "VAPI_WEBHOOK_SECRET": shared_secret,
            "SPOOL_DIR": str(self.workdir / "spool")})

    def api(self, *, encryption_key: str) -> Server:
        """A `calltrail-api` process on a free port."""
        port = free_port()
        return self.service("api", [_script("calltrail-api")], port=port, env={
            "API_HOST": HOST, "API_PORT": str(port), "API_METRICS_PORT": "0",
            "ENCRYPTION_KEY": encryption_key})

    def fake_vapi(self, *, latency: float) -> Server:
        """The fake Vapi (`calltrail_testkit.fake_vapi`) on a free port with `latency` seconds
        per API request (a process of its own: its CPU is not the client's, its latency real
        HTTP)."""
        port = free_port()
        return self.service("fake-vapi", [
            sys.executable, "-m", "calltrail_testkit.fake_vapi", "--port", str(port),
            "--latency", str(latency)], port=port)

    async def serve_fake_vapi(self, *, latency: float) -> tuple[Server, str]:
        """`fake_vapi()` started; it and its base URL once it answers."""
        fake = self.fake_vapi(latency=latency)
        fake.start()
        base_url = f"http://{HOST}:{fake.port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                if fake.exited():
                    raise RuntimeError(f"the fake Vapi exited:\n{fake.log_tail()}")
                try:
                    await http.get(f"{base_url}/_fake/accounts/none")
                    return fake, base_url
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the fake Vapi did not start") from None
                    await asyncio.sleep(0.1)

    async def wait_ready(self, client: httpx.AsyncClient, ingest: Server, processor: Server,
                         probe: Event) -> None:
        """Until ingest publishes a webhook for the organization and the processor archives
        it (`probe`, the first event of a call, becomes that call's row)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        url = f"http://{HOST}:{ingest.port}/webhooks/vapi/{probe.org.endpoint_id}"
        headers = {"Content-Type": "application/json",
                   "X-Vapi-Secret": probe.org.webhook_secret}
        last_problem = "no answer"
        while time.monotonic() < deadline:
            for server in (ingest, processor):
                if server.exited():
                    raise RuntimeError(f"{server.name} exited at start:\n{server.log_tail()}")
            try:
                response = await client.post(url, content=probe.body, headers=headers)
                if response.status_code == 200 and (
                        await ingest_events(client, ingest)).get("published", 0) > 0:
                    break
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.TransportError as error:
                last_problem = repr(error)
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError(f"ingest not ready after {STARTUP_TIMEOUT_SECONDS} s "
                               f"({last_problem}):\n{ingest.log_tail()}")
        connection = await self.db()
        try:
            while await connection.fetchval("SELECT count(*) FROM events") == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the processor archived nothing in "
                                       f"{STARTUP_TIMEOUT_SECONDS} s:\n{processor.log_tail()}")
                await asyncio.sleep(0.1)
        finally:
            await connection.close()


def _script(name: str) -> str:
    """A service's console script, from the environment this runs in."""
    return str(Path(sys.executable).parent / name)
