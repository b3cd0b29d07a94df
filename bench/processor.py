"""Call-processor benchmark: events/s from a pre-filled queue into Postgres.

    .venv/bin/python -m bench.processor [--mix {default,call-only,both}] [--runs N]
                                        [--calls K] [--consumers 1,2]

What is measured. The real `calltrail-processor` (default batch size 200, batch wait 20 ms,
or as given) draining a queue that already holds every event, with one consumer process
and with two, and the ceiling: `bench.bare_consumer`, a consumer that only writes the same
events to the archive in batches and acknowledges them. All on the same machine in the same
invocation. The rate is the number of events over the time from starting the processes
until every event is archived (`SELECT count(*) FROM events` equals the number published)
and the queue is empty; the table also shows the start-up time (until the queue first
shrinks) and the rate after it, and one processor's rate over the ceiling's.

Traffic, one or both mixes (`calltrail_testkit.lifecycles`), across four organizations, calls in all
directions interleaved as if 200 calls were under way at once, customers that come back
(leads repeat):
- `default` (Vapi's default `serverMessages`), K calls (default 500, about 24,000 events):
  status-updates (outbound queued, ringing, in-progress, ended), the speech-update /
  conversation-update / user-interrupted chatter of each turn, and the end-of-call-report,
  bodies of 1-20 KB; about 9 % of events change a call.
- `call-only` (`serverMessages` set to status-update and end-of-call-report), K calls
  (default 5,000, about 21,000 events): the same status-updates and reports with
  transcripts of 1-10 KB; every event changes a call, and each customer calls about ten
  times.
About 80 % of calls
arrive through their organization's own endpoint (`x-org-id` set, as ingest sets it), the
rest through the shared endpoint with `call.assistantOverrides.metadata.orgId` naming a
real organization, which the processor resolves. Each event is published exactly as ingest
publishes it (headers `x-received-at`, `x-endpoint-id`, `x-org-id`, `x-message-type`,
`x-dedupe-key` from ingest's own envelope reader; routing key `vapi.<type>` on
`<prefix>.events`; a unique message id; persistent; publisher confirms) while no processor
runs.

Method. Each measurement starts from a fresh state (TRUNCATE calls, leads, daily_stats,
events, unassigned_events; queues purged; CHECKPOINT), publishes, then starts the processes
and polls the queue depth every 20 ms and, once it is empty, the events count. Each run
measures every side of its mix in turn (one consumer, the bare consumer, two), so drifting
noise on this shared 2-core machine (broker, database and processors share it; nothing is
pinned) hits all alike; the table reports medians over runs.

Checks, per measurement (a failed one flags it): every published event archived within the
time limit, the dead-letter and retry queues empty, no process exited; for the processor
also K calls, every call with `report_received`, `sum(daily_stats.calls)` = K and no
unassigned event. The peak RSS (VmHWM) of each process is recorded at the end of its run.

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
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT, machine_info, write_results
from calltrail_testkit.lifecycles import (
    CALL_ONLY_MIX,
    DEFAULT_MIX,
    MIXES,
    CallFactory,
    Event,
    interleave,
)
from calltrail_testkit.processes import Server, cpu_seconds, machine_cpu_ticks, peak_rss_mib
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack

GOAL_EVENTS_PER_S = 3000  # with one consumer, on either mix
GOAL_CEILING_RATIO = 0.5  # one consumer over the bare consumer, on the call-only mix
DEFAULT_CALLS = {DEFAULT_MIX: 500, CALL_ONLY_MIX: 5000}
CONSUMER_COUNTS = (1, 2)
BARE = "bare"  # the side that runs bench.bare_consumer instead of the processor
ORGANIZATIONS = 4
CONCURRENT_CALLS = 200  # calls whose events interleave in the queue
SEED = 20261121
POLL_SECONDS = 0.02
STARTUP_TIMEOUT_SECONDS = 30
MIN_DRAIN_TIMEOUT_SECONDS = 60

RESET = ("TRUNCATE calls, leads, daily_stats_shards, daily_call_outcome_shards, "
         "daily_assistant_shards, events, "
         "unassigned_events")
CHECKS = """
    SELECT (SELECT count(*) FROM events) AS events,
           (SELECT count(*) FROM calls) AS calls,
           (SELECT count(*) FROM calls WHERE NOT report_received) AS calls_without_report,
           (SELECT count(*) FROM calls WHERE status IS DISTINCT FROM 'ended') AS calls_not_ended,
           (SELECT coalesce(sum(calls), 0) FROM daily_stats) AS daily_stats_calls,
           (SELECT count(*) FROM leads) AS leads,
           (SELECT count(*) FROM calls WHERE lead_id IS NOT NULL) AS calls_with_lead,
           (SELECT count(*) FROM unassigned_events) AS unassigned_events"""


async def drain(stack: Stack, servers: list[Server], total: int) -> dict[str, Any]:
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
                problem = "a process exited"
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


async def check(stack: Stack, *, calls: int, events: int, bare: bool
                ) -> tuple[dict[str, Any], list[str]]:
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
    if not bare:  # the bare consumer only archives
        if row["calls"] != calls:
            problems.append(f"{row['calls']} calls, expected {calls}")
        if row["calls_without_report"]:
            problems.append(f"{row['calls_without_report']} calls without report_received")
        if row["daily_stats_calls"] != calls:
            problems.append(f"sum(daily_stats.calls) = {row['daily_stats_calls']}, "
                            f"expected {calls}")
        if row["unassigned_events"]:
            problems.append(f"{row['unassigned_events']} unassigned events")
    for name, depth in row["queues"].items():
        if depth:
            problems.append(f"{depth} messages in {name}")
    return row, problems


def bare_consumer(stack: Stack, name: str, *, batch_size: int, batch_wait_ms: int) -> Server:
    """The processor's ceiling (`bench.bare_consumer`) on the stack, not started."""
    return stack.service(name, [sys.executable, "-m", "bench.bare_consumer"], cwd=REPO_ROOT,
                         env={"PROCESSOR_BATCH_SIZE": str(batch_size),
                              "PROCESSOR_BATCH_WAIT_MS": str(batch_wait_ms)})


