"""Outbound webhooks' faults in the fault suite (`make chaos` runs them after the webhook
faults): the receiver down under load, a dispatcher killed; nothing lost.

    .venv/bin/python -m chaos --faults webhooks-receiver-down,webhooks-dispatcher-kill
                              [--short] [--fault-seconds S]

The world of each fault is new (`OutboundRig`): its own `AMQP_PREFIX` and database
(`Stack`) on the suite's RabbitMQ node; `organizations` organizations, each with an outbound
endpoint that wants `call.ended` and `lead.created`, pointing at a path of its own on one
receiver (`calltrail_testkit.webhook_receiver`, served for real in a thread of this
process: it records every POST and verifies its signature with the endpoint's secret, and
can be stopped and started on its port); `processors` `calltrail-processor` processes
recording the outbox (decision 40) and two `calltrail-dispatcher` processes sending it,
with retry delays shortened to `RETRY_DELAYS_MS` (250 ms, 500 ms, 1 s, then 2 s, as many
as cover the fault and 30 s more) instead of the day the service waits, so that the suite
converges in minutes:

    call load (as ingest publishes it) -> processors -> outbox -> dispatchers x2 -> receiver

The load: real call lifecycles (`calltrail_testkit.lifecycles`, the call-only mix: the
status-updates and the report of each call, so most events change a call, and customers
that come back, so leads are created early and repeat later), published on the events
exchange exactly as ingest publishes them (`Stack.publish`) at `rate` events/s for
`duration` s. At `fault_at` s the fault starts:

    webhooks-receiver-down     the receiver stopped (its port refuses connections) for the
                               fault's seconds, then started again on the same port
    webhooks-dispatcher-kill   one dispatcher SIGKILLed (as soon as it has attempts in
                               flight, within a second; messages unacknowledged, maybe a
                               relay batch half-published), restarted at the fault's end

At the fault's end a new call's whole lifecycle is published (the probe). Once the load is
over and everything settled, the row is measured:

    ended, leads   calls stored as ended and leads created for the organizations: what the
                   outbox must have recorded (`call.ended` once per call, `lead.created`
                   once per lead)
    recorded       `call.ended` and `lead.created` events in the outbox for the endpoints;
                   `not recorded`: ended calls or leads without their event
    arrived        distinct webhook-ids the receiver got; `lost`: recorded, never arrived;
                   `unknown`: arrived, never recorded; `repeats`: POSTs of an id that had
                   already arrived (allowed: at-least-once, receivers deduplicate by id)
    unverified     POSTs whose signature did not verify with the endpoint's secret
    deliveries     by state: every one must be 'succeeded', none 'dead' or 'pending', and
                   the dispatcher's dead-letter queue empty
    attempts       attempts logged in the outbox (each success and failure, repeats too);
                   `failed`: attempts that failed (the dispatchers' logs): the fault bit
    resumed        seconds from the fault's end until the probe call's `call.ended` arrived;
                   `after`: the longest any delivery recorded after the fault's end took
                   from its commit to its arrival (p50, p99 in the JSON)
    backlog        seconds from the fault's end until every delivery recorded before it had
                   arrived (shown, not a goal: it measures how fast the dispatchers catch
                   up, which bench.dispatch measures apart)

The goal, for `resumed` and `after`: the longest retry delay plus the suite's resume goal
(`RESUME_GOAL_SECONDS`, 10 s). Why: at the fault's end every delivery that failed during it
is at most the longest delay (2 s) from its next attempt, which succeeds; a call that ends
then is queued behind those coming back from the retry queues, and from then on its way is
the same as after any other fault of the suite, in which processing must resume within
10 s (the processor's batch, the relay's poll every WEBHOOKS_RELAY_IDLE_MS, the sending).
After a dispatcher's death nothing waits in a retry queue: its unacknowledged messages go
to the other at once, and its locked relay batch is rolled back.

Problems (each fails the suite): a delivery lost, unknown or not recorded, a signature not
verified, a delivery not 'succeeded', a dead letter (the dispatcher's or the processor's),
a missed goal, a process that exited. Results go to the suite's JSON with the other rows;
everything is removed at the end (processes by pid, the receiver's thread, database,
prefix), also on failure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import math
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from calltrail_common.topology import DISPATCHER
from calltrail_testkit.lifecycles import CALL_ONLY_MIX, CallFactory, Event
from calltrail_testkit.processes import HOST, Server, free_port
from calltrail_testkit.rabbit_node import RabbitNode
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.stack import Stack
from calltrail_testkit.webhook_receiver import WebhookReceiver
from chaos.rig import READY_TIMEOUT_SECONDS, SEED, World, body_digest, load_events, sleep_until
from chaos.verdict import RESUME_GOAL_SECONDS, fmt

EVENT_TYPES = ("call.ended", "lead.created")
FIRST_DELAYS_MS = (250, 500, 1000)
LONGEST_DELAY_MS = 2000
RETRY_MARGIN_SECONDS = 30.0  # the retries outlast the fault by this much
PUBLISH_TICK_SECONDS = 0.05
POLL_SECONDS = 0.1
KILL_WAIT_SECONDS = 1.0  # webhooks-dispatcher-kill: for the victim to have attempts in flight
LATE_BOUND_SECONDS = 30.0  # past its goal, how much longer a resumption is waited for
PROCESSOR_BATCH = 200
PROCESSOR_BATCH_WAIT_MS = 20


@dataclass(frozen=True)
class OutboundPlan:
    rate: float  # Vapi events/s published (call-only lifecycles: about 4 events a call)
    duration: float  # seconds of load
    fault_at: float  # seconds into the load
    fault_seconds: float
    processors: int = 2
    organizations: int = 3
    receiver_latency: float = 0.02  # the receiver's answer time: attempts are in flight
    settle_timeout: float = 120.0  # after the load, for every delivery to succeed

    @property
    def retry_delays_ms(self) -> tuple[int, ...]:
        """250 ms, 500 ms, 1 s, then 2 s until the retries outlast the fault by 30 s."""
        rest = self.fault_seconds + RETRY_MARGIN_SECONDS - sum(FIRST_DELAYS_MS) / 1000
        return (*FIRST_DELAYS_MS,
                *(LONGEST_DELAY_MS,) * max(1, math.ceil(rest * 1000 / LONGEST_DELAY_MS)))

    @property
    def resume_goal(self) -> float:
        return max(self.retry_delays_ms) / 1000 + RESUME_GOAL_SECONDS


OUTBOUND_FULL = OutboundPlan(rate=300, duration=60, fault_at=15, fault_seconds=20)
OUTBOUND_SHORT = OutboundPlan(rate=80, duration=8, fault_at=2, fault_seconds=3, processors=1,
                              organizations=2, settle_timeout=40)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(24)).decode()


@dataclass
class OutboundWindow:
    start: float = 0.0  # epoch seconds: the receiver's and Postgres' clock
    end: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


# --- the world --------------------------------------------------------------------------


class OutboundRig(World):
    """One outbound fault's world: prefix, database, the organizations and their endpoints,
    the receiver, the processors and two dispatchers."""

    def __init__(self, node: RabbitNode, plan: OutboundPlan, samples: Path, *,
                 keep_logs: Path | None = None) -> None:
        super().__init__()
        self.plan = plan
        self.samples = samples
        self.keep_logs = keep_logs
        self.stack = Stack(node.url)
        self.receiver = WebhookReceiver(latency=plan.receiver_latency)
        self.paths: dict[uuid.UUID, str] = {}  # endpoint id -> its path on the receiver
        self.endpoint_of: dict[str, uuid.UUID] = {}  # organization id -> its endpoint
        self.processors: list[Server] = []
        self.dispatchers: list[Server] = []
        self.client = httpx.AsyncClient(timeout=5)

    async def _enter(self) -> None:
        self._exit.push_async_callback(self.client.aclose)
        await self._exit.enter_async_context(self.stack)
        await asyncio.to_thread(self.receiver.start)
        self._exit.callback(self.receiver.stop)
        self.organizations = await self.stack.create_organizations(self.plan.organizations)
        for index, org in enumerate(self.organizations):
            path, secret = f"org-{index + 1}", new_secret()
            self.receiver.behave(path, secret=secret)
            endpoint_id = await self.stack.add_webhook_endpoint(
                org.org_id, self.receiver.url(path), secret, event_types=EVENT_TYPES)
            self.paths[endpoint_id] = path
            self.endpoint_of[org.org_id] = endpoint_id
        if self.keep_logs is not None:  # after the processes stopped (LIFO): whole logs
            self._exit.callback(self.stack.copy_logs, self.keep_logs)
        self._exit.push_async_callback(self.stack.stop_servers)
        for index in range(self.plan.processors):
            processor = self.stack.processor(f"processor-{index + 1}",
                                             batch_size=PROCESSOR_BATCH,
                                             batch_wait_ms=PROCESSOR_BATCH_WAIT_MS)
            processor.port = free_port()
            processor.env.update({"PROCESSOR_HOST": HOST,
                                  "PROCESSOR_METRICS_PORT": str(processor.port)})
            self.processors.append(processor)
        for index in range(2):
            dispatcher = self.stack.dispatcher(
                f"dispatcher-{index + 1}", retry_delays_ms=self.plan.retry_delays_ms,
                metrics_port=free_port(), env={"DISPATCHER_HOST": HOST})
            self.dispatchers.append(dispatcher)
        for server in (*self.processors, *self.dispatchers):
            server.env["LOG_LEVEL"] = "info"  # failed attempts, reconnects: at info
            server.start()
        await self.ready(self.processors + self.dispatchers)
        self.factory = CallFactory(self.samples, self.organizations, seed=SEED,
                                   now_ms=int(time.time() * 1000), mix=CALL_ONLY_MIX)

    async def ready(self, servers: list[Server]) -> None:
        """Until every one's /readyz says 200 (consuming, and the database reachable)."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        pending = list(servers)
        while pending:
            for server in list(pending):
                if server.exited():
                    raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await self.client.get(f"http://{HOST}:{server.port}/readyz")
                            ).status_code == 200:
                        pending.remove(server)
            if pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready: {[s.name for s in pending]}")
                await asyncio.sleep(0.1)

    def exited(self) -> list[str]:
        return [s.name for s in (*self.processors, *self.dispatchers) if s.exited()]

    async def publish_paced(self, events: list[Event], rate: float, t0: float) -> None:
        """`events` published as ingest publishes them, at `rate` a second from `t0`
        (monotonic), a tick's worth at a time."""
        published = 0
        while published < len(events):
            due = min(len(events), int(rate * (time.monotonic() - t0)) + 1)
            if due > published:
                await self.stack.publish(events[published:due], f"load-{published:07d}")
                published = due
            await asyncio.sleep(PUBLISH_TICK_SECONDS)

    # --- what arrived -------------------------------------------------------------------

    def first_arrivals(self) -> dict[str, float]:
        """Every webhook-id the receiver got, with its first arrival (epoch seconds)."""
        first: dict[str, float] = {}
        for record in self.receiver.received():
            webhook_id = record.webhook_id
            if webhook_id is not None and record.received_at < first.get(webhook_id, math.inf):
                first[webhook_id] = record.received_at
        return first

    async def probe_arrived(self, connection: asyncpg.Connection, call_id: str,
                            bound: float) -> float | None:
        """When (epoch) the probe call's `call.ended` arrived; None if not within `bound`.
        Only what arrived since the last look is read (this process serves the receiver)."""
        deadline = time.monotonic() + bound
        event_id: str | None = None
        seen = 0
        while time.monotonic() < deadline:
            if event_id is None:
                found = await connection.fetchval(
                    "SELECT id FROM outbound_events WHERE type = 'call.ended'"
                    " AND data->>'id' = $1", call_id)
                event_id = None if found is None else str(found)
            if event_id is not None:
                received = self.receiver.received()
                for record in received[seen:]:
                    if record.webhook_id == event_id:
                        return record.received_at
                seen = len(received)
            await asyncio.sleep(0.05)
        return None

    async def settled(self, connection: asyncpg.Connection, published: set[str],
                      limit: float) -> bool:
        """Until every event published (`published`: digests of their bodies) is archived,
        so its batch's outbox rows are committed, and every delivery succeeded (bounded).
        An empty queue alone is not enough: a batch taken but not yet committed is in no
        queue's ready count, and its deliveries would be recorded after the look."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if await self.stack.queue_depth() == 0 and published <= {
                        r[0] for r in await connection.fetch(
                            "SELECT DISTINCT md5(body) FROM events")} \
                        and not await connection.fetchval(
                            "SELECT count(*) FROM outbound_deliveries"
                            " WHERE state <> 'succeeded'"):
                    return True
            await asyncio.sleep(0.5)
        return False

    async def dead_letters(self) -> int | None:
        names = [self.stack.topology.dead_letter_queue(DISPATCHER)]
        for _ in range(5):
            with contextlib.suppress(Exception):
                processor = sum((await self.stack.dead_letters()).values())
                return processor + sum([await self.stack.queue_depth(n) for n in names])
            await asyncio.sleep(1)
        return None


# --- the faults: each starts at once and returns when the fault is over ----------------


async def receiver_down(rig: OutboundRig, plan: OutboundPlan, window: OutboundWindow
                        ) -> None:
    await asyncio.to_thread(rig.receiver.stop)
    await sleep_until_epoch(window.start + plan.fault_seconds)
    await asyncio.to_thread(rig.receiver.start)


async def dispatcher_kill(rig: OutboundRig, plan: OutboundPlan, window: OutboundWindow
                          ) -> None:
    victim = rig.dispatchers[0]
    assert victim.process is not None
    # Killed with attempts in flight when it has some within a second (its own gauge,
    # read just before), so that what it was sending has to be sent again by the other.
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while True:
        with contextlib.suppress(httpx.HTTPError):
            text = (await rig.client.get(f"http://{HOST}:{victim.port}/metrics")).text
            window.notes["victim_in_flight"] = _metric(text, "calltrail_dispatcher_in_flight")
            window.notes["victim_delivered"] = _metric(
                text, 'calltrail_dispatcher_deliveries_total{outcome="succeeded"}')
        if window.notes.get("victim_in_flight") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    victim.process.kill()
    await asyncio.to_thread(victim.process.wait, 10)
    await sleep_until_epoch(window.start + plan.fault_seconds)
    victim.start()  # the other one carries on meanwhile: not waited for


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def sleep_until_epoch(moment: float) -> None:
    await sleep_until(time.monotonic() + moment - time.time())


OutboundScenario = Callable[[OutboundRig, OutboundPlan, OutboundWindow], Awaitable[None]]
OUTBOUND_FAULTS: dict[str, OutboundScenario] = {
    "webhooks-receiver-down": receiver_down,
    "webhooks-dispatcher-kill": dispatcher_kill,
}


# --- one fault, from a new world to its row ---------------------------------------------

EXPECTED = """
SELECT (SELECT count(*) FROM calls WHERE status = 'ended' AND org_id = ANY($1::uuid[]))
           AS ended,
       (SELECT count(*) FROM leads WHERE org_id = ANY($1::uuid[])) AS leads,
       (SELECT count(*) FROM outbound_events WHERE type = 'call.ended') AS call_ended,
       (SELECT count(*) FROM outbound_events WHERE type = 'lead.created') AS lead_created
