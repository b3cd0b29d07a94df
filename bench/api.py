"""api benchmark: the overview and the first page of calls of an organization with 100,000
calls, against the same process's `/healthz` (the floor of this stack).

    .venv/bin/python -m bench.api [--calls N] [--runs R] [--duration S] [--connections C]

What is measured. The real `calltrail-api` (uvicorn, uvloop + httptools, one worker, a pool
of 10 connections) as a process of its own, over a database seeded with SQL
(`generate_series`): organization A with `--calls` calls (default 100,000) spread over the
last 120 days, 20,000 leads, the daily statistics that match them and a success measure (a
scorecard four calls in five carry: decision 41); organization B with 10,000 calls of its
own over the same days, so every query has to scope. Then `VACUUM ANALYZE`, and every
request is made once before measuring (warm database, warm pool). `wrk -t2 --latency`
drives, with organization A's token, in turns within each run, at each of `--connections`
(default 1: one user's latency, and 8: a loaded process, where p99 is mostly waiting
behind the other seven):

    healthz       GET /healthz: no token, no query: the floor
    overview 30d  GET /api/stats/overview?startDate=<today-29>&endDate=<today>
    overview 90d  GET /api/stats/overview?startDate=<today-89>&endDate=<today>
    calls page 1  GET /api/calls?limit=25

each a 2 s warm-up then `--duration` s (default 4). The table shows medians over
`--runs` runs (default 3). Every answer must be a 200 (others flag the measurement), and
before measuring, the answers are checked once: 25 of A's calls newest first with a
`nextCursor`, and overview totals equal to the seeded calls of the range.

`EXPLAIN (ANALYZE, BUFFERS)` of each query these routes run, for organization A over 90
days, is kept in the results with its execution time: the goal is met with indexes, not
caches. Goal: p99 under 50 ms for the overviews and the first page.

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`
(`calltrail_testkit.stack.Stack`), removed at the end. Results go to
`bench/results/api-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from api import repository
from bench.harness import WRK_THREADS, ensure_wrk, machine_info, run_wrk, write_results
from calltrail_common import organizations
from calltrail_common.db import connect
from calltrail_common.organizations import create_organization
from calltrail_testkit.processes import HOST, Server, peak_rss_mib
from calltrail_testkit.stack import Stack

LUA_SCRIPT = Path(__file__).resolve().parent / "api.lua"
ENCRYPTION_KEY = "bench-api-encryption-key-" + "0" * 24
DAYS = 120
LEADS = 20_000
OTHER_CALLS = 10_000
WARMUP_SECONDS = 2
GOAL_P99_MS = 50.0
STARTUP_TIMEOUT_SECONDS = 30
SEED_TIMEOUT_SECONDS = 600.0  # one INSERT ... generate_series of a million calls
HEALTHZ = "healthz"
MEASURED = ("overview 30d", "overview 90d", "calls page 1")

# Leads with deterministic ids (md5 of org and number), so calls can point at them.
SEED_LEADS = """
    INSERT INTO leads (id, org_id, phone_number, name, email, first_call_at, last_call_at,
                       call_count, first_inbound_at, created_at)
    SELECT md5($1::uuid::text || k)::uuid, $1::uuid, '+1415' || lpad(k::text, 7, '0'), 'Lead ' || k,
           'lead' || k || '@example.com', now() - interval '120 days', now(), 5,
           now() - interval '120 days', now() - (k * interval '1 minute')
    FROM generate_series(0, $2 - 1) AS k"""

SEED_CALLS = """
    INSERT INTO calls (id, org_id, direction, status, ended_reason, created_at, started_at,
                       ended_at, duration_seconds, cost, customer_number, customer_name,
                       assistant_id, phone_number_id, success_evaluation, summary,
                       transcript, lead_id, report_received, stats_day)
    SELECT 'call-' || $3::text || '-' || i, $1::uuid,
           (ARRAY['inboundPhoneCall', 'outboundPhoneCall', 'webCall'])[1 + i % 3],
           'ended',
           (ARRAY['customer-ended-call', 'assistant-ended-call', 'silence-timed-out',
                  'voicemail', 'pipeline-error-openai-llm-failed'])[1 + i % 5],
           t, t + interval '2 seconds', t + (32 + i % 300) * interval '1 second',
           30 + i % 300, round(0.05 + (i % 300) * 0.001, 4),
           '+1415' || lpad((i % $4)::text, 7, '0'), 'Lead ' || (i % $4),
           'asst-' || (i % 4), 'pn-' || (i % 3), (ARRAY['true', 'false', NULL])[1 + i % 3],
           'The caller asked about call ' || i || '.',
           repeat('AI: Hello, how can I help? User: I would like to book a visit. ', 20),
           md5($1::uuid::text || (i % $4))::uuid, true, (t AT TIME ZONE 'UTC')::date
    FROM generate_series(1, $2) AS i,
         LATERAL (SELECT now() - i * ($5 * 86400.0 / $2) * interval '1 second' AS t) AS at"""

SEED_DAILY_STATS = """
    INSERT INTO daily_stats_shards (org_id, day, calls, inbound, outbound, web, new_leads,
                                    duration_seconds, cost)
    SELECT org_id, stats_day, count(*),
           count(*) FILTER (WHERE direction = 'inboundPhoneCall'),
           count(*) FILTER (WHERE direction = 'outboundPhoneCall'),
           count(*) FILTER (WHERE direction = 'webCall'), 0, sum(duration_seconds), sum(cost)
    FROM calls WHERE org_id = $1 GROUP BY org_id, stats_day"""
# The processor keeps these per-day breakdowns as it stores calls; calls seeded with SQL get
# them the way migration 0008 backfills them.
SEED_BREAKDOWNS = ("""
    INSERT INTO daily_call_outcome_shards (org_id, day, outcome_key, ended_reason,
                                           success_evaluation, calls)
    SELECT org_id, stats_day, md5(ROW(ended_reason, success_evaluation)::text)::uuid,
           ended_reason, success_evaluation, count(*)
    FROM calls WHERE org_id = $1 AND stats_day IS NOT NULL
    GROUP BY org_id, stats_day, ended_reason, success_evaluation""", """
    INSERT INTO daily_assistant_shards (org_id, day, assistant_key, assistant_id, calls,
                                        duration_seconds, cost)
    SELECT org_id, stats_day, md5(ROW(assistant_id)::text)::uuid, assistant_id, count(*),
           coalesce(sum(duration_seconds), 0), coalesce(sum(cost), 0)
    FROM calls WHERE org_id = $1 AND stats_day IS NOT NULL
    GROUP BY org_id, stats_day, assistant_id""", """
    INSERT INTO daily_success_signal_shards (org_id, day, signal_key, kind, source_id, value,
                                             success_evaluation, calls)
    SELECT org_id, stats_day, md5(ROW(kind, source_id, value, success_evaluation)::text)::uuid,
           kind, source_id, value, success_evaluation, count(*)
    FROM (SELECT c.org_id, c.stats_day, c.success_evaluation, s.kind, s.source_id, s.value
          FROM calls c, LATERAL (VALUES
              ('output', 'so-booked', (abs(hashtext(c.id)) % 2)::numeric),
              ('scorecard', 'sc-quality', (ARRAY[0, 20, 30, 50, 70, 80, 100])[
                  1 + abs(hashtext(c.id || 'q')) % 7]::numeric)
          ) AS s (kind, source_id, value)
          WHERE c.org_id = $1 AND c.stats_day IS NOT NULL AND abs(hashtext(c.id)) % 5 <> 0
         ) AS signal
    GROUP BY org_id, stats_day, kind, source_id, value, success_evaluation""")
# Organization A counts a scorecard as success (decision 41): its overview reads the
# scorecard's signals beside the outcomes. A scorecard's score is the sum of the points of
# the metrics a call met, so it takes few values: here three metrics of 50, 30 and 20
# points, 7 scores. (Every score from 0 to 100 alike, the worst case, makes that query
# about 6 ms over 90 days on this machine.)
SEED_SUCCESS_MEASURE = """
    INSERT INTO success_measures (org_id, kind, source_id, pass_mark)
    VALUES ($1, 'scorecard', 'sc-quality', 80)"""


def targets(today: dt.date) -> dict[str, str]:
    def overview(days: int) -> str:
        start = today - dt.timedelta(days=days - 1)
        return f"/api/stats/overview?startDate={start}&endDate={today}"

    return {HEALTHZ: "/healthz", "overview 30d": overview(30), "overview 90d": overview(90),
            "calls page 1": "/api/calls?limit=25"}


async def seed_organization(connection: asyncpg.Connection, org_id: uuid.UUID, calls: int,
                            tag: str) -> None:
    """`calls` calls of one organization over the last DAYS days (ids `call-<tag>-<i>`),
    its leads, and the daily statistics and breakdowns that match them."""
    leads = min(LEADS, calls)
    await connection.execute(SEED_LEADS, org_id, leads)
    await connection.execute(SEED_CALLS, org_id, calls, tag, leads, DAYS)
    await seed_daily_tables(connection, org_id)


async def seed_daily_tables(connection: asyncpg.Connection, org_id: uuid.UUID) -> None:
    """An organization's daily statistics and breakdowns, aggregated from its calls."""
    await connection.execute(SEED_DAILY_STATS, org_id)
    for statement in SEED_BREAKDOWNS:
        await connection.execute(statement, org_id)


