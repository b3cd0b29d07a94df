"""metrics-sync benchmark: time to sync N Vapi accounts against a fake Vapi API with latency.

    .venv/bin/python -m bench.metrics_sync [--accounts N] [--calls N] [--latency S] [--runs R]
                                           [--concurrency 32[,64,...]] [--baseline-accounts B]

What is measured. The real `calltrail-metrics-sync` (one replica, its defaults but for
`SYNC_CONCURRENCY`) against the fake Vapi (`calltrail_testkit.fake_vapi`) run as a process
of its own with `--latency` seconds added to every API request (default 0.1): N accounts
(default 1,000) of K calls each (default 50, spread over the last 14 days, 3 phone numbers
and 2 assistants each), created through the fake's admin route. Per measurement:
- round 1 (backfill): the N organizations are connected with
  `calltrail_common.vapi_accounts.connect_account` before the service starts (the key
  checked, stored sealed, a 'connect' run queued; no broker channel, so the queued runs are
  found by the service's tick). The time runs from starting the process until every
  account has a succeeded run (`max(finished_at)` on Postgres' clock), start-up included;
- round 2 (nothing new): `UPDATE vapi_accounts SET next_sync_at = now()`, then the time
  until every account has a succeeded run started after that (its pick-up by the next tick
  included). A quiet account should cost three requests (its numbers, its assistants and an
  empty call list).
The process's peak RSS (VmHWM) is read before it is stopped; its CPU time, the fake's, and
the machine's CPU busy share are kept per round.

Compared with: one account at a time. The same service with `SYNC_CONCURRENCY=1` syncs
the first `--baseline-accounts` accounts (default 50) through both rounds in the same run,
and its times are extrapolated linearly to N (accounts are alike, and at one slot there is
no overlap to lose). The latency floor of each side (requests per account x latency x N /
SYNC_CONCURRENCY) is shown too, so the share of a round spent outside Vapi's latency reads
off the table.

Checks, per measurement (a failed one flags it): every account succeeded in both rounds
within the time limit, no failed run, every call of round 1 seen and published, the daily
usage counts N x K calls, the call-processor queue holds at least every snapshot published
(no processor runs here), the process did not exit and stopped cleanly on SIGTERM. The
service's warnings are counted by event from its log.

Each measurement starts from a fresh state (the accounts, keys, numbers, runs and usage
truncated, the queues purged). Everything lives under `AMQP_PREFIX=bench-<id>` and database
`calltrail_bench_<id>`, removed at the end with the processes. Results go to
`bench/results/metrics_sync-<UTC timestamp>.json`. A full-size measurement takes about a
minute, so the default is one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import httpx
import orjson
import structlog

from bench.harness import machine_info, write_results
from calltrail_common.organizations import create_organization
from calltrail_common.topology import CALL_PROCESSOR
from calltrail_testkit.processes import Server, cpu_seconds, machine_cpu_ticks, peak_rss_mib
from calltrail_testkit.stack import Stack

GOAL_FIRST_ROUND_S = 20.0
GOAL_SECOND_ROUND_S = 5.0
GOAL_RSS_MB = 200.0  # megabytes (10^6 bytes); VmHWM is read in MiB
DEFAULT_CONCURRENCY = 128  # the service's default SYNC_CONCURRENCY
ONE_AT_A_TIME = 1
CALL_DAYS = 14
SEED = 20261122
CONNECT_CONCURRENCY = 64
ADMIN_CONCURRENCY = 16
POLL_SECONDS = 0.1
# An idle backend reports its transactions to pg_stat up to 10 s late (PGSTAT_IDLE_INTERVAL);
# one that exits reports them at once.
STATS_SETTLE_SECONDS = 11.0
ROUND_TIMEOUT_SECONDS = 120  # plus the latency floor of one account at a time, doubled
ENCRYPTION_KEY = "bench-metrics-sync-encryption-key-" + "0" * 16

RESET = ("TRUNCATE vapi_api_keys, vapi_accounts, phone_numbers, sync_runs, vapi_call_usage, "
         "vapi_usage_daily")
TRIGGER_ROUND = "UPDATE vapi_accounts SET next_sync_at = now() WHERE status = 'connected'"
ROUND_PROGRESS = """
    SELECT count(DISTINCT org_id) FILTER (WHERE status = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM sync_runs WHERE started_at >= $1"""
ROUND_SUMMARY = """
    SELECT count(*) AS runs,
           count(DISTINCT org_id) FILTER (WHERE status = 'succeeded') AS accounts_succeeded,
           count(*) FILTER (WHERE status = 'failed') AS failed,
           extract(epoch FROM max(finished_at) FILTER (WHERE status = 'succeeded') - $1
                   )::float8 AS seconds,
           extract(epoch FROM min(started_at) - $1)::float8 AS first_started_s,
           coalesce(sum(requests), 0)::int AS requests,
           coalesce(sum(calls_seen), 0)::int AS calls_seen,
           coalesce(sum(calls_published), 0)::int AS calls_published,
           coalesce(sum(days_updated), 0)::int AS days_updated,
           percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM finished_at - started_at)::float8) AS run_s
    FROM sync_runs WHERE started_at >= $1 AND status IN ('succeeded', 'failed')"""
FAILURE_REASONS = """
    SELECT reason, count(*) AS runs FROM sync_runs
    WHERE started_at >= $1 AND status = 'failed' GROUP BY reason ORDER BY runs DESC"""
USAGE_CALLS = "SELECT coalesce(sum(calls), 0)::int FROM vapi_usage_daily"
TRANSACTIONS = """
    SELECT xact_commit + xact_rollback FROM pg_stat_database
    WHERE datname = current_database()"""
BACKENDS = """
    SELECT array_agg(pid) FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()"""


def side_label(concurrency: int, accounts: int, total: int) -> str:
    if accounts == total:
        return f"SYNC_CONCURRENCY={concurrency}"
    return f"SYNC_CONCURRENCY={concurrency}, {accounts} acc."


# --- set-up -------------------------------------------------------------------------------



async def queued_snapshots(stack: Stack, wait_seconds: float = 60.0) -> int:
    """The call snapshots in the processor's queues (no processor runs here): each message
    is taken off and its calls counted (metrics-sync sends them in bundles)."""
    expected = await stack.queue_depth()
    counted = {"messages": 0, "calls": 0}
    done = asyncio.Event()
    channel = await stack.open_channel()
    try:
        async def count(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            body = orjson.loads(message.body)["message"]
            counted["calls"] += len(body["calls"]) if "calls" in body else 1
            counted["messages"] += 1
            if counted["messages"] >= expected:
                done.set()

        for name in stack.topology.work_queues(CALL_PROCESSOR):
            await (await channel.get_queue(name, ensure=False)).consume(count, no_ack=True)
        if expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), wait_seconds)
    finally:
        await channel.close()
    return counted["calls"]

async def add_fake_accounts(base_url: str, count: int, calls: int, run_id: str) -> list[str]:
    """`count` accounts of `calls` calls each on the fake; their API keys."""
    keys = [f"bench-{run_id}-{index:05d}-{secrets.token_hex(8)}" for index in range(count)]
    limit = asyncio.Semaphore(ADMIN_CONCURRENCY)
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        async def add(index: int, key: str) -> None:
            async with limit:
                response = await http.post("/_fake/accounts", json={
                    "api_key": key, "calls": calls, "days": CALL_DAYS, "seed": SEED + index})
                response.raise_for_status()

        await asyncio.gather(*(add(index, key) for index, key in enumerate(keys)))
    return keys


async def create_organizations(stack: Stack, count: int) -> list[uuid.UUID]:
    connection = await stack.db()
    try:
        return [(await create_organization(connection, f"Bench roofing {index + 1}")).org_id
                for index in range(count)]
    finally:
        await connection.close()


# --- one measurement ----------------------------------------------------------------------


async def wait_round(connection: asyncpg.Connection, since: dt.datetime, accounts: int,
                     server: Server, timeout_s: float) -> tuple[str | None, int]:
    """Poll until every account has a succeeded run started at or after `since`; the
    problem, if it did not happen, and the number of polls."""
    deadline = time.perf_counter() + timeout_s
    polls = 0
    while True:
        row = await connection.fetchrow(ROUND_PROGRESS, since)
        polls += 1
        if row["succeeded"] >= accounts:
            return None, polls
        if server.exited():
            return "the service exited", polls
        if time.perf_counter() > deadline:
            return (f"{row['succeeded']} of {accounts} accounts synced within {timeout_s:.0f} s"
                    f" ({row['failed']} failed runs)"), polls
        await asyncio.sleep(POLL_SECONDS)


async def round_summary(connection: asyncpg.Connection, since: dt.datetime
                        ) -> dict[str, Any]:
    row = dict(await connection.fetchrow(ROUND_SUMMARY, since))
    run_s = row.pop("run_s") or [None, None]
    row["run_s_p50"], row["run_s_p99"] = run_s
    row["failure_reasons"] = {r["reason"]: r["runs"]
                              for r in await connection.fetch(FAILURE_REASONS, since)}
    return row


async def transactions(connection: asyncpg.Connection, settle_s: float = 0.0) -> int:
    """Transactions committed or rolled back in the database so far (each statement outside
    a transaction is one), read after `settle_s` (see STATS_SETTLE_SECONDS)."""
    await asyncio.sleep(settle_s)
    return int(await connection.fetchval(TRANSACTIONS))


async def backend_cpu(connection: asyncpg.Connection) -> dict[int, float]:
    """CPU seconds so far of each Postgres backend serving the database, but this one."""
    pids = await connection.fetchval(BACKENDS) or []
    return {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}


class RoundMeter:
    """CPU of the service, the fake, the database's backends and the machine over a round."""

    def __init__(self, server: Server, fake: Server, backends: dict[int, float]) -> None:
        self._server, self._fake, self._backends = server, fake, backends
        self._service = self._cpu(server) or 0.0
        self._fake_cpu = self._cpu(fake)
        self._ticks = machine_cpu_ticks()

    @staticmethod
    def _cpu(server: Server) -> float | None:
        alive = server.process is not None and not server.exited()
        return cpu_seconds(server.process.pid) if alive and server.process else None

    def read(self, backends: dict[int, float]) -> dict[str, Any]:
        busy, total = (a - b for a, b in zip(machine_cpu_ticks(), self._ticks, strict=True))
        service, fake = self._cpu(self._server), self._cpu(self._fake)
        pid = self._server.process.pid if self._server.process else None
        return {
            "service_cpu_s": round(service - self._service, 2) if service is not None else None,
            "fake_cpu_s": round(fake - (self._fake_cpu or 0.0), 2) if fake is not None
            else None,
            "postgres_cpu_s": round(sum(cpu - self._backends.get(p, 0.0)
                                        for p, cpu in backends.items()), 2),
            "machine_cpu_busy": round(busy / total, 3) if total else None,
            "peak_rss_mib": peak_rss_mib(pid) if pid and service is not None else None,
        }


