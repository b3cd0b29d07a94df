"""Live board benchmark (decision 46): from ingest's 200 to the event on open boards.

    .venv/bin/python -m bench.live [--clients 1000] [--duration 30] [--interval-ms 10]
                                   [--baseline-duration 10]

What is measured. The real services as processes on their own prefix and database:
`calltrail-ingest`, one `calltrail-processor` (service defaults: batch 200, wait 20 ms)
and ONE `calltrail-api`. One organization; `--clients` boards hold `GET /api/live` open
with its API token. Every `--interval-ms` (open loop: whatever became of the earlier ones)
a status-update of a new call (`ringing`) goes to the organization's ingest endpoint; each
board's latency for it = the moment the board read the call in a `calls` event minus the
moment ingest's 200 was read. Reported: p50, p99 and max over every (board, call) pair, the
pairs never seen within `NEVER_SECONDS`, and the api's CPU seconds and resident memory.

Baseline in the same run: first `--baseline-duration` seconds with ONE board, then the
boards are opened (each reads its snapshot) and the measured phase runs. Goal: p99 <= 1 s
with 1,000 boards at an event every 10 ms.

Clients. Raw asyncio streams (uvloop), one connection per board, HTTP/1.1: a board reads
lines and only looks for the call ids in its `data:` lines (no JSON parsing), so the
client costs little of the two shared cores. Requests to ingest are pre-formatted and sent
on keep-alive connections (`calltrail_testkit.vapi_sender`).

Everything lives under `AMQP_PREFIX=bench-<id>` and database `calltrail_bench_<id>`,
removed at the end. Results go to `bench/results/live-<UTC timestamp>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import re
import resource
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop

from bench.harness import machine_info, write_results
from calltrail_common.organizations import create_token
from calltrail_testkit.lifecycles import Organization
from calltrail_testkit.processes import HOST, WEBHOOK_PATH, cpu_seconds, peak_rss_mib
from calltrail_testkit.stack import Stack
from calltrail_testkit.vapi_sender import ConnectionPool, percentile, read_answer

GOAL_P99_MS = 1000
NEVER_SECONDS = 10
STARTUP_SECONDS = 60
CALL_ID = re.compile(rb'"id":"(blv-\d+)"')
TAIL_BYTES = 64


@dataclass
class Board:
    """One open stream: when it read each call."""

    seen: dict[bytes, float] = field(default_factory=dict)
    snapshot: asyncio.Event = field(default_factory=asyncio.Event)
    writer: asyncio.StreamWriter | None = None


async def open_board(port: int, token: str) -> tuple[Board, asyncio.Task[None]]:
    board = Board()
    reader, writer = await asyncio.open_connection(HOST, port, limit=4 * 1024 * 1024)
    board.writer = writer
    writer.write(f"GET /api/live HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                 f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the stream was refused: {head[:80]!r}")

    async def read() -> None:
        # Whole reads, not lines: a board's cost is one read per chunk the api writes. A
        # call id cut by a read is found with the next (the tail is kept).
        tail = b""
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            while True:
                data = await reader.read(262_144)
                if not data:
                    return
                now = time.monotonic()
                data = tail + data
                if not board.snapshot.is_set() and b"event: snapshot" in data:
                    board.snapshot.set()
                for call_id in CALL_ID.findall(data):
                    board.seen.setdefault(call_id, now)
                tail = data[-TAIL_BYTES:]

    return board, asyncio.create_task(read())


def status_request(org: Organization, port: int, call_id: str) -> bytes:
    at = dt.datetime.now(dt.UTC)
    body = orjson.dumps({"message": {
        "type": "status-update", "status": "ringing", "timestamp": int(at.timestamp() * 1000),
        "call": {"id": call_id, "type": "inboundPhoneCall", "status": "ringing",
                 "assistantId": "bench-assistant", "customer": {"number": "+14155550123"},
                 "createdAt": at.isoformat().replace("+00:00", "Z")}}})
    head = (f"POST {WEBHOOK_PATH}/{org.endpoint_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Content-Type: application/json\r\nX-Vapi-Secret: {org.webhook_secret}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


@dataclass
class Phase:
    name: str
    boards: int
    answered: dict[bytes, float] = field(default_factory=dict)  # call id -> ingest's 200
    refused: int = 0


async def send_calls(phase: Phase, org: Organization, port: int, seconds: float,
                     interval: float, counter: list[int]) -> None:
    pool = ConnectionPool(port)
    await pool.prefill(8)
    tasks: set[asyncio.Task[None]] = set()

    async def one(call_id: str) -> None:
        connection = await pool.get()
        reader, writer = connection
        writer.write(status_request(org, port, call_id))
        status = await read_answer(reader, 10)
        if status == 200:
            phase.answered[call_id.encode()] = time.monotonic()
            pool.put(connection)
        else:
            phase.refused += 1
            writer.close()

    start = time.monotonic()
    index = 0
    while (due := start + index * interval) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        counter[0] += 1
        task = asyncio.create_task(one(f"blv-{counter[0]}"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        index += 1
    await asyncio.gather(*tasks)
    pool.close()


def summarize(phase: Phase, boards: list[Board]) -> dict[str, Any]:
    latencies: list[float] = []
    never = 0
    for board in boards:
        for call_id, answered in phase.answered.items():
            seen = board.seen.get(call_id)
            if seen is None:
                never += 1
            else:
                latencies.append((seen - answered) * 1000)
    p99 = percentile(latencies, 99)
    return {"phase": phase.name, "boards": phase.boards, "calls": len(phase.answered),
            "refused": phase.refused, "pairs": len(latencies), "never": never,
            "p50_ms": percentile(latencies, 50), "p99_ms": p99,
            "max_ms": max(latencies) if latencies else None,
            "goal_met": p99 is not None and p99 <= GOAL_P99_MS and never == 0}


def rss_mib(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


async def measure(phase: Phase, boards: list[Board], org: Organization, ingest_port: int,
                  api_pid: int, seconds: float, interval: float, counter: list[int]
                  ) -> dict[str, Any]:
    cpu_before = cpu_seconds(api_pid) or 0.0
    client_before = time.process_time()
    started = time.monotonic()
    await send_calls(phase, org, ingest_port, seconds, interval, counter)
    deadline = time.monotonic() + NEVER_SECONDS
    while time.monotonic() < deadline:
        if all(call_id in board.seen for board in boards for call_id in phase.answered):
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    cpu = (cpu_seconds(api_pid) or 0.0) - cpu_before
    return {**summarize(phase, boards), "api_cpu_s": round(cpu, 2),
            "api_cpu_share": round(cpu / elapsed, 3), "api_rss_mib": rss_mib(api_pid),
            "client_cpu_share": round((time.process_time() - client_before) / elapsed, 3),
            "api_peak_rss_mib": peak_rss_mib(api_pid)}


async def wait_up(client: httpx.AsyncClient, url: str, server: Any) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.exited():
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(httpx.TransportError):
            if (await client.get(url)).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.name} did not start:\n{server.log_tail()}")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    interval = args.interval_ms / 1000
    async with Stack() as stack:
        org = (await stack.create_organizations(1))[0]
        connection = await stack.db()
        try:
            token = (await create_token(connection, uuid.UUID(org.org_id))).api_token
        finally:
            await connection.close()
        ingest = stack.ingest(shared_secret=secrets.token_hex(16))
        processor = stack.processor("processor", batch_size=200, batch_wait_ms=20)
        api = stack.api(encryption_key=secrets.token_urlsafe(32))
        for server in (ingest, processor, api):
            server.start()
        async with httpx.AsyncClient(timeout=5) as client:
            await wait_up(client, f"http://{HOST}:{ingest.port}/healthz", ingest)
            await wait_up(client, f"http://{HOST}:{api.port}/readyz", api)
        assert api.process is not None
        api_pid = api.process.pid
        counter = [0]
        readers: list[asyncio.Task[None]] = []
        boards: list[Board] = []
        try:
            # Warm up: until a call sent through ingest reaches a board (all linked).
            board, reader = await open_board(api.port, token)
            boards.append(board)
            readers.append(reader)
            deadline = time.monotonic() + STARTUP_SECONDS
            while True:
                if reader.done():  # resynced while the api's feed was connecting: reopen
                    boards.clear()
                    board, reader = await open_board(api.port, token)
                    boards.append(board)
                    readers.append(reader)
                warm = Phase("warm-up", 1)
                await send_calls(warm, org, ingest.port, 0.05, interval, counter)
                await asyncio.sleep(1)
                if any(c in board.seen for c in warm.answered):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"no call reached the board (refused {warm.refused}, seen "
                        f"{len(board.seen)}):\n{processor.log_tail()}\n{api.log_tail()}\n"
                        f"{ingest.log_tail()}")
            rows = [await measure(Phase("baseline", 1), boards, org, ingest.port, api_pid,
                                  args.baseline_duration, interval, counter)]
            print(rows[0])
            for _ in range(args.clients - 1):
                board, reader = await open_board(api.port, token)
                boards.append(board)
                readers.append(reader)
            await asyncio.wait_for(asyncio.gather(*(b.snapshot.wait() for b in boards)),
                                   STARTUP_SECONDS)
            await asyncio.sleep(1)
            rows.append(await measure(Phase("boards", len(boards)), boards, org, ingest.port,
                                      api_pid, args.duration, interval, counter))
            print(rows[1])
        finally:
            for board in boards:
                if board.writer is not None:
                    board.writer.close()
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    return {"rows": rows, "interval_ms": args.interval_ms, "duration_s": args.duration,
            "machine": machine_info()}


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| boards | calls | p50 ms | p99 ms | max ms | never | api CPU | api RSS MiB "
             "| client CPU |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def ms(value: float | None) -> str:
            return "—" if value is None else f"{value:,.0f}"
        lines.append(f"| {r['boards']:,} | {r['calls']:,} | {ms(r['p50_ms'])} | "
                     f"{ms(r['p99_ms'])} | {ms(r['max_ms'])} | {r['never']} | "
                     f"{r['api_cpu_share'] * 100:.0f} % | {r['api_rss_mib']} | "
                     f"{r['client_cpu_share'] * 100:.0f} % |")
    return "\n".join(lines)


def raise_open_files(needed: int) -> None:
    """Room for the boards' sockets here and in the api (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--baseline-duration", type=float, default=10.0)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    args = parser.parse_args(argv)
    raise_open_files(2 * args.clients + 1024)
    results = uvloop.run(run(args))
    print()
    print(table(results["rows"]))
    return write_results("live", results)


if __name__ == "__main__":
    main()
