"""Baseline: a direct-write handler, what one serverless function does inline per request.

No broker in between: the request is answered only once its writes are committed. Per
request, as a plain function would do it:

1. Authenticate: the credential must match the function's one secret (`BENCH_WEBHOOK_SECRET`)
   as `X-Vapi-Secret`, `Authorization: Bearer` or an HMAC-SHA256 `X-Vapi-Signature` over the
   body, compared in constant time (the three ways Vapi sends one; the ingest benchmark's
   requests use all three). Otherwise 401.
2. Parse the JSON body (orjson); not a Vapi message: 400.
3. Resolve the organization with a query: `call.assistantOverrides.metadata.orgId` looked
   up in `bench_organizations`, else the dialled number (`message.phoneNumber.number`) in
   `bench_phone_numbers`.
4. Archive the raw event (`bench_events`), as Calltrail archives every event it accepts.
5. For a status-update or end-of-call-report of a resolved call: upsert the call row
   (`bench_calls`; status only moves forward, the report sets the final values), upsert
   the lead (`bench_leads`) for an inbound call with a customer number and link the call to
   it, and add to the organization's row for the day (`bench_daily_stats`: a new call, its
   direction, a new lead, an ended call's duration and cost, and one call event).
6. Answer 200 `{"ok":true}` (also for an event no organization matches: it is dropped).

Each write is its own statement and its own commit, the way a function calling the
database's REST API (supabase-js / PostgREST) or an ORM without an explicit transaction
writes: that is the design Calltrail replaces, and the reason it double-counts when it
fails half-way. No latency is added between the handler and the database: here it is on
loopback, which flatters this baseline compared with a function calling a managed database.
(With steps 4-5 wrapped in one transaction, one commit per request, ingest measured 1.23x
its throughput in one run; with a commit per write, 1.93x.)

All on a warm asyncpg pool of 10 connections (a typical setting), in one uvicorn worker
(uvloop, httptools, access log off). `GET /counts` returns what the handler answered and
wrote, so that the benchmark can check that every 200 was kept.

Run by `bench.ingest` and the fault suite's baseline (`chaos/baseline.py`) as
`python -m calltrail_testkit.direct_write` (`direct_write_server`) with `BENCH_PORT`,
`BENCH_DATABASE_URL` and `BENCH_WEBHOOK_SECRET` in the environment; the caller creates the
database, calls `create_schema` and `seed_organizations` first, and drops the database at
the end.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import hashlib
import hmac
import os
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from calltrail_testkit.processes import Server, base_env, serve_app

POOL_SIZE = 10
CALL_EVENT_TYPES = frozenset({"status-update", "end-of-call-report"})
_OK = b'{"ok":true}'
_BAD_REQUEST = b'{"error":"invalid_payload"}'
_UNAUTHORIZED = b'{"error":"unauthorized"}'
_STATUS_ORDER = ("scheduled", "queued", "ringing", "in-progress", "forwarding", "ended")
_DIRECTIONS = {"inboundPhoneCall": "inbound", "outboundPhoneCall": "outbound",
               "webCall": "web"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_organizations (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS bench_phone_numbers (
    number text PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES bench_organizations (id)
);
CREATE TABLE IF NOT EXISTS bench_leads (
    id bigserial PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES bench_organizations (id),
    phone_number text NOT NULL,
    name text,
    first_call_at timestamptz NOT NULL,
    last_call_at timestamptz NOT NULL,
    call_count integer NOT NULL,
    UNIQUE (org_id, phone_number)
);
CREATE TABLE IF NOT EXISTS bench_calls (
    id text PRIMARY KEY,
    org_id uuid NOT NULL REFERENCES bench_organizations (id),
    direction text,
    status text,
    status_rank integer NOT NULL DEFAULT 0,
    ended_reason text,
    customer_number text,
    customer_name text,
    created_at timestamptz,
    started_at timestamptz,
    ended_at timestamptz,
    duration_seconds numeric,
    cost numeric,
    transcript text,
    summary text,
    recording_url text,
    report_received boolean NOT NULL DEFAULT false,
    lead_id bigint REFERENCES bench_leads (id),
    inserted_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS bench_calls_org_created ON bench_calls (org_id, created_at DESC);
CREATE TABLE IF NOT EXISTS bench_events (
    id bigserial PRIMARY KEY,
    org_id uuid,
    received_at timestamptz NOT NULL DEFAULT now(),
    message_type text NOT NULL,
    body bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS bench_daily_stats (
    org_id uuid NOT NULL REFERENCES bench_organizations (id),
    day date NOT NULL,
    calls integer NOT NULL DEFAULT 0,
    inbound integer NOT NULL DEFAULT 0,
    outbound integer NOT NULL DEFAULT 0,
    web integer NOT NULL DEFAULT 0,
    new_leads integer NOT NULL DEFAULT 0,
    ended_calls integer NOT NULL DEFAULT 0,
    duration_seconds numeric NOT NULL DEFAULT 0,
    cost numeric NOT NULL DEFAULT 0,
    events integer NOT NULL DEFAULT 0,      -- call events applied
    PRIMARY KEY (org_id, day)
);
"""

