"""The baseline row: the design Calltrail replaces (`calltrail_testkit.direct_write`, one
function that writes to Postgres inline) under the same load, its Postgres behind a proxy
cut for the same time, once without retries (Vapi's default: a non-200 answer is gone) and
once with the same back-off plan as the webhook faults.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from calltrail_testkit.direct_write import create_schema, direct_write_server, seed_organizations
from calltrail_testkit.lifecycles import CallFactory, Event, Organization, fake_uuid
from calltrail_testkit.processes import HOST, Server, free_port
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import POSTGRES_URL, admin_execute
from calltrail_testkit.tcp_proxy import TcpProxy
from calltrail_testkit.vapi_sender import NO_RETRIES, BackoffPlan, Sender, secret_request
from chaos.faults import FaultWindow
from chaos.rig import (
    POSTGRES_PORT,
    READY_TIMEOUT_SECONDS,
    SEED,
    Plan,
    body_digest,
    load_events,
    sleep_until,
)
from chaos.verdict import cost_matches, report_values

DIRECT_TOTALS = """
SELECT (SELECT count(*) FROM bench_calls) AS calls,
       (SELECT count(*) FROM bench_leads) AS leads,
       (SELECT coalesce(sum(calls), 0) FROM bench_daily_stats) AS stats_calls,
       (SELECT coalesce(sum(new_leads), 0) FROM bench_daily_stats) AS stats_new_leads,
       (SELECT coalesce(sum(cost), 0) FROM bench_daily_stats) AS stats_cost,
       (SELECT coalesce(sum(cost), 0) FROM bench_calls) AS calls_cost,
       (SELECT coalesce(sum(call_count), 0) FROM bench_leads) AS lead_calls,
       (SELECT count(*) FROM bench_calls WHERE lead_id IS NOT NULL) AS linked_calls
