"""Dispatcher benchmark: deliveries/s of one `calltrail-dispatcher` to a local receiver that
answers in 50 ms, and the delay it adds at a steady 500 deliveries/s, against a bare client.

    .venv/bin/python -m bench.dispatch [--runs 3] [--deliveries N] [--rate R] [--seconds S]
                                       [--latency S] [--receiver process|thread] [--own-broker]
                                       [--endpoint-concurrency N] [--set NAME=VALUE ...]

What is measured. The real `calltrail-dispatcher` (one process, its defaults:
WEBHOOKS_CONCURRENCY 256, WEBHOOKS_ENDPOINT_CONCURRENCY 64, relay batch 500, relay idle
200 ms) on its own prefix and database (`Stack`), one organization with one endpoint
pointing at the test kit's receiver (`calltrail_testkit.webhook_receiver`), which records
each POST's arrival, verifies its signature and answers 200 after `--latency` s (default
0.05). The receiver runs as a process of its own by default (`--receiver thread`: in a
thread of the benchmark's process, which then shares the GIL with the ceiling's client and
the paced inserts). Each measurement gets an endpoint of its own (its own path on the
receiver) and a fresh outbox (TRUNCATE, CHECKPOINT). The outbox rows are written with SQL
as the processor writes them: an `outbound_events` row (type `call.ended`, a call's data as
the API shows it, about 700 bytes) and one `outbound_deliveries` row, `queued_at` NULL.

    backlog   `--deliveries` (default 20,000) deliveries committed in one transaction while
              the dispatcher idles (started and ready); deliveries/s = N / (the last
              arrival at the receiver - the commit). Also: the first arrival after the
              commit (the relay's poll), and when every row was 'succeeded' (the log;
              the benchmark polls Postgres for it, never the receiver, whose counting
              would cost it CPU).
    steady    `--rate` deliveries/s (default 500) for `--seconds` (default 20), committed
              every 10 ms in small transactions (the rows due by then); the added delay of
              each = its arrival at the receiver - the benchmark's clock just after its
              transaction committed (the receiver stamps the arrival before its 50 ms
              answer time, so that is not in it): p50, p99, max.

The ceiling, in the same run against the same receiver: a bare client in the benchmark's
process posting the same bodies, each signed for its request, through the dispatcher's own
sender (`dispatcher.sender.Sender`: httpx over the dispatcher's pooled transport, at its
defaults) with the dispatcher's concurrency to one endpoint (min of the two settings: 64 in
flight), no broker and no database: the backlog as fast as it goes, and the steady rate
from the moment each post is due. Not a plain `httpx.AsyncClient` with 64 connections in
one pool: httpcore's pool checks every connection each time it places or ends a request,
and such a client was slower than the dispatcher itself (67 posts/s against the
dispatcher's 292 deliveries/s in one run, `dispatch-20261206T020927Z.json`), no ceiling.
`--endpoint-concurrency N` sets WEBHOOKS_ENDPOINT_CONCURRENCY for the dispatcher and the
ceiling's requests in flight alike, and `--set NAME=VALUE` any other of the dispatcher's
settings (e.g. WEBHOOKS_CONCURRENCY), to see what a setting changes.

Each run measures the four in turn (dispatcher backlog, ceiling backlog, dispatcher steady,
ceiling steady), after a warm-up of 500 deliveries; the table shows medians over
`--runs` (default 3). Checks per measurement (a failed one flags it): every delivery's
webhook-id arrived, none unknown, every signature verified, and for the dispatcher every
row 'succeeded' and no process exited; repeats (the same id twice) are counted. The CPU
seconds of the dispatcher, the receiver and the benchmark's own process (the ceiling's
client) and the machine's CPU busy share are recorded per measurement, the dispatcher's own
counters (deferred, failed) at the end, and its log (info) is kept in
`bench/results/dispatch-<UTC>-logs/`.

Goals (issue 18): one dispatcher >= 500 deliveries/s, and a p99 added delay <= 1 s at
500/s.

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`,
removed at the end; on the machine's RabbitMQ, or with `--own-broker` on a node of the
benchmark's own (`calltrail_testkit.rabbit_node`, as the fault suite's), which no other
work on the machine shares. Results go to `bench/results/dispatch-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import httpx
import orjson
import uvloop
from standardwebhooks import Webhook

from bench.harness import RESULTS_DIR, machine_info, write_results
from calltrail_common.settings import Settings
from calltrail_testkit.processes import (
    HOST,
    Server,
    cpu_seconds,
    free_port,
    machine_cpu_ticks,
    peak_rss_mib,
)
from calltrail_testkit.rabbit_node import RabbitNode
from calltrail_testkit.stack import Stack
from calltrail_testkit.vapi_sender import percentile
from calltrail_testkit.webhook_receiver import WebhookReceiver
from dispatcher.messages import DeliveryMessage, webhook_body
from dispatcher.sender import Sender

GOAL_DELIVERIES_PER_S = 500
GOAL_P99_DELAY_S = 1.0
EVENT_TYPE = "call.ended"
TICK_SECONDS = 0.01  # the steady load commits (or, for the ceiling, sends) every 10 ms
WARMUP_DELIVERIES = 500
POLL_SECONDS = 0.05
READY_TIMEOUT_SECONDS = 60
MIN_WAIT_SECONDS = 30  # past the last commit, for the last arrival
# The dispatcher's concurrency to one endpoint, as the service's defaults set it.
_DEFAULTS = Settings.model_fields
ENDPOINT_CONCURRENCY = min(int(_DEFAULTS["webhooks_concurrency"].default),
                           int(_DEFAULTS["webhooks_endpoint_concurrency"].default))

INSERT_EVENTS = """
INSERT INTO outbound_events (id, org_id, type, occurred_at, data)
SELECT id, $2, $3, $4, data::jsonb FROM unnest($1::uuid[], $5::text[]) AS e(id, data)
"""
INSERT_DELIVERIES = """
INSERT INTO outbound_deliveries (endpoint_id, event_id) SELECT $1, unnest($2::uuid[])
"""
SUCCEEDED = ("SELECT count(*) FROM outbound_deliveries"
             " WHERE endpoint_id = $1 AND state = 'succeeded'")
RESET = "TRUNCATE outbound_deliveries, outbound_events"


def call_data(org_id: uuid.UUID, index: int) -> str:
    """A call as the API shows it (the shape of the processor's `call.ended` data)."""
    return orjson.dumps({
        "id": str(uuid.uuid4()), "orgId": str(org_id), "type": "inboundPhoneCall",
        "direction": "inbound", "status": "ended", "endedReason": "customer-ended-call",
        "createdAt": "2026-12-06T10:00:00Z", "startedAt": "2026-12-06T10:00:02Z",
        "endedAt": "2026-12-06T10:03:41Z", "durationSeconds": 219.0, "cost": 0.4127,
        "customerNumber": f"+1415555{index % 10_000:04d}", "customerName": "Ana Ruiz",
        "customerEmail": None, "assistantId": str(uuid.UUID(int=index)),
        "phoneNumberId": str(uuid.UUID(int=index + 1)), "leadId": str(uuid.UUID(int=index + 2)),
        "summary": "The caller asked for an estimate to repair a leak in the roof over the "
                   "garage; an inspection was booked for Tuesday morning.",
        "analysis": {"structuredData": {"intent": "estimate", "urgent": False},
                     "successEvaluation": "true"},
        "metadata": {"campaign": "spring"}}).decode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


# --- the receiver: a process of its own, or a thread of this one ------------------------


class Receiver(Protocol):
    def url(self, path: str) -> str: ...
    async def start(self) -> None: ...
    async def expect(self, path: str, secret: str) -> None: ...
    async def arrivals(self, path: str) -> tuple[dict[str, float], int, int]: ...
    def pid(self) -> int | None: ...
    def stop(self) -> None: ...


class ProcessReceiver:
    """`python -m calltrail_testkit.webhook_receiver` as a process of the stack, read and
    set through its admin routes."""

    def __init__(self, stack: Stack, latency: float, http: httpx.AsyncClient) -> None:
        port = free_port()
        self.server: Server = stack.service("webhook-receiver", [
            sys.executable, "-m", "calltrail_testkit.webhook_receiver", "--port", str(port),
            "--latency", str(latency)], port=port)
        self.base = f"http://{HOST}:{port}"
        self.http = http

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    async def start(self) -> None:
        self.server.start()
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if self.server.exited():
                raise RuntimeError(f"the receiver exited:\n{self.server.log_tail()}")
            try:
                (await self.http.get(f"{self.base}/_receiver/stats")).raise_for_status()
                return
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the receiver did not start") from None
                await asyncio.sleep(0.1)

    async def expect(self, path: str, secret: str) -> None:
        (await self.http.post(f"{self.base}/_receiver/behave",
                              json={"path": path, "secret": secret})).raise_for_status()

    async def arrivals(self, path: str) -> tuple[dict[str, float], int, int]:
        records = orjson.loads((await self.http.get(
            f"{self.base}/_receiver/received", params={"path": path})).content)
        return _first_arrivals((r["id"], r["received_at"], r["verified"]) for r in records)

    def pid(self) -> int | None:
        return self.server.process.pid if self.server.process else None

    def stop(self) -> None:
        self.server.stop()


class ThreadReceiver:
    """The receiver in a thread of this process (its own loop; it shares the GIL)."""

    def __init__(self, latency: float) -> None:
        self.receiver = WebhookReceiver(latency=latency)

    def url(self, path: str) -> str:
        return self.receiver.url(path)

    async def start(self) -> None:
        await asyncio.to_thread(self.receiver.start)

    async def expect(self, path: str, secret: str) -> None:
        self.receiver.behave(path, secret=secret)

    async def arrivals(self, path: str) -> tuple[dict[str, float], int, int]:
        return _first_arrivals((r.webhook_id, r.received_at, r.verified)
                               for r in self.receiver.received(path))

    def pid(self) -> int | None:
        return None  # this process

    def stop(self) -> None:
        self.receiver.stop()


def _first_arrivals(records: Any) -> tuple[dict[str, float], int, int]:
    """(webhook-id -> its first arrival, POSTs received, POSTs not verified)."""
    first: dict[str, float] = {}
    received = unverified = 0
    for webhook_id, at, verified in records:
        received += 1
        unverified += verified is not True
        if webhook_id is not None and (webhook_id not in first or at < first[webhook_id]):
            first[webhook_id] = at
    return first, received, unverified


# --- one measurement's world ------------------------------------------------------------


class Bench:
    def __init__(self, stack: Stack, receiver: Receiver, org_id: uuid.UUID,
                 dispatcher: Server, connection: asyncpg.Connection) -> None:
        self.stack = stack
        self.receiver = receiver
        self.org_id = org_id
        self.dispatcher = dispatcher
        self.connection = connection
        self._paths = 0

    async def endpoint(self, label: str) -> tuple[uuid.UUID, str, str]:
        """A new endpoint of the organization on a path of its own: (id, path, secret)."""
        self._paths += 1
        path, secret = f"{self._paths:02d}-{label}", new_secret()
        await self.receiver.expect(path, secret)
        endpoint_id = await self.stack.add_webhook_endpoint(
            self.org_id, self.receiver.url(path), secret, event_types=(EVENT_TYPE,))
        return endpoint_id, path, secret

    async def commit(self, endpoint_id: uuid.UUID, count: int, start: int) -> list[uuid.UUID]:
        """`count` events, each with its unqueued delivery, in one transaction."""
        ids = [uuid.uuid4() for _ in range(count)]
        data = [call_data(self.org_id, start + index) for index in range(count)]
        async with self.connection.transaction():
            await self.connection.execute(INSERT_EVENTS, ids, self.org_id, EVENT_TYPE,
                                          dt.datetime.now(dt.UTC), data)
            await self.connection.execute(INSERT_DELIVERIES, endpoint_id, ids)
        return ids

    async def until_logged(self, endpoint_id: uuid.UUID, count: int, limit: float) -> bool:
        """Until every delivery of the endpoint is 'succeeded' (each answered 2xx, so it
        arrived): Postgres is asked, not the receiver, whose counting would cost it CPU."""
        deadline = time.monotonic() + limit
        while int(await self.connection.fetchval(SUCCEEDED, endpoint_id)) < count:
            if time.monotonic() > deadline or self.dispatcher.exited():
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True


class Spent:
    """CPU seconds of the dispatcher and the receiver, and the machine's busy share, over a
    measurement."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self.cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.ticks = machine_cpu_ticks()

    def done(self) -> dict[str, Any]:
        busy, total = (a - b for a, b in zip(machine_cpu_ticks(), self.ticks, strict=True))
        cpu = {}
        for name, pid in self.pids.items():
            now, before = cpu_seconds(pid), self.cpu[name]
            cpu[name] = round(now - before, 2) if now is not None and before is not None \
                else None
        return {"cpu_s": cpu, "machine_cpu_busy": round(busy / total, 3) if total else None}


def check(expected: set[str], first: dict[str, float], received: int, unverified: int
          ) -> tuple[dict[str, int], list[str]]:
    missing = len(expected - first.keys())
    unknown = len(first.keys() - expected)
    repeats = received - len(first)
    problems = []
    if missing:
        problems.append(f"{missing} deliveries never arrived")
    if unknown:
        problems.append(f"{unknown} unknown webhook-ids arrived")
    if unverified:
        problems.append(f"{unverified} POSTs not verified")
    return {"missing": missing, "unknown": unknown, "repeats": repeats,
            "unverified": unverified}, problems


def delays(commits: dict[str, float], first: dict[str, float]) -> dict[str, Any]:
    values = [first[i] - at for i, at in commits.items() if i in first]
    return {"p50_ms": _ms(percentile(values, 50)), "p99_ms": _ms(percentile(values, 99)),
            "max_ms": _ms(max(values) if values else None), "count": len(values)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


# --- the dispatcher's side ---------------------------------------------------------------


async def dispatcher_backlog(bench: Bench, count: int, pids: dict[str, int | None]
                             ) -> dict[str, Any]:
    await bench.stack.reset(RESET)
    endpoint_id, path, _ = await bench.endpoint("dispatcher-backlog")
    spent = Spent(pids)
    ids = await bench.commit(endpoint_id, count, 0)
    committed = time.time()
    logged = await bench.until_logged(endpoint_id, count, MIN_WAIT_SECONDS + count / 100)
    logged_at = time.time()
    first, received, unverified = await bench.receiver.arrivals(path)
    figures, problems = check({str(i) for i in ids}, first, received, unverified)
    if not logged:
        problems.append("not every delivery was logged 'succeeded' in time")
    last = max(first.values()) if first else committed
    seconds = last - committed
    return {"side": "dispatcher", "kind": "backlog", "deliveries": count,
            "seconds": round(seconds, 3),
            "deliveries_per_s": round(len(first) / seconds, 1) if seconds > 0 else None,
            "first_arrival_ms": _ms(min(first.values()) - committed) if first else None,
            "logged_s": round(logged_at - committed, 3), **figures, **spent.done(),
            "problems": problems}


async def dispatcher_steady(bench: Bench, rate: float, seconds: float,
                            pids: dict[str, int | None]) -> dict[str, Any]:
    await bench.stack.reset(RESET)
    endpoint_id, path, _ = await bench.endpoint("dispatcher-steady")
    total = int(rate * seconds)
    commits: dict[str, float] = {}
    spent = Spent(pids)
    started = time.monotonic()
    while len(commits) < total:
        due = min(total, int(rate * (time.monotonic() - started)) + 1)
        if due > len(commits):
            ids = await bench.commit(endpoint_id, due - len(commits), len(commits))
            committed = time.time()
            commits.update((str(i), committed) for i in ids)
        await asyncio.sleep(TICK_SECONDS)
    offered_s = time.monotonic() - started
    # As long as a backlog of as many would take at 100/s: a dispatcher slower than the
    # offered rate still gets every delivery measured (its delays then grow as a queue's).
    logged = await bench.until_logged(endpoint_id, total, MIN_WAIT_SECONDS + total / 100)
    first, received, unverified = await bench.receiver.arrivals(path)
    figures, problems = check(set(commits), first, received, unverified)
    if not logged:
        problems.append("not every delivery was logged 'succeeded' in time")
    return {"side": "dispatcher", "kind": "steady", "deliveries": total,
            "offered_per_s": round(total / offered_s, 1), **delays(commits, first),
            **figures, **spent.done(), "problems": problems}


# --- the ceiling: a bare client, no broker, no database ----------------------------------


class BareClient:
    """Signed POSTs of the dispatcher's bodies through the dispatcher's own sender (httpx
    over its pooled transport), at most `concurrency` in flight."""

    def __init__(self, concurrency: int) -> None:
        self.sender = Sender(timeout_seconds=float(_DEFAULTS["webhooks_timeout_seconds"].default),
                             max_response_bytes=int(
                                 _DEFAULTS["webhooks_max_response_bytes"].default),
                             allow_private=True,
                             max_connections=int(_DEFAULTS["webhooks_concurrency"].default))
        self.slots = asyncio.Semaphore(concurrency)
        self.failed = 0

    async def post(self, url: str, signer: Webhook, message: DeliveryMessage) -> None:
        async with self.slots:
            answer = await self.sender.send(url, signer, message)
            self.failed += answer.error is not None

    async def aclose(self) -> None:
        await self.sender.aclose()


def messages(org_id: uuid.UUID, endpoint_id: uuid.UUID, count: int, start: int
             ) -> list[DeliveryMessage]:
    now = dt.datetime.now(dt.UTC)
    return [DeliveryMessage(uuid.uuid4(), endpoint_id, uuid.uuid4(),
                            webhook_body(EVENT_TYPE, now, call_data(org_id, start + index)))
            for index in range(count)]


async def ceiling_backlog(bench: Bench, count: int, concurrency: int,
                          pids: dict[str, int | None]) -> dict[str, Any]:
    endpoint_id, path, secret = await bench.endpoint("ceiling-backlog")
    signer = Webhook(secret)
    batch = messages(bench.org_id, endpoint_id, count, 0)
    client = BareClient(concurrency)
    spent = Spent(pids)
    started = time.time()
    try:
        await asyncio.gather(*(client.post(bench.receiver.url(path), signer, m)
                               for m in batch))
    finally:
        await client.aclose()
    first, received, unverified = await bench.receiver.arrivals(path)
    figures, problems = check({str(m.event_id) for m in batch}, first, received, unverified)
    if client.failed:
        problems.append(f"{client.failed} posts failed")
    seconds = (max(first.values()) if first else started) - started
    return {"side": "ceiling", "kind": "backlog", "deliveries": count,
            "seconds": round(seconds, 3),
            "deliveries_per_s": round(len(first) / seconds, 1) if seconds > 0 else None,
            **figures, **spent.done(), "problems": problems}


async def ceiling_steady(bench: Bench, rate: float, seconds: float, concurrency: int,
                         pids: dict[str, int | None]) -> dict[str, Any]:
    endpoint_id, path, secret = await bench.endpoint("ceiling-steady")
    signer = Webhook(secret)
    total = int(rate * seconds)
    batch = messages(bench.org_id, endpoint_id, total, 0)
    client = BareClient(concurrency)
    due_at: dict[str, float] = {}
    tasks: list[asyncio.Task[None]] = []
    spent = Spent(pids)
    started = time.monotonic()
    try:
        while len(due_at) < total:
            due = min(total, int(rate * (time.monotonic() - started)) + 1)
            now = time.time()
            for message in batch[len(due_at):due]:
                due_at[str(message.event_id)] = now
                tasks.append(asyncio.create_task(
                    client.post(bench.receiver.url(path), signer, message)))
            await asyncio.sleep(TICK_SECONDS)
        offered_s = time.monotonic() - started
        await asyncio.gather(*tasks)
    finally:
        await client.aclose()
    first, received, unverified = await bench.receiver.arrivals(path)
    figures, problems = check(set(due_at), first, received, unverified)
    if client.failed:
        problems.append(f"{client.failed} posts failed")
    return {"side": "ceiling", "kind": "steady", "deliveries": total,
            "offered_per_s": round(total / offered_s, 1), **delays(due_at, first),
            **figures, **spent.done(), "problems": problems}


# --- the benchmark ----------------------------------------------------------------------


async def dispatcher_ready(http: httpx.AsyncClient, dispatcher: Server) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        if dispatcher.exited():
            raise RuntimeError(f"the dispatcher exited:\n{dispatcher.log_tail()}")
        try:
            if (await http.get(f"http://{HOST}:{dispatcher.port}/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the dispatcher was not ready:\n{dispatcher.log_tail()}")
        await asyncio.sleep(0.1)


async def dispatcher_counters(http: httpx.AsyncClient, dispatcher: Server) -> dict[str, float]:
    text = (await http.get(f"http://{HOST}:{dispatcher.port}/metrics")).text
    return {outcome: float(value) for outcome, value in re.findall(
        r'^calltrail_dispatcher_deliveries_total\{outcome="(\w+)"\} (\S+)$', text,
        re.MULTILINE)}


def show(record: dict[str, Any], run: int, runs: int) -> None:
    label = f"{record['side']} {record['kind']}"
    if record["kind"] == "backlog":
        figure = (f"{record['deliveries_per_s'] or 0:8.1f} deliveries/s"
                  f" ({record['deliveries']} in {record['seconds']} s)")
    else:
        figure = (f"delay p50 {record['p50_ms']} ms, p99 {record['p99_ms']} ms, max "
                  f"{record['max_ms']} ms at {record['offered_per_s']}/s")
    print(f"run {run}/{runs} {label:<20} {figure}  CPU {record['cpu_s']}  machine busy "
          f"{record['machine_cpu_busy']:.0%}  repeats {record['repeats']}"
          + (f"  FLAGGED: {'; '.join(record['problems'])}" if record["problems"] else ""),
          flush=True)


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    if not args.own_broker:
        return await measure(args, Stack())
    with RabbitNode() as node:
        print(f"RabbitMQ node {node.name} on :{node.port} (the benchmark's own)", flush=True)
        return await measure(args, Stack(node.url))


async def measure(args: argparse.Namespace, stack: Stack) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info()
    runs: list[dict[str, Any]] = []
    async with stack, httpx.AsyncClient(timeout=30) as http:
        receiver: Receiver = (ProcessReceiver(stack, args.latency, http)
                              if args.receiver == "process" else ThreadReceiver(args.latency))
        await receiver.start()
        try:
            [org] = await stack.create_organizations(1)
            dispatcher = stack.dispatcher("dispatcher", metrics_port=free_port(), env={
                "LOG_LEVEL": "info",
                "WEBHOOKS_ENDPOINT_CONCURRENCY": str(args.endpoint_concurrency),
                **args.settings})
            dispatcher.start()
            await dispatcher_ready(http, dispatcher)
            assert dispatcher.process is not None
            pids = {"dispatcher": dispatcher.process.pid, "receiver": receiver.pid(),
                    "bench": os.getpid()}
            connection = await stack.db()
            try:
                bench = Bench(stack, receiver, uuid.UUID(org.org_id), dispatcher, connection)
                print(f"prefix {stack.prefix}; receiver ({args.receiver}) answering in "
                      f"{args.latency * 1000:g} ms; warming up", flush=True)
                await dispatcher_backlog(bench, WARMUP_DELIVERIES, pids)
                steps: list[Callable[[], Awaitable[dict[str, Any]]]] = [
                    lambda: dispatcher_backlog(bench, args.deliveries, pids),
                    lambda: ceiling_backlog(bench, args.deliveries, args.endpoint_concurrency,
                                            pids),
                    lambda: dispatcher_steady(bench, args.rate, args.seconds, pids),
                    lambda: ceiling_steady(bench, args.rate, args.seconds,
                                           args.endpoint_concurrency, pids),
                ]
                for run in range(1, args.runs + 1):
                    for step in steps:
                        record = {"run": run, **await step()}
                        runs.append(record)
                        show(record, run, args.runs)
                counters = await dispatcher_counters(http, dispatcher)
                exited = dispatcher.exited()
                rss = {name: peak_rss_mib(pid) for name, pid in pids.items() if pid}
            finally:
                await connection.close()
        finally:
            receiver.stop()
        logs = {server.name: server.log_summary() for server in stack.servers}
        stack.copy_logs(RESULTS_DIR / f"dispatch-{started_at:%Y%m%dT%H%M%SZ}-logs")
    if exited:
        for record in runs:
            record["problems"].append("the dispatcher exited")
    return {
        "started_at": started_at.isoformat(),
        "config": {"runs": args.runs, "deliveries": args.deliveries, "rate": args.rate,
                   "seconds": args.seconds, "latency_s": args.latency,
                   "receiver": args.receiver,
                   "endpoint_concurrency": args.endpoint_concurrency,
                   "dispatcher_settings": args.settings,
                   "broker": "own node" if args.own_broker else "the machine's",
                   "tick_ms": TICK_SECONDS * 1000, "warmup": WARMUP_DELIVERIES,
                   "amqp_prefix": stack.prefix, "database": stack.database},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "dispatcher_counters": counters,
        "peak_rss_mib": rss,
        "logs": logs,
        "runs": runs,
        **summarize(runs),
    }


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, dict[str, Any]] = {}
    for side in ("dispatcher", "ceiling"):
        backlog = [r for r in runs if r["side"] == side and r["kind"] == "backlog"]
        steady = [r for r in runs if r["side"] == side and r["kind"] == "steady"]
        rates = [r["deliveries_per_s"] or 0 for r in backlog]
        medians[side] = {
            "deliveries_per_s": statistics.median(rates),
            "deliveries_per_s_min": min(rates), "deliveries_per_s_max": max(rates),
            "p50_ms": statistics.median(r["p50_ms"] or 0 for r in steady),
            "p99_ms": statistics.median(r["p99_ms"] or 0 for r in steady),
            "p99_ms_max": max(r["p99_ms"] or 0 for r in steady),
            # The sender's CPU: the dispatcher's, or the bare client's (this process).
            "cpu_s_backlog": statistics.median(
                r["cpu_s"].get("dispatcher" if side == "dispatcher" else "bench") or 0
                for r in backlog),
            "machine_cpu_busy": statistics.median(
                r["machine_cpu_busy"] or 0 for r in backlog + steady),
            "flagged": sum(bool(r["problems"]) for r in backlog + steady),
        }
    one, ceiling = medians["dispatcher"], medians["ceiling"]
    return {"medians": medians,
            "dispatcher_over_ceiling": round(one["deliveries_per_s"]
                                             / ceiling["deliveries_per_s"], 3)
            if ceiling["deliveries_per_s"] else None,
            "goal": {"deliveries_per_s": GOAL_DELIVERIES_PER_S,
                     "p99_delay_s": GOAL_P99_DELAY_S,
                     "met": {"throughput": one["deliveries_per_s"] >= GOAL_DELIVERIES_PER_S,
                             "delay": one["p99_ms"] <= GOAL_P99_DELAY_S * 1000}}}


def print_table(results: dict[str, Any]) -> None:
    config, medians = results["config"], results["medians"]
    print()
    print(f"dispatch: one dispatcher, one endpoint, a receiver ({config['receiver']}) "
          f"answering in {config['latency_s'] * 1000:g} ms; backlog {config['deliveries']:,}"
          f", steady {config['rate']:g}/s for {config['seconds']:g} s; medians of "
          f"{config['runs']} run(s); WEBHOOKS_ENDPOINT_CONCURRENCY="
          f"{config['endpoint_concurrency']}"
          + "".join(f", {k}={v}" for k, v in config["dispatcher_settings"].items()))
    print(f"{'side':<12}{'deliveries/s':>14}{'min-max':>14}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'CPU s':>8}{'busy':>6}")
    for side, m in medians.items():
        spread = f"{m['deliveries_per_s_min']:.0f}-{m['deliveries_per_s_max']:.0f}"
        flag = f"  FLAGGED in {m['flagged']} measurement(s)" if m["flagged"] else ""
        print(f"{side:<12}{m['deliveries_per_s']:>14.1f}{spread:>14}{m['p50_ms']:>9.1f}"
              f"{m['p99_ms']:>9.1f}{m['cpu_s_backlog']:>8.1f}{m['machine_cpu_busy']:>6.0%}"
              f"{flag}")
    print(f"(ceiling: the dispatcher's sender alone, {config['endpoint_concurrency']} in "
          "flight, no broker, no "
          "database; CPU s: the sender's in the backlog, the dispatcher's or the client's; busy: "
          "the machine's CPU)")
    print(f"dispatcher / ceiling: {results['dispatcher_over_ceiling']}; the dispatcher's "
          f"counters: {results['dispatcher_counters']}")
    goal, met = results["goal"], results["goal"]["met"]
    print(f"goals: >= {goal['deliveries_per_s']} deliveries/s "
          f"{'met' if met['throughput'] else 'NOT met'} "
          f"({medians['dispatcher']['deliveries_per_s']:.0f}); p99 added delay <= "
          f"{goal['p99_delay_s']:g} s at {config['rate']:g}/s "
          f"{'met' if met['delay'] else 'NOT met'} ({medians['dispatcher']['p99_ms']:.0f} ms)")
    problems = [p for r in results["runs"] for p in r["problems"]]
    if problems:
        print("CHECKS FAILED: " + "; ".join(sorted(set(problems))))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dispatch",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--deliveries", type=int, default=20_000,
                        help="the backlog's deliveries (default 20000)")
    parser.add_argument("--rate", type=float, default=float(GOAL_DELIVERIES_PER_S),
                        help="the steady load's deliveries/s (default 500)")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="the steady load's length (default 20)")
    parser.add_argument("--latency", type=float, default=0.05,
                        help="the receiver's answer time in seconds (default 0.05)")
    parser.add_argument("--receiver", choices=("process", "thread"), default="process",
                        help="the receiver as a process of its own (default) or a thread of "
                             "the benchmark's")
    parser.add_argument("--own-broker", action="store_true",
                        help="a RabbitMQ node of the benchmark's own instead of the machine's")
    parser.add_argument("--endpoint-concurrency", type=int, default=ENDPOINT_CONCURRENCY,
                        help="WEBHOOKS_ENDPOINT_CONCURRENCY of the dispatcher, and the "
                             "ceiling's requests in flight (default "
                             f"{ENDPOINT_CONCURRENCY}, the dispatcher's to one endpoint)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="another setting of the dispatcher (repeatable)")
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.set):
        parser.error("--set takes NAME=VALUE")
    args.settings = dict(item.split("=", 1) for item in args.set)
    if min(args.runs, args.deliveries, args.endpoint_concurrency) < 1 or args.rate <= 0 \
            or args.seconds <= 0 or args.latency < 0:
        parser.error("--runs, --deliveries, --endpoint-concurrency >= 1; --rate, --seconds "
                     "> 0; --latency >= 0")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = uvloop.run(benchmark(args))
    print_table(results)
    return write_results("dispatch", results)


if __name__ == "__main__":
    main()