ORGANIZATION_BY_ID = "SELECT id FROM bench_organizations WHERE id = $1"
ARCHIVE_EVENT = "INSERT INTO bench_events (org_id, message_type, body) VALUES ($1, $2, $3)"
ORGANIZATION_BY_NUMBER = "SELECT org_id FROM bench_phone_numbers WHERE number = $1"

# Returns whether the row is new and whether this event ended the call (for the stats).
UPSERT_CALL = """
INSERT INTO bench_calls AS c
    (id, org_id, direction, status, status_rank, ended_reason, customer_number,
     customer_name, created_at, started_at, ended_at, duration_seconds, cost, transcript,
     summary, recording_url, report_received)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
ON CONFLICT (id) DO UPDATE SET
    direction = COALESCE(c.direction, EXCLUDED.direction),
    status = CASE WHEN EXCLUDED.status_rank > c.status_rank THEN EXCLUDED.status
                  ELSE c.status END,
    status_rank = GREATEST(c.status_rank, EXCLUDED.status_rank),
    ended_reason = COALESCE(EXCLUDED.ended_reason, c.ended_reason),
    customer_number = COALESCE(c.customer_number, EXCLUDED.customer_number),
    customer_name = COALESCE(EXCLUDED.customer_name, c.customer_name),
    created_at = COALESCE(c.created_at, EXCLUDED.created_at),
    started_at = COALESCE(EXCLUDED.started_at, c.started_at),
    ended_at = COALESCE(EXCLUDED.ended_at, c.ended_at),
    duration_seconds = COALESCE(EXCLUDED.duration_seconds, c.duration_seconds),
    cost = COALESCE(EXCLUDED.cost, c.cost),
    transcript = COALESCE(EXCLUDED.transcript, c.transcript),
    summary = COALESCE(EXCLUDED.summary, c.summary),
    recording_url = COALESCE(EXCLUDED.recording_url, c.recording_url),
    report_received = c.report_received OR EXCLUDED.report_received,
    updated_at = now()
RETURNING (xmax = 0) AS inserted, lead_id
"""
UPSERT_LEAD = """
INSERT INTO bench_leads AS l
    (org_id, phone_number, name, first_call_at, last_call_at, call_count)
VALUES ($1, $2, $3, $4, $4, 1)
ON CONFLICT (org_id, phone_number) DO UPDATE SET
    name = COALESCE(EXCLUDED.name, l.name),
    first_call_at = LEAST(l.first_call_at, EXCLUDED.first_call_at),
    last_call_at = GREATEST(l.last_call_at, EXCLUDED.last_call_at),
    call_count = l.call_count + $5
RETURNING id, (xmax = 0) AS inserted
"""
LINK_CALL = "UPDATE bench_calls SET lead_id = $2 WHERE id = $1"
ADD_TO_DAILY_STATS = """
INSERT INTO bench_daily_stats AS s
    (org_id, day, calls, inbound, outbound, web, new_leads, ended_calls, duration_seconds,
     cost, events)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 1)
ON CONFLICT (org_id, day) DO UPDATE SET
    calls = s.calls + EXCLUDED.calls,
    inbound = s.inbound + EXCLUDED.inbound,
    outbound = s.outbound + EXCLUDED.outbound,
    web = s.web + EXCLUDED.web,
    new_leads = s.new_leads + EXCLUDED.new_leads,
    ended_calls = s.ended_calls + EXCLUDED.ended_calls,
    duration_seconds = s.duration_seconds + EXCLUDED.duration_seconds,
    cost = s.cost + EXCLUDED.cost,
    events = s.events + 1
"""
TABLE_COUNTS = """
SELECT (SELECT count(*) FROM bench_organizations) AS organizations,
       (SELECT count(*) FROM bench_phone_numbers) AS phone_numbers,
       (SELECT count(*) FROM bench_calls) AS calls,
       (SELECT count(*) FROM bench_calls WHERE report_received) AS calls_reported,
       (SELECT count(*) FROM bench_leads) AS leads,
       (SELECT count(*) FROM bench_daily_stats) AS daily_stats_rows,
       (SELECT coalesce(sum(calls), 0) FROM bench_daily_stats) AS daily_stats_calls,
       (SELECT coalesce(sum(events), 0) FROM bench_daily_stats) AS daily_stats_events,
       (SELECT count(*) FROM bench_events) AS events_archived
"""