"""


async def run_direct_write(plan: Plan, retries: BackoffPlan,
                           samples_dir: Path = SAMPLES_DIR) -> dict[str, Any]:
    """The direct-write handler under the load, its Postgres cut for `fault_seconds`."""
    name = f"calltrail_chaos_dw_{uuid.uuid4().hex[:8]}"
    database_url = f"{POSTGRES_URL}/{name}"
    secret = secrets.token_urlsafe(24)
    workdir = Path(tempfile.mkdtemp(prefix="calltrail-chaos-dw-"))
    proxy = TcpProxy(HOST, POSTGRES_PORT)
    rng = random.Random(SEED)
    organizations = [Organization(org_id=str(uuid.uuid4()), endpoint_id="", webhook_secret="",
                                  vapi_org_id=fake_uuid(rng),
                                  phone_number=f"+1415555{2000 + index:04d}",
                                  phone_number_id=str(uuid.uuid4()))
                     for index in range(plan.organizations)]
    await admin_execute(f'CREATE DATABASE "{name}"')
    server: Server | None = None
    try:
        await create_schema(database_url)
        await seed_organizations(database_url, [(o.org_id, o.phone_number)
                                                for o in organizations])
        await proxy.start()
        port = free_port()
        server = direct_write_server(
            port=port, secret=secret, workdir=workdir,
            database_url=f"postgresql://postgres@{HOST}:{proxy.port}/{name}")
        server.start()
        # Every call names its organization in its metadata, the way this handler resolves.
        factory = CallFactory(samples_dir, organizations, seed=SEED,
                              now_ms=int(time.time() * 1000), shared_share=1.0)

        def request(event: Event) -> bytes:
            return secret_request(event, port, secret)

        await wait_answering(server, request, factory)
        events = load_events(factory, int(plan.rate * plan.duration))
        sender = Sender(port, request, retries)
        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            t0 = time.monotonic() + 0.2
            load = asyncio.create_task(sender.run_schedule(events, plan.rate, t0))
            await sleep_until(t0 + plan.fault_at)
            window = FaultWindow(start=time.monotonic())
            await proxy.cut()
            await sleep_until(window.start + plan.fault_seconds)
            await proxy.restore()
            window.end = time.monotonic()
            probe = sender.submit(factory.call(created_ms=int(time.time() * 1000)).events[0],
                                  probe=True)
            resumed = None
            while time.monotonic() - window.end < plan.resume_bound:
                if await connection.fetchval("SELECT 1 FROM bench_calls WHERE id = $1",
                                             probe.event.call_id):
                    resumed = round(time.monotonic() - window.end, 2)
                    break
                await asyncio.sleep(0.05)
            await asyncio.wait_for(load, plan.duration + 30)
            await sender.join(plan.retry_window)
            await sender.close()
            archived = {r[0] for r in await connection.fetch(
                "SELECT DISTINCT md5(body) FROM bench_events")}
            calls = {r["id"]: r for r in await connection.fetch(
                "SELECT id, org_id::text AS org_id, status, report_received, cost,"
                " ended_reason FROM bench_calls")}
            totals = await connection.fetchrow(DIRECT_TOTALS)
        finally:
            await connection.close()
        accepted = [d for d in sender.deliveries if d.accepted]
        lost_events = [d for d in accepted if body_digest(d.event.body) not in archived]
        missing = {d.event.call_id for d in accepted if d.event.call_id not in calls}
        wrong = set()
        for delivery in accepted:
            row = calls.get(delivery.event.call_id)
            if delivery.event.message_type == "end-of-call-report" and row is not None:
                cost, _ = report_values(delivery.event.body)
                if not row["report_received"] or not cost_matches(row["cost"], cost):
                    wrong.add(delivery.event.call_id)
        gave_up = [d for d in sender.deliveries if not d.accepted]
        off = {"calls": int(totals["stats_calls"] - totals["calls"]),
               "cost": float(totals["stats_cost"] - totals["calls_cost"]),
               "lead_calls": int(totals["lead_calls"] - totals["linked_calls"])}
        return {
            "fault": "direct-write postgres-cut" + (" (retries)" if retries.max_retries
                                                    else " (no retries)"),
            "sent": len(sender.deliveries),
            "answered_200": len(accepted),
            "gave_up": len(gave_up),
            "gave_up_call_events": sum(d.event.message_type in ("status-update",
                                                                  "end-of-call-report")
                                       for d in gave_up),
            "attempts": sum(len(d.attempts) for d in sender.deliveries),
            "calls_expected": len({d.event.call_id for d in accepted}),
            "calls_stored": int(totals["calls"]),
            # Not retried (Vapi's default) or given up, a non-200 event is gone for good.
            "lost": len(gave_up) + len(lost_events) + len(missing | wrong),
            "lost_events": len(lost_events),
            "calls_missing": len(missing),
            "calls_wrong": len(wrong),
            "counted_twice": max(0, off["calls"]) + max(0, off["lead_calls"]),
            "stats_off": off,
            "stats_equal_aggregates": off["calls"] == 0 and off["cost"] == 0
                                      and off["lead_calls"] == 0,
            "drained_s": None,
            "resumed_s": resumed,
            "fault_seconds": round(window.end - window.start, 2),
            "during_fault": sender.answers(window.start, window.end),
            "all_answers": sender.answers(),
            "server_logs": {"direct-write": server.log_summary()},
            "problems": [],
        }
    finally:
        if server is not None:
            server.stop()
        await proxy.close()
        await admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


async def wait_answering(server: Server, request: Callable[[Event], bytes],
                         factory: CallFactory) -> None:
    sender = Sender(server.port, request, NO_RETRIES, timeout=5)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if server.exited():
                raise RuntimeError(f"direct-write exited:\n{server.log_tail()}")
            delivery = sender.submit(factory.call().events[0])
            await sender.join(10)
            if delivery.accepted:
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"direct-write not answering:\n{server.log_tail()}")
    finally:
        await sender.close()