async def measure(stack: Stack, events: list[Event], *, mix: str, calls: int,
                  side: int | str, run: int, args: argparse.Namespace,
                  reset: str = RESET) -> dict[str, Any]:
    """One drain of `events` by `side`: a number of processor consumers, or BARE. `reset`
    gives it a fresh state (the checks expect `calls` calls stored, and as many in
    daily_stats, once it drained)."""
    await stack.reset(reset)
    run_tag = f"{mix}-r{run}-{side}-{uuid.uuid4().hex[:6]}"
    publish_s = await stack.publish(events, run_tag)
    queued = await stack.queue_depth()
    if side == BARE:
        servers = [bare_consumer(stack, f"bare-{mix}-r{run}", batch_size=args.batch_size,
                                 batch_wait_ms=args.batch_wait_ms)]
    else:
        servers = [stack.processor(f"processor-{mix}-r{run}-c{side}-{index + 1}",
                                   batch_size=args.batch_size, batch_wait_ms=args.batch_wait_ms)
                   for index in range(int(side))]
    try:
        timing = await drain(stack, servers, len(events))
        alive = [server.process.pid if server.process and not server.exited() else None
                 for server in servers]
        rss = [peak_rss_mib(pid) if pid else None for pid in alive]
        cpu = [cpu_seconds(pid) if pid else None for pid in alive]
    finally:
        for server in servers:
            server.stop()
    checks, problems = await check(stack, calls=calls, events=len(events), bare=side == BARE)
    if queued != len(events):
        problems.insert(0, f"queue held {queued} of {len(events)} published events")
    if timing["problem"]:
        problems.insert(0, timing["problem"])
    exits = [server.process.returncode for server in servers if server.process]
    if any(code not in (0, None) for code in exits):
        problems.append(f"exit codes {exits}")
    seconds = timing["seconds"]
    record = {
        "mix": mix, "run": run, "side": str(side), "events": len(events), "calls": calls,
        "publish_s": round(publish_s, 3),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(events) / seconds, 1),
        "startup_s": round(timing["startup_s"], 3) if timing["startup_s"] else None,
        "events_per_s_after_startup": round(len(events) / timing["after_startup_s"], 1)
        if timing["after_startup_s"] else None,
        "peak_rss_mib": rss,
        "cpu_s": cpu,
        "machine_cpu_busy": timing["machine_cpu_busy"],
        "exit_codes": exits,
        "checks": checks,
        "problems": problems,
        "flagged": bool(problems),
        "logs": {server.name: server.log_summary() for server in servers},
    }
    label = "bare consumer" if side == BARE else f"consumers {side}"
    print(f"{mix} run {run}/{args.runs} {label:<13} {record['events_per_s']:8.1f} events/s"
          f"  {seconds:6.2f} s (start-up {record['startup_s']} s)"
          f"  RSS {rss} MiB  CPU {cpu} s  machine busy {timing['machine_cpu_busy']:.0%}"
          + (f"  FLAGGED: {'; '.join(problems)}" if problems else ""), flush=True)
    return record