async def measure(stack: Stack, fake: Server, base_url: str, orgs: list[uuid.UUID],
                  keys: list[str], *, concurrency: int, run: int, args: argparse.Namespace,
                  settle_s: float = STATS_SETTLE_SECONDS) -> dict[str, Any]:
    """Both rounds for the first len(orgs) accounts, with one replica at `concurrency`.
    With `settle_s` below STATS_SETTLE_SECONDS the first round's transactions are
    undercounted (the wait is only for them)."""
    accounts = len(orgs)
    await stack.reset(RESET)
    connect_s = await stack.connect_vapi_accounts(orgs, keys, vapi_base_url=base_url,
                                                  encryption_key=ENCRYPTION_KEY,
                                                  concurrency=CONNECT_CONCURRENCY)
    name = f"metrics-sync-r{run}-c{concurrency}-n{accounts}"
    server = stack.metrics_sync(name, vapi_base_url=base_url, encryption_key=ENCRYPTION_KEY,
                                concurrency=concurrency)
    timeout_s = ROUND_TIMEOUT_SECONDS + 2 * accounts * 2 * args.latency
    rounds: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    connection = await stack.db()
    try:
        xacts = await transactions(connection)
        for label in ("first", "second"):
            meter = RoundMeter(server, fake, await backend_cpu(connection))
            if label == "first":
                since = await connection.fetchval("SELECT clock_timestamp()")
                server.start()
            else:
                async with connection.transaction():
                    since = await connection.fetchval("SELECT now()")
                    await connection.execute(TRIGGER_ROUND)
            problem, polls = await wait_round(connection, since, accounts, server, timeout_s)
            rounds[label] = summary = {**meter.read(await backend_cpu(connection)),
                                       **await round_summary(connection, since),
                                       "problem": problem}
            stopping = label == "second" or bool(problem)
            if stopping:
                server.stop()  # and its pool's backends report their transactions at once
            before, xacts = xacts, await transactions(
                connection, 0.5 if stopping else settle_s)
            # Less this benchmark's own polls; the service's idle ticks stay in (~3/s).
            summary["transactions"] = xacts - before - polls
            if problem:
                problems.append(f"{label} round: {problem}")
                break
        usage_calls = int(await connection.fetchval(USAGE_CALLS))
    finally:
        await connection.close()
        server.stop()
    queued = await queued_snapshots(stack)
    exit_code = server.process.returncode if server.process else None
    first = rounds["first"]
    expected_calls = accounts * args.calls
    for label, summary in rounds.items():
        if summary["failed"]:
            problems.append(f"{label} round: {summary['failed']} failed runs "
                            f"{summary['failure_reasons']}")
    if first["calls_seen"] != expected_calls or first["calls_published"] != expected_calls:
        problems.append(f"first round saw {first['calls_seen']} and published "
                        f"{first['calls_published']} of {expected_calls} calls")
    if usage_calls != expected_calls:
        problems.append(f"daily usage counts {usage_calls} calls, expected {expected_calls}")
    published = sum(summary["calls_published"] for summary in rounds.values())
    if queued < published:
        problems.append(f"the processor's queues hold {queued} of {published} snapshots")
    if exit_code not in (0, None):
        problems.append(f"exit code {exit_code}")
    second = rounds.get("second", {})
    record = {
        "run": run, "concurrency": concurrency, "accounts": accounts,
        "side": side_label(concurrency, accounts, args.accounts),
        "connect_s": round(connect_s, 2),
        "first_s": first["seconds"], "second_s": second.get("seconds"),
        "peak_rss_mib": second.get("peak_rss_mib") or first["peak_rss_mib"],
        "requests_per_account": {label: round(s["requests"] / accounts, 2)
                                 for label, s in rounds.items()},
        "transactions_per_account": {label: round(s["transactions"] / accounts, 1)
                                     for label, s in rounds.items()},
        "rounds": rounds, "usage_calls": usage_calls, "queue_after": queued,
        "exit_code": exit_code, "problems": problems, "flagged": bool(problems),
        "log": server.log_summary(),
    }
    await stack.purge_all()  # the snapshots: no processor runs here
    print(f"run {run}/{args.runs} {record['side']:<30} first {fmt(record['first_s'])} s  "
          f"second {fmt(record['second_s'])} s  requests/account "
          f"{record['requests_per_account']}  RSS {record['peak_rss_mib']} MiB  "
          f"(connect {connect_s:.1f} s)"
          + (f"  FLAGGED: {'; '.join(problems)}" if problems else ""), flush=True)
    if record["log"]:
        print(f"  service log: {record['log']}", flush=True)
    return record


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- the whole benchmark ------------------------------------------------------------------


