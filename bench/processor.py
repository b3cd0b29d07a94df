"""Call-processor benchmark: events/s from a pre-filled queue into Postgres.

    .venv/bin/python -m bench.processor [--runs N] [--calls K]

What is measured. The real `calltrail-processor` (default batch size 200, batch wait 20 ms,
or as given) draining a queue that already holds every event, with one consumer process
and with two, on the same machine in the same invocation. The rate is the number of events
over the time from starting the processes until every event is archived (`SELECT count(*)
FROM events` equals the number published) and the queue is empty; the table also shows the
start-up time (until the queue first shrinks) and the rate after it.

Traffic. K realistic calls (`bench.lifecycles`, default 500, about 24,000 events) across
four organizations: status-updates (outbound queued, ringing, in-progress, ended), the
speech-update / conversation-update / user-interrupted chatter of each turn, and the
end-of-call-report, bodies of 1-20 KB, customers that come back (leads repeat), calls in
all directions, interleaved as if 200 calls were under way at once. About 80 % of calls
arrive through their organization's own endpoint (`x-org-id` set, as ingest sets it), the
rest through the shared endpoint with `call.assistantOverrides.metadata.orgId` naming a
real organization, which the processor resolves. Each event is published exactly as ingest
publishes it (headers `x-received-at`, `x-endpoint-id`, `x-org-id`, `x-message-type`,
`x-dedupe-key` from ingest's own envelope reader; routing key `vapi.<type>` on
`<prefix>.events`; a unique message id; persistent; publisher confirms) while no processor
runs.

Method. Each run starts from a fresh state (TRUNCATE calls, leads, daily_stats, events,
unassigned_events; queues purged; CHECKPOINT), publishes, then starts the processes and
polls the queue depth every 20 ms and, once it is empty, the events count. Runs alternate
between one and two consumers, so drifting noise on this shared 2-core machine (broker,
database and processors share it; nothing is pinned) hits both alike; the table reports
medians over runs.

Checks, per run (a failed one flags the run): every published event archived within the
time limit, K calls, every call with `report_received`, `sum(daily_stats.calls)` = K, no
unassigned event, the dead-letter and retry queues empty, no processor exited. The peak RSS
(VmHWM) of each processor process is recorded at the end of its run.

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`,
removed at the end. Results go to `bench/results/processor-<UTC timestamp>.json`, with,
per run, each processor's CPU seconds and the whole machine's CPU busy share while it ran
(to tell a processor-bound run from a machine-bound one).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime as dt
import json
import os
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench.ingest import DEFAULT_SAMPLES, REPO_ROOT, RESULTS_DIR, Server, machine_info
from bench.lifecycles import CallFactory, Event, interleave
from bench.stack import BenchStack, cpu_seconds, machine_cpu_ticks, peak_rss_mib

GOAL_EVENTS_PER_S = 3000  # with one consumer
CONSUMER_COUNTS = (1, 2)
ORGANIZATIONS = 4
CONCURRENT_CALLS = 200  # calls whose events interleave in the queue
SEED = 20261121
POLL_SECONDS = 0.02
STARTUP_TIMEOUT_SECONDS = 30
MIN_DRAIN_TIMEOUT_SECONDS = 60

RESET = "TRUNCATE calls, leads, daily_stats, events, unassigned_events"
CHECKS = """
    SELECT (SELECT count(*) FROM events) AS events,
           (SELECT count(*) FROM calls) AS calls,
           (SELECT count(*) FROM calls WHERE NOT report_received) AS calls_without_report,
           (SELECT count(*) FROM calls WHERE status IS DISTINCT FROM 'ended') AS calls_not_ended,
           (SELECT coalesce(sum(calls), 0) FROM daily_stats) AS daily_stats_calls,
           (SELECT count(*) FROM leads) AS leads,
           (SELECT count(*) FROM calls WHERE lead_id IS NOT NULL) AS calls_with_lead,
           (SELECT count(*) FROM unassigned_events) AS unassigned_events"""


async def reset(stack: BenchStack) -> None:
    connection = await stack.db()
    try:
        await connection.execute(RESET)
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()
    await stack.purge_all()


async def drain(stack: BenchStack, servers: list[Server], total: int) -> dict[str, Any]:
    """Start the processes; poll until every event is archived and the queue is empty."""
    deadline_s = max(MIN_DRAIN_TIMEOUT_SECONDS, total / 250) + STARTUP_TIMEOUT_SECONDS
    connection = await stack.db()
    ticks_before = machine_cpu_ticks()
    started = time.perf_counter()
    for server in servers:
        server.start()
    first_taken: float | None = None
    archived, depth, problem = 0, total, None
    try:
        while True:
            now = time.perf_counter()
            if now - started > deadline_s:
                problem = f"not drained within {deadline_s:.0f} s"
                break
            if any(server.exited() for server in servers):
                problem = "a processor exited"
                break
            depth = await stack.queue_depth()
            if first_taken is None and depth < total:
                first_taken = time.perf_counter()
            if depth == 0:
                archived = int(await connection.fetchval("SELECT count(*) FROM events"))
                if archived >= total:
                    break
            await asyncio.sleep(POLL_SECONDS)
    finally:
        await connection.close()
    done = time.perf_counter()
    busy, total_ticks = (after - before for after, before
                         in zip(machine_cpu_ticks(), ticks_before, strict=True))
    return {"seconds": done - started,
            "machine_cpu_busy": round(busy / total_ticks, 3) if total_ticks else None,
            "startup_s": (first_taken - started) if first_taken else None,
            "after_startup_s": (done - first_taken) if first_taken else None,
            "archived_when_stopped": archived, "queue_when_stopped": depth,
            "problem": problem}


async def check(stack: BenchStack, *, calls: int, events: int) -> tuple[dict[str, Any], list[str]]:
    connection = await stack.db()
    try:
        row = dict(await connection.fetchrow(CHECKS))
    finally:
        await connection.close()
    row = {k: int(v) for k, v in row.items()}
    row["queues"] = await stack.dead_letters()
    row["queue_left"] = await stack.queue_depth()
    problems = []
    if row["events"] != events:
        problems.append(f"{row['events']} events archived, {events} published")
    if row["calls"] != calls:
        problems.append(f"{row['calls']} calls, expected {calls}")
    if row["calls_without_report"]:
        problems.append(f"{row['calls_without_report']} calls without report_received")
    if row["daily_stats_calls"] != calls:
        problems.append(f"sum(daily_stats.calls) = {row['daily_stats_calls']}, expected {calls}")
    if row["unassigned_events"]:
        problems.append(f"{row['unassigned_events']} unassigned events")
    for name, depth in row["queues"].items():
        if depth:
            problems.append(f"{depth} messages in {name}")
    return row, problems


async def measure(stack: BenchStack, events: list[Event], *, calls: int, consumers: int,
                  run: int, args: argparse.Namespace) -> dict[str, Any]:
    await reset(stack)
    run_tag = f"r{run}c{consumers}-{uuid.uuid4().hex[:6]}"
    publish_s = await stack.publish(events, run_tag)
    queued = await stack.queue_depth()
    servers = [stack.processor(f"processor-r{run}-c{consumers}-{index + 1}",
                               batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms)
               for index in range(consumers)]
    try:
        timing = await drain(stack, servers, len(events))
        alive = [server.process.pid if server.process and not server.exited() else None
                 for server in servers]
        rss = [peak_rss_mib(pid) if pid else None for pid in alive]
        cpu = [cpu_seconds(pid) if pid else None for pid in alive]
    finally:
        for server in servers:
            server.stop()
    checks, problems = await check(stack, calls=calls, events=len(events))
    if queued != len(events):
        problems.insert(0, f"queue held {queued} of {len(events)} published events")
    if timing["problem"]:
        problems.insert(0, timing["problem"])
    exits = [server.process.returncode for server in servers if server.process]
    if any(code not in (0, None) for code in exits):
        problems.append(f"processor exit codes {exits}")
    seconds = timing["seconds"]
    record = {
        "run": run, "consumers": consumers, "events": len(events), "calls": calls,
        "publish_s": round(publish_s, 3),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(events) / seconds, 1),
        "startup_s": round(timing["startup_s"], 3) if timing["startup_s"] else None,
        "events_per_s_after_startup": round(len(events) / timing["after_startup_s"], 1)
        if timing["after_startup_s"] else None,
        "peak_rss_mib": rss,
        "processor_cpu_s": cpu,
        "machine_cpu_busy": timing["machine_cpu_busy"],
        "exit_codes": exits,
        "checks": checks,
        "problems": problems,
        "flagged": bool(problems),
        "processor_logs": {server.name: server.log_summary() for server in servers},
    }
    print(f"run {run}/{args.runs} consumers {consumers}  {record['events_per_s']:8.1f} events/s"
          f"  {seconds:6.2f} s (start-up {record['startup_s']} s)"
          f"  RSS {rss} MiB  CPU {cpu} s  machine busy {timing['machine_cpu_busy']:.0%}"
          + (f"  FLAGGED: {'; '.join(problems)}" if problems else ""), flush=True)
    return record


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for consumers in CONSUMER_COUNTS:
        records = [r for r in runs if r["consumers"] == consumers]
        rates = [r["events_per_s"] for r in records]
        after = [r["events_per_s_after_startup"] for r in records
                 if r["events_per_s_after_startup"]]
        startups = [r["startup_s"] for r in records if r["startup_s"]]
        rss = [m for r in records for m in r["peak_rss_mib"] if m is not None]
        medians[str(consumers)] = {
            "events_per_s": statistics.median(rates),
            "events_per_s_min": min(rates),
            "events_per_s_max": max(rates),
            "seconds": statistics.median(r["seconds"] for r in records),
            "startup_s": statistics.median(startups) if startups else None,
            "events_per_s_after_startup": statistics.median(after) if after else None,
            "peak_rss_mib_max": max(rss) if rss else None,
            "processor_cpu_s": statistics.median(
                sum(c for c in r["processor_cpu_s"] if c is not None) for r in records),
            "machine_cpu_busy": statistics.median(
                r["machine_cpu_busy"] or 0 for r in records),
            "flagged_runs": sum(r["flagged"] for r in records),
        }
    one = medians["1"]["events_per_s"]
    two = medians["2"]["events_per_s"]
    return {
        "medians": medians,
        "two_over_one_consumer": round(two / one, 3) if one else None,
        "goal": {"one_consumer_events_per_s": GOAL_EVENTS_PER_S,
                 "met": one >= GOAL_EVENTS_PER_S},
    }


def print_table(summary: dict[str, Any], *, runs: int, events: int, calls: int) -> None:
    print()
    print(f"medians over {runs} run(s); {events} events of {calls} calls per run")
    print(f"{'consumers':<11}{'events/s':>10}{'min-max':>16}{'seconds':>9}{'start-up s':>12}"
          f"{'ev/s after':>12}{'RSS MiB':>9}{'CPU s':>7}{'busy':>6}")
    for consumers, m in summary["medians"].items():
        flag = f"  FLAGGED in {m['flagged_runs']} run(s)" if m["flagged_runs"] else ""
        spread = f"{m['events_per_s_min']:.0f}-{m['events_per_s_max']:.0f}"
        startup = f"{m['startup_s']:.2f}" if m["startup_s"] is not None else "-"
        after = (f"{m['events_per_s_after_startup']:.0f}"
                 if m["events_per_s_after_startup"] is not None else "-")
        print(f"{consumers:<11}{m['events_per_s']:>10.1f}{spread:>16}{m['seconds']:>9.2f}"
              f"{startup:>12}{after:>12}{m['peak_rss_mib_max'] or 0:>9.1f}"
              f"{m['processor_cpu_s']:>7.1f}{m['machine_cpu_busy']:>6.0%}{flag}")
    print("(RSS: the largest peak of any processor process; CPU s: all processors' CPU time; "
          "busy: the machine's CPU busy share while draining)")
    print()
    print(f"2 consumers / 1 consumer: {summary['two_over_one_consumer']}")
    one = summary["medians"]["1"]["events_per_s"]
    print(f"goal: >= {GOAL_EVENTS_PER_S} events/s with one consumer: "
          f"{'met' if summary['goal']['met'] else 'NOT met'} ({one:.0f})")


def event_stats(events: list[Event]) -> dict[str, Any]:
    sizes = [len(e.body) for e in events]
    by_type: dict[str, list[int]] = collections.defaultdict(list)
    for event in events:
        by_type[event.message_type].append(len(event.body))
    return {
        "count": len(events),
        "bytes_min": min(sizes), "bytes_median": statistics.median(sizes),
        "bytes_max": max(sizes), "bytes_total": sum(sizes),
        "types": {t: {"count": len(s), "bytes_median": statistics.median(s)}
                  for t, s in sorted(by_type.items())},
        "shared_endpoint": sum(e.shared for e in events),
    }


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info()
    async with BenchStack() as stack:
        organizations = await stack.create_organizations(ORGANIZATIONS)
        factory = CallFactory(args.samples, organizations, seed=SEED,
                              now_ms=int(started_at.timestamp() * 1000))
        calls = factory.calls(args.calls)
        events = list(interleave(calls, random.Random(SEED), CONCURRENT_CALLS))
        stats = event_stats(events)
        print(f"{len(events)} events of {len(calls)} calls "
              f"({collections.Counter(c.direction for c in calls)}), "
              f"{stats['bytes_min']}-{stats['bytes_max']} bytes, "
              f"{stats['shared_endpoint']} via the shared endpoint; "
              f"prefix {stack.prefix}", flush=True)
        runs = []
        for run in range(1, args.runs + 1):
            for consumers in CONSUMER_COUNTS:
                runs.append(await measure(stack, events, calls=len(calls),
                                          consumers=consumers, run=run, args=args))
    summary = summarize(runs)
    return {
        "started_at": started_at.isoformat(),
        "config": {"runs": args.runs, "calls": args.calls, "organizations": ORGANIZATIONS,
                   "batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms,
                   "concurrent_calls": CONCURRENT_CALLS, "seed": SEED,
                   "poll_ms": POLL_SECONDS * 1000, "consumer_counts": list(CONSUMER_COUNTS),
                   "amqp_prefix": stack.prefix, "database": stack.database},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "events": stats,
        "runs": runs,
        **summary,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.processor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3,
                        help="runs, each with 1 and with 2 consumers (default 3)")
    parser.add_argument("--calls", type=int, default=500,
                        help="calls per run (default 500, about 24,000 events)")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="PROCESSOR_BATCH_SIZE (default 200, the service default)")
    parser.add_argument("--batch-wait-ms", type=int, default=20,
                        help="PROCESSOR_BATCH_WAIT_MS (default 20, the service default)")
    parser.add_argument("--samples", type=Path, default=DEFAULT_SAMPLES,
                        help=f"Vapi sample payloads (default {DEFAULT_SAMPLES})")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.calls < 1 or args.batch_size < 1 or args.batch_wait_ms < 0:
        parser.error("--runs, --calls and --batch-size must be >= 1, --batch-wait-ms >= 0")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    print_table(results, runs=args.runs, events=results["events"]["count"],
                calls=args.calls)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"processor-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}")
    if any(r["flagged"] for r in results["runs"]):
        print("WARNING: some runs failed their checks (see FLAGGED above)")
    return path


if __name__ == "__main__":
    main()
