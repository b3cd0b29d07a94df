"""End-to-end benchmark: from a webhook sent to its call row visible, at a steady rate.

    .venv/bin/python -m bench.end_to_end [--rate 500] [--duration 20] [--runs N]

What is measured. The real services as processes on their own prefix and database:
`calltrail-ingest` and one `calltrail-processor` (service defaults: batch 200, wait 20 ms).
One organization; every webhook goes to its endpoint `POST /webhooks/vapi/{endpoint_id}`
with its secret in `X-Vapi-Secret`. The measured event is the first status-update of each
new call (a new call id each): latency = the moment the `calls` row is first seen in
Postgres - the moment the request was written to the socket. Reported per run: p50, p90,
p99, max and count, and how many calls never appeared within 10 s (flagged); the table
shows medians over runs, and the percentiles of all runs' samples pooled.

Traffic. An open-loop schedule: request i is sent at t0 + i/rate whatever became of the
earlier ones, each on a free keep-alive connection of a pool (a new one is opened when none
is free), from pre-formatted HTTP/1.1 requests written with asyncio streams (uvloop), so the
sender costs little of the two shared cores. How far behind its schedule each request went
out is recorded (p50, p99, max); more than 1 % of requests over 10 ms late, or any over
100 ms late, flags the run. The requests are real call lifecycles
(`calltrail_testkit.lifecycles`) with 50 calls under way at once: status-updates,
speech-update / conversation-update / user-interrupted chatter, end-of-call-reports, bodies
of 1-20 KB; so the processor sees a
realistic mix, and only about one request in 45 is a measured one. The first `--warmup`
seconds of each run are sent the same way but not measured.

Visibility. A separate connection polls every `--poll-ms` (default 3) for the outstanding
call ids, `SELECT id FROM calls WHERE id = ANY($1)`, and stamps each id found with the time
the answer arrived: latencies are upper bounds, coarse by one poll interval plus a query.

Each run also records the CPU seconds of ingest, the processor and the benchmark's own
client, and the machine's CPU busy share, since all of them share the two cores.

Checks. Every answer must be 200 (others and socket errors are counted and flag the run),
ingest must have published every event rather than spooled it, and at the end every
accepted event must be archived with the dead-letter queue empty.

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`,
removed at the end. Results go to `bench/results/end_to_end-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import itertools
import os
import random
import secrets
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from bench.harness import machine_info, write_results
from calltrail_testkit.lifecycles import Call, CallFactory, Event, interleave
from calltrail_testkit.processes import cpu_seconds, machine_cpu_ticks, peak_rss_mib
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack, ingest_events
from calltrail_testkit.vapi_sender import ConnectionPool, org_request, percentile, read_answer

GOAL_P99_MS = 100
NEVER_SECONDS = 10  # a call not visible this long after its first event never appeared
# The sender fell behind, flagging the run: more than 1 % of requests sent more than 10 ms
# late, or any more than 100 ms late.
BEHIND_MS, BEHIND_SHARE, BEHIND_MAX_MS = 10, 0.01, 100
CONCURRENT_CALLS = 50
PREOPENED_CONNECTIONS = 32
REQUEST_TIMEOUT_SECONDS = 10
DRAIN_TIMEOUT_SECONDS = 60
SEED = 20261122
SELECT_SEEN = "SELECT id FROM calls WHERE id = ANY($1::text[])"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# ---------------------------------------------------------------------------------------
# The schedule


@dataclass(frozen=True)
class Request:
    event: Event
    raw: bytes  # the whole HTTP/1.1 request


def build_schedule(factory: CallFactory, count: int, port: int) -> list[Request]:
    """`count` requests: the interleaved events of as many new calls as it takes."""
    now_ms = int(time.time() * 1000)

    def calls() -> Iterator[Call]:
        for _ in itertools.count():
            yield factory.call(created_ms=now_ms)

    events = itertools.islice(interleave(calls(), random.Random(SEED), CONCURRENT_CALLS), count)
    return [Request(event, org_request(event, event.org, port)) for event in events]


# ---------------------------------------------------------------------------------------
# The sender and the poller


@dataclass
class RunState:
    measured_from: float  # monotonic time: first events scheduled before it are not measured
    sent_at: dict[str, float] = field(default_factory=dict)  # measured call id -> sent
    seen_at: dict[str, float] = field(default_factory=dict)
    outstanding: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    lags: list[float] = field(default_factory=list)
    answer_seconds: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    connections_opened: int = 0
    sending: bool = True


async def send(pool: ConnectionPool, state: RunState, request: Request, scheduled: float,
               measured: bool) -> None:
    try:
        connection = await pool.get()
    except OSError as error:
        state.errors[type(error).__name__] += 1
        return
    reader, writer = connection
    sent = time.perf_counter()
    state.lags.append(sent - scheduled)
    if measured:
        state.sent_at[request.event.call_id] = sent
        state.outstanding.add(request.event.call_id)
    try:
        writer.write(request.raw)
        status = await read_answer(reader, REQUEST_TIMEOUT_SECONDS)
        state.answer_seconds.append(time.perf_counter() - sent)
        state.statuses[status] += 1
        pool.put(connection)
    except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
            asyncio.LimitOverrunError) as error:
        state.errors[type(error).__name__] += 1
        writer.close()


async def poll(stack: Stack, state: RunState, interval: float) -> None:
    """Stamp each outstanding call id when its row is first seen; stop when none is left."""
    connection = await stack.db()
    try:
        while state.sending or state.outstanding:
            if state.outstanding:
                rows = await connection.fetch(SELECT_SEEN, list(state.outstanding))
                now = time.perf_counter()
                for row in rows:
                    state.seen_at[row["id"]] = now
                    state.outstanding.discard(row["id"])
                for call_id in [c for c in state.outstanding
                                if now - state.sent_at[c] > NEVER_SECONDS]:
                    state.outstanding.discard(call_id)
                    state.missing.add(call_id)
            await asyncio.sleep(interval)
    finally:
        await connection.close()


async def run_schedule(stack: Stack, port: int, schedule: list[Request], *, rate: float,
                       warmup: float, poll_interval: float) -> RunState:
    pool = ConnectionPool(port)
    await pool.prefill(PREOPENED_CONNECTIONS)
    t0 = time.perf_counter() + 0.2
    state = RunState(measured_from=t0 + warmup)
    poller = asyncio.create_task(poll(stack, state, poll_interval))
    tasks: set[asyncio.Task[None]] = set()
    try:
        for index, request in enumerate(schedule):
            scheduled = t0 + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            measured = request.event.first and scheduled >= state.measured_from
            task = asyncio.create_task(send(pool, state, request, scheduled, measured))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_SECONDS + 5)
    finally:
        state.sending = False
        await asyncio.wait_for(poller, NEVER_SECONDS + 5)
        pool.close()
    state.connections_opened = pool.opened
    return state


def run_record(state: RunState, *, index: int, rate: float, sent: int,
               spooled: int) -> dict[str, Any]:
    latencies = [state.seen_at[c] - state.sent_at[c] for c in state.seen_at
                 if c in state.sent_at]
    statuses = dict(state.statuses)
    ok = statuses.get(200, 0)
    behind = sum(lag * 1000 > BEHIND_MS for lag in state.lags)
    worst_ms = max(state.lags, default=0) * 1000
    problems = []
    if state.missing:
        problems.append(f"{len(state.missing)} calls never appeared within {NEVER_SECONDS} s")
    if ok != sent:
        problems.append(f"{sent - ok} requests not answered 200 ({statuses}, "
                        f"errors {dict(state.errors)})")
    if behind > BEHIND_SHARE * sent or worst_ms > BEHIND_MAX_MS:
        problems.append(f"sender behind schedule: {behind} requests more than {BEHIND_MS} ms "
                        f"late, the latest {worst_ms:.1f} ms")
    if spooled:
        problems.append(f"ingest spooled {spooled} events")
    return {
        "run": index,
        "rate": rate,
        "requests": sent,
        "measured": len(state.sent_at),
        "seen": len(latencies),
        "never_seen": len(state.missing),
        "latency_ms": {"p50": _ms(percentile(latencies, 50)),
                       "p90": _ms(percentile(latencies, 90)),
                       "p99": _ms(percentile(latencies, 99)),
                       "max": _ms(max(latencies, default=None)),
                       "min": _ms(min(latencies, default=None))},
        "latencies_ms": [_ms(v) for v in sorted(latencies)],
        "answer_ms": {"p50": _ms(percentile(state.answer_seconds, 50)),
                      "p99": _ms(percentile(state.answer_seconds, 99)),
                      "max": _ms(max(state.answer_seconds, default=None))},
        "behind_schedule_ms": {"p50": _ms(percentile(state.lags, 50)),
                               "p99": _ms(percentile(state.lags, 99)),
                               "max": _ms(max(state.lags, default=None)),
                               f"over_{BEHIND_MS}ms": behind},
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": dict(state.errors),
        "connections_opened": state.connections_opened,
        "ingest_spooled": spooled,
        "problems": problems,
        "flagged": bool(problems),
    }


# ---------------------------------------------------------------------------------------
# The benchmark


async def drained(stack: Stack) -> bool:
    """Wait until the processor has taken every queued event (bounded)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while await stack.queue_depth() > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def final_checks(stack: Stack, accepted: int) -> dict[str, Any]:
    connection = await stack.db()
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    try:
        archived = await connection.fetchval("SELECT count(*) FROM events")
        while archived < accepted and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            archived = await connection.fetchval("SELECT count(*) FROM events")
        calls = await connection.fetchval("SELECT count(*) FROM calls")
        leads = await connection.fetchval("SELECT count(*) FROM leads")
    finally:
        await connection.close()
    queues = await stack.dead_letters()
    problems = []
    if archived < accepted:
        problems.append(f"{archived} events archived of {accepted} accepted")
    problems += [f"{depth} messages in {name}" for name, depth in queues.items() if depth]
    return {"accepted": accepted, "archived": int(archived), "calls": int(calls),
            "leads": int(leads), "queues": queues, "problems": problems}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(path: tuple[str, str]) -> float | None:
        values = [r[path[0]][path[1]] for r in runs if r[path[0]][path[1]] is not None]
        return round(statistics.median(values), 2) if values else None

    pooled = [v for r in runs for v in r["latencies_ms"]]
    medians = {
        "p50_ms": median(("latency_ms", "p50")),
        "p90_ms": median(("latency_ms", "p90")),
        "p99_ms": median(("latency_ms", "p99")),
        "max_ms": median(("latency_ms", "max")),
        "answer_p99_ms": median(("answer_ms", "p99")),
        "behind_schedule_p99_ms": median(("behind_schedule_ms", "p99")),
        "behind_schedule_max_ms": median(("behind_schedule_ms", "max")),
    }
    p99 = medians["p99_ms"]
    return {
        "medians": medians,
        "pooled": {"count": len(pooled),
                   "p50_ms": round(percentile(pooled, 50) or 0, 2),
                   "p99_ms": round(percentile(pooled, 99) or 0, 2),
                   "max_ms": max(pooled, default=None)},
        "never_seen": sum(r["never_seen"] for r in runs),
        "flagged_runs": sum(r["flagged"] for r in runs),
        "goal": {"p99_ms": GOAL_P99_MS, "met": p99 is not None and p99 <= GOAL_P99_MS},
    }


