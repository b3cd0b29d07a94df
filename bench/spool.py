"""Ingest's spool replay: how fast events kept on disk while the broker was away reach it.

    .venv/bin/python -m bench.spool [--events 6000] [--runs 3]

What is measured. The real `calltrail-ingest` with its broker link through a TCP proxy
(`calltrail_testkit.tcp_proxy`, in this process). The link is cut; `--events` webhooks of
real call lifecycles (`calltrail_testkit.lifecycles`, default mix, 1-20 KB) are posted, 64
at a time, and each is answered 200 from the spool. Then the link is restored; ingest
reconnects (within its back-off, printed apart) and replays: the replay is timed from the
first event it takes off the spool until the spool depth (its /metrics) is zero, and every
event must then be in the processor's queues. The ceiling, in the same run: the same events
published by this process straight to the broker, persistent and confirmed, 500 awaiting
their confirm at once (as `calltrail_testkit.stack` publishes a backlog). Medians of
`--runs`.

Goal: the replay takes at least 3,000 events/s (after a 20 s outage at 300 webhooks/s,
6,000 events wait; new webhooks queue behind them, so this is how soon processing of new
calls resumes). Results: `bench/results/spool-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import machine_info, write_results
from calltrail_testkit.lifecycles import CallFactory, Event, interleave
from calltrail_testkit.processes import HOST
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack
from calltrail_testkit.tcp_proxy import TcpProxy

SEED = 20261205
GOAL_EVENTS_PER_S = 3000
SENDERS = 64
STARTUP_TIMEOUT_SECONDS = 30


async def spool_depth(client: httpx.AsyncClient, port: int) -> float:
    text = (await client.get(f"http://{HOST}:{port}/metrics")).text
    found = re.search(r"^calltrail_ingest_spool_depth (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


async def post_all(client: httpx.AsyncClient, port: int, events: list[Event]) -> int:
    """Post every event (SENDERS at once); how many were answered 200."""
    ok = 0
    queue = list(reversed(events))

    async def sender() -> None:
        nonlocal ok
        while queue:
            event = queue.pop()
            response = await client.post(
                f"http://{HOST}:{port}/webhooks/vapi/{event.org.endpoint_id}",
                content=event.body, headers={"Content-Type": "application/json",
                                             "X-Vapi-Secret": event.org.webhook_secret})
            ok += response.status_code == 200

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return ok


async def replay_once(stack: Stack, events: list[Event], run: int) -> dict[str, Any]:
    await stack.purge_all()
    proxy = TcpProxy(HOST, int(stack.amqp_url.rsplit(":", 1)[1].strip("/")))
    await proxy.start()
    ingest = stack.ingest(shared_secret="unused-" + str(run))
    ingest.env["AMQP_URL"] = f"amqp://guest:guest@{HOST}:{proxy.port}/"
    ingest.env["SPOOL_DIR"] = str(stack.workdir / f"spool-{run}")
    ingest.start()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
            while True:  # healthy and connected, so that the cut is a real outage
                try:
                    text = (await client.get(f"http://{HOST}:{ingest.port}/metrics")).text
                    if "calltrail_ingest_broker_connected 1.0" in text:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ingest not ready:\n{ingest.log_tail()}")
                await asyncio.sleep(0.1)
            await proxy.cut()
            posted = time.perf_counter()
            answered = await post_all(client, ingest.port, events)
            post_s = time.perf_counter() - posted
            spooled = await spool_depth(client, ingest.port)
            restored = time.perf_counter()
            await proxy.restore()
            first: float | None = None
            emptied: float | None = None
            while time.perf_counter() - restored < 120:
                depth = await spool_depth(client, ingest.port)
                if first is None and depth < spooled:
                    first = time.perf_counter()
                if emptied is None and depth == 0:
                    emptied = time.perf_counter()
                if emptied is not None and await stack.queue_depth() >= len(events):
                    break
                await asyncio.sleep(0.01)
            queued = await stack.queue_depth()
    finally:
        ingest.stop()
        stack.servers.remove(ingest)
        await proxy.close()
    problems = []
    if answered != len(events):
        problems.append(f"{answered} of {len(events)} answered 200")
    if spooled != len(events):
        problems.append(f"{spooled} spooled, expected {len(events)}")
    if queued < len(events):
        problems.append(f"{queued} of {len(events)} in the queues after 120 s")
    if first is None or emptied is None:
        problems.append("the spool was not replayed")
        return {"run": run, "events": len(events), "post_s": round(post_s, 3),
                "spooled": spooled, "events_per_s": 0.0, "problems": problems}
    # The first sample after the first event left already counts some: the poll interval
    # (10 ms) is the error of `replay_s`.
    seconds = max(emptied - first, 0.01)
    return {"run": run, "events": len(events), "post_s": round(post_s, 3),
            "spooled": spooled, "reconnect_s": round(first - restored, 3),
            "replay_s": round(seconds, 3), "events_per_s": round(len(events) / seconds, 1),
            "problems": problems}


async def ceiling_once(stack: Stack, events: list[Event], run: int) -> dict[str, Any]:
    await stack.purge_all()
    seconds = await stack.publish(events, f"ceiling-{run}")
    return {"run": run, "events": len(events), "seconds": round(seconds, 3),
            "events_per_s": round(len(events) / seconds, 1)}


async def benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    replays, ceilings = [], []
    async with Stack() as stack:
        organizations = await stack.create_organizations(3)
        factory = CallFactory(SAMPLES_DIR, organizations, seed=SEED,
                              now_ms=int(time.time() * 1000), shared_share=0.0)
        calls = []
        while sum(len(c.events) for c in calls) < args.events:
            calls.append(factory.call())
        events = list(interleave(calls, random.Random(SEED), 200))[:args.events]
        for run in range(1, args.runs + 1):
            replay = await replay_once(stack, events, run)
            ceiling = await ceiling_once(stack, events, run)
            print(f"run {run}: replay {replay['events_per_s']:8.1f} events/s "
                  f"({replay.get('replay_s')} s, after reconnecting in "
                  f"{replay.get('reconnect_s')} s), "
                  f"ceiling {ceiling['events_per_s']:8.1f} events/s"
                  + (f"  FLAGGED: {'; '.join(replay['problems'])}"
                     if replay["problems"] else ""), flush=True)
            replays.append(replay)
            ceilings.append(ceiling)
    replay_rate = statistics.median(r["events_per_s"] for r in replays)
    ceiling_rate = statistics.median(c["events_per_s"] for c in ceilings)
    return {"started_at": started_at.isoformat(), "machine": machine_info(),
            "config": {"events": args.events, "runs": args.runs, "senders": SENDERS},
            "replays": replays, "ceilings": ceilings,
            "replay_events_per_s": replay_rate, "ceiling_events_per_s": ceiling_rate,
            "replay_over_ceiling": round(replay_rate / ceiling_rate, 3),
            "goal": {"events_per_s": GOAL_EVENTS_PER_S,
                     "met": replay_rate >= GOAL_EVENTS_PER_S}}


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench.spool",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    results = asyncio.run(benchmark(args))
    print(f"\nspool replay: medians over {args.runs} run(s) of {args.events} events")
    print(f"  replay   {results['replay_events_per_s']:8.1f} events/s")
    print(f"  ceiling  {results['ceiling_events_per_s']:8.1f} events/s (published straight "
          "to the broker, 500 confirms awaited at once)")
    print(f"  replay / ceiling: {results['replay_over_ceiling']}")
    print(f"goal: >= {GOAL_EVENTS_PER_S} events/s: "
          f"{'met' if results['goal']['met'] else 'NOT met'}")
    return write_results("spool", results)


if __name__ == "__main__":
    main()