async def seed(stack: Stack, calls: int, *, command_timeout: float = SEED_TIMEOUT_SECONDS
               ) -> tuple[uuid.UUID, str, dict[str, Any]]:
    """Organizations A (measured) and B (so queries must scope); A's id and token."""
    started = time.perf_counter()
    connection = await connect(stack.database_url, command_timeout=command_timeout)
    try:
        owner = await create_organization(connection, "Bench A")
        other = await create_organization(connection, "Bench B")
        for org, count, tag in ((owner, calls, "a"), (other, OTHER_CALLS, "b")):
            await seed_organization(connection, org.org_id, count, tag)
        await connection.execute(SEED_SUCCESS_MEASURE, owner.org_id)
        await connection.execute("VACUUM ANALYZE")
        counts = dict(await connection.fetchrow(
            "SELECT (SELECT count(*) FROM calls) AS calls, (SELECT count(*) FROM leads) "
            "AS leads, (SELECT count(*) FROM daily_stats) AS daily_stats, "
            "(SELECT coalesce(sum(calls), 0) FROM daily_call_outcomes) AS outcome_calls"))
    finally:
        await connection.close()
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return owner.org_id, owner.api_token, counts


async def explain(database_url: str, org_id: uuid.UUID, today: dt.date) -> dict[str, Any]:
    """EXPLAIN ANALYZE of what the measured routes ask, for A over 90 days."""
    start = today - dt.timedelta(days=89)
    queries: dict[str, tuple[str, tuple[Any, ...]]] = {
        "authenticate_token": (organizations.AUTHENTICATE_TOKEN,
                               (b"\0" * 32, organizations.LAST_USED_EVERY)),
        "stats_days": (repository.STATS_DAYS, (org_id, start, today)),
        "calls_first_page": (repository.CALLS_FIRST_PAGE,
                             (org_id, None, None, None, None, None, 26)),
    }
    # The overview's other figures, where the api has them (the dashboard adds them).
    for name in ("CALL_OUTCOMES", "ASSISTANTS", "SUCCESS_SIGNALS"):
        sql = getattr(repository, name, None)
        if sql is not None:
            extra = (5,) if name == "ASSISTANTS" else ()
            queries[name.lower()] = (sql, (org_id, start, today, *extra))
    connection = await connect(database_url)
    plans: dict[str, Any] = {}
    try:
        for name, (sql, args) in queries.items():
            rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
            lines = [row[0] for row in rows]
            execution = next((float(line.split(":")[1].split()[0]) for line in lines
                              if line.startswith("Execution Time")), None)
            plans[name] = {"execution_ms": execution, "plan": lines}
    finally:
        await connection.close()
    return plans


