"""export benchmark: `GET /api/calls/export` of an organization with 1,000,000 calls, read to
the end, with the api's peak memory.

    .venv/bin/python -m bench.export [--calls N] [--runs R] [--format csv|ndjson]

What is measured. The real `calltrail-api` (uvicorn, one worker, a pool of 10 connections)
as a process of its own, over a database seeded with SQL (`generate_series`, as
`bench.api` seeds it): organization A with `--calls` calls (default 1,000,000) and
organization B with 10,000 of its own, so the query has to scope. Then `VACUUM ANALYZE`.
Each of `--runs` runs (default 3) exports all of A's calls once with A's token, as one
client reading the stream as fast as it comes, and records:

    first byte   from sending the request to the body's first chunk (the CSV header is
                 written before the first row is read)
    first rows   from sending the request to the first chunk holding a row (one cursor
                 fetch and one batch of rows later)
    total        from sending the request to the body's last byte
    rows/s       rows read / total

The table shows medians over the runs. The api's peak resident memory is its VmHWM
(`/proc/<pid>/status`) after each run: a peak over the process's life, so the last is the
peak of every export. Before the first export it is measured too (the idle api), so what
an export adds shows. Every run is checked: a 200, the header, and exactly the seeded
number of rows.

Goals (issue 18): the api stays under 150 MB RSS whatever the size of the export, and the
first byte comes within 1 s.

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`
(`calltrail_testkit.stack.Stack`), removed at the end. Results go to
`bench/results/export-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from api import exports
from bench.api import OTHER_CALLS, seed, wait_ready
from bench.harness import machine_info, write_results
from calltrail_testkit.processes import HOST, peak_rss_mib
from calltrail_testkit.stack import Stack

ENCRYPTION_KEY = "bench-export-encryption-key-" + "0" * 21
GOAL_RSS_MB = 150.0
GOAL_FIRST_BYTE_S = 1.0
READ_TIMEOUT_S = 60.0
MIB = 1024 * 1024


async def export_once(client: httpx.AsyncClient, fmt: exports.Format) -> dict[str, Any]:
    """One export read to its end: times, bytes, rows and what was wrong with it."""
    headers = {"Accept": exports.NDJSON} if fmt == "ndjson" else {}
    problems = []
    size = lines = 0
    first_byte: float | None = None
    first_rows: float | None = None
    started = time.perf_counter()
    async with client.stream("GET", "/api/calls/export", headers=headers) as response:
        if response.status_code != 200:
            problems.append(f"status {response.status_code}")
        async for chunk in response.aiter_raw():
            if first_byte is None:
                first_byte = time.perf_counter() - started
                if fmt == "csv" and not chunk.startswith(b"id,createdAt,"):
                    problems.append("no CSV header first")
            size += len(chunk)
            lines += chunk.count(b"\n")
            if first_rows is None and lines > (1 if fmt == "csv" else 0):
                first_rows = time.perf_counter() - started
    total = time.perf_counter() - started
    rows = lines - 1 if fmt == "csv" else lines  # the bench's summaries hold no newline
    return {"first_byte_s": round(first_byte or total, 4),
            "first_rows_s": round(first_rows or total, 4), "total_s": round(total, 3),
            "rows": rows, "bytes": size, "rows_per_s": round(rows / total),
            "mib_per_s": round(size / MIB / total, 1), "problems": problems}


def summarize(runs: list[dict[str, Any]], rss_mib: float | None) -> dict[str, Any]:
    median = {key: statistics.median(run[key] for run in runs)
              for key in ("first_byte_s", "first_rows_s", "total_s", "rows_per_s",
                          "mib_per_s")}
    # /proc counts KiB; the goal is in MB (10^6 bytes): 150 MB is 143.05 MiB.
    rss_mb = None if rss_mib is None else round(rss_mib * MIB / 1e6, 1)
    met = {"first_byte": median["first_byte_s"] < GOAL_FIRST_BYTE_S,
           "rss": rss_mb is not None and rss_mb < GOAL_RSS_MB}
    return {"median": median, "api_peak_rss_mb": rss_mb,
            "goal": {"rss_mb_below": GOAL_RSS_MB, "first_byte_s_below": GOAL_FIRST_BYTE_S,
                     "met": met}}


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    machine = machine_info()
    runs: list[dict[str, Any]] = []
    async with Stack() as stack:
        _org_id, token, seeded = await seed(stack, args.calls)
        print(f"seeded {seeded['calls']:,} calls in {seeded['seconds']} s; "
              f"prefix {stack.prefix}", flush=True)
        server = stack.api(encryption_key=ENCRYPTION_KEY)
        server.start()
        assert server.process is not None
        pid = server.process.pid
        async with httpx.AsyncClient(
                base_url=f"http://{HOST}:{server.port}",
                timeout=httpx.Timeout(10, read=READ_TIMEOUT_S),
                headers={"Authorization": f"Bearer {token}"}) as client:
            await wait_ready(client, server)
            await client.get("/api/calls", params={"limit": 1})  # a warm pool and token
            idle_rss = peak_rss_mib(pid)
            for run in range(1, args.runs + 1):
                result = await export_once(client, args.format)
                result["api_peak_rss_mib"] = peak_rss_mib(pid)
                if result["rows"] != args.calls:
                    result["problems"].append(f"{result['rows']} rows, seeded {args.calls}")
                runs.append({"run": run, **result})
                print(f"run {run}: first byte {result['first_byte_s'] * 1000:7.1f} ms  "
                      f"first rows {result['first_rows_s'] * 1000:7.1f} ms  "
                      f"total {result['total_s']:7.2f} s  {result['rows_per_s']:>9,} rows/s  "
                      f"{result['mib_per_s']:6.1f} MiB/s  api peak RSS "
                      f"{result['api_peak_rss_mib']} MiB"
                      + (f"  PROBLEMS: {result['problems']}" if result["problems"] else ""),
                      flush=True)
        rss = peak_rss_mib(pid)
        log_summary = server.log_summary()
    return {
        "started_at": started_at.isoformat(),
        "config": {"calls": args.calls, "other_calls": OTHER_CALLS, "runs": args.runs,
                   "format": args.format, "path": "/api/calls/export"},
        "machine": {**machine, "load_average_end": os.getloadavg()},
        "seeded": seeded,
        "api_idle_peak_rss_mib": idle_rss,
        "api_peak_rss_mib": rss,
        "api_log": log_summary,
        "runs": runs,
        **summarize(runs, rss),
    }


def print_table(results: dict[str, Any]) -> None:
    config, median, goal = results["config"], results["median"], results["goal"]
    print()
    print(f"export: {config['calls']:,} calls of one organization ({config['other_calls']:,} "
          f"in another) as {config['format']}; medians of {config['runs']} run(s)")
    print(f"first byte {median['first_byte_s'] * 1000:.1f} ms, first rows "
          f"{median['first_rows_s'] * 1000:.1f} ms, total {median['total_s']:.2f} s, "
          f"{median['rows_per_s']:,.0f} rows/s, {median['mib_per_s']:.1f} MiB/s")
    print(f"api peak RSS {results['api_peak_rss_mib']} MiB = {results['api_peak_rss_mb']} MB "
          f"(idle, before the first export: {results['api_idle_peak_rss_mib']} MiB)")
    print(f"goals: first byte < {goal['first_byte_s_below']:g} s "
          f"{'met' if goal['met']['first_byte'] else 'NOT met'}; api RSS < "
          f"{goal['rss_mb_below']:g} MB {'met' if goal['met']['rss'] else 'NOT met'}")
    problems = [p for run in results["runs"] for p in run["problems"]]
    if problems:
        print("CHECKS FAILED: " + "; ".join(problems))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.export",
                                     description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000,
                        help="calls of the exported organization (default 1000000)")
    parser.add_argument("--runs", type=int, default=3, help="runs (default 3)")
    parser.add_argument("--format", choices=("csv", "ndjson"), default="csv",
                        help="what to ask for (default csv)")
    args = parser.parse_args(argv)
    if min(args.calls, args.runs) < 1:
        parser.error("every option must be >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    results = asyncio.run(benchmark(args))
    print_table(results)
    return write_results("export", results)


if __name__ == "__main__":
    main()
