"""Ingest benchmark: the real service against the stack's ceiling and a direct-write baseline.

    .venv/bin/python -m bench.ingest [--runs N] [--duration S] [--connections C]

What is compared, on the same machine in the same invocation, each server a separate
process (uvicorn, uvloop + httptools, one worker, access log off, bound to 127.0.0.1):

    ingest        the real service (`calltrail-ingest`) on the shared endpoint
                  `POST /webhooks/vapi`: authenticate, read `message.type`, publish with a
                  confirm (or spool), answer.
    bare          `bench.bare_route`: read the body, publish it with a confirm to the same
                  exchange, answer. The ceiling of this stack (Starlette + aio-pika +
                  RabbitMQ): ingest can only approach it.
    direct-write  `calltrail_testkit.direct_write`: what one serverless function does
                  inline: check the credential, parse, resolve the organization with a
                  query, and for status-updates and end-of-call-reports upsert the call,
                  the lead (inbound callers) and the day's stats row in one transaction on
                  a warm asyncpg pool of 10; answer once committed.

Method. Request bodies are built once from the shared Vapi samples (`bench.payloads`:
status, speech, conversation and end-of-call messages of 1-20 KB, varied call ids and
statuses, credentials cycling through X-Vapi-Secret, Bearer and an HMAC signature; each
call's organization named in its metadata or by the dialled number of one of four
organizations registered in direct-write's database) and written to a temp dir; `wrk`
drives each server through `bench/webhooks.lua`, which cycles through them and counts
response codes. Each measurement is a 2 s warm-up, then `--duration` seconds with
`--connections` connections and `wrk -t2 --latency`. Within a run the servers take turns
(ingest, bare, direct-write), so drifting noise on this shared machine (broker, database,
wrk and the server all share its cores; nothing is pinned) hits them alike; the table
reports medians over runs.

Checks. Every non-2xx response and socket error is counted and flags its measurement.
After each measurement the benchmark checks that what answered 2xx was kept: the queue
`{prefix}.call-processor` must hold at least as many messages as wrk counted 2xx answers
(ingest, bare); direct-write must have counted as many answers as wrk counted 2xx, resolved
every body's organization, and its daily stats must hold as many call events as it says it
wrote. Ingest's own metrics say how many events were spooled rather than confirmed by the
broker. At the end the row counts of direct-write's tables are reported.

Goals reported against: ingest acknowledges at least 3x as many webhooks/s as
direct-write, with at most a third of its p99 (direct-write p99 / ingest p99 >= 3).

Everything lives under a fresh `AMQP_PREFIX=bench-<id>` and database
`calltrail_bench_<id>`, removed at the end with the servers and temp files. Results go to
`bench/results/ingest-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime as dt
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench.harness import (
    BENCH_DIR,
    REPO_ROOT,
    WRK_THREADS,
    WRK_TIMEOUT,
    WrkResult,
    ensure_wrk,
    machine_info,
    run_wrk,
    write_results,
)
from bench.payloads import AUTH_MODES, WebhookRequest, build_requests, write_requests
from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology, delete_topology
from calltrail_testkit.direct_write import (
    create_schema,
    direct_write_server,
    seed_organizations,
    table_counts,
)
from calltrail_testkit.processes import (
    HOST,
    WEBHOOK_PATH,
    Server,
    base_env,
    free_port,
    peak_rss_mib,
)
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import AMQP_URL, POSTGRES_URL, admin_execute, ingest_events

LUA_SCRIPT = BENCH_DIR / "webhooks.lua"
WARMUP_SECONDS = 2
BODY_COUNT = 400
BODY_SEED = 20261103
ORGANIZATIONS = 4  # registered in direct-write's database, named by the bodies
GOAL_RATIO = 3.0
STARTUP_TIMEOUT_SECONDS = 30
SETTLE_TIMEOUT_SECONDS = 15  # for the broker or the database to show every 2xx as kept

INGEST, BARE, DIRECT = "ingest", "bare", "direct-write"
SERVERS = (INGEST, BARE, DIRECT)


# ---------------------------------------------------------------------------------------
# Servers


def make_servers(workdir: Path, *, prefix: str, secret: str, database_url: str) -> list[Server]:
    env = base_env(workdir)
    ports = [free_port() for _ in SERVERS]
    ingest_env = {
        **env,
        "INGEST_HOST": HOST,
        "INGEST_PORT": str(ports[0]),
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": prefix,
        "VAPI_WEBHOOK_SECRET": secret,
        # The bodies are signed once, before the runs, over the body alone (bench/payloads.py):
        # a timestamp would go stale during a long run. The check it skips costs no I/O.
        "INGEST_HMAC_REQUIRE_TIMESTAMP": "false",
        "SPOOL_DIR": str(workdir / "spool"),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        # Never created: ingest only reads per-organization endpoints from it, off the
        # request path, and the benchmark uses the shared endpoint.
        "DATABASE_URL": f"{POSTGRES_URL}/{prefix.replace('-', '_')}_absent",
    }
    return [
        # The ingest process runs in the temp dir so that no `.env` is read.
        Server(INGEST, [str(Path(sys.executable).parent / "calltrail-ingest")], ingest_env,
               workdir, ports[0], workdir / "ingest.log"),
        Server(BARE, [sys.executable, "-m", "bench.bare_route"],
               {**env, "BENCH_PORT": str(ports[1]), "AMQP_URL": AMQP_URL,
                "AMQP_PREFIX": prefix}, REPO_ROOT, ports[1], workdir / "bare.log"),
        direct_write_server(port=ports[2], database_url=database_url, secret=secret,
                            workdir=workdir),
    ]


async def direct_counts(client: httpx.AsyncClient, server: Server) -> dict[str, int]:
    """What direct-write answered and wrote, by outcome."""
    response = await client.get(f"http://{HOST}:{server.port}/counts")
    response.raise_for_status()
    return response.json()


async def wait_ready(client: httpx.AsyncClient, server: Server, probe: WebhookRequest) -> None:
    """Until one real webhook is answered 200 (and, for ingest, published to the broker)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    headers = {"Content-Type": "application/json", probe.header_name: probe.header_value}
    last_problem = "no answer"
    while time.monotonic() < deadline:
        if server.exited():
            raise RuntimeError(f"{server.name} exited at start:\n{server.log_tail()}")
        try:
            response = await client.post(server.url, content=probe.body, headers=headers)
            if response.status_code == 200:
                if server.name != INGEST or (await ingest_events(client, server)).get(
                        "published", 0) > 0:
                    return
                last_problem = "ingest spooled the probe: not connected to the broker yet"
            else:
                last_problem = f"HTTP {response.status_code}: {response.text[:200]}"
        except httpx.TransportError as error:
            last_problem = repr(error)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {STARTUP_TIMEOUT_SECONDS} s "
                       f"({last_problem}):\n{server.log_tail()}")