async def create_schema(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(SCHEMA)
    finally:
        await connection.close()


async def seed_organizations(dsn: str, organizations: Sequence[tuple[str, str]]) -> None:
    """Register (organization id, its dialled number) pairs."""
    connection = await asyncpg.connect(dsn)
    try:
        async with connection.transaction():
            for index, (org_id, number) in enumerate(organizations):
                await connection.execute(
                    "INSERT INTO bench_organizations (id, name) VALUES ($1, $2)",
                    uuid.UUID(org_id), f"Bench roofing {index + 1}")
                await connection.execute(
                    "INSERT INTO bench_phone_numbers (number, org_id) VALUES ($1, $2)",
                    number, uuid.UUID(org_id))
    finally:
        await connection.close()


async def table_counts(dsn: str) -> dict[str, int]:
    connection = await asyncpg.connect(dsn)
    try:
        return {k: int(v) for k, v in (await connection.fetchrow(TABLE_COUNTS)).items()}
    finally:
        await connection.close()


# ---------------------------------------------------------------------------------------
# The handler


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: object) -> dt.datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str) and value:
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else None


def authenticated(request: Request, body: bytes, secret: bytes) -> bool:
    headers = request.headers
    legacy = headers.get("x-vapi-secret")
    if legacy is not None:
        return hmac.compare_digest(legacy.encode(), secret)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(token.strip().encode(), secret)
    signature = headers.get("x-vapi-signature", "").removeprefix("sha256=")
    if signature:
        expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.encode(), expected.encode())
    return False


async def resolve_organization(connection: asyncpg.Connection, message: dict,
                               call: dict) -> uuid.UUID | None:
    metadata = _dict(_dict(call.get("assistantOverrides")).get("metadata"))
    org_id = _text(metadata.get("orgId"))
    if org_id is not None:
        with contextlib.suppress(ValueError):
            found = await connection.fetchval(ORGANIZATION_BY_ID, uuid.UUID(org_id))
            if found is not None:
                return found
    number = _text(_dict(message.get("phoneNumber")).get("number"))
    if number is not None:
        return await connection.fetchval(ORGANIZATION_BY_NUMBER, number)
    return None