"""
# Ended calls and leads whose event the outbox lacks (the processor's event ids are its
# own: matched by what the data names).
NOT_RECORDED = """
SELECT (SELECT count(*) FROM calls c WHERE c.status = 'ended' AND c.org_id = ANY($1::uuid[])
          AND NOT EXISTS (SELECT 1 FROM outbound_events e WHERE e.type = 'call.ended'
                          AND e.org_id = c.org_id AND e.data->>'id' = c.id)) AS calls,
       (SELECT count(*) FROM leads l WHERE l.org_id = ANY($1::uuid[])
          AND NOT EXISTS (SELECT 1 FROM outbound_events e WHERE e.type = 'lead.created'
                          AND e.org_id = l.org_id AND e.data->>'id' = l.id::text)) AS leads
"""
RECORDED = """
SELECT d.endpoint_id, d.event_id::text AS event_id, d.state, d.attempts,
       extract(epoch FROM d.created_at)::float8 AS created_at
FROM outbound_deliveries d JOIN outbound_events e ON e.id = d.event_id
WHERE e.type = ANY($1::text[])
"""


async def run_outbound_fault(name: str, plan: OutboundPlan, node: RabbitNode,
                             samples_dir: Path = SAMPLES_DIR, logs: Path | None = None
                             ) -> dict[str, Any]:
    """One outbound fault under load in a world of its own; its row (see the module's
    docstring)."""
    scenario = OUTBOUND_FAULTS[name]
    started_at = dt.datetime.now(dt.UTC).isoformat()
    goal = plan.resume_goal
    problems: list[str] = []
    async with OutboundRig(node, plan, samples_dir,
                           keep_logs=None if logs is None else logs / name) as rig:
        events = load_events(rig.factory, int(plan.rate * plan.duration))
        connection = await rig.stack.db()
        try:
            t0 = time.monotonic() + 0.2
            load = asyncio.create_task(rig.publish_paced(events, plan.rate, t0))
            try:
                await sleep_until(t0 + plan.fault_at)
                window = OutboundWindow(start=time.time())
                await scenario(rig, plan, window)
                window.end = time.time()
                # A call that ends now: its call.ended must arrive within the goal.
                probe = rig.factory.call(created_ms=int(time.time() * 1000))
                await rig.stack.publish(probe.events, "probe")
                arrived = await rig.probe_arrived(connection, probe.call_id,
                                                  goal + LATE_BOUND_SECONDS)
                resumed = None if arrived is None else round(arrived - window.end, 2)
                await asyncio.wait_for(load, plan.duration + 30)
            finally:
                load.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await load
            published = {body_digest(e.body) for e in (*events, *probe.events)}
            settled = await rig.settled(connection, published, plan.settle_timeout)
            orgs = [uuid.UUID(o.org_id) for o in rig.organizations]
            expected = await connection.fetchrow(EXPECTED, orgs)
            not_recorded = await connection.fetchrow(NOT_RECORDED, orgs)
            deliveries = await connection.fetch(RECORDED, list(EVENT_TYPES))
        finally:
            await connection.close()
        dead = await rig.dead_letters()
        exited = rig.exited()
        received = rig.receiver.received()
        first = rig.first_arrivals()
        server_logs = {s.name: s.log_summary() for s in rig.stack.servers}
        failed = {s.name: _lines(s, '"webhook_attempt_failed"') for s in rig.dispatchers}
        paths = dict(rig.paths)
    # What arrived, endpoint by endpoint (each its own path).
    recorded = {(paths[r["endpoint_id"]], r["event_id"]) for r in deliveries}
    arrived_ids = {(r.path, r.webhook_id) for r in received if r.webhook_id is not None}
    lost = recorded - arrived_ids
    unknown = arrived_ids - recorded
    repeats = len(received) - len(arrived_ids)
    unverified = sum(r.verified is not True for r in received)
    states: dict[str, int] = {}
    for row in deliveries:
        states[row["state"]] = states.get(row["state"], 0) + 1
    attempts = sum(r["attempts"] for r in deliveries)
    before = [first.get(r["event_id"]) for r in deliveries if r["created_at"] < window.end]
    backlog = (round(max(0.0, max(a for a in before if a is not None) - window.end), 2)
               if before and None not in before else None)
    after = sorted(first[r["event_id"]] - r["created_at"] for r in deliveries
                   if r["created_at"] >= window.end and r["event_id"] in first)
    if lost:
        problems.append(f"{len(lost)} deliveries recorded but never arrived")
    if unknown:
        problems.append(f"{len(unknown)} webhook-ids arrived that were never recorded")
    if not_recorded["calls"] or not_recorded["leads"]:
        problems.append(f"not in the outbox: {not_recorded['calls']} ended calls, "
                        f"{not_recorded['leads']} leads")
    if unverified:
        problems.append(f"{unverified} POSTs whose signature did not verify")
    if set(states) - {"succeeded"}:
        problems.append(f"deliveries not all succeeded: {states}")
    if not deliveries:
        problems.append("nothing was recorded for the endpoints")
    if dead is None:
        problems.append("the dead-letter queues could not be read")
    elif dead:
        problems.append(f"{dead} dead letters")
    if not settled:
        problems.append(f"not settled within {plan.settle_timeout:g} s")
    if resumed is None or resumed > goal:
        problems.append(f"a call ended after the fault arrived {resumed} s after it "
                        f"(goal {goal:g} s)")
    if backlog is None:
        problems.append("deliveries recorded before the fault's end never arrived")
    if after and after[-1] > goal:
        problems.append(f"a delivery recorded after the fault's end took {after[-1]:.2f} s "
                        f"(goal {goal:g} s)")
    if exited:
        problems.append(f"exited: {', '.join(exited)}")
    return {
        "fault": name,
        "kind": "outbound",
        "started_at": started_at,
        "events_published": len(events),
        "calls_ended": int(expected["ended"]),
        "leads": int(expected["leads"]),
        "recorded": {"call.ended": int(expected["call_ended"]),
                     "lead.created": int(expected["lead_created"]),
                     "deliveries": len(deliveries)},
        "not_recorded": dict(not_recorded),
        "arrived": len(arrived_ids),
        "lost": len(lost),
        "lost_examples": sorted(str(x) for x in lost)[:5],
        "unknown": len(unknown),
        "repeats": repeats,
        "posts": len(received),
        "unverified": unverified,
        "states": states,
        "attempts": attempts,
        "failed_attempts": sum(failed.values()),
        "failed_by_dispatcher": failed,
        "dead_letters": dead,
        "fault_seconds": round(window.end - window.start, 2),
        "resumed_s": resumed,
        "backlog_s": backlog,
        "resume_goal_s": goal,
        "after_fault_delay_ms": {
            "p50": _percentile_ms(after, 50), "p99": _percentile_ms(after, 99),
            "max": _percentile_ms(after, 100), "count": len(after)},
        "retry_delays_ms": list(plan.retry_delays_ms),
        "notes": window.notes,
        "problems": problems,
        "server_logs": server_logs,
    }


def _lines(server: Server, text: str) -> int:
    """Lines of the server's log (all its lives) holding `text`."""
    with contextlib.suppress(OSError), server.log_path.open(errors="replace") as log:
        return sum(text in line for line in log)
    return 0