# ---------------------------------------------------------------------------------------
# Broker and database


class EventQueue:
    """The call processor's queues of the bench prefix (its partitions and its overflow),
    which ingest and bare publish to."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.names = topology.work_queues(CALL_PROCESSOR)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None

    async def open(self) -> None:
        self._connection = await aio_pika.connect(AMQP_URL, timeout=10)
        self._channel = await self._connection.channel()
        await declare_topology(self._channel, self.topology)

    async def _queues(self) -> list[aio_pika.abc.AbstractQueue]:
        assert self._channel is not None
        return [await self._channel.declare_queue(name, passive=True) for name in self.names]

    async def message_count(self) -> int:
        return sum(queue.declaration_result.message_count or 0
                   for queue in await self._queues())

    async def purge(self) -> None:
        for queue in await self._queues():
            await queue.purge()

    async def close(self) -> None:
        """Delete the whole bench topology, then disconnect."""
        if self._connection is None:
            return
        try:
            channel = await self._connection.channel()
            await delete_topology(channel, self.topology)
        finally:
            await self._connection.close()


async def stored_events(database_url: str) -> int:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return int(await connection.fetchval(
            "SELECT COALESCE(sum(events), 0) FROM bench_daily_stats"))
    finally:
        await connection.close()


async def wait_for_count(read: Any, expected: int) -> int:
    """Poll `read()` until it reaches `expected` or the settle timeout passes; the last value."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    count = await read()
    while count < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        count = await read()
    return count


