"""Processors scale out: a call-only backlog drained by 1, 2, 4 and 8 processors, with
Postgres next to them and a few milliseconds away.

    .venv/bin/python -m bench.scale [--runs 3] [--counts 1,2,4,8] [--delays 0,5]
                                    [--mixes busy,small] [--calls 3000]

Why a latency proxy: this machine has two cores shared by the broker, Postgres, the load
and the processors, so replicas next to Postgres soon share one CPU and cannot show
whether they wait on each other. With Postgres 5 ms away (`calltrail_testkit.tcp_proxy`, a
process of its own, every chunk forwarded 5 ms late in each direction), round trips, not cores,
bound a processor's work, and replicas that do not wait on each other add up.

The backlogs (`calltrail_testkit.lifecycles`, the call-only mix: the status-updates and
end-of-call-reports of each call, transcripts of 1-10 KB, no chatter), published as ingest
does while no processor runs:
- `busy`: one organization, 3,000 inbound calls from 1,500 callers (about two calls each,
  so leads repeat), all through the organization's own endpoint;
- `small`: 200 organizations of 15 calls each, every direction, 10 callers each, a fifth
  through the shared endpoint (resolved by the processor).

Each measurement starts from a fresh state (tables emptied, queues purged, a checkpoint),
publishes the backlog, starts the processors together and polls until every event is
archived and the queues are empty. Meanwhile it samples `pg_stat_activity` of the bench
database every 100 ms: the busy sessions (not idle) and, of those, the ones waiting for a
lock (`wait_event_type = 'Lock'`); after, the deadlocks `pg_stat_database` counted. The
rate is the events over the time from the first event taken (the processors' start-up
excluded; it is printed apart) until drained. Each run measures every count of every
setting in turn, so the machine's drifting noise hits them alike; medians over runs.

Checks, per measurement: every event archived, no dead letter or retry, the calls and
leads expected, the daily figures equal to the aggregate over calls and leads.

Goals (medians): with Postgres 5 ms away, 4 processors >= 0.75 x min(4 x one processor
5 ms away, one processor next to Postgres); next to Postgres, 2 processors >= 1.0 x one;
lock waits under 10 % of busy samples; no deadlock; and one processor 5 ms away >= 0.4 x
one next to Postgres (it hides the latency with batches in flight).

Results: `bench/results/scale-<UTC timestamp>.json`.
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import machine_info, write_results
from calltrail_testkit.lifecycles import CALL_ONLY_MIX, INBOUND, CallFactory, Event, interleave
from calltrail_testkit.processes import HOST, cpu_seconds, free_port
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack

SEED = 20261204
CONCURRENT_CALLS = 200
POLL_SECONDS = 0.05
SAMPLE_SECONDS = 0.1
DRAIN_TIMEOUT_SECONDS = 240
BATCH_SIZE, BATCH_WAIT_MS = 200, 20  # the service's defaults
GOAL_FOUR_AWAY = 0.75
GOAL_TWO_NEXT = 1.0
GOAL_LOCK_WAIT_SHARE = 0.10
GOAL_ONE_AWAY_OVER_NEXT = 0.4

RESET = ("TRUNCATE calls, leads, daily_stats_shards, daily_call_outcome_shards, "
         "daily_assistant_shards, events, unassigned_events, processor_members")
SESSIONS = """
    SELECT count(*) FILTER (WHERE state <> 'idle') AS busy,
           coalesce(array_agg(wait_event) FILTER (
               WHERE state <> 'idle' AND wait_event_type = 'Lock'), '{}') AS waiting
    FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'"""
DEADLOCKS = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
CHECKS = """
    SELECT (SELECT count(*) FROM events) AS events,
           (SELECT count(*) FROM calls) AS calls,
           (SELECT count(*) FROM calls WHERE NOT report_received) AS calls_without_report,
           (SELECT count(*) FROM leads) AS leads,
           (SELECT count(*) FROM unassigned_events) AS unassigned,
           (SELECT count(*) FROM (
                SELECT org_id, stats_day, count(*) AS calls, coalesce(sum(cost), 0) AS cost
                FROM calls GROUP BY 1, 2
                EXCEPT
                SELECT org_id, day, calls, cost FROM daily_stats WHERE calls <> 0) AS d
           ) AS stats_not_aggregate,
           (SELECT count(*) FROM leads l WHERE l.call_count
                <> (SELECT count(*) FROM calls c WHERE c.lead_id = l.id)) AS leads_miscounted,
           (SELECT count(*) FROM calls c JOIN leads l ON l.org_id = c.org_id
                AND l.phone_number = c.customer_number
            WHERE c.lead_id IS DISTINCT FROM l.id) AS calls_unlinked"""