def median_of(records: list[dict[str, Any]], read: Any) -> float | None:
    values = [v for v in (read(r) for r in records) if v is not None]
    return statistics.median(values) if values else None


def extrapolate(round_: dict[str, Any], scale: float) -> float | None:
    """A round of a subset scaled to every account: its fixed part (start-up, or the pick-up
    by the next tick: until the first run started) once, the rest times `scale`."""
    seconds, fixed = round_["seconds"], round_["first_started_s"] or 0.0
    return None if seconds is None else fixed + (seconds - fixed) * scale


def summarize(runs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    sides: dict[str, Any] = {}
    for side in dict.fromkeys(r["side"] for r in runs):
        records = [r for r in runs if r["side"] == side]
        accounts = records[0]["accounts"]
        concurrency = records[0]["concurrency"]
        m: dict[str, Any] = {"accounts": accounts, "concurrency": concurrency,
                             "flagged_runs": sum(r["flagged"] for r in records)}
        for label in ("first", "second"):
            rounds = [r["rounds"][label] for r in records if label in r["rounds"]]
            requests = median_of([s["requests"] / accounts for s in rounds], float)
            m[label] = {
                "seconds": median_of(rounds, lambda s: s["seconds"]),
                "seconds_min": min((s["seconds"] for s in rounds if s["seconds"]),
                                   default=None),
                "seconds_max": max((s["seconds"] for s in rounds if s["seconds"]),
                                   default=None),
                "requests_per_account": requests,
                # Vapi's latency alone, with every slot busy all the time.
                "latency_floor_s": (requests * args.latency * accounts / concurrency
                                    if requests is not None else None),
                "run_s_p50": median_of(rounds, lambda s: s["run_s_p50"]),
                "run_s_p99": median_of(rounds, lambda s: s["run_s_p99"]),
                "first_started_s": median_of(rounds, lambda s: s["first_started_s"]),
                "transactions_per_account": median_of(
                    [s["transactions"] / accounts for s in rounds], float),
                "service_cpu_s": median_of(rounds, lambda s: s["service_cpu_s"]),
                "postgres_cpu_s": median_of(rounds, lambda s: s["postgres_cpu_s"]),
                "fake_cpu_s": median_of(rounds, lambda s: s["fake_cpu_s"]),
                "machine_cpu_busy": median_of(rounds, lambda s: s["machine_cpu_busy"]),
            }
        m["peak_rss_mib"] = max((r["peak_rss_mib"] for r in records if r["peak_rss_mib"]),
                                default=None)
        if accounts != args.accounts:  # one account at a time, scaled to the full count
            m["extrapolated"] = {label: extrapolate(m[label], args.accounts / accounts)
                                 for label in ("first", "second")}
        sides[side] = m
    default = sides.get(side_label(DEFAULT_CONCURRENCY, args.accounts, args.accounts)) or next(
        (m for m in sides.values() if m["accounts"] == args.accounts), None)
    goal: dict[str, Any] = {"first_round_s": GOAL_FIRST_ROUND_S,
                            "second_round_s": GOAL_SECOND_ROUND_S, "rss_mb": GOAL_RSS_MB}
    if default is not None:
        rss_mb = (default["peak_rss_mib"] or 0) * 2**20 / 1e6
        goal.update(
            concurrency=default["concurrency"],
            first_met=(default["first"]["seconds"] or float("inf")) <= GOAL_FIRST_ROUND_S,
            second_met=(default["second"]["seconds"] or float("inf")) <= GOAL_SECOND_ROUND_S,
            rss_met=bool(default["peak_rss_mib"]) and rss_mb < GOAL_RSS_MB)
        goal["met"] = goal["first_met"] and goal["second_met"] and goal["rss_met"]
    return {"sides": sides, "goal": goal}


def print_table(summary: dict[str, Any], args: argparse.Namespace) -> None:
    print()
    print(f"metrics-sync: {args.accounts} accounts x {args.calls} calls, fake Vapi latency "
          f"{args.latency * 1000:.0f} ms per request; medians of {args.runs} run(s)")
    print(f"{'side':<30}{'round':>7}{'seconds':>9}{'min-max':>13}{'floor s':>9}"
          f"{'req/acc':>8}{'xact/acc':>9}{'run p50':>8}{'p99':>6}{'CPU s':>7}{'PG':>6}"
          f"{'fake':>6}{'busy':>6}{'RSS MiB':>9}")
    for side, m in summary["sides"].items():
        for index, label in enumerate(("first", "second")):
            r = m[label]
            spread = f"{fmt(r['seconds_min'], 1)}-{fmt(r['seconds_max'], 1)}"
            busy = f"{r['machine_cpu_busy']:.0%}" if r["machine_cpu_busy"] is not None else "-"
            print(f"{side if index == 0 else '':<30}{label:>7}{fmt(r['seconds']):>9}"
                  f"{spread:>13}{fmt(r['latency_floor_s'], 1):>9}"
                  f"{fmt(r['requests_per_account'], 1):>8}"
                  f"{fmt(r['transactions_per_account'], 1):>9}{fmt(r['run_s_p50']):>8}"
                  f"{fmt(r['run_s_p99'], 1):>6}{fmt(r['service_cpu_s'], 1):>7}"
                  f"{fmt(r['postgres_cpu_s'], 1):>6}{fmt(r['fake_cpu_s'], 1):>6}{busy:>6}"
                  f"{fmt(m['peak_rss_mib'], 1) if index == 0 else '':>9}"
                  + (f"  FLAGGED in {m['flagged_runs']} run(s)"
                     if m["flagged_runs"] and index == 0 else ""))
        if "extrapolated" in m:
            e = m["extrapolated"]
            print(f"{'  x' + format(args.accounts / m['accounts'], 'g') + ' (linear) ->':<30}"
                  f"{'first':>7}{fmt(e['first'], 1):>9}   "
                  f"one account at a time, {args.accounts} accounts")
            print(f"{'':<30}{'second':>7}{fmt(e['second'], 1):>9}")
    print("(seconds: start of the process, or the round's trigger, until every account has "
          "succeeded; floor: requests/account x latency x accounts / SYNC_CONCURRENCY; "
          "xact: Postgres transactions (a statement outside one counts one); run: one "
          "account's run, claimed to recorded; CPU s: the service's, PG: its database "
          "backends', fake: the fake Vapi's; busy: the machine's CPU busy share)")
    goal = summary["goal"]
    if "met" in goal:
        side = summary["sides"][side_label(goal["concurrency"], args.accounts, args.accounts)]
        print(f"goal at SYNC_CONCURRENCY={goal['concurrency']}: first round <= "
              f"{GOAL_FIRST_ROUND_S:g} s {'met' if goal['first_met'] else 'NOT met'} "
              f"({fmt(side['first']['seconds'], 1)}); second <= {GOAL_SECOND_ROUND_S:g} s "
              f"{'met' if goal['second_met'] else 'NOT met'} "
              f"({fmt(side['second']['seconds'], 1)}); RSS < {GOAL_RSS_MB:g} MB "
              f"{'met' if goal['rss_met'] else 'NOT met'} "
              f"({(side['peak_rss_mib'] or 0) * 2**20 / 1e6:.0f} MB)")


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info()
    runs: list[dict[str, Any]] = []
    baseline = min(args.baseline_accounts, args.accounts)
    async with Stack() as stack:
        fake, base_url = await stack.serve_fake_vapi(latency=args.latency)
        fake_started = time.perf_counter()
        keys = await add_fake_accounts(base_url, args.accounts, args.calls, stack.prefix)
        orgs = await create_organizations(stack, args.accounts)
        print(f"{args.accounts} fake accounts of {args.calls} calls in "
              f"{time.perf_counter() - fake_started:.1f} s; prefix {stack.prefix}", flush=True)
        for run in range(1, args.runs + 1):
            for concurrency in args.concurrency:
                runs.append(await measure(stack, fake, base_url, orgs, keys,
                                          concurrency=concurrency, run=run, args=args))
            if baseline:
                runs.append(await measure(stack, fake, base_url, orgs[:baseline],
                                          keys[:baseline], concurrency=ONE_AT_A_TIME,
                                          run=run, args=args))
        fake_rss = peak_rss_mib(fake.process.pid) if fake.process else None
    return {
        "started_at": started_at.isoformat(),
        "config": {"accounts": args.accounts, "calls": args.calls, "latency_s": args.latency,
                   "runs": args.runs, "concurrency": args.concurrency,
                   "baseline_accounts": baseline, "call_days": CALL_DAYS, "seed": SEED,
                   "poll_ms": POLL_SECONDS * 1000, "amqp_prefix": stack.prefix,
                   "database": stack.database},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "fake_vapi_peak_rss_mib": fake_rss,
        "runs": runs,
        **summarize(runs, args),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.metrics_sync",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=1000,
                        help="connected Vapi accounts (default 1000)")
    parser.add_argument("--calls", type=int, default=50, help="calls per account (default 50)")
    parser.add_argument("--latency", type=float, default=0.1,
                        help="seconds the fake adds to every API request (default 0.1)")
    parser.add_argument("--runs", type=int, default=1,
                        help="runs, each measuring every side (default 1: a run takes minutes)")
    parser.add_argument("--concurrency", default=str(DEFAULT_CONCURRENCY),
                        help="SYNC_CONCURRENCY values to measure with every account, "
                             "comma-separated (default 128, the service's default)")
    parser.add_argument("--baseline-accounts", type=int, default=50,
                        help="accounts synced one at a time (SYNC_CONCURRENCY=1), "
                             "extrapolated to --accounts (default 50; 0: skip)")
    args = parser.parse_args(argv)
    try:
        args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency takes numbers separated by commas, e.g. 32,64")
    if (args.accounts < 1 or args.calls < 1 or args.runs < 1 or args.latency < 0
            or args.baseline_accounts < 0 or any(c < 1 for c in args.concurrency)):
        parser.error("--accounts, --calls, --runs and --concurrency must be >= 1, "
                     "--latency and --baseline-accounts >= 0")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # connect_account logs each account (and the fake's shared numbers as taken): errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = asyncio.run(benchmark(args))
    print_table(results, args)
    path = write_results("metrics_sync", results)
    if any(r["flagged"] for r in results["runs"]):
        print("WARNING: some runs failed their checks (see FLAGGED above)")
    return path


if __name__ == "__main__":
    main()
