"""The webhook faults, each under load in a world of its own (`run_fault`).

The load (`calltrail_testkit.vapi_sender`): `--rate` webhooks/s, open loop, for
`--duration` s, real lifecycles (`calltrail_testkit.lifecycles`: several organizations,
both endpoints, status-updates, chatter, reports); every webhook not answered 200 is
retried with a back-off plan like Vapi's (`backoffPlan`: exponential from 1 s, at most 10 s
apart, 8 retries). At `fault_at` s into the load the fault starts; the scenario function
returns when the fault is over and everything is back (its end). Faults:

    broker-cut-ingest     ingest's broker link cut (connections reset, new ones refused)
    broker-cut-processor  the processors' broker link cut
    broker-partition      both broker links stalled: no RST, no FIN, nothing gets through
    broker-restart        the suite's node stopped for real, then started on the same data
    processor-kill        every processor SIGKILLed every `kill_every` s and restarted
    postgres-cut          Postgres cut for the processors and ingest
    ingest-kill           ingest's broker link cut (so it spools to disk), ingest SIGKILLed
                          half-way and restarted, then the link restored
    spool-full            ingest's SPOOL_DIR on a small tmpfs, filled while ingest's broker
                          link is cut: ingest must answer 503, never a 200 it cannot keep;
                          once the link is back the replay frees the disk, and no webhook
                          may be answered 503 more than 5 s after that (`last 503`)
    processor-scale       three processors drain under load; one is SIGKILLed (its
                          partitions wait for its membership to age out), then the count
                          goes to 1 (SIGTERM: handed over at once), to 4, to 2, a quarter of
                          the fault each (at least 4 s); `stall` is the longest the archive
                          stood still with a backlog waiting (goal: under 3 s, never stalls)
    cluster-failover      on a three-node RabbitMQ cluster of the suite's own (every service
                          given the three addresses): the node leading most of the
                          processors' queues stopped for real, then started; then the node
                          leading most by then frozen (SIGSTOP: silent to peers and clients), then
                          thawed; each for half the fault's seconds, at least 15 s. The
                          load runs on until 45 s after both halves.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from calltrail_common.topology import CALL_PROCESSOR
from calltrail_testkit.samples import SAMPLES_DIR
from calltrail_testkit.vapi_sender import BackoffPlan, Sender
from chaos.rig import (
    DATABASE,
    INGEST_BROKER,
    PROCESSOR_BROKER,
    Broker,
    Plan,
    Rig,
    Sample,
    break_links,
    load_events,
    sleep_until,
)
from chaos.verdict import account, drained_seconds, goal_problems, longest_stall


@dataclass
class FaultWindow:
    start: float = 0.0
    end: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)

    def end_of(self, plan: Plan) -> float:
        """When the fault is over (monotonic)."""
        return self.start + plan.fault_seconds


# ---------------------------------------------------------------------------------------
# The faults: each starts at once and returns when the fault is over and all is restored


async def broker_cut_ingest(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await break_links(window.end_of(plan), rig.ingest_broker)


async def broker_cut_processor(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await break_links(window.end_of(plan), rig.processor_broker)


async def broker_partition(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await break_links(window.end_of(plan), rig.ingest_broker, rig.processor_broker, stall=True)


async def broker_restart(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    window.notes["stop_s"] = round(await asyncio.to_thread(rig.node.stop), 2)
    await sleep_until(window.end_of(plan))
    window.notes["start_s"] = round(await asyncio.to_thread(rig.node.start), 2)
    await rig.stack.reconnect()


async def processor_kill(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    kills = 0
    while True:
        for processor in rig.processors:
            assert processor.process is not None
            processor.process.kill()
            await asyncio.to_thread(processor.process.wait, 10)
            processor.start()
            kills += 1
        if time.monotonic() + plan.kill_every >= window.end_of(plan):
            break
        await asyncio.sleep(plan.kill_every)
    window.notes["kills"] = kills
    await sleep_until(window.end_of(plan))


async def postgres_cut(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await break_links(window.end_of(plan), rig.database)


async def ingest_kill(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.cut()  # so that what ingest accepts is on disk when it dies
    await sleep_until(window.start + plan.fault_seconds / 2)
    window.notes["spool_at_kill"] = await rig.spool_depth()
    assert rig.ingest.process is not None
    rig.ingest.process.kill()
    await asyncio.to_thread(rig.ingest.process.wait, 10)
    killed = time.monotonic()
    rig.ingest.start()
    await rig.ingest_healthy()
    window.notes["ingest_down_s"] = round(time.monotonic() - killed, 2)
    await sleep_until(window.end_of(plan))
    await rig.ingest_broker.restore()


async def spool_full(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    await rig.ingest_broker.cut()
    await sleep_until(window.end_of(plan))
    window.notes["spool_at_end"] = await rig.spool_depth()
    await rig.ingest_broker.restore()


async def processor_scale(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    """Three replicas under load: one killed, then 1, 4 and 2 replicas, a phase each."""
    phase = scale_phase_seconds(plan)
    window.notes["phase_s"] = phase
    killed = rig.processors[0]
    assert killed.process is not None
    killed.process.kill()
    await asyncio.to_thread(killed.process.wait, 10)
    rig.processors.remove(killed)
    counts = []

    async def hold(label: str) -> None:
        await asyncio.sleep(phase)
        counts.append((label, len(rig.processors), await rig.live_members()))

    await hold("3, one killed")
    await rig.stop_processors(rig.processors[1:])
    await hold("1")
    for _ in range(3):
        rig.add_processor().start()
    await hold("4")
    await rig.stop_processors(rig.processors[2:])
    await hold("2")
    window.notes["replicas"] = [{"phase": label, "running": running, "members_seen": seen}
                                for label, running, seen in counts]


async def _archived_while_away(rig: Rig, phase: float) -> int:
    """Events archived during one half of the cluster fault: `phase` seconds, prolonged (up
    to twice that) while none has been archived yet (the load runs on long enough:
    CLUSTER_OVERRUN_SECONDS). Noticing a silent node takes
    heartbeats and net_ticktime, longer on a loaded machine: the half lasts until the two
    nodes left have shown they go on, or plainly have not."""
    before = await rig.archived()
    await asyncio.sleep(phase)
    archived = await rig.archived() - before
    deadline = asyncio.get_running_loop().time() + phase
    while archived == 0 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(1.0)
        archived = await rig.archived() - before
    return archived


async def cluster_failover(rig: Rig, plan: Plan, window: FaultWindow) -> None:
    """On a three-node cluster: the node leading the most of the processors' quorum queues
    (its partitions and its overflow) stopped for real for the first half, then started;
    then the node leading the most of them now frozen (SIGSTOP: neither its peers nor any
    client get an answer from it, as if its network were gone) for the second half, then
    thawed."""
    assert rig.cluster is not None
    queues = rig.stack.topology.work_queues(CALL_PROCESSOR)
    phase = cluster_phase_seconds(plan)
    stopped, led = await asyncio.to_thread(rig.cluster.busiest_leader, queues)
    window.notes["stopped_leader"] = stopped.name
    window.notes["stopped_led"] = led
    window.notes["stop_s"] = round(await asyncio.to_thread(stopped.stop), 2)
    # Events archived while a node is away: processing goes on on the other two.
    window.notes["archived_while_stopped"] = await _archived_while_away(rig, phase)
    window.notes["start_s"] = round(await asyncio.to_thread(stopped.start), 2)
    frozen, led = await asyncio.to_thread(rig.cluster.busiest_leader, queues)
    window.notes["frozen_leader"] = frozen.name
    window.notes["frozen_led"] = led
    frozen.freeze()
    try:
        window.notes["archived_while_frozen"] = await _archived_while_away(rig, phase)
    finally:
        frozen.thaw()
    window.notes["leader_after"] = (await asyncio.to_thread(rig.cluster.busiest_leader,
                                                            queues))[0].name


Scenario = Callable[[Rig, Plan, FaultWindow], Awaitable[None]]
FAULTS: dict[str, Scenario] = {
    "broker-cut-ingest": broker_cut_ingest,
    "broker-cut-processor": broker_cut_processor,
    "broker-partition": broker_partition,
    "broker-restart": broker_restart,
    "processor-kill": processor_kill,
    "postgres-cut": postgres_cut,
    "ingest-kill": ingest_kill,
    "spool-full": spool_full,
    "processor-scale": processor_scale,
}
NEEDS_ROOT = frozenset({"spool-full"})
# The links each fault cuts: only these go through a proxy (the rest are direct).
FAULT_LINKS: dict[str, frozenset[str]] = {
    "broker-cut-ingest": frozenset({INGEST_BROKER}),
    "broker-cut-processor": frozenset({PROCESSOR_BROKER}),
    "broker-partition": frozenset({INGEST_BROKER, PROCESSOR_BROKER}),
    "broker-restart": frozenset(),
    "processor-kill": frozenset(),
    "postgres-cut": frozenset({DATABASE}),
    "ingest-kill": frozenset({INGEST_BROKER}),
    "spool-full": frozenset({INGEST_BROKER}),
    "processor-scale": frozenset(),
    "cluster-failover": frozenset(),  # a node stopped or frozen for real
}
# Faults run on a RabbitMQ cluster of the suite's own (three nodes) instead of one node.
CLUSTER_FAULTS: dict[str, Scenario] = {"cluster-failover": cluster_failover}
# Each half of the cluster fault lasts at least this long: a silent node is noticed by
# missed heartbeats (3 x AMQP_HEARTBEAT_SECONDS) or a confirm timeout, and by its peers after
# net_ticktime (10 s on the suite's nodes), so a shorter freeze would end before anyone
# fails over and show nothing.
CLUSTER_PHASE_MIN_SECONDS = 15.0
# On top of its two halves, a node's real stop and start (up to ~40 s on a busy 2-core
# machine): the load goes on this much longer, so "drained" is measured under it.
CLUSTER_OVERRUN_SECONDS = 45.0


# processor-scale: each of its four phases lasts at least this long, so that a phase outlasts
# a replica's start and the others' next heartbeat (PROCESSOR_MEMBER_HEARTBEAT_SECONDS), and
# the first the killed replica's TTL (PROCESSOR_MEMBER_TTL_SECONDS, 5 s).
SCALE_PHASE_MIN_SECONDS = 6.0
SCALE_REPLICAS = 3
SCALE_STALL_GOAL_SECONDS = 3.0
# spool-full: once the broker is back, the replay frees the disk; ingest answers 200 again.
SPOOL_FULL_503_GOAL_SECONDS = 5.0


def scale_phase_seconds(plan: Plan) -> float:
    return max(plan.fault_seconds / 4, SCALE_PHASE_MIN_SECONDS)


def scale_plan(plan: Plan) -> Plan:
    """The plan of processor-scale: three replicas, and the load on through its phases."""
    return replace(plan, processors=SCALE_REPLICAS,
                   duration=max(plan.duration, plan.fault_at + 4 * scale_phase_seconds(plan)
                                + 10))


def cluster_phase_seconds(plan: Plan) -> float:
    return max(plan.fault_seconds / 2, CLUSTER_PHASE_MIN_SECONDS)


def cluster_plan(plan: Plan) -> Plan:
    return replace(plan, duration=max(plan.duration, plan.fault_at + CLUSTER_OVERRUN_SECONDS
                                      + 2 * cluster_phase_seconds(plan)))


async def run_fault(name: str, plan: Plan, broker: Broker,
                    samples_dir: Path = SAMPLES_DIR,
                    logs: Path | None = None) -> dict[str, Any]:
    """One fault under load, from a new world to its figures; the logs kept in `logs`."""
    scenario = {**FAULTS, **CLUSTER_FAULTS}[name]
    if name == "processor-scale":
        plan = scale_plan(plan)
    started_at = dt.datetime.now(dt.UTC).isoformat()
    async with Rig(broker, plan, samples_dir, proxied=FAULT_LINKS[name],
                   spool_on_tmpfs=name == "spool-full",
                   keep_logs=None if logs is None else logs / name) as rig:
        events = load_events(rig.factory, int(plan.rate * plan.duration))
        sender = Sender(rig.ingest.port, rig.request, BackoffPlan())
        samples: list[Sample] = []
        monitor = asyncio.create_task(rig.monitor(sender, samples))
        t0 = time.monotonic() + 0.2
        load = asyncio.create_task(sender.run_schedule(events, plan.rate, t0))
        try:
            await sleep_until(t0 + plan.fault_at)
            window = FaultWindow(start=time.monotonic())
            await scenario(rig, plan, window)
            window.end = time.monotonic()
            # Processing resumed on its own: a call that starts now must become visible.
            probe = sender.submit(rig.probe_event(), probe=True)
            resumed = await rig.visible_after(probe.event, window.end, plan.resume_bound)
            await asyncio.wait_for(load, plan.duration + 30)
            all_done = await sender.join(plan.retry_window)
            settled = await rig.settled(sender, plan.settle_timeout)
            if name == "processor-kill":
                window.notes["ready_after_s"] = round(await rig.processors_ready(), 2)
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            load.cancel()
            await sender.close()
        result = await account(rig, sender)
        server_logs = {server.name: server.log_summary() for server in rig.stack.servers}
    threshold = max(10.0, plan.rate * 0.25)
    during = sender.answers(window.start, window.end)
    problems = goal_problems(result, resumed)
    if name == "spool-full":
        answered_503 = [a.sent + (a.seconds or 0.0) for d in sender.deliveries
                        for a in d.attempts if a.status == 503]
        last = round(max(answered_503) - window.end, 2) if answered_503 else None
        window.notes["last_503_after_s"] = last
        if last is not None and last > SPOOL_FULL_503_GOAL_SECONDS:
            problems.append(f"a 503 {last} s after the disk had room again "
                            f"(goal {SPOOL_FULL_503_GOAL_SECONDS} s)")
    if name == "processor-scale":
        window.notes["stall_s"] = longest_stall(samples, window.start, window.end)
        if window.notes["stall_s"] > SCALE_STALL_GOAL_SECONDS:
            problems.append(f"processing stood still for {window.notes['stall_s']} s "
                            f"(goal under {SCALE_STALL_GOAL_SECONDS} s)")
    if not all_done:
        problems.append("deliveries still retrying when the sender stopped")
    if not settled:
        problems.append("the backlog did not drain (queue, spool or archive)")
    if result["dead_letters"] is None:
        problems.append("the dead-letter and retry queues could not be read")
    elif result["dead_letters"]:
        problems.append(f"{result['dead_letters']} dead letters")
    # Ingest answers 200 (durable), 503 (cannot keep it: Vapi may retry) or a 4xx for the
    # request itself; a 500 means an error escaped it.
    by_answer: dict[str, int] = sender.answers()["by_answer"]  # type: ignore[assignment]
    server_errors = sum(count for answer, count in by_answer.items()
                        if answer.startswith("5") and answer != "503")
    if server_errors:
        problems.append(f"{server_errors} answers were a server error other than 503")
    return {
        "fault": name,
        "started_at": started_at,
        **result,
        "drained_s": drained_seconds(samples, window.end, threshold),
        "resumed_s": resumed,
        "fault_seconds": round(window.end - window.start, 2),
        "during_fault": during,
        "all_answers": sender.answers(),
        "notes": window.notes,
        "problems": problems,
        "server_logs": server_logs,
        "samples": [asdict(s) | {"at": round(s.at - t0, 2)} for s in samples],
        "fault_window_s": [round(window.start - t0, 2), round(window.end - t0, 2)],
    }