def summarize(runs: list[dict[str, Any]], sides: list[str], mix: str) -> dict[str, Any]:
    medians: dict[str, Any] = {}
    for side in sides:
        records = [r for r in runs if r["side"] == side]
        rates = [r["events_per_s"] for r in records]
        after = [r["events_per_s_after_startup"] for r in records
                 if r["events_per_s_after_startup"]]
        startups = [r["startup_s"] for r in records if r["startup_s"]]
        rss = [m for r in records for m in r["peak_rss_mib"] if m is not None]
        medians[side] = {
            "events_per_s": statistics.median(rates),
            "events_per_s_min": min(rates),
            "events_per_s_max": max(rates),
            "seconds": statistics.median(r["seconds"] for r in records),
            "startup_s": statistics.median(startups) if startups else None,
            "events_per_s_after_startup": statistics.median(after) if after else None,
            "peak_rss_mib_max": max(rss) if rss else None,
            "cpu_s": statistics.median(
                sum(c for c in r["cpu_s"] if c is not None) for r in records),
            "machine_cpu_busy": statistics.median(
                r["machine_cpu_busy"] or 0 for r in records),
            "flagged_runs": sum(r["flagged"] for r in records),
        }
    one = medians.get("1", {}).get("events_per_s")
    two = medians.get("2", {}).get("events_per_s")
    # The ratio per run (both sides drained back to back), then its median.
    ratios = [one_run["events_per_s"] / bare_run["events_per_s"]
              for one_run in runs if one_run["side"] == "1"
              for bare_run in runs if bare_run["side"] == BARE
              and bare_run["run"] == one_run["run"]]
    ratio = round(statistics.median(ratios), 3) if ratios else None
    goal: dict[str, Any] = {"one_consumer_events_per_s": GOAL_EVENTS_PER_S}
    met = one is not None and one >= GOAL_EVENTS_PER_S
    if mix == CALL_ONLY_MIX:
        goal["one_consumer_over_ceiling"] = GOAL_CEILING_RATIO
        met = met and ratio is not None and ratio >= GOAL_CEILING_RATIO
    goal["met"] = met if one is not None else None
    return {
        "medians": medians,
        "two_over_one_consumer": round(two / one, 3) if one and two else None,
        "one_consumer_over_ceiling": ratio,
        "one_consumer_over_ceiling_per_run": [round(r, 3) for r in ratios],
        "goal": goal,
    }