# ---------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Bench:
    wrk: str
    manifest: Path
    servers: list[Server]
    queue: EventQueue
    database_url: str
    client: httpx.AsyncClient
    duration: int
    connections: int

    async def _wrk(self, server: Server, seconds: int) -> WrkResult:
        return await run_wrk(self.wrk, server.url, LUA_SCRIPT, seconds=seconds,
                             connections=self.connections, script_args=[str(self.manifest)])

    async def _direct_kept(self) -> int:
        return await stored_events(self.database_url)

    async def measure(self, server: Server) -> dict[str, Any]:
        """Warm up, measure, and check that every 2xx answer was kept."""
        await self._wrk(server, WARMUP_SECONDS)
        await asyncio.sleep(0.5)  # let the warm-up's last requests finish
        await self.queue.purge()
        read_kept = self._direct_kept if server.name == DIRECT else self.queue.message_count
        kept_before = await read_kept()
        events_before = (await ingest_events(self.client, server)
                         if server.name == INGEST else {})
        counts_before = (await direct_counts(self.client, server)
                         if server.name == DIRECT else {})

        result = await self._wrk(server, self.duration)

        record: dict[str, Any] = result.to_json()
        if server.name == DIRECT:
            # Chatter is answered without a write: compare the call events it says it wrote
            # with the ones its daily stats hold, and its answers with wrk's 2xx.
            counts_after = await direct_counts(self.client, server)
            outcomes = {k: v - counts_before.get(k, 0) for k, v in counts_after.items()}
            expected = outcomes.get("call_events_written", 0)
            kept = await wait_for_count(read_kept, kept_before + expected) - kept_before
            record["direct_write"] = outcomes
            record["kept_ok"] = (kept >= expected and outcomes.get("answered", 0) >= result.ok
                                 and not outcomes.get("unresolved", 0))
            record["kept_where"] = "bench_daily_stats.events (call events written)"
        else:
            kept = await wait_for_count(read_kept, kept_before + result.ok) - kept_before
            record["kept_ok"] = kept >= result.ok
            record["kept_where"] = "the call processor's queues"
        record["kept"] = kept
        if server.name == INGEST:
            events_after = await ingest_events(self.client, server)
            record["ingest_events"] = {k: int(v - events_before.get(k, 0))
                                       for k, v in events_after.items()}
        record["flagged"] = result.errors > 0 or not record["kept_ok"]
        await self.queue.purge()
        return record

    async def run(self, runs: int) -> list[dict[str, Any]]:
        results = []
        for index in range(runs):
            measured: dict[str, Any] = {}
            for server in self.servers:
                record = await self.measure(server)
                measured[server.name] = record
                spooled = record.get("ingest_events", {}).get("spooled", 0)
                print(f"run {index + 1}/{runs} {server.name:<12} "
                      f"{record['requests_per_s']:9.1f} req/s  p50 {record['p50_ms']:7.2f} ms"
                      f"  p99 {record['p99_ms']:7.2f} ms  errors {record['errors']}"
                      + (f"  wrote {record['kept']} call events"
                         f" ({record['direct_write'].get('chatter', 0)} chatter,"
                         f" {record['direct_write'].get('unresolved', 0)} unresolved)"
                         if server.name == DIRECT else f"  kept {record['kept']}/{record['ok']}")
                      + (f"  spooled {spooled}" if spooled else "")
                      + ("  FLAGGED" if record["flagged"] else ""), flush=True)
            results.append({"run": index + 1, "servers": measured})
        return results