async def write_call_event(connection: asyncpg.Connection, org_id: uuid.UUID, message: dict,
                           call: dict) -> None:
    """Upsert the call, the lead (inbound callers) and the day's statistics, each write its
    own statement and commit."""
    is_report = message["type"] == "end-of-call-report"
    status = "ended" if is_report else _text(message.get("status"))
    rank = _STATUS_ORDER.index(status) + 1 if status in _STATUS_ORDER else 0
    customer = {**_dict(message.get("customer")), **_dict(call.get("customer"))}
    number, name = _text(customer.get("number")), _text(customer.get("name"))
    direction = _text(call.get("type"))
    created_at = _time(call.get("createdAt"))
    event_at = _time(message.get("timestamp")) or dt.datetime.now(dt.UTC)
    started_at = ended_at = duration = cost = transcript = summary = recording = None
    if is_report:
        artifact, analysis = _dict(message.get("artifact")), _dict(message.get("analysis"))
        started_at, ended_at = _time(message.get("startedAt")), _time(message.get("endedAt"))
        if started_at and ended_at:
            duration = (ended_at - started_at).total_seconds()
        cost = _number(message.get("cost"))
        transcript = _text(artifact.get("transcript")) or _text(message.get("transcript"))
        summary = _text(analysis.get("summary")) or _text(message.get("summary"))
        recording = _text(artifact.get("recordingUrl")) or _text(message.get("recordingUrl"))
    ended_reason = _text(message.get("endedReason"))
    row = await connection.fetchrow(
        UPSERT_CALL, call["id"], org_id, direction, status, rank, ended_reason, number,
        name, created_at, started_at, ended_at, duration, cost, transcript, summary,
        recording, is_report)
    new_call = row["inserted"]
    new_lead = False
    if direction == "inboundPhoneCall" and number and number.startswith("+"):
        lead = await connection.fetchrow(UPSERT_LEAD, org_id, number, name,
                                         created_at or event_at, int(new_call))
        new_lead = lead["inserted"]
        if row["lead_id"] != lead["id"]:
            await connection.execute(LINK_CALL, call["id"], lead["id"])
    column = _DIRECTIONS.get(direction or "") if new_call else None
    await connection.execute(
        ADD_TO_DAILY_STATS, org_id, (created_at or event_at).astimezone(dt.UTC).date(),
        int(new_call), int(column == "inbound"), int(column == "outbound"),
        int(column == "web"), int(new_lead), int(is_report), duration or 0, cost or 0)


def create_app(dsn: str, secret: bytes) -> Starlette:
    counts: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        try:
            yield
        finally:
            await app.state.pool.close()

    async def receive(request: Request) -> Response:
        body = await request.body()
        if not authenticated(request, body, secret):
            counts["unauthorized"] += 1
            return Response(_UNAUTHORIZED, status_code=401, media_type="application/json")
        try:
            message = orjson.loads(body)["message"]
            message_type = message["type"]
            call = _dict(message.get("call"))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            counts["invalid"] += 1
            return Response(_BAD_REQUEST, status_code=400, media_type="application/json")
        pool: asyncpg.Pool = request.app.state.pool
        async with pool.acquire() as connection:
            org_id = await resolve_organization(connection, message, call)
            await connection.execute(ARCHIVE_EVENT, org_id, message_type, body)
            if org_id is None:
                counts["unresolved"] += 1
            elif message_type in CALL_EVENT_TYPES and _text(call.get("id")):
                await write_call_event(connection, org_id, message, call)
                counts["call_events_written"] += 1
            else:
                counts["chatter"] += 1
        counts["answered"] += 1
        return Response(_OK, media_type="application/json")

    async def report_counts(request: Request) -> Response:
        return Response(orjson.dumps(counts), media_type="application/json")

    return Starlette(routes=[Route("/webhooks/vapi", receive, methods=["POST"]),
                             Route("/counts", report_counts, methods=["GET"])],
                     lifespan=lifespan)


def direct_write_server(*, port: int, database_url: str, secret: str, workdir: Path) -> Server:
    """This handler as a process of its own on `port`, not started (its log in `workdir`)."""
    return Server("direct-write", [sys.executable, "-m", "calltrail_testkit.direct_write"],
                  {**base_env(workdir), "BENCH_PORT": str(port),
                   "BENCH_DATABASE_URL": database_url, "BENCH_WEBHOOK_SECRET": secret},
                  workdir, port, workdir / "direct-write.log")


def main() -> None:
    serve_app(create_app(os.environ["BENCH_DATABASE_URL"],
                         os.environ["BENCH_WEBHOOK_SECRET"].encode()),
              int(os.environ["BENCH_PORT"]))


if __name__ == "__main__":
    main()
