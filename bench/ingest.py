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
    direct-write  `bench.direct_write`: what one serverless function does inline: check
                  the credential, parse, resolve the organization with a query, and for
                  status-updates and end-of-call-reports upsert the call, the lead
                  (inbound callers) and the day's stats row in one transaction on a warm
                  asyncpg pool of 10; answer once committed.

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
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx

from bench.direct_write import create_schema, seed_organizations, table_counts
from bench.payloads import AUTH_MODES, WebhookRequest, build_requests, write_requests
from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology, delete_topology

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432"
HOST = "127.0.0.1"
WEBHOOK_PATH = "/webhooks/vapi"

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
# shared/ sits beside the repo (as in CI); the tests keep a copy of the same samples.
DEFAULT_SAMPLES = next(
    (path for path in (REPO_ROOT.parent / "shared" / "vapi-samples",
                       REPO_ROOT / "tests" / "fixtures" / "vapi") if path.is_dir()),
    REPO_ROOT.parent / "shared" / "vapi-samples")
LUA_SCRIPT = BENCH_DIR / "webhooks.lua"
RESULTS_DIR = BENCH_DIR / "results"

WARMUP_SECONDS = 2
WRK_THREADS = 2
WRK_TIMEOUT = "5s"  # per request; ingest's confirm timeout is 3 s
WRK_GRACE_SECONDS = 30  # how much longer than its duration wrk may take before it is killed
BODY_COUNT = 400
BODY_SEED = 20261103
ORGANIZATIONS = 4  # registered in direct-write's database, named by the bodies
GOAL_RATIO = 3.0
STARTUP_TIMEOUT_SECONDS = 30
SETTLE_TIMEOUT_SECONDS = 15  # for the broker or the database to show every 2xx as kept
STOP_TIMEOUT_SECONDS = 10
APT_TIMEOUT_SECONDS = 300

INGEST, BARE, DIRECT = "ingest", "bare", "direct-write"
SERVERS = (INGEST, BARE, DIRECT)


# ---------------------------------------------------------------------------------------
# wrk