def _percentile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))] * 1000, 1)


# --- printing ---------------------------------------------------------------------------


def print_outbound_table(rows: list[dict[str, Any]], plan: OutboundPlan) -> None:
    print()
    delays = plan.retry_delays_ms
    print(f"outbound webhooks' faults: call-only lifecycles at {plan.rate:g} events/s for "
          f"{plan.duration:g} s, {plan.organizations} organizations each with an endpoint "
          f"(call.ended, lead.created), {plan.processors} processor(s), 2 dispatchers, the "
          f"receiver answering in {plan.receiver_latency * 1000:g} ms; each fault "
          f"{plan.fault_seconds:g} s from {plan.fault_at:g} s; retry delays shortened to "
          f"{', '.join(f'{d / 1000:g}' for d in delays[:4])}... s ({len(delays)} retries, "
          f"{sum(delays) / 1000:g} s; the service's: 5 s to 10 h over about a day)")
    print(f"{'fault':<26}{'ended':>7}{'leads':>6}{'recorded':>9}{'arrived':>8}{'lost':>5}"
          f"{'repeats':>8}{'unverif.':>9}{'failed':>7}{'states':>18}{'dead':>5}"
          f"{'resumed s':>10}{'after s':>8}{'backlog s':>10}{'goal s':>7}")
    for row in rows:
        if "error" in row:
            print(f"{row['fault']:<26}ERROR: {row['error']}")
            continue
        states = ",".join(f"{k} {v}" for k, v in sorted(row["states"].items()))
        print(f"{row['fault']:<26}{row['calls_ended']:>7}{row['leads']:>6}"
              f"{row['recorded']['deliveries']:>9}{row['arrived']:>8}{row['lost']:>5}"
              f"{row['repeats']:>8}{row['unverified']:>9}{row['failed_attempts']:>7}"
              f"{states:>18}{fmt(row['dead_letters']):>5}{fmt(row['resumed_s']):>10}"
              f"{fmt(_seconds(row['after_fault_delay_ms']['max'])):>8}"
              f"{fmt(row['backlog_s']):>10}{row['resume_goal_s']:>7g}")
        for problem in row["problems"]:
            print(f"{'':<26}  ! {problem}")
    print("(recorded: call.ended and lead.created deliveries in the outbox; arrived: distinct "
          "webhook-ids at the receiver; repeats: the same id again; failed: attempts that "
          "failed (logged by the dispatchers); resumed: from the fault's end until a call "
          "ended then arrived; after: the longest a delivery recorded after the end took; "
          "goal: for both, the longest retry delay + 10 s; backlog: until every delivery "
          "recorded before the end had arrived)")


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else round(ms / 1000, 2)


def print_outbound_summary(row: dict[str, Any]) -> None:
    if "error" in row:
        print(f"  {row['error']}", flush=True)
        return
    print(f"  recorded {row['recorded']['deliveries']}, arrived {row['arrived']}, lost "
          f"{row['lost']}, repeats {row['repeats']}, failed attempts "
          f"{row['failed_attempts']}, resumed {row['resumed_s']} s, backlog "
          f"{row['backlog_s']} s (goal {row['resume_goal_s']:g})"
          + (f"; {'; '.join(row['problems'])}" if row["problems"] else ""), flush=True)
