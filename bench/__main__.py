"""Every benchmark in sequence, each with its defaults: `python -m bench`.

    ingest      bench.ingest: ingest vs the stack's ceiling vs a direct-write function
    processor   bench.processor: events/s from a full queue into Postgres, default and
                call-only mixes, 1 and 2 consumers and the bare (archive-only) consumer
    scale       bench.scale: a call-only backlog drained by 1, 2, 4 and 8 processors, with
                Postgres next to them and 5 ms away; lock waits and deadlocks
    spool       bench.spool: ingest's spool replayed after a broker outage, vs publishing
                the same events straight to the broker
    end_to_end  bench.end_to_end: webhook sent -> call row visible at 500 events/s
    metrics_sync  bench.metrics_sync: 1,000 Vapi accounts synced (backfill, then a quiet
                round) against the fake Vapi with 100 ms latency, vs one at a time
    api         bench.api: the overview (30 and 90 days) and the first page of calls of an
                organization with 100,000 calls, vs /healthz of the same process
    export      bench.export: 1,000,000 calls exported as CSV: first byte, total, rows/s
                and the api's peak memory
    dispatch    bench.dispatch: outbound webhooks from the outbox to a receiver answering in
                50 ms: one dispatcher's deliveries/s and its added delay at 500/s, vs a bare
                client
    live        bench.live: 1,000 open live boards on one api process, a call event every
                10 ms through ingest and the processor: ingest's 200 -> the board, vs 1 board
    capacity    bench.capacity: what one replica of each service carries, N replicas
                derived from it, and how each cost grows as organizations, calls and
                history double

Each prints its own table and writes its JSON to `bench/results/`; a benchmark that fails
is reported and the others still run. The exit status is non-zero if any failed. Run one
with `python -m bench.<name> --help` to see its options. What they share: `bench/harness.py`
(wrk, results, the machine) and `calltrail_testkit` (the services as processes, the fake
Vapi, the traffic).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import (
    api,
    capacity,
    dispatch,
    end_to_end,
    export,
    ingest,
    live,
    metrics_sync,
    processor,
    scale,
    spool,
)
from bench.harness import REPO_ROOT

BENCHMARKS: tuple[tuple[str, Callable[[list[str]], Path]], ...] = (
    ("ingest", ingest.main),
    ("processor", processor.main),
    ("scale", scale.main),
    ("spool", spool.main),
    ("end_to_end", end_to_end.main),
    ("metrics_sync", metrics_sync.main),
    ("api", api.main),
    ("export", export.main),
    ("dispatch", dispatch.main),
    ("live", live.main),
    ("capacity", capacity.main),
)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    written: dict[str, str] = {}
    for name, run in BENCHMARKS:
        print(f"\n=== bench.{name} ===", flush=True)
        try:
            path = run([])
        except (Exception, SystemExit):  # report it (e.g. no wrk), and still run the others
            traceback.print_exc()
            written[name] = "FAILED"
        else:
            written[name] = str(path.relative_to(REPO_ROOT))
    print("\nresults:")
    for name, where in written.items():
        print(f"  {name:<11} {where}")
    return 1 if "FAILED" in written.values() else 0


if __name__ == "__main__":
    sys.exit(main())