def summarize(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float | None]]:
    medians: dict[str, Any] = {}
    for name in SERVERS:
        records = [run["servers"][name] for run in runs]
        medians[name] = {
            "requests_per_s": statistics.median(r["requests_per_s"] for r in records),
            "p50_ms": statistics.median(r["p50_ms"] for r in records),
            "p99_ms": statistics.median(r["p99_ms"] for r in records),
            "errors": sum(r["errors"] for r in records),
            "flagged_runs": sum(r["flagged"] for r in records),
        }

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    ingest, bare, direct = medians[INGEST], medians[BARE], medians[DIRECT]
    ratios = {
        "ingest_over_bare_throughput": ratio(ingest["requests_per_s"], bare["requests_per_s"]),
        "ingest_over_bare_p99": ratio(ingest["p99_ms"], bare["p99_ms"]),
        "ingest_over_direct_write_throughput": ratio(ingest["requests_per_s"],
                                                     direct["requests_per_s"]),
        "ingest_over_direct_write_p99": ratio(ingest["p99_ms"], direct["p99_ms"]),
        "direct_write_over_ingest_p99": ratio(direct["p99_ms"], ingest["p99_ms"]),
    }
    return medians, ratios


def goals(ratios: dict[str, float | None]) -> dict[str, Any]:
    throughput = ratios["ingest_over_direct_write_throughput"]
    p99 = ratios["direct_write_over_ingest_p99"]
    return {
        "ingest_over_direct_write_throughput_at_least": GOAL_RATIO,
        "direct_write_over_ingest_p99_at_least": GOAL_RATIO,
        "throughput_met": throughput is not None and throughput >= GOAL_RATIO,
        "p99_met": p99 is not None and p99 >= GOAL_RATIO,
    }