def print_table(results: dict[str, Any]) -> None:
    config, summary = results["config"], results["summary"]
    print()
    print(f"webhook sent -> call row visible, {config['rate']} events/s open loop, "
          f"{config['duration_s']} s measured per run; medians over {config['runs']} run(s)")
    print(f"{'run':<8}{'calls':>7}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'never':>7}{'ack p99':>9}{'behind p99/max ms':>20}")
    for r in results["runs"]:
        lat, lag = r["latency_ms"], r["behind_schedule_ms"]
        behind = f"{lag['p99'] or 0:.1f}/{lag['max'] or 0:.1f}"
        flag = "  FLAGGED" if r["flagged"] else ""
        print(f"{r['run']:<8}{r['seen']:>7}{lat['p50'] or 0:>9.1f}{lat['p90'] or 0:>9.1f}"
              f"{lat['p99'] or 0:>9.1f}{lat['max'] or 0:>9.1f}{r['never_seen']:>7}"
              f"{r['answer_ms']['p99'] or 0:>9.1f}{behind:>20}{flag}")
    m = summary["medians"]
    print(f"{'median':<8}{'':>7}{m['p50_ms'] or 0:>9.1f}{m['p90_ms'] or 0:>9.1f}"
          f"{m['p99_ms'] or 0:>9.1f}{m['max_ms'] or 0:>9.1f}{summary['never_seen']:>7}")
    pooled = summary["pooled"]
    print(f"pooled over runs: {pooled['count']} calls, p50 {pooled['p50_ms']} ms, "
          f"p99 {pooled['p99_ms']} ms, max {pooled['max_ms']} ms")
    print(f"goal: p99 <= {GOAL_P99_MS} ms: {'met' if summary['goal']['met'] else 'NOT met'} "
          f"({m['p99_ms']} ms)")


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info()
    per_run = int(args.rate * (args.warmup + args.duration))
    async with Stack() as stack, httpx.AsyncClient(timeout=10) as client:
        (org,) = await stack.create_organizations(1)
        ingest = stack.ingest(shared_secret=secrets.token_urlsafe(32))  # shared: unused
        processor = stack.processor("processor", batch_size=args.batch_size,
                                    batch_wait_ms=args.batch_wait_ms)
        factory = CallFactory(args.samples, [org], seed=SEED,
                              now_ms=int(started_at.timestamp() * 1000), shared_share=0)
        ingest.start()
        processor.start()
        # The probe, a call's first status-update, is accepted and archived like any other.
        await stack.wait_ready(client, ingest, processor, factory.call().events[0])
        print(f"ingest :{ingest.port} and processor ready; {args.runs} run(s) of "
              f"{args.warmup} s warm-up + {args.duration} s at {args.rate} events/s "
              f"({per_run} requests each); prefix {stack.prefix}", flush=True)
        runs = []
        accepted = (await ingest_events(client, ingest)).get("published", 0)
        for index in range(1, args.runs + 1):
            schedule = build_schedule(factory, per_run, ingest.port)
            before = await ingest_events(client, ingest)
            cpu_before = {s.name: cpu_seconds(s.process.pid) for s in (ingest, processor)
                          if s.process}
            ticks_before, own_cpu_before = machine_cpu_ticks(), time.process_time()
            state = await run_schedule(stack, ingest.port, schedule, rate=args.rate,
                                       warmup=args.warmup, poll_interval=args.poll_ms / 1000)
            busy, total_ticks = (a - b for a, b in zip(machine_cpu_ticks(), ticks_before,
                                                       strict=True))
            own_cpu = time.process_time() - own_cpu_before
            cpu = {s.name: round((cpu_seconds(s.process.pid) or 0) - (cpu_before[s.name] or 0), 2)
                   for s in (ingest, processor) if s.process}
            after = await ingest_events(client, ingest)
            spooled = int(after.get("spooled", 0) - before.get("spooled", 0))
            accepted += int(sum(after.values()) - sum(before.values()))
            record = run_record(state, index=index, rate=args.rate, sent=len(schedule),
                                spooled=spooled)
            record["cpu_s"] = {**cpu, "bench client": round(own_cpu, 2)}
            record["machine_cpu_busy"] = round(busy / total_ticks, 3) if total_ticks else None
            record["types"] = dict(collections.Counter(r.event.message_type
                                                       for r in schedule))
            if not await drained(stack):
                record["problems"].append("the queue did not drain after the run")
                record["flagged"] = True
            runs.append(record)
            lat, lag = record["latency_ms"], record["behind_schedule_ms"]
            print(f"run {index}/{args.runs}  {record['seen']} calls  p50 {lat['p50']} ms"
                  f"  p99 {lat['p99']} ms  max {lat['max']} ms  never {record['never_seen']}"
                  f"  behind schedule p99 {lag['p99']} ms max {lag['max']} ms"
                  f"  CPU s {record['cpu_s']}  machine busy {record['machine_cpu_busy']:.0%}"
                  + (f"  FLAGGED: {'; '.join(record['problems'])}" if record["flagged"]
                     else ""), flush=True)
        checks = await final_checks(stack, int(accepted))
        checks["peak_rss_mib"] = {s.name: peak_rss_mib(s.process.pid)
                                  for s in (ingest, processor) if s.process}
        for server in (ingest, processor):
            server.stop()
        logs = {server.name: server.log_summary() for server in (ingest, processor)}
    return {
        "started_at": started_at.isoformat(),
        "config": {"rate": args.rate, "duration_s": args.duration, "warmup_s": args.warmup,
                   "runs": args.runs, "poll_ms": args.poll_ms, "batch_size": args.batch_size,
                   "batch_wait_ms": args.batch_wait_ms, "concurrent_calls": CONCURRENT_CALLS,
                   "never_seconds": NEVER_SECONDS, "seed": SEED,
                   "amqp_prefix": stack.prefix, "database": stack.database},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "runs": runs,
        "summary": summarize(runs),
        "final_checks": checks,
        "server_logs": logs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500,
                        help="webhooks per second, open loop (default 500)")
    parser.add_argument("--duration", type=float, default=20,
                        help="seconds measured per run (default 20)")
    parser.add_argument("--warmup", type=float, default=3,
                        help="seconds sent before measuring, per run (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--poll-ms", type=float, default=3,
                        help="database poll interval in ms (default 3)")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="PROCESSOR_BATCH_SIZE (default 200, the service default)")
    parser.add_argument("--batch-wait-ms", type=int, default=20,
                        help="PROCESSOR_BATCH_WAIT_MS (default 20, the service default)")
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR,
                        help=f"Vapi sample payloads (default {SAMPLES_DIR})")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.warmup < 0 or args.runs < 1 \
            or not 1 <= args.poll_ms <= 50:
        parser.error("--rate and --duration must be > 0, --warmup >= 0, --runs >= 1, "
                     "--poll-ms between 1 and 50")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = uvloop.run(benchmark(args))
    print_table(results)
    checks = results["final_checks"]
    print(f"after all runs: {checks['archived']} of {checks['accepted']} accepted events "
          f"archived, {checks['calls']} calls, {checks['leads']} leads, dead letters "
          f"{sum(checks['queues'].values())}")
    path = write_results("end_to_end", results)
    if results["summary"]["flagged_runs"] or checks["problems"]:
        print("WARNING: " + "; ".join(
            [f"{results['summary']['flagged_runs']} flagged run(s)"] + checks["problems"]))
    return path


if __name__ == "__main__":
    main()
