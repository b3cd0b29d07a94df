"""`make chaos`: `python -m chaos` runs every fault, or those named, and prints the table.

    .venv/bin/python -m chaos [--faults a,b,...] [--short] [--rate R] [--duration S]
                              [--fault-at S] [--fault-seconds S] [--no-direct-write]

The results go to `bench/results/chaos-<UTC>.json`, the services' logs of each fault to
`bench/results/chaos-<UTC>-logs/<fault>/`. The exit status is non-zero if a goal is missed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import structlog
import uvloop

import chaos
from calltrail_testkit.processes import machine_info
from calltrail_testkit.rabbit_node import RabbitCluster, RabbitNode
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.vapi_sender import NO_RETRIES, BackoffPlan
from chaos.baseline import run_direct_write
from chaos.faults import CLUSTER_FAULTS, FAULTS, NEEDS_ROOT, cluster_plan, run_fault
from chaos.outbound import (
    OUTBOUND_FAULTS,
    OUTBOUND_FULL,
    OUTBOUND_SHORT,
    OutboundPlan,
    print_outbound_summary,
    print_outbound_table,
    run_outbound_fault,
)
from chaos.rig import FULL, SHORT, Plan, can_mount
from chaos.sync import (
    SYNC_FAULTS,
    SYNC_FULL,
    SYNC_SHORT,
    SyncPlan,
    print_sync_summary,
    print_sync_table,
    run_sync_fault,
)
from chaos.verdict import RESUME_GOAL_SECONDS, print_row_summary, print_webhook_table

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"


def print_table(rows: list[dict[str, Any]], plan: Plan, sync_plan: SyncPlan,
                outbound_plan: OutboundPlan = OUTBOUND_FULL) -> None:
    sync_rows = [row for row in rows if row["fault"] in SYNC_FAULTS]
    outbound_rows = [row for row in rows if row["fault"] in OUTBOUND_FAULTS]
    rows = [row for row in rows
            if row["fault"] not in SYNC_FAULTS and row["fault"] not in OUTBOUND_FAULTS]
    if rows:
        print_webhook_table(rows, plan)
    if sync_rows:
        print_sync_table(sync_rows, sync_plan)
    if outbound_rows:
        print_outbound_table(outbound_rows, outbound_plan)


async def suite(faults: list[str], plan: Plan, direct_write: bool,
                samples_dir: Path, logs: Path, sync_plan: SyncPlan = SYNC_FULL,
                outbound_plan: OutboundPlan = OUTBOUND_FULL) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if any(f in FAULTS or f in SYNC_FAULTS or f in OUTBOUND_FAULTS for f in faults):
        with RabbitNode() as node:
            print(f"RabbitMQ node {node.name} on :{node.port} (the suite's own)", flush=True)
            for name in (f for f in faults if f in FAULTS):
                if name in NEEDS_ROOT and not can_mount():
                    rows.append({"fault": name, "skipped": "mounting a tmpfs needs root"})
                    continue
                print(f"{name} ...", flush=True)
                try:
                    rows.append(await run_fault(name, plan, node, samples_dir, logs))
                except Exception as error:  # the other faults still run; the row says why
                    rows.append({"fault": name, "error": f"{type(error).__name__}: {error}"})
                print_row_summary(rows[-1])
            # metrics-sync's faults, on the same node, each in a world of its own.
            for name in (f for f in faults if f in SYNC_FAULTS):
                print(f"{name} ...", flush=True)
                try:
                    rows.append(await run_sync_fault(name, sync_plan, node, logs))
                except Exception as error:  # the other faults still run; the row says why
                    rows.append({"fault": name, "kind": "sync",
                                 "error": f"{type(error).__name__}: {error}"})
                print_sync_summary(rows[-1])
            # The outbound webhooks' faults, on the same node, each in a world of its own.
            for name in (f for f in faults if f in OUTBOUND_FAULTS):
                print(f"{name} ...", flush=True)
                try:
                    rows.append(await run_outbound_fault(name, outbound_plan, node,
                                                         samples_dir, logs))
                except Exception as error:  # the other faults still run; the row says why
                    rows.append({"fault": name, "kind": "outbound",
                                 "error": f"{type(error).__name__}: {error}"})
                print_outbound_summary(rows[-1])
    for name in (f for f in faults if f in CLUSTER_FAULTS):
        print(f"{name}: starting a three-node RabbitMQ cluster of the suite's own ...",
              flush=True)
        try:
            with RabbitCluster() as cluster:
                rows.append(await run_fault(name, cluster_plan(plan), cluster, samples_dir,
                                            logs))
        except Exception as error:  # the other faults still run; the row says why
            rows.append({"fault": name, "error": f"{type(error).__name__}: {error}"})
        print_row_summary(rows[-1])
    if direct_write:
        for retries in (NO_RETRIES, BackoffPlan()):
            print(f"direct-write postgres-cut ({retries.max_retries} retries) ...",
                  flush=True)
            try:
                rows.append(await run_direct_write(plan, retries, samples_dir))
            except Exception as error:
                rows.append({"fault": "direct-write postgres-cut",
                             "error": f"{type(error).__name__}: {error}"})
            print_row_summary(rows[-1])
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos",
                                     description=chaos.__doc__.split("\n\n")[0])
    every = [*FAULTS, *CLUSTER_FAULTS, *SYNC_FAULTS, *OUTBOUND_FAULTS]
    parser.add_argument("--faults", default=",".join(every),
                        help=f"comma-separated, of: {', '.join(every)} (default: all)")
    parser.add_argument("--short", action="store_true",
                        help="the small sizes the tests use (50/s for 8 s, 3 s faults; "
                             "12 accounts and 6 s sync faults; 80 events/s for 8 s, 3 s "
                             "outbound faults)")
    parser.add_argument("--rate", type=float, help="webhooks/s (default 300)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 60)")
    parser.add_argument("--fault-at", type=float, help="seconds into the load (default 15)")
    parser.add_argument("--fault-seconds", type=float,
                        help="fault length, sync and outbound faults' too (default 20)")
    parser.add_argument("--no-direct-write", action="store_true",
                        help="skip the direct-write baseline rows")
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR)
    args = parser.parse_args(argv)
    args.faults = [name for name in args.faults.split(",") if name]  # "" : baseline only
    unknown = set(args.faults) - set(every)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # The harness's own broker client retries through the faults it causes: not news.
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # The sync faults connect accounts as the CLI does, which logs each: errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    plan = SHORT if args.short else FULL
    sync_plan = SYNC_SHORT if args.short else SYNC_FULL
    outbound_plan = OUTBOUND_SHORT if args.short else OUTBOUND_FULL
    if args.fault_seconds is not None:
        sync_plan = replace(sync_plan, fault_seconds=args.fault_seconds)
        outbound_plan = replace(outbound_plan, fault_seconds=args.fault_seconds)
    overrides = {k: v for k, v in (("rate", args.rate), ("duration", args.duration),
                                   ("fault_at", args.fault_at),
                                   ("fault_seconds", args.fault_seconds)) if v is not None}
    plan = replace(plan, **overrides)
    faults = args.faults
    started_at = dt.datetime.now(dt.UTC)
    stamp = started_at.strftime('%Y%m%dT%H%M%SZ')
    logs = RESULTS_DIR / f"chaos-{stamp}-logs"
    rows = uvloop.run(suite(faults, plan, not args.no_direct_write, args.samples, logs, sync_plan,
                            outbound_plan))
    print_table(rows, plan, sync_plan, outbound_plan)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"chaos-{stamp}.json"
    path.write_text(json.dumps({"started_at": started_at.isoformat(),
                                "command": " ".join(sys.argv), "plan": asdict(plan),
                                "sync_plan": asdict(sync_plan),
                                "outbound_plan": {**asdict(outbound_plan), "retry_delays_ms":
                                                  outbound_plan.retry_delays_ms},
                                "machine": {**machine_info(), "load_average_end":
                                            os.getloadavg()},
                                "rows": rows}, indent=2, default=str) + "\n")
    print(f"\nresults: {path.relative_to(REPO_ROOT)}, services' logs in "
          f"{logs.relative_to(REPO_ROOT)}/")
    failed = [r["fault"] for r in rows if not r["fault"].startswith("direct-write")
              and "skipped" not in r and ("error" in r or r["problems"])]
    if failed:
        print(f"goals NOT met: {', '.join(failed)}")
        return 1
    if any(f in FAULTS or f in CLUSTER_FAULTS for f in faults):
        print("goals met: 0 lost, 0 counted twice, stats equal aggregates, resumed within "
              f"{RESUME_GOAL_SECONDS} s, for every webhook fault")
    if any(f in SYNC_FAULTS for f in faults):
        print("goals met: usage exact, no call missing, no run stuck, syncing resumed "
              "within its goal, for every metrics-sync fault")
    if any(f in OUTBOUND_FAULTS for f in faults):
        print("goals met: every call.ended and lead.created recorded arrived signed, 0 lost, "
              "every delivery succeeded, none dead, resumed within "
              f"{outbound_plan.resume_goal:g} s, for every outbound fault")
    return 0


if __name__ == "__main__":
    sys.exit(main())
