"""Baseline: what one serverless function does inline, with no broker in between.

Parse the JSON body, upsert the call row (`bench_calls`, keyed by call id) and bump the
organization's row for the day (`bench_daily_stats`) in one transaction on an asyncpg
pool, answer 200 `{"ok":true}`. No authentication (like `bench.bare_route`); a body that is
not a Vapi message gets 400.

Run by `bench.ingest` as `python -m bench.direct_write` with `BENCH_PORT` and
`BENCH_DATABASE_URL` in the environment; the benchmark creates the database and calls
`create_schema` first, and drops the database at the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

POOL_SIZE = 10
_OK = b'{"ok":true}'
_BAD_REQUEST = b'{"error":"invalid_payload"}'

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_calls (
    id text PRIMARY KEY,
    org_id text NOT NULL,
    status text,
    ended_reason text,
    cost double precision,
    transcript text,
    last_message_type text NOT NULL,
    events integer NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_daily_stats (
    org_id text NOT NULL,
    day date NOT NULL,
    events integer NOT NULL,
    ended_calls integer NOT NULL,
    cost double precision NOT NULL,
    PRIMARY KEY (org_id, day)
);
"""

_UPSERT_CALL = """
INSERT INTO bench_calls AS c
    (id, org_id, status, ended_reason, cost, transcript, last_message_type, events, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, 1, now())
ON CONFLICT (id) DO UPDATE SET
    status = COALESCE(EXCLUDED.status, c.status),
    ended_reason = COALESCE(EXCLUDED.ended_reason, c.ended_reason),
    cost = COALESCE(EXCLUDED.cost, c.cost),
    transcript = COALESCE(EXCLUDED.transcript, c.transcript),
    last_message_type = EXCLUDED.last_message_type,
    events = c.events + 1,
    updated_at = now()
"""

_BUMP_DAILY_STATS = """
INSERT INTO bench_daily_stats AS s (org_id, day, events, ended_calls, cost)
VALUES ($1, $2, 1, $3, $4)
ON CONFLICT (org_id, day) DO UPDATE SET
    events = s.events + 1,
    ended_calls = s.ended_calls + EXCLUDED.ended_calls,
    cost = s.cost + EXCLUDED.cost
"""


async def create_schema(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(SCHEMA)
    finally:
        await connection.close()


def _day(timestamp: object) -> dt.date:
    if isinstance(timestamp, int | float):
        return dt.datetime.fromtimestamp(timestamp / 1000, dt.UTC).date()
    return dt.datetime.now(dt.UTC).date()


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def create_app(dsn: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            yield
        finally:
            await app.state.pool.close()

    async def receive(request: Request) -> Response:
        try:
            message = orjson.loads(await request.body())["message"]
            call = message.get("call") or {}
            call_id, org_id = call["id"], call["orgId"]
            message_type = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return Response(_BAD_REQUEST, status_code=400, media_type="application/json")
        status = _text(message.get("status")) if message_type == "status-update" else None
        ended = message_type == "end-of-call-report"
        cost = message.get("cost") if ended else None
        artifact = message.get("artifact") or {}
        transcript = _text(artifact.get("transcript")) if ended else None
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                _UPSERT_CALL, call_id, org_id, "ended" if ended else status,
                _text(message.get("endedReason")), cost, transcript, message_type)
            await connection.execute(
                _BUMP_DAILY_STATS, org_id, _day(message.get("timestamp")), int(ended),
                cost or 0)
        return Response(_OK, media_type="application/json")

    return Starlette(routes=[Route("/webhooks/vapi", receive, methods=["POST"])],
                     lifespan=lifespan)


def main() -> None:
    uvicorn.run(
        create_app(os.environ["BENCH_DATABASE_URL"]),
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        server_header=False,
        workers=1,
    )


if __name__ == "__main__":
    main()
