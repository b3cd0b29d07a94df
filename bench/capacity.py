"""Capacity benchmark: what one replica of each service carries, and how the cost of each
grows with organizations, calls and history.

    .venv/bin/python -m bench.capacity [--quick] [--runs N]
                                       [--parts ingest,processor,api,metrics_sync]

Every measurement is one of the other benchmarks' own, called as a function with other
sizes: `bench.ingest` (wrk against the real ingest), `bench.processor` (a queue drained
into Postgres), `bench.api` (wrk against the real api over seeded calls) and
`bench.metrics_sync` (the real service against the fake Vapi, 100 ms per request). Their
docstrings say how each is measured and checked; a measurement that fails its checks is
flagged here too.

Capacity of one replica (measured, one process of each, medians over runs):
- ingest: webhooks/s answered 200 on the shared endpoint by one `calltrail-ingest`, wrk
  with 64 connections on the same cores, bodies of 1-20 KB (`bench.ingest`'s mix);
- call-processor: events/s of one consumer draining a full queue, after its start-up (a
  running replica pays it once), on Vapi's default `serverMessages` mix and on the
  call-only mix, across 4 organizations, with no calls stored before; and of two and four
  replicas draining it together (measured: the deployment table takes them as they are);
- metrics-sync: accounts one replica keeps in sync: HEADROOM of SYNC_INTERVAL_SECONDS
  (its default) over the time per account of a quiet round (every account due at once,
  nothing new: three Vapi requests each) at the largest account count measured, less the
  round's fixed part (the tick's pick-up); and what a call seen adds (the first round's
  time per account less the quiet round's, per call).
A deployment of N replicas of each is then: for the processor, what N replicas drained
(measured on this machine's two cores, so it shows what replicas add here, not on a host
each); for ingest and metrics-sync, N times one replica's figure, a linear extrapolation
that assumes each replica gets cores like the one it was measured on and holds only while
the shared PostgreSQL and RabbitMQ have room (their own limit is not measured here). The
webhook rate sustained is the lower of ingest's and the processor's. `bench.scale` measures
the processor's replicas with Postgres a few milliseconds away, where cores do not bound.

Growth (measured): the cost of one unit of work at sizes X, 2X and 4X, in each run:
- processor, calls stored: ms per event (call-only mix, 4 organizations) while the calls
  table already holds H, 2H, 4H calls of the same organizations (`bench.api`'s seed: 120
  days, other customers than the traffic's, daily statistics that match; no archived
  events). Each run seeds H, measures, adds H, measures, adds 2H, measures; between
  measurements the last one's calls and leads are deleted and the tables vacuumed;
- processor, organizations: ms per event with the same calls spread over K, 2K, 4K
  organizations (the same number of customers in all);
- api: p50 ms per request at 1 connection of the overview (30 and 90 days) and the first
  page of calls of an organization with C, 2C, 4C calls (the three organizations in one
  database, measured in turns), with the same process's /healthz as the floor and
  EXPLAIN ANALYZE of the routes' queries per size;
- metrics-sync: ms per account of a quiet round, and of the first round (backfill of each
  account's calls), with A, 2A, 4A accounts (less each round's fixed part); and ms per
  claim of due accounts (the scheduler's query, rolled back) right after the quiet round,
  when each account is due again at its own phase of the interval, as in steady state: a
  replica claims on every tick and whenever a run ends, so with accounts spread over the
  interval claims are about as many as runs.
The processor's and metrics-sync's sizes take turns within a run, so drifting load hits
them alike. For each series: the ratio of the cost per unit between doublings (within
each run, then the median over runs) and the exponent k of cost per unit ~ size^k from X
to 4X: flat (k < 0.3), linear (k < 1.3) or worse; "?" marks a class the runs disagree on.
Nothing is compared with a number from another day.

`--quick` uses small sizes to check the harness (about two minutes); its figures are
dominated by fixed costs (start-up, warm pools, Vapi's latency) and say little. Results go
to `bench/results/capacity-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import math
import os
import random
import secrets
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog

from bench import api, ingest, metrics_sync, processor
from bench.harness import ensure_wrk, machine_info, write_results
from bench.payloads import build_requests, write_requests
from calltrail_common.organizations import NewOrganization, create_organization
from calltrail_common.settings import Settings
from calltrail_common.vapi_accounts import CLAIM_DUE
from calltrail_testkit.lifecycles import (
    CALL_ONLY_MIX,
    MIXES,
    CallFactory,
    Event,
    Organization,
    interleave,
)
from calltrail_testkit.processes import HOST
from calltrail_testkit.stack import Stack

DOUBLINGS = (1, 2, 4)
HEADROOM = 0.5  # a replica's round may take at most this share of the sync interval
SYNC_INTERVAL_SECONDS = Settings.model_fields["sync_interval_seconds"].default
DEPLOYMENTS = (1, 2, 4)
CUSTOMERS = 600  # across the organizations of the processor's traffic (4 x its 150)
FLAT_BELOW, LINEAR_BELOW = 0.3, 1.3  # exponent k of cost per unit ~ size^k
API_WARMUP_SECONDS = 1  # every route was requested before; the pool is warm
CLAIM_SAMPLES = 5
SYNC_LEASE_SECONDS = Settings.model_fields["sync_lease_seconds"].default

# The calls and leads of the last measurement go, the seeded history stays (its call ids
# are `call-<tag>-<n>`, the processor's are Vapi's uuids; every seeded lead has calls).
FORGET_LAST_MEASUREMENT = (
    "DELETE FROM calls WHERE id NOT LIKE 'call-%'",
    "DELETE FROM leads l WHERE NOT EXISTS (SELECT 1 FROM calls c WHERE c.lead_id = l.id)",
    "TRUNCATE daily_stats_shards, daily_call_outcome_shards, daily_assistant_shards",
)
VACUUM_HISTORY = ("VACUUM ANALYZE calls, leads, daily_stats_shards, daily_call_outcome_shards, "
                  "daily_assistant_shards")
RESET_EVENTS = "TRUNCATE events, unassigned_events"


@dataclass(frozen=True)
class Sizes:
    ingest_seconds: int  # wrk per run, after bench.ingest's 2 s warm-up
    default_calls: int  # processor capacity, default mix (~50 events a call)
    call_only_calls: int  # processor capacity and growth, call-only mix (~4 events a call)
    organizations: int  # K
    history: int  # H, calls stored before the measurement
    api_calls: int  # C
    api_seconds: int  # wrk per route and size, after API_WARMUP_SECONDS
    accounts: int  # A
    account_calls: int  # calls per Vapi account (the first round's backfill)
    consumers: tuple[int, ...] = (1, 2, 4)  # processor replicas measured for its capacity


FULL = Sizes(ingest_seconds=8, default_calls=200, call_only_calls=2000, organizations=16,
             history=30_000, api_calls=25_000, api_seconds=3, accounts=250, account_calls=20)
QUICK = Sizes(ingest_seconds=3, default_calls=60, call_only_calls=300, organizations=16,
              history=2_000, api_calls=2_000, api_seconds=1, accounts=25, account_calls=3,
              consumers=(1,))


# --- growth series ------------------------------------------------------------------------


def growth_class(k: float) -> str:
    return "flat" if k < FLAT_BELOW else "linear" if k < LINEAR_BELOW else "worse"


@dataclass
class Series:
    """The cost of one unit of work (`unit`) at each size, per run."""

    name: str
    unit: str
    size_unit: str
    sizes: tuple[int, ...]
    costs: dict[int, dict[int, float]] = field(default_factory=dict)  # run -> size -> cost

    def add(self, run: int, size: int, cost: float | None) -> None:
        if cost is not None:
            self.costs.setdefault(run, {})[size] = cost

    def at(self, size: int) -> list[float]:
        return [run[size] for run in self.costs.values() if size in run]

    def summary(self) -> dict[str, Any]:
        runs = list(self.costs.values())
        ratios = []
        for low, high in zip(self.sizes, self.sizes[1:], strict=False):
            per_run = [run[high] / run[low] for run in runs if low in run and high in run]
            ratios.append(round(statistics.median(per_run), 3) if per_run else None)
        first, last = self.sizes[0], self.sizes[-1]
        exponents = [math.log(run[last] / run[first]) / math.log(last / first)
                     for run in runs if first in run and last in run]
        k = statistics.median(exponents) if exponents else None
        disagree = len({growth_class(e) for e in exponents}) > 1
        return {
            "series": self.name, "unit": self.unit, "size_unit": self.size_unit,
            "sizes": list(self.sizes),
            "median_cost": {size: statistics.median(v) if (v := self.at(size)) else None
                            for size in self.sizes},
            "cost_range": {size: [min(v), max(v)] if (v := self.at(size)) else None
                           for size in self.sizes},
            "ratio_per_doubling": ratios,
            "exponent": round(k, 3) if k is not None else None,
            "exponent_per_run": [round(e, 3) for e in exponents],
            "class": None if k is None else growth_class(k) + ("?" if disagree else ""),
        }


def sized(base: int) -> tuple[int, ...]:
    return tuple(base * d for d in DOUBLINGS)


def median(records: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in records if r.get(key) is not None]
    return statistics.median(values) if values else None


# --- ingest -------------------------------------------------------------------------------


async def measure_ingest(stack: Stack, sizes: Sizes, runs: int,
                         growth: dict[str, Series]) -> dict[str, Any]:
    """bench.ingest's measurement of the real ingest alone, on this stack's prefix (no
    growth series: its work per webhook does not depend on stored data)."""
    args = ingest.parse_args(["--runs", str(runs), "--duration", str(sizes.ingest_seconds)])
    wrk = ensure_wrk()
    secret = secrets.token_urlsafe(32)
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    organizations = [(str(uuid.uuid4()), f"+1415555{2000 + index:04d}")
                     for index in range(ingest.ORGANIZATIONS)]
    requests = build_requests(args.samples, secret, count=ingest.BODY_COUNT,
                              seed=ingest.BODY_SEED, now_ms=now_ms, organizations=organizations)
    manifest = write_requests(requests, stack.workdir / "bodies")
    server = stack.ingest(shared_secret=secret)
    server.start()
    queue = ingest.EventQueue(stack.topology)
    await queue.open()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            await ingest.wait_ready(client, server, requests[0])
            bench = ingest.Bench(wrk, manifest, [server], queue, stack.database_url, client,
                                 args.duration, args.connections)
            records = [run["servers"][ingest.INGEST] for run in await bench.run(runs)]
    finally:
        server.stop()
        await queue.close()
    rates = [r["requests_per_s"] for r in records]
    return {"events_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "p99_ms": median(records, "p99_ms"), "connections": args.connections,
            "flagged_runs": sum(r["flagged"] for r in records), "runs": records}


# --- call-processor -----------------------------------------------------------------------


def traffic(args: argparse.Namespace, organizations: list[Organization], *, mix: str,
            calls: int) -> list[Event]:
    """bench.processor's traffic of `calls` calls over `organizations` (CUSTOMERS callers)."""
    factory = CallFactory(args.samples, organizations, seed=processor.SEED,
                          now_ms=int(dt.datetime.now(dt.UTC).timestamp() * 1000), mix=mix,
                          customers_per_org=CUSTOMERS // len(organizations))
    return list(interleave(factory.calls(calls), random.Random(processor.SEED),
                           processor.CONCURRENT_CALLS))


def sustained_rate(record: dict[str, Any]) -> float | None:
    """Events/s once the processor runs (its start-up is paid once, not per event); None
    for a measurement that failed its checks."""
    if record["flagged"]:
        return None
    return float(record["events_per_s_after_startup"] or record["events_per_s"])


def ms_per_event(record: dict[str, Any]) -> float | None:
    rate = sustained_rate(record)
    return 1000 / rate if rate else None


async def store_history(stack: Stack, organizations: list[Organization], calls: int,
                        *, level: int, leads: int) -> int:
    """`calls` more calls stored in the organizations with bench.api's seed statements (ids
    `call-h<level>o<index>-<n>`, numbers of `leads` leads each, seeded with level 0, that
    are no customer of the processor's traffic); how many were stored."""
    each = calls // len(organizations)
    connection = await stack.db()
    try:
        for index, org in enumerate(organizations):
            org_id = uuid.UUID(org.org_id)
            if level == 0:
                await connection.execute(api.SEED_LEADS, org_id, leads)
            await connection.execute(api.SEED_CALLS, org_id, each, f"h{level}o{index}", leads,
                                     api.DAYS)
    finally:
        await connection.close()
    return each * len(organizations)


async def forget_last_measurement(stack: Stack, organizations: list[Organization]
                                  ) -> None:
    """Back to the seeded history alone: the last measurement's calls, leads and statistics
    gone, the history's statistics aggregated again, vacuumed (no dead rows in its way)."""
    connection = await stack.db()
    try:
        for statement in FORGET_LAST_MEASUREMENT:
            await connection.execute(statement)
        for org in organizations:
            await api.seed_daily_tables(connection, uuid.UUID(org.org_id))
        await connection.execute(VACUUM_HISTORY)
    finally:
        await connection.close()


async def measure_processor(stack: Stack, sizes: Sizes, runs: int,
                            growth: dict[str, Series]) -> dict[str, Any]:
    args = processor.parse_args(["--runs", str(runs)])
    org_counts = sized(sizes.organizations)
    organizations = await stack.create_organizations(max(org_counts))
    base = organizations[:processor.ORGANIZATIONS]
    capacity_calls = {mix: sizes.default_calls if mix != CALL_ONLY_MIX
                      else sizes.call_only_calls for mix in MIXES}
    print(f"processor: building traffic; prefix {stack.prefix}", flush=True)
    capacity_traffic = {mix: traffic(args, base, mix=mix, calls=capacity_calls[mix])
                        for mix in MIXES}
    spread_traffic = {k: traffic(args, organizations[:k], mix=CALL_ONLY_MIX,
                                 calls=sizes.call_only_calls) for k in org_counts}
    by_orgs = growth["processor, organizations"] = Series(
        "processor, organizations", "ms/event", "organizations", org_counts)
    records: dict[str, list[dict[str, Any]]] = {}

    async def measure(label: str, events: list[Event], calls: int, run: int, side: int = 1,
                      reset: str = processor.RESET) -> dict[str, Any]:
        record = await processor.measure(stack, events, mix=label, calls=calls, side=side,
                                         run=run, args=args, reset=reset)
        records.setdefault(f"{label} x{side}", []).append(record)
        return record

    for run in range(1, runs + 1):
        for mix, events in capacity_traffic.items():
            for side in sizes.consumers:
                await measure(mix, events, capacity_calls[mix], run, side)
        for k, events in spread_traffic.items():
            record = await measure(f"{CALL_ONLY_MIX}-k{k}", events, sizes.call_only_calls,
                                   run)
            by_orgs.add(run, k, ms_per_event(record))

    # Each run stores H, then H more, then 2H more, measuring after each, so that a run's
    # three sizes are measured close together (the history is seeded anew for every run).
    history = growth["processor, calls stored"] = Series(
        "processor, calls stored", "ms/event", "calls stored", sized(sizes.history))
    leads = min(api.LEADS, sizes.history // len(base))  # every lead has calls from level 0
    for run in range(1, runs + 1):
        await stack.reset(processor.RESET)
        stored = 0
        for level, size in enumerate(history.sizes):
            stored += await store_history(stack, base, size - stored, level=level, leads=leads)
            await forget_last_measurement(stack, base)
            print(f"processor: {stored:,} calls stored", flush=True)
            record = await measure(f"{CALL_ONLY_MIX}-h{size}",
                                   capacity_traffic[CALL_ONLY_MIX],
                                   sizes.call_only_calls + stored, run, reset=RESET_EVENTS)
            history.add(run, size, ms_per_event(record))

    capacity: dict[str, Any] = {}
    for mix in MIXES:
        one = records[f"{mix} x1"]
        rates = [rate for r in one if (rate := sustained_rate(r))]
        by_replicas = {}
        for side in sizes.consumers:
            side_rates = [rate for r in records.get(f"{mix} x{side}", [])
                          if (rate := sustained_rate(r))]
            by_replicas[side] = statistics.median(side_rates) if side_rates else None
        capacity[mix] = {
            "events": len(capacity_traffic[mix]), "calls": capacity_calls[mix],
            "events_per_s": statistics.median(rates) if rates else None,
            "min": min(rates, default=None), "max": max(rates, default=None),
            "events_per_s_with_startup": median(one, "events_per_s"),
            "by_replicas": by_replicas,
            "machine_cpu_busy": median(one, "machine_cpu_busy"),
            "flagged_runs": sum(r["flagged"] for side in sizes.consumers
                                for r in records.get(f"{mix} x{side}", [])),
        }
    return {"capacity": capacity, "records": records}


# --- api ----------------------------------------------------------------------------------


async def measure_api(stack: Stack, sizes: Sizes, runs: int,
                      growth: dict[str, Series]) -> dict[str, Any]:
    """bench.api's routes for three organizations of C, 2C and 4C calls in one database."""
    args = api.parse_args(["--runs", str(runs), "--duration", str(sizes.api_seconds)])
    wrk = ensure_wrk()
    today = dt.datetime.now(dt.UTC).date()
    counts = sized(sizes.api_calls)
    connection = await stack.db()
    orgs: dict[int, NewOrganization] = {}  # by its number of calls, tagged c<count>
    try:
        for count in counts:
            orgs[count] = await create_organization(connection, f"Bench {count} calls")
            await api.seed_organization(connection, orgs[count].org_id, count, f"c{count}")
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()
    print(f"api: seeded organizations of {', '.join(f'{c:,}' for c in counts)} calls; "
          f"prefix {stack.prefix}", flush=True)
    server = stack.api(encryption_key=api.ENCRYPTION_KEY)
    server.start()
    base = f"http://{HOST}:{server.port}"
    paths = api.targets(today)
    problems, plans = [], {}
    for count, org in orgs.items():
        async with httpx.AsyncClient(base_url=base, timeout=10, headers={
                "Authorization": f"Bearer {org.api_token}"}) as client:
            await api.wait_ready(client, server)
            problems += [f"{count} calls: {p}" for p in await api.check_answers(
                client, paths, stack.database_url, org.org_id, today, f"c{count}")]
        plans[count] = {name: plan["execution_ms"] for name, plan in
                        (await api.explain(stack.database_url, org.org_id, today)).items()}
    for problem in problems:
        print(f"CHECK FAILED: {problem}", flush=True)
    series = {}
    for name in api.MEASURED:
        series[name] = growth[f"api, {name}"] = Series(f"api, {name}", "p50 ms",
                                                       "calls in the org", counts)
    results: list[dict[str, Any]] = []
    for run in range(1, runs + 1):
        floor = await api.measure(wrk, base + paths[api.HEALTHZ], orgs[counts[0]].api_token,
                                  label=f"run {run} {api.HEALTHZ:<28}", seconds=args.duration,
                                  connections=1, warmup=API_WARMUP_SECONDS)
        results.append({"run": run, "size": None, "route": api.HEALTHZ, **floor})
        for name in api.MEASURED:
            for count in counts:
                result = await api.measure(
                    wrk, base + paths[name], orgs[count].api_token,
                    label=f"run {run} {name} @{count:<14,}",
                    seconds=args.duration, connections=1, warmup=API_WARMUP_SECONDS)
                results.append({"run": run, "size": count, "route": name, **result})
                series[name].add(run, count, None if result["errors"] else result["p50_ms"])
    floors = [r["p50_ms"] for r in results if r["route"] == api.HEALTHZ]
    return {"healthz_p50_ms": statistics.median(floors), "explain_ms": plans,
            "check_problems": problems, "runs": results}


# --- metrics-sync -------------------------------------------------------------------------


def ms_per_account(record: dict[str, Any], label: str) -> float | None:
    """A round's time per account, less its fixed part (start-up or the next tick's pick-up:
    until the first run started)."""
    round_ = record["rounds"].get(label)
    if record["flagged"] or not round_ or round_["seconds"] is None:
        return None
    return 1000 * (round_["seconds"] - (round_["first_started_s"] or 0)) / record["accounts"]


async def claim_ms(stack: Stack) -> float:
    """One claim of due accounts, the scheduler's own query (rolled back), as a replica
    makes it on every tick and whenever a run ends: ms, the median of CLAIM_SAMPLES."""
    connection = await stack.db()
    samples = []
    try:
        for _ in range(CLAIM_SAMPLES):
            transaction = connection.transaction()
            await transaction.start()
            started = time.perf_counter()
            await connection.fetch(CLAIM_DUE, "bench-capacity",
                                   metrics_sync.DEFAULT_CONCURRENCY, SYNC_LEASE_SECONDS)
            samples.append(1000 * (time.perf_counter() - started))
            await transaction.rollback()
    finally:
        await connection.close()
    return statistics.median(samples)


async def measure_metrics_sync(stack: Stack, sizes: Sizes, runs: int,
                               growth: dict[str, Series]) -> dict[str, Any]:
    """bench.metrics_sync's two rounds with A, 2A and 4A accounts, one replica at its
    default SYNC_CONCURRENCY."""
    counts = sized(sizes.accounts)
    args = metrics_sync.parse_args(["--accounts", str(counts[-1]), "--runs", str(runs),
                                    "--calls", str(sizes.account_calls)])
    fake, base_url = await stack.serve_fake_vapi(latency=args.latency)
    keys = await metrics_sync.add_fake_accounts(base_url, counts[-1], args.calls, stack.prefix)
    orgs = await metrics_sync.create_organizations(stack, counts[-1])
    print(f"metrics-sync: {counts[-1]} fake accounts of {args.calls} calls; "
          f"prefix {stack.prefix}", flush=True)
    rounds = {"second": "metrics-sync, quiet round", "first": "metrics-sync, first round"}
    for name in rounds.values():
        growth[name] = Series(name, "ms/account", "accounts", counts)
    claims = growth["metrics-sync, claim due"] = Series(
        "metrics-sync, claim due", "ms/claim", "accounts", counts)
    records = []
    for run in range(1, runs + 1):
        for count in counts:
            record = await metrics_sync.measure(
                stack, fake, base_url, orgs[:count], keys[:count],
                concurrency=metrics_sync.DEFAULT_CONCURRENCY, run=run, args=args, settle_s=0)
            # After the quiet round every account is due again at its own phase of the
            # interval: the steady state, in which few accounts are due at any moment.
            record["claim_ms"] = None if record["flagged"] else await claim_ms(stack)
            records.append(record)
            claims.add(run, count, record["claim_ms"])
            for label, name in rounds.items():
                growth[name].add(run, count, ms_per_account(record, label))
    quiet, first = (growth[name].summary()["median_cost"][counts[-1]]
                    for name in rounds.values())
    return {
        "accounts_measured": counts[-1], "calls_per_account": args.calls,
        "quiet_ms_per_account": quiet, "first_round_ms_per_account": first,
        # A call seen costs this beyond a quiet sync (the first round sees each call once).
        "ms_per_call_seen": (first - quiet) / args.calls if first and quiet else None,
        "accounts_per_replica": int(HEADROOM * SYNC_INTERVAL_SECONDS * 1000 / quiet)
        if quiet else None,
        "latency_s": args.latency, "concurrency": metrics_sync.DEFAULT_CONCURRENCY,
        "flagged_runs": sum(r["flagged"] for r in records), "runs": records,
    }


# --- the derived deployment ---------------------------------------------------------------


def times(n: int, figure: float | None) -> float | None:
    return None if figure is None else n * figure


def deployment(results: dict[str, Any]) -> list[dict[str, Any]]:
    """N replicas of each: the processor's as measured with N replicas (N times one where N
    was not measured), ingest's and metrics-sync's N times one replica's figure. A webhook
    is one event, so the slower of ingest and the processor sets the rate."""
    ingest_rate = results.get("ingest", {}).get("events_per_s")
    processor = results.get("processor", {}).get("capacity", {})
    accounts = results.get("metrics_sync", {}).get("accounts_per_replica")
    rows = []
    for n in DEPLOYMENTS:
        webhooks = times(n, ingest_rate)
        events = {}
        for mix, m in processor.items():
            measured = m.get("by_replicas", {}).get(n) if n > 1 else m["events_per_s"]
            events[mix] = measured if measured is not None else times(n, m["events_per_s"])
        rows.append({
            "replicas": n,
            "basis": "measured" if n == 1 else f"processor measured, others x{n}",
            "ingest_webhooks_per_s": webhooks, "processor_events_per_s": events,
            "sustained_webhooks_per_s": {mix: min(webhooks, rate) if webhooks and rate
                                         else None for mix, rate in events.items()},
            "metrics_sync_accounts": times(n, accounts),
        })
    return rows


# --- report -------------------------------------------------------------------------------


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def flagged(count: int) -> str:
    return f"; FLAGGED in {count} run(s)" if count else ""


def print_tables(results: dict[str, Any]) -> None:
    print(f"\ncapacity of one replica: medians of {results['config']['runs']} run(s); "
          f"{results['machine']['nproc']} cores shared with RabbitMQ, PostgreSQL and the load")
    print(f"{'service':<16}{'figure':<38}{'median':>9}{'min-max':>14}  notes")
    if "ingest" in results:
        m = results["ingest"]
        print(f"{'ingest':<16}{'webhooks/s answered 200':<38}{number(m['events_per_s']):>9}"
              f"{number(m['min']) + '-' + number(m['max']):>14}  p99 {m['p99_ms']:.0f} ms; "
              f"wrk, {m['connections']} connections, on the same cores"
              + flagged(m["flagged_runs"]))
    for mix, m in results.get("processor", {}).get("capacity", {}).items():
        print(f"{'call-processor':<16}{f'events/s, {mix} mix':<38}"
              f"{number(m['events_per_s']):>9}{number(m['min']) + '-' + number(m['max']):>14}"
              f"  {number(m['events_per_s_with_startup'])} with start-up; "
              + "; ".join(f"{side} replicas {number(rate)}" for side, rate
                          in m["by_replicas"].items() if side > 1)
              + "; machine "
              f"{number(100 * (m['machine_cpu_busy'] or 0))}% busy" + flagged(m["flagged_runs"]))
    if "metrics_sync" in results:
        m = results["metrics_sync"]
        what = f"accounts in {HEADROOM:.0%} of a {SYNC_INTERVAL_SECONDS} s interval"
        print(f"{'metrics-sync':<16}{what:<38}{number(m['accounts_per_replica']):>9}{'':>14}"
              f"  quiet round {number(m['quiet_ms_per_account'], 2)} ms/account at "
              f"{m['accounts_measured']:,} quiet accounts (first round "
              f"{number(m['first_round_ms_per_account'], 1)}: "
              f"{number(m['ms_per_call_seen'], 2)} ms per call seen); Vapi "
              f"{m['latency_s'] * 1000:.0f} ms/request, {m['concurrency']} slots"
              + flagged(m["flagged_runs"]))

    mixes = list(results.get("processor", {}).get("capacity", {}))
    pair = " / ".join(mixes) or "not measured"
    print("\nN replicas of each: N = 1 is measured; the processor's N > 1 too (N replicas "
          "on these same cores); ingest's and metrics-sync's N > 1 is N times one, a linear "
          "extrapolation that holds only while the shared PostgreSQL and RabbitMQ keep up "
          "(not measured here). Sustained: the lower of ingest and the processor.")
    print(f"{'N':>3}{'ingest webhooks/s':>20}{f'processor events/s ({pair})':>42}"
          f"{f'sustained webhooks/s ({pair})':>44}{'metrics-sync accounts':>23}  basis")
    for row in results["deployment"]:
        processors = " / ".join(number(row["processor_events_per_s"][m]) for m in mixes) or "-"
        sustained = " / ".join(number(row["sustained_webhooks_per_s"][m]) for m in mixes) or "-"
        print(f"{row['replicas']:>3}{number(row['ingest_webhooks_per_s']):>20}"
              f"{processors:>42}{sustained:>44}{number(row['metrics_sync_accounts']):>23}"
              f"  {row['basis']}")

    print("\ngrowth: cost per unit of work at 1x, 2x and 4x the size; ratio per doubling "
          "(the median of each run's own); k: cost per unit ~ size^k from 1x to 4x")
    print(f"{'series':<30}{'unit':>11}{'1x size':>26}{'1x':>8}{'2x':>8}{'4x':>8}"
          f"{'2x/1x':>7}{'4x/2x':>7}{'k':>7}  class   k per run")
    for s in results["growth"]:
        costs = "".join(f"{number(s['median_cost'][size], 2):>8}" for size in s["sizes"])
        ratios = "".join(f"{number(r, 2):>7}" for r in s["ratio_per_doubling"])
        size = f"{s['sizes'][0]:,} {s['size_unit']}"
        print(f"{s['series']:<30}{s['unit']:>11}{size:>26}{costs}{ratios}"
              f"{number(s['exponent'], 2):>7}  {s['class'] or '-':<7} {s['exponent_per_run']}")
    print(f"(flat: k < {FLAT_BELOW}; linear: k < {LINEAR_BELOW}; else worse. '?': the runs' "
          f"own classes differ.)")
    classes = {s["series"]: s["class"] for s in results["growth"]}
    for figure, needed in (
            ("events/s per processor replica (measured with no calls stored)",
             ("processor, calls stored",)),
            ("accounts per metrics-sync replica (more accounts than measured, all due at once)",
             ("metrics-sync, quiet round", "metrics-sync, claim due"))):
        if measured := [f"'{series}' {classes[series]}" for series in needed
                        if series in classes]:
            print(f"{figure}: holds as the data grows if these are flat: "
                  + ", ".join(measured))
    if "api" in results:
        a = results["api"]
        print(f"api: /healthz p50 {a['healthz_p50_ms']:.2f} ms (the floor); EXPLAIN ANALYZE "
              f"ms, once per size: " + "; ".join(
                  f"{size:,} calls: " + ", ".join(f"{q} {ms}" for q, ms in plans.items())
                  for size, plans in a["explain_ms"].items()))
        for problem in a["check_problems"]:
            print(f"CHECK FAILED: {problem}")
    print("took " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds
                              in results["seconds"].items())
          + f" (total {sum(results['seconds'].values()) / 60:.1f} min)")


# Each part in a stack of its own (prefix, database), in this order.
MEASUREMENTS: dict[str, Callable[[Stack, Sizes, int, dict[str, Series]],
                                 Awaitable[dict[str, Any]]]] = {
    "ingest": measure_ingest,
    "processor": measure_processor,
    "api": measure_api,
    "metrics_sync": measure_metrics_sync,
}


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK if args.quick else FULL
    results: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "config": {"quick": args.quick, "runs": args.runs, "parts": args.parts,
                   "sizes": asdict(sizes), "doublings": DOUBLINGS, "headroom": HEADROOM,
                   "sync_interval_s": SYNC_INTERVAL_SECONDS},
        "machine": machine_info(),
    }
    growth: dict[str, Series] = {}
    results["seconds"] = {}
    for part in args.parts:
        started = time.perf_counter()
        async with Stack() as stack:
            print(f"\n--- {part} ---", flush=True)
            results[part] = await MEASUREMENTS[part](stack, sizes, args.runs, growth)
        results["seconds"][part] = round(time.perf_counter() - started, 1)
    results["deployment"] = deployment(results)
    results["growth"] = [series.summary() for series in growth.values()]
    results["machine"]["load_average_end"] = os.getloadavg()
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, to check the harness (figures mean little)")
    parser.add_argument("--runs", type=int, default=None,
                        help="runs, each measuring every size (default 3; 1 with --quick)")
    parser.add_argument("--parts", default=",".join(MEASUREMENTS),
                        help=f"what to measure, comma-separated (default "
                             f"{','.join(MEASUREMENTS)})")
    args = parser.parse_args(argv)
    args.runs = args.runs if args.runs is not None else 1 if args.quick else 3
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if args.runs < 1 or not args.parts or any(p not in MEASUREMENTS for p in args.parts):
        parser.error(f"--runs must be >= 1; --parts takes names among "
                     f"{', '.join(MEASUREMENTS)}")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # connect_account logs each account (and the fake's shared numbers as taken): errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    results = asyncio.run(benchmark(args))
    print_tables(results)
    return write_results("capacity", results)


if __name__ == "__main__":
    main()