@dataclass
class WrkResult:
    requests: int
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: dict[str, int]
    non_2xx_3xx: int

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        """Non-2xx answers plus socket errors (connect, read, write, timeout)."""
        refused = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return max(refused, self.non_2xx_3xx) + sum(self.socket_errors.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "seconds": self.seconds,
            "requests_per_s": self.requests_per_s, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "ok": self.ok, "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "socket_errors": self.socket_errors, "non_2xx_3xx": self.non_2xx_3xx,
        }


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _latency_ms(output: str, percentile: str) -> float:
    match = re.search(rf"^\s*{percentile}%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.MULTILINE)
    if match is None:
        raise ValueError(f"wrk printed no {percentile}% latency:\n{output}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Parse `wrk --latency` output plus the BENCH_STATUS line of webhooks.lua."""
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", output, re.MULTILINE)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    status_line = re.search(r"^BENCH_STATUS(.*)$", output, re.MULTILINE)
    if total is None or rate is None or status_line is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    statuses = {int(code): int(count)
                for code, count in re.findall(r"(\d+)=(\d+)", status_line.group(1))}
    socket_errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if errors is not None:
        socket_errors = dict(zip(socket_errors, map(int, errors.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _TIME_UNITS_MS[total.group(3)] / 1000,
        requests_per_s=float(rate.group(1)),
        p50_ms=_latency_ms(output, "50"),
        p99_ms=_latency_ms(output, "99"),
        statuses=statuses,
        socket_errors=socket_errors,
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def ensure_wrk() -> str:
    """The path of `wrk`, installed with apt-get when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("bench.ingest: `wrk` is not on PATH. Install it (Debian/Ubuntu: "
                         "`sudo apt-get install -y wrk`) or run the benchmark as root.")
    print("wrk is not on PATH: installing it with apt-get", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "wrk"]
    for commands in ([install], [["apt-get", "update"], install]):
        try:
            for command in commands:
                subprocess.run(command, env=env, check=True, timeout=APT_TIMEOUT_SECONDS,
                               stdout=subprocess.DEVNULL)
            break
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            continue
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("bench.ingest: could not install `wrk` with apt-get; install it "
                         "and run the benchmark again.")
    return found


def wrk_version(wrk: str) -> str:
    # `wrk -v` prints its version and exits non-zero.
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10,
                          check=False)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else "unknown"


async def run_wrk(wrk: str, url: str, manifest: Path, *, seconds: int,
                  connections: int) -> WrkResult:
    process = await asyncio.create_subprocess_exec(
        wrk, f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency",
        "--timeout", WRK_TIMEOUT, "-s", str(LUA_SCRIPT), url, "--", str(manifest),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(),
                                                seconds + WRK_GRACE_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"wrk did not finish within {seconds + WRK_GRACE_SECONDS} s") \
            from None
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.decode()}")
    return parse_wrk(stdout.decode())


# ---------------------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a live process, in MiB."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{WEBHOOK_PATH}"

    def start(self) -> None:
        # Appended: a server restarted by the fault suite keeps the log of its earlier life.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, cwd=self.cwd,
                                            stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_SECONDS)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_summary(self) -> dict[str, int]:
        """Log lines by level and event (structured lines) or by first words (others)."""
        counts: collections.Counter[str] = collections.Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    counts[f"{record.get('level')} {record.get('event')}"] += 1
                except (ValueError, AttributeError):
                    counts[" ".join(line.split()[:3])[:80]] += 1
        return dict(counts.most_common(20))


def make_servers(workdir: Path, *, prefix: str, secret: str, database_url: str) -> list[Server]:
    bin_dir = Path(sys.executable).parent
    base_env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8",
                "HOME": os.environ.get("HOME", str(workdir))}
    ports = [free_port() for _ in SERVERS]
    ingest_env = {
        **base_env,
        "INGEST_HOST": HOST,
        "INGEST_PORT": str(ports[0]),
        "AMQP_URL": AMQP_URL,
        "AMQP_PREFIX": prefix,
        "VAPI_WEBHOOK_SECRET": secret,
        "SPOOL_DIR": str(workdir / "spool"),
        "LOG_LEVEL": "warning",
        "LOG_FORMAT": "json",
        # Never created: ingest only reads per-organization endpoints from it, off the
        # request path, and the benchmark uses the shared endpoint.
        "DATABASE_URL": f"{POSTGRES_URL}/{prefix.replace('-', '_')}_absent",
    }
    python = [sys.executable, "-m"]
    return [
        # The ingest process runs in the temp dir so that no `.env` is read.
        Server(INGEST, [str(bin_dir / "calltrail-ingest")], ingest_env, workdir, ports[0],
               workdir / "ingest.log"),
        Server(BARE, [*python, "bench.bare_route"],
               {**base_env, "BENCH_PORT": str(ports[1]), "AMQP_URL": AMQP_URL,
                "AMQP_PREFIX": prefix}, REPO_ROOT, ports[1], workdir / "bare.log"),
        Server(DIRECT, [*python, "bench.direct_write"],
               {**base_env, "BENCH_PORT": str(ports[2]), "BENCH_DATABASE_URL": database_url,
                "BENCH_WEBHOOK_SECRET": secret},
               REPO_ROOT, ports[2], workdir / "direct-write.log"),
    ]


async def ingest_events(client: httpx.AsyncClient, server: Server) -> dict[str, float]:
    """Ingest's accepted-event counters by where each was kept (published, spooled)."""
    response = await client.get(f"http://{HOST}:{server.port}/metrics")
    response.raise_for_status()
    return {kept: float(value) for kept, value in re.findall(
        r'^calltrail_ingest_events_total\{kept="(\w+)"\} (\S+)$', response.text, re.MULTILINE)}


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


async def admin_execute(sql: str) -> None:
    connection = await asyncpg.connect(f"{POSTGRES_URL}/postgres", timeout=10)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


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
        return await run_wrk(self.wrk, server.url, self.manifest, seconds=seconds,
                             connections=self.connections)

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


def machine_info(wrk: str | None = None) -> dict[str, Any]:
    cpu_model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": os.getloadavg(),
        **({"wrk": wrk_version(wrk)} if wrk else {}),
    }


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


def write_results(name: str, results: dict[str, Any]) -> Path:
    """`results` as `bench/results/<name>-<UTC timestamp>.json`; the path, also printed."""
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"{name}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    return path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--duration", type=int, default=10,
                        help="seconds measured per server per run (default 10)")
    parser.add_argument("--connections", type=int, default=64,
                        help="concurrent connections (default 64)")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                        help=f"Vapi sample payloads (default {DEFAULT_SAMPLES})")
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