def print_table(mix: str, summary: dict[str, Any], *, runs: int, events: int,
                calls: int) -> None:
    print()
    print(f"{mix} mix: medians over {runs} run(s); {events} events of {calls} calls per run")
    print(f"{'side':<15}{'events/s':>10}{'min-max':>16}{'seconds':>9}{'start-up s':>12}"
          f"{'ev/s after':>12}{'RSS MiB':>9}{'CPU s':>7}{'busy':>6}")
    for side, m in summary["medians"].items():
        flag = f"  FLAGGED in {m['flagged_runs']} run(s)" if m["flagged_runs"] else ""
        spread = f"{m['events_per_s_min']:.0f}-{m['events_per_s_max']:.0f}"
        startup = f"{m['startup_s']:.2f}" if m["startup_s"] is not None else "-"
        after = (f"{m['events_per_s_after_startup']:.0f}"
                 if m["events_per_s_after_startup"] is not None else "-")
        name = "bare consumer" if side == BARE else f"{side} consumer{'s' * (side != '1')}"
        print(f"{name:<15}{m['events_per_s']:>10.1f}{spread:>16}{m['seconds']:>9.2f}"
              f"{startup:>12}{after:>12}{m['peak_rss_mib_max'] or 0:>9.1f}"
              f"{m['cpu_s']:>7.1f}{m['machine_cpu_busy']:>6.0%}{flag}")
    print("(RSS: the largest peak of any process; CPU s: all its processes' CPU time; "
          "busy: the machine's CPU busy share while draining)")
    if summary["two_over_one_consumer"] is not None:
        print(f"2 consumers / 1 consumer: {summary['two_over_one_consumer']}")
    ratio = summary["one_consumer_over_ceiling"]
    if ratio is not None:
        print(f"1 consumer / bare consumer (ceiling): {ratio} "
              f"(per run {summary['one_consumer_over_ceiling_per_run']})")
    one = summary["medians"].get("1", {}).get("events_per_s")
    if one is not None:
        wanted = f">= {GOAL_EVENTS_PER_S} events/s with one consumer"
        if mix == CALL_ONLY_MIX:
            wanted += f" and >= {GOAL_CEILING_RATIO}x the ceiling"
        print(f"goal: {wanted}: {'met' if summary['goal']['met'] else 'NOT met'} "
              f"({one:.0f}, {ratio}x)")


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
    # In this order in each run: one consumer and its ceiling back to back (their ratio).
    counts = [str(c) for c in args.consumers]
    sides = [*counts[:1], BARE, *counts[1:]]
    mixes: dict[str, Any] = {}
    async with Stack() as stack:
        organizations = await stack.create_organizations(ORGANIZATIONS)
        for mix in args.mixes:
            factory = CallFactory(args.samples, organizations, seed=SEED,
                                  now_ms=int(started_at.timestamp() * 1000), mix=mix)
            calls = factory.calls(args.calls or DEFAULT_CALLS[mix])
            events = list(interleave(calls, random.Random(SEED), CONCURRENT_CALLS))
            stats = event_stats(events)
            print(f"{mix} mix: {len(events)} events of {len(calls)} calls "
                  f"({collections.Counter(c.direction for c in calls)}), "
                  f"{stats['bytes_min']}-{stats['bytes_max']} bytes, "
                  f"{stats['shared_endpoint']} via the shared endpoint; "
                  f"prefix {stack.prefix}", flush=True)
            runs = []
            for run in range(1, args.runs + 1):
                for side in sides:
                    runs.append(await measure(
                        stack, events, mix=mix, calls=len(calls),
                        side=BARE if side == BARE else int(side), run=run, args=args))
            mixes[mix] = {"calls": len(calls), "events": stats, "runs": runs,
                          **summarize(runs, sides, mix)}
    return {
        "started_at": started_at.isoformat(),
        "config": {"runs": args.runs, "mixes": args.mixes, "calls": args.calls,
                   "default_calls": DEFAULT_CALLS, "organizations": ORGANIZATIONS,
                   "batch_size": args.batch_size, "batch_wait_ms": args.batch_wait_ms,
                   "concurrent_calls": CONCURRENT_CALLS, "seed": SEED,
                   "poll_ms": POLL_SECONDS * 1000, "sides": sides,
                   "amqp_prefix": stack.prefix, "database": stack.database},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "mixes": mixes,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.processor",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--mix", choices=(*MIXES, "both"), default="both",
                        help="traffic mix (default both, the default mix first)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs per mix, each with every side (default 3)")
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per run (default 500 for the default mix, about 24,000 "
                             "events; 5,000 for call-only, about 21,000 events)")
    parser.add_argument("--consumers", default=",".join(map(str, CONSUMER_COUNTS)),
                        help="processor consumer counts to measure, besides the bare "
                             "consumer (default 1,2)")
    parser.add_argument("--batch-size", type=int, default=200,
                        help="PROCESSOR_BATCH_SIZE (default 200, the service default)")
    parser.add_argument("--batch-wait-ms", type=int, default=20,
                        help="PROCESSOR_BATCH_WAIT_MS (default 20, the service default)")
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR,
                        help=f"Vapi sample payloads (default {SAMPLES_DIR})")
    args = parser.parse_args(argv)
    try:
        args.consumers = [int(c) for c in args.consumers.split(",") if c.strip()]
    except ValueError:
        parser.error("--consumers takes counts separated by commas, e.g. 1,2")
    if (args.runs < 1 or (args.calls is not None and args.calls < 1) or args.batch_size < 1
            or args.batch_wait_ms < 0 or any(c < 1 for c in args.consumers)):
        parser.error("--runs, --calls, --consumers and --batch-size must be >= 1, "
                     "--batch-wait-ms >= 0")
    args.mixes = list(MIXES) if args.mix == "both" else [args.mix]
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    for mix, result in results["mixes"].items():
        print_table(mix, result, runs=args.runs, events=result["events"]["count"],
                    calls=result["calls"])
    path = write_results("processor", results)
    if any(r["flagged"] for result in results["mixes"].values() for r in result["runs"]):
        print("WARNING: some runs failed their checks (see FLAGGED above)")
    return path


if __name__ == "__main__":
    main()