class LatencyProxy:
    """`calltrail_testkit.tcp_proxy` in a process of its own, in front of Postgres."""

    def __init__(self, stack: Stack, delay_ms: float) -> None:
        self.port = free_port()
        self.server = stack.service(
            f"pg-proxy-{delay_ms:g}ms",
            [sys.executable, "-m", "calltrail_testkit.tcp_proxy", "--port", str(self.port),
             "--target", f"{HOST}:5432", "--delay-ms", str(delay_ms)], port=self.port)

    async def start(self) -> None:
        self.server.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise RuntimeError(f"the latency proxy did not start:\n{self.server.log_tail()}")

    def database_url(self, database: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"


def busy_backlog(stack_orgs: Sequence[Any], calls: int, now_ms: int) -> list[Event]:
    factory = CallFactory(SAMPLES_DIR, stack_orgs[:1], seed=SEED, now_ms=now_ms,
                          shared_share=0.0, customers_per_org=max(1, calls // 2),
                          mix=CALL_ONLY_MIX, direction=INBOUND)
    return list(interleave(factory.calls(calls), random.Random(SEED), CONCURRENT_CALLS))


def small_backlog(stack_orgs: Sequence[Any], calls: int, now_ms: int) -> list[Event]:
    factory = CallFactory(SAMPLES_DIR, stack_orgs, seed=SEED, now_ms=now_ms,
                          shared_share=0.2, customers_per_org=10, mix=CALL_ONLY_MIX)
    return list(interleave(factory.calls(calls), random.Random(SEED), CONCURRENT_CALLS))


async def sample_sessions(stack: Stack, stop: asyncio.Event) -> dict[str, Any]:
    """Busy sessions and lock waits, summed over samples; the waits by lock (`advisory`:
    a shard or a caller; `tuple`, `transactionid`: a row; `extend`: a table growing)."""
    connection = await stack.db()
    busy = samples = 0
    waits: collections.Counter[str] = collections.Counter()
    try:
        while not stop.is_set():
            row = await connection.fetchrow(SESSIONS)
            busy += row["busy"]
            waits.update(row["waiting"])
            samples += 1
            await asyncio.sleep(SAMPLE_SECONDS)
    finally:
        await connection.close()
    return {"samples": samples, "busy": busy, "waiting": sum(waits.values()),
            "by_lock": dict(waits)}


async def deadlocks(stack: Stack) -> int:
    connection = await stack.db()
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        return int(await connection.fetchval(DEADLOCKS) or 0)
    finally:
        await connection.close()


async def measure(stack: Stack, events: list[Event], *, mix: str, count: int,
                  delay_ms: float, proxy: LatencyProxy | None, run: int, calls: int
                  ) -> dict[str, Any]:
    await stack.reset(RESET)
    published = await stack.publish(events, f"{mix}-{delay_ms:g}-{count}-r{run}")
    deadlocks_before = await deadlocks(stack)
    database_url = proxy.database_url(stack.database) if proxy else None
    servers = [stack.processor(f"scale-{mix}-{delay_ms:g}ms-n{count}-r{run}-{i + 1}",
                               batch_size=BATCH_SIZE, batch_wait_ms=BATCH_WAIT_MS,
                               database_url=database_url) for i in range(count)]
    proxy_cpu_before = cpu_seconds(proxy.server.process.pid) if proxy and \
        proxy.server.process else None
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_sessions(stack, stop_sampling))
    connection = await stack.db()
    started = time.perf_counter()
    for server in servers:
        server.start()
    first_taken: float | None = None
    problem = None
    try:
        while True:
            if time.perf_counter() - started > DRAIN_TIMEOUT_SECONDS:
                problem = f"not drained within {DRAIN_TIMEOUT_SECONDS} s"
                break
            if any(server.exited() for server in servers):
                problem = "a processor exited"
                break
            depth = await stack.queue_depth()
            if first_taken is None and depth < len(events):
                first_taken = time.perf_counter()
            if depth == 0 and int(await connection.fetchval(
                    "SELECT count(*) FROM events")) >= len(events):
                break
            await asyncio.sleep(POLL_SECONDS)
    finally:
        done = time.perf_counter()
        await connection.close()
        stop_sampling.set()
        sessions = await sampler
        cpu = [cpu_seconds(s.process.pid) if s.process and not s.exited() else None
               for s in servers]
        proxy_cpu = (cpu_seconds(proxy.server.process.pid) or 0) - (proxy_cpu_before or 0) \
            if proxy and proxy.server.process else None
        await stack.stop_servers([s.name for s in servers])
    await asyncio.sleep(0.5)  # the backends' statistics reach pg_stat_database as they exit
    found_deadlocks = await deadlocks(stack) - deadlocks_before
    checks, problems = await check(stack, events=len(events), calls=calls, mix=mix)
    if problem:
        problems.insert(0, problem)
    after_startup = done - first_taken if first_taken else None
    record = {
        "mix": mix, "delay_ms": delay_ms, "processors": count, "run": run,
        "events": len(events), "publish_s": round(published, 3),
        "seconds": round(done - started, 3),
        "startup_s": round(first_taken - started, 3) if first_taken else None,
        "events_per_s": round(len(events) / after_startup, 1) if after_startup else 0.0,
        "events_per_s_with_startup": round(len(events) / (done - started), 1),
        "busy_samples": sessions["busy"], "lock_waiting_samples": sessions["waiting"],
        "lock_waits_by_lock": sessions["by_lock"],
        "lock_wait_share": round(sessions["waiting"] / sessions["busy"], 4)
        if sessions["busy"] else 0.0,
        "deadlocks": found_deadlocks, "cpu_s": cpu, "proxy_cpu_s": proxy_cpu,
        "checks": checks, "problems": problems, "flagged": bool(problems),
    }
    print(f"{mix:<6} {delay_ms:>3g} ms  {count} processor(s) run {run}: "
          f"{record['events_per_s']:8.1f} events/s (start-up {record['startup_s']} s), "
          f"lock waits {record['lock_wait_share']:.1%} of {sessions['busy']} busy samples "
          f"{sessions['by_lock'] or ''}, "
          f"{found_deadlocks} deadlocks, CPU {cpu}"
          + (f"  FLAGGED: {'; '.join(problems)}" if problems else ""), flush=True)
    return record


async def check(stack: Stack, *, events: int, calls: int, mix: str
                ) -> tuple[dict[str, Any], list[str]]:
    connection = await stack.db()
    try:
        row = {k: int(v) for k, v in dict(await connection.fetchrow(CHECKS)).items()}
    finally:
        await connection.close()
    queues = await stack.dead_letters()
    problems = []
    if row["events"] != events:
        problems.append(f"{row['events']} of {events} events archived")
    if row["calls"] != calls or row["calls_without_report"]:
        problems.append(f"{row['calls']} calls ({row['calls_without_report']} without "
                        f"report), expected {calls}")
    for name in ("unassigned", "stats_not_aggregate", "leads_miscounted", "calls_unlinked"):
        if row[name]:
            problems.append(f"{name}: {row[name]}")
    if mix == "busy" and not row["leads"]:
        problems.append("no leads")
    problems += [f"{depth} messages in {name}" for name, depth in queues.items() if depth]
    return {**row, "dead_and_retry": queues}, problems


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for record in runs:
        key = f"{record['mix']}/{record['delay_ms']:g}ms/{record['processors']}"
        table.setdefault(key, []).append(record)
    medians: dict[str, Any] = {}
    for key, records in table.items():
        rates = [r["events_per_s"] for r in records]
        medians[key] = {
            "mix": records[0]["mix"], "delay_ms": records[0]["delay_ms"],
            "processors": records[0]["processors"],
            "events_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "startup_s": statistics.median(r["startup_s"] or 0 for r in records),
            "lock_wait_share": round(sum(r["lock_waiting_samples"] for r in records)
                                     / max(1, sum(r["busy_samples"] for r in records)), 4),
            "deadlocks": sum(r["deadlocks"] for r in records),
            "flagged_runs": sum(r["flagged"] for r in records),
        }
    for entry in medians.values():
        one = medians.get(f"{entry['mix']}/{entry['delay_ms']:g}ms/1")
        entry["over_one"] = round(entry["events_per_s"] / one["events_per_s"], 3) \
            if one and one["events_per_s"] else None
    return medians


def goals(medians: dict[str, Any], delays: Sequence[float]) -> list[tuple[str, bool | None,
                                                                          str]]:
    def rate(mix: str, delay: float, count: int) -> float | None:
        entry = medians.get(f"{mix}/{delay:g}ms/{count}")
        return entry["events_per_s"] if entry else None

    away = max(delays)
    out: list[tuple[str, bool | None, str]] = []
    one_away, one_next, four_away = rate("busy", away, 1), rate("busy", 0, 1), \
        rate("busy", away, 4)
    if None not in (one_away, one_next, four_away) and away:
        assert one_away is not None and one_next is not None and four_away is not None
        bound = GOAL_FOUR_AWAY * min(4 * one_away, one_next)
        out.append((f"busy, {away:g} ms away: 4 processors >= {GOAL_FOUR_AWAY} x "
                    f"min(4 x one, one next to Postgres) = {bound:.0f}",
                    four_away >= bound, f"{four_away:.0f}"))
        out.append((f"busy: one processor {away:g} ms away >= {GOAL_ONE_AWAY_OVER_NEXT} x "
                    f"one next to Postgres", one_away >= GOAL_ONE_AWAY_OVER_NEXT * one_next,
                    f"{one_away / one_next:.2f}x"))
    two_next = rate("busy", 0, 2)
    if two_next is not None and one_next:
        out.append((f"busy, next to Postgres: 2 processors >= {GOAL_TWO_NEXT} x one",
                    two_next >= GOAL_TWO_NEXT * one_next, f"{two_next / one_next:.2f}x"))
    worst = max((m["lock_wait_share"] for m in medians.values()), default=0.0)
    out.append((f"lock waits < {GOAL_LOCK_WAIT_SHARE:.0%} of busy samples, everywhere",
                worst < GOAL_LOCK_WAIT_SHARE, f"worst {worst:.1%}"))
    found = sum(m["deadlocks"] for m in medians.values())
    out.append(("no deadlock", found == 0, f"{found}"))
    return out


def print_table(medians: dict[str, Any], met: list[tuple[str, bool | None, str]],
                runs: int) -> None:
    print()
    print(f"bench.scale: medians over {runs} run(s); events/s from the first event taken "
          "until drained")
    print(f"{'backlog':<8}{'Postgres':>10}{'processors':>12}{'events/s':>10}{'min-max':>14}"
          f"{'x one':>7}{'start-up s':>12}{'lock waits':>12}{'deadlocks':>11}")
    for entry in sorted(medians.values(), key=lambda m: (m["mix"], m["delay_ms"],
                                                         m["processors"])):
        where = "next to" if not entry["delay_ms"] else f"{entry['delay_ms']:g} ms away"
        flag = f"  FLAGGED in {entry['flagged_runs']}" if entry["flagged_runs"] else ""
        print(f"{entry['mix']:<8}{where:>10}{entry['processors']:>12}"
              f"{entry['events_per_s']:>10.0f}{entry['min']:>7.0f}-{entry['max']:<6.0f}"
              f"{entry['over_one'] or 0:>7.2f}{entry['startup_s']:>12.2f}"
              f"{entry['lock_wait_share']:>12.1%}{entry['deadlocks']:>11}{flag}")
    for text, ok, figure in met:
        print(f"goal: {text}: {'met' if ok else 'NOT met'} ({figure})")


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    now_ms = int(started_at.timestamp() * 1000)
    runs: list[dict[str, Any]] = []
    async with Stack() as stack:
        organizations = await stack.create_organizations(200 if "small" in args.mixes else 1)
        backlogs = {}
        if "busy" in args.mixes:
            backlogs["busy"] = busy_backlog(organizations, args.calls, now_ms)
        if "small" in args.mixes:
            backlogs["small"] = small_backlog(organizations, args.calls, now_ms)
        for mix, events in backlogs.items():
            print(f"{mix}: {len(events)} events of {args.calls} calls; prefix {stack.prefix}",
                  flush=True)
        proxies = {delay: LatencyProxy(stack, delay) for delay in args.delays if delay}
        for proxy in proxies.values():
            await proxy.start()
        for run in range(1, args.runs + 1):
            for mix, events in backlogs.items():
                for delay in args.delays:
                    for count in args.counts:
                        runs.append(await measure(
                            stack, events, mix=mix, count=count, delay_ms=delay,
                            proxy=proxies.get(delay), run=run, calls=args.calls))
    medians = summarize(runs)
    return {"started_at": started_at.isoformat(),
            "config": {"runs": args.runs, "counts": args.counts, "delays_ms": args.delays,
                       "mixes": args.mixes, "calls": args.calls, "batch_size": BATCH_SIZE,
                       "batch_wait_ms": BATCH_WAIT_MS, "seed": SEED},
            "machine": {**machine_info(), "load_average_end": os.getloadavg()},
            "runs": runs, "medians": medians,
            "goals": [{"goal": text, "met": ok, "figure": figure}
                      for text, ok, figure in goals(medians, args.delays)]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--counts", default="1,2,4,8", help="processor counts (default 1,2,4,8)")
    parser.add_argument("--delays", default="0,5",
                        help="one-way milliseconds to Postgres (0: direct; default 0,5)")
    parser.add_argument("--mixes", default="busy,small", help="backlogs (default busy,small)")
    parser.add_argument("--calls", type=int, default=3000, help="calls per backlog")
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.counts.split(",")]
    args.delays = [float(d) for d in args.delays.split(",")]
    args.mixes = [m for m in args.mixes.split(",") if m]
    if set(args.mixes) - {"busy", "small"} or args.runs < 1 or min(args.counts) < 1:
        parser.error("--mixes takes busy and small; --runs and --counts are >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    met = [(g["goal"], g["met"], g["figure"]) for g in results["goals"]]
    print_table(results["medians"], met, args.runs)
    path = write_results("scale", results)
    if any(r["flagged"] for r in results["runs"]):
        print("WARNING: some runs failed their checks (see FLAGGED above)")
    return path


if __name__ == "__main__":
    main()