async def check_answers(client: httpx.AsyncClient, paths: dict[str, str],
                        database_url: str, org_id: uuid.UUID, today: dt.date,
                        tag: str = "a") -> list[str]:
    """What is wrong with the answers about to be measured (nothing, hopefully): `client`
    speaks for the organization whose calls were seeded with `tag`."""
    problems = []
    page = (await client.get(paths["calls page 1"])).json()
    calls = page.get("calls", [])
    if len(calls) != 25 or not page.get("nextCursor"):
        problems.append(f"calls page 1: {len(calls)} calls, nextCursor {page.get('nextCursor')}")
    if any(not call["id"].startswith(f"call-{tag}-") for call in calls):
        problems.append("calls page 1 holds calls of another organization")
    connection = await connect(database_url)
    try:
        for days in (30, 90):
            expected = await connection.fetchval(
                "SELECT count(*) FROM calls WHERE org_id = $1 AND stats_day BETWEEN $2 AND $3",
                org_id, today - dt.timedelta(days=days - 1), today)
            overview = (await client.get(paths[f"overview {days}d"])).json()
            got = overview.get("calls")
            if got != expected:
                problems.append(f"overview {days}d: {got} calls, expected {expected}")
    finally:
        await connection.close()
    return problems


async def wait_ready(client: httpx.AsyncClient, server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.exited():
            raise RuntimeError(f"the api exited:\n{server.log_tail()}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the api was not ready in {STARTUP_TIMEOUT_SECONDS} s")


async def measure(wrk: str, url: str, token: str, *, label: str, seconds: int,
                  connections: int, warmup: int = WARMUP_SECONDS) -> dict[str, Any]:
    """`warmup` seconds of wrk, then `seconds` measured; printed after `label`."""
    env = {"BENCH_API_TOKEN": token}
    await run_wrk(wrk, url, LUA_SCRIPT, seconds=warmup, connections=connections, env=env)
    result = await run_wrk(wrk, url, LUA_SCRIPT, seconds=seconds, connections=connections,
                           env=env)
    print(f"{label} {result.requests_per_s:8.0f} req/s  "
          f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
          + (f"  {result.errors} errors" if result.errors else ""), flush=True)
    return result.to_json()


def side(name: str, connections: int) -> str:
    return f"{name} @{connections}"


def summarize(runs: list[dict[str, Any]], connections: list[int]) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    for c in connections:
        for name in (HEALTHZ, *MEASURED):
            results = [run["results"][side(name, c)] for run in runs]
            sides[side(name, c)] = {
                key: statistics.median(r[key] for r in results)
                for key in ("requests_per_s", "p50_ms", "p99_ms")
            } | {"errors": sum(r["errors"] for r in results),
                 "p99_ms_runs": [r["p99_ms"] for r in results]}
    met = {side(name, c): sides[side(name, c)]["p99_ms"] < GOAL_P99_MS
           for c in connections for name in MEASURED}
    return {"sides": sides, "goal": {"p99_ms_below": GOAL_P99_MS, "met": met}}


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info(wrk)
    today = started_at.date()
    runs: list[dict[str, Any]] = []
    async with Stack() as stack:
        org_id, token, seeded = await seed(stack, args.calls)
        print(f"seeded {seeded['calls']:,} calls, {seeded['leads']:,} leads in "
              f"{seeded['seconds']} s; prefix {stack.prefix}", flush=True)
        plans = await explain(stack.database_url, org_id, today)
        server = stack.api(encryption_key=ENCRYPTION_KEY)
        server.start()
        base = f"http://{HOST}:{server.port}"
        paths = targets(today)
        async with httpx.AsyncClient(base_url=base, timeout=10,
                                     headers={"Authorization": f"Bearer {token}"}) as client:
            await wait_ready(client, server)
            problems = await check_answers(client, paths, stack.database_url, org_id, today)
            for problem in problems:
                print(f"CHECK FAILED: {problem}", flush=True)
        for run in range(1, args.runs + 1):
            results: dict[str, Any] = {}
            for c, (name, path) in itertools.product(args.connections, paths.items()):
                results[side(name, c)] = await measure(
                    wrk, base + path, token, label=f"run {run} {side(name, c):<16}",
                    seconds=args.duration, connections=c)
            runs.append({"run": run, "results": results})
        rss = peak_rss_mib(server.process.pid) if server.process else None
        log_summary = server.log_summary()
    return {
        "started_at": started_at.isoformat(),
        "config": {"calls": args.calls, "other_calls": OTHER_CALLS, "leads": LEADS,
                   "days": DAYS, "runs": args.runs, "duration_s": args.duration,
                   "warmup_s": WARMUP_SECONDS, "connections": args.connections,
                   "wrk_threads": WRK_THREADS, "paths": paths},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "seeded": seeded,
        "checks": {"problems": problems},
        "explain": plans,
        "api_peak_rss_mib": rss,
        "api_log": log_summary,
        "runs": runs,
        **summarize(runs, args.connections),
    }


def print_table(results: dict[str, Any]) -> None:
    config = results["config"]
    print()
    print(f"api: {config['calls']:,} calls in one organization ({config['other_calls']:,} "
          f"in another), @ wrk connections, {config['duration_s']} s each; medians of "
          f"{config['runs']} run(s)")
    print(f"{'request':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 of runs':>22}"
          f"{'errors':>8}")
    for name, row in results["sides"].items():
        spread = ", ".join(f"{p:.1f}" for p in row["p99_ms_runs"])
        print(f"{name:<18}{row['requests_per_s']:>9.0f}{row['p50_ms']:>9.2f}"
              f"{row['p99_ms']:>9.2f}{spread:>22}{row['errors']:>8}")
    plans = ", ".join(f"{name} {plan['execution_ms']} ms"
                      for name, plan in results["explain"].items())
    print(f"(healthz: the same process, no token, no query: the floor. EXPLAIN ANALYZE, "
          f"90 days: {plans})")
    goal = results["goal"]
    print(f"goal p99 < {goal['p99_ms_below']:g} ms: " + ", ".join(
        f"{name} {'met' if met else 'NOT met'}" for name, met in goal["met"].items()))
    if results["checks"]["problems"]:
        print("CHECKS FAILED: " + "; ".join(results["checks"]["problems"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.api",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000,
                        help="calls of the measured organization (default 100000)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--duration", type=int, default=4,
                        help="seconds per measurement (default 4)")
    parser.add_argument("--connections", default="1,8",
                        help="wrk connections, comma-separated (default 1,8)")
    args = parser.parse_args(argv)
    try:
        args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        parser.error("--connections takes numbers separated by commas, e.g. 1,8")
    if min(args.calls, args.runs, args.duration, *args.connections) < 1:
        parser.error("every option must be >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    print_table(results)
    return write_results("api", results)


if __name__ == "__main__":
    main()