def print_table(medians: dict[str, Any], ratios: dict[str, float | None], runs: int) -> None:
    print()
    print(f"medians over {runs} run(s)")
    print(f"{'server':<14}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for name, m in medians.items():
        flag = f"  FLAGGED in {m['flagged_runs']} run(s)" if m["flagged_runs"] else ""
        print(f"{name:<14}{m['requests_per_s']:>10.1f}{m['p50_ms']:>10.2f}"
              f"{m['p99_ms']:>10.2f}{m['errors']:>8}{flag}")
    print()
    print(f"ingest / bare          throughput {ratios['ingest_over_bare_throughput']}"
          f"   p99 {ratios['ingest_over_bare_p99']}")
    print()
    met = goals(ratios)
    print(f"ingest / direct-write throughput   {ratios['ingest_over_direct_write_throughput']}"
          f"   goal >= {GOAL_RATIO:g}: {'met' if met['throughput_met'] else 'NOT met'}")
    print(f"direct-write p99 / ingest p99      {ratios['direct_write_over_ingest_p99']}"
          f"   goal >= {GOAL_RATIO:g}: {'met' if met['p99_met'] else 'NOT met'}")


def body_stats(requests: list[WebhookRequest]) -> dict[str, Any]:
    sizes = [len(r.body) for r in requests]
    return {
        "count": len(requests),
        "seed": BODY_SEED,
        "bytes_min": min(sizes),
        "bytes_median": statistics.median(sizes),
        "bytes_max": max(sizes),
        "types": dict(collections.Counter(r.message_type for r in requests)),
        "auth_modes": list(AUTH_MODES),
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    bench_id = uuid.uuid4().hex[:8]
    prefix = f"bench-{bench_id}"
    database = f"calltrail_bench_{bench_id}"
    database_url = f"{POSTGRES_URL}/{database}"
    secret = secrets.token_urlsafe(32)
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info(wrk)

    async with contextlib.AsyncExitStack() as cleanup:
        workdir = Path(tempfile.mkdtemp(prefix="calltrail-bench-"))
        cleanup.callback(shutil.rmtree, workdir, ignore_errors=True)

        organizations = [(str(uuid.uuid4()), f"+1415555{2000 + index:04d}")
                         for index in range(ORGANIZATIONS)]
        requests = build_requests(args.samples, secret, count=BODY_COUNT, seed=BODY_SEED,
                                  now_ms=int(started_at.timestamp() * 1000),
                                  organizations=organizations)
        manifest = write_requests(requests, workdir / "bodies")

        queue = EventQueue(Topology(prefix))
        cleanup.push_async_callback(queue.close)
        await queue.open()

        await admin_execute(f'CREATE DATABASE "{database}"')
        cleanup.push_async_callback(admin_execute,
                                    f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await create_schema(database_url)
        await seed_organizations(database_url, organizations)

        servers = make_servers(workdir, prefix=prefix, secret=secret, database_url=database_url)
        for server in servers:
            cleanup.callback(server.stop)
            server.start()
        client = await cleanup.enter_async_context(httpx.AsyncClient(timeout=10))
        for server in servers:
            await wait_ready(client, server, requests[0])
        print(f"servers ready ({', '.join(f'{s.name} :{s.port}' for s in servers)}); "
              f"{args.runs} run(s) of {args.duration} s, {args.connections} connections, "
              f"{len(requests)} bodies of {body_stats(requests)['bytes_min']}-"
              f"{body_stats(requests)['bytes_max']} bytes", flush=True)

        bench = Bench(wrk, manifest, servers, queue, database_url, client, args.duration,
                      args.connections)
        runs = await bench.run(args.runs)

        peak_rss = {server.name: peak_rss_mib(server.process.pid) for server in servers
                    if server.process is not None}
        for server in servers:
            server.stop()
        logs = {server.name: server.log_summary() for server in servers}
        direct_tables = await table_counts(database_url)

    medians, ratios = summarize(runs)
    return {
        "started_at": started_at.isoformat(),
        "config": {
            "runs": args.runs, "duration_s": args.duration, "connections": args.connections,
            "warmup_s": WARMUP_SECONDS, "wrk_threads": WRK_THREADS, "wrk_timeout": WRK_TIMEOUT,
            "amqp_prefix": prefix, "database": database, "path": WEBHOOK_PATH,
        },
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "bodies": body_stats(requests),
        "runs": runs,
        "medians": medians,
        "ratios": ratios,
        "goals": goals(ratios),
        "direct_write_tables": direct_tables,
        "peak_rss_mib": peak_rss,
        "server_logs": logs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds measured per server per run (default 10)")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent connections (default 64)")
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR,
                        help=f"Vapi sample payloads (default {SAMPLES_DIR})")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration < 1 or args.connections < WRK_THREADS:
        parser.error(f"--runs and --duration must be >= 1, --connections >= {WRK_THREADS}")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    print_table(results["medians"], results["ratios"], args.runs)
    tables = results["direct_write_tables"]
    print(f"\ndirect-write's tables after all runs: {tables['organizations']} organizations, "
          f"{tables['calls']} calls ({tables['calls_reported']} reported), {tables['leads']} "
          f"leads, {tables['daily_stats_rows']} daily_stats rows holding "
          f"{tables['daily_stats_calls']} calls and {tables['daily_stats_events']} call events")
    print("peak RSS under this load (MiB): " + ", ".join(
        f"{name} {rss}" for name, rss in results["peak_rss_mib"].items()))
    path = write_results("ingest", results)
    if any(m["flagged_runs"] for m in results["medians"].values()):
        print("WARNING: some measurements had errors or unkept answers (see FLAGGED above)")
    return path


if __name__ == "__main__":
    main()
