"""The fault suite's short variant (`chaos` with `SHORT` sizes): every fault, each in a
world of its own on one RabbitMQ node of the suite's own, started for this module.

Each test runs real call lifecycles at 50 webhooks/s for 8 s through `calltrail-ingest` and
two `calltrail-processor` replicas, with a 3 s fault from the second second, and asserts the
promise: every webhook answered 200 is processed (nothing lost), nothing counted twice,
statistics equal the aggregates, and a call whose first webhook is sent at the fault's end
becomes visible within 10 s: processing resumed on its own. `make chaos` runs the same
faults at full size and prints the table.

The cluster variant runs the same load on a three-node RabbitMQ cluster of the test's own
(`calltrail_testkit.rabbit_node.RabbitCluster`) through `cluster-failover`, and asserts the same.

metrics-sync's faults (`chaos.sync` with `SYNC_SHORT` sizes: 12 accounts of 20 calls,
two replicas, a 4 s interval, 6 s faults) assert its promise: after the fault, new calls
and a repriced one on every account are synced within one interval plus the fault's
back-off bound, usage equals the fake Vapi's truth exactly, every call is a row at its
latest cost, no run is left 'running', no account is disconnected or still failing.

The outbound webhooks' faults (`chaos.outbound` with `OUTBOUND_SHORT` sizes: call-only
lifecycles at 80 events/s for 8 s, one processor, two dispatchers with retry delays of
0.25-2 s, 3 s faults) assert theirs: every `call.ended` and `lead.created` the outbox
recorded arrived at the receiver, signed, each id at least once (repeats only of the same
id), every delivery 'succeeded', none dead, and a call that ends at the fault's end (as
every delivery recorded after it) is delivered within the longest retry delay plus 10 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from calltrail_testkit.rabbit_node import RabbitCluster, RabbitNode
from chaos.faults import FAULTS, NEEDS_ROOT, cluster_plan, run_fault
from chaos.outbound import OUTBOUND_FAULTS, OUTBOUND_SHORT, run_outbound_fault
from chaos.rig import SHORT, can_mount
from chaos.sync import SYNC_FAULTS, SYNC_SHORT, run_sync_fault, takeover_goal
from chaos.verdict import RESUME_GOAL_SECONDS


@pytest.fixture(scope="module")
def rabbit_node() -> Iterator[RabbitNode]:
    with RabbitNode() as node:
        yield node


@pytest.mark.timeout(150)
@pytest.mark.parametrize("fault", list(FAULTS))
async def test_fault_loses_nothing_and_processing_resumes(
        fault: str, rabbit_node: RabbitNode, tmp_path: Path) -> None:
    if fault in NEEDS_ROOT and not can_mount():
        pytest.skip("mounting a small tmpfs for the spool needs root")
    row = await run_fault(fault, SHORT, rabbit_node, logs=tmp_path)
    assert_promise_kept(row, f"services' logs: {tmp_path / fault}")
    if fault == "spool-full":
        # The spool could not keep them while the broker was away: 503, retried later.
        assert row["during_fault"]["by_answer"].get("503", 0) > 0, row["during_fault"]


def assert_promise_kept(row: dict[str, Any], logs: str) -> None:
    assert row["answered_200"] == row["sent"], (row["during_fault"], logs)
    assert row["lost"] == 0, (row["lost_examples"], logs)
    assert row["counted_twice"] == 0, (row["totals"], logs)
    assert row["stats_equal_aggregates"], (row["totals"], logs)
    assert row["dead_letters"] == 0, logs
    assert row["resumed_s"] is not None and row["resumed_s"] <= RESUME_GOAL_SECONDS, logs
    assert not row["problems"], (row["problems"], logs)


@pytest.mark.timeout(300)
async def test_a_cluster_loses_nothing_when_its_leaders_stop_or_go_silent(
        tmp_path: Path) -> None:
    """Three nodes of our own; every service given the three addresses. The node leading
    the processors' quorum queue is stopped, then the next leader frozen (SIGSTOP)."""
    cluster = RabbitCluster()
    try:
        await asyncio.to_thread(cluster.start)
        row = await run_fault("cluster-failover", cluster_plan(SHORT), cluster,
                              logs=tmp_path)
    finally:
        await asyncio.to_thread(cluster.destroy)
    assert_promise_kept(row, f"services' logs: {tmp_path / 'cluster-failover'}")
    notes = row["notes"]
    assert notes["frozen_leader"] != notes["stopped_leader"], notes  # leadership moved
    # Not only nothing lost: the two nodes left kept processing while the third was away.
    assert notes["archived_while_stopped"] > 0, notes
    assert notes["archived_while_frozen"] > 0, notes
    assert row["drained_s"] is not None, row["samples"][-5:]  # drained while the load ran


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", list(SYNC_FAULTS))
async def test_sync_fault_loses_nothing_and_syncing_resumes(
        fault: str, rabbit_node: RabbitNode, tmp_path: Path) -> None:
    row = await run_sync_fault(fault, SYNC_SHORT, rabbit_node, logs=tmp_path)
    logs = f"services' logs: {tmp_path / fault}"
    assert row["calls"] == SYNC_SHORT.accounts * (SYNC_SHORT.calls + SYNC_SHORT.new_calls)
    assert row["usage_exact"], (row["usage_off"], logs)
    assert (row["calls_missing"], row["calls_wrong"]) == (0, 0), logs
    assert row["stuck_runs"] == 0, logs
    assert (row["disconnected"], row["failing_accounts"]) == (0, 0), logs
    assert row["dead_letters"] == 0, logs
    assert row["resumed_s"] is not None and row["resumed_s"] <= row["resume_goal_s"], (
        row["runs_until_resumed"], logs)
    assert not row["problems"], (row["problems"], logs)
    notes = row["notes"]
    if fault == "sync-replica-kill":
        # Killed while holding leases: taken over once they ran out, its runs abandoned.
        assert notes["leases_held"] > 0
        assert notes["takeover_s"] is not None
        assert notes["takeover_s"] <= takeover_goal(SYNC_SHORT), notes
        assert notes["abandoned_runs"] > 0, notes
    if fault == "sync-vapi-5xx":  # the outage bit: runs failed, and were retried
        assert row["runs_until_resumed"]["failed_by_reason"].get("vapi_unavailable"), row


@pytest.mark.timeout(90)
@pytest.mark.parametrize("fault", list(OUTBOUND_FAULTS))
async def test_outbound_fault_loses_no_webhook_and_sending_resumes(
        fault: str, rabbit_node: RabbitNode, tmp_path: Path) -> None:
    row = await run_outbound_fault(fault, OUTBOUND_SHORT, rabbit_node, logs=tmp_path)
    logs = f"services' logs: {tmp_path / fault}"
    recorded = row["recorded"]
    # The outbox recorded one event per ended call and per lead, and the receiver got them.
    assert recorded["call.ended"] == row["calls_ended"] > 0, logs
    assert recorded["lead.created"] == row["leads"] > 0, logs
    assert row["not_recorded"] == {"calls": 0, "leads": 0}, logs
    assert recorded["deliveries"] == recorded["call.ended"] + recorded["lead.created"], logs
    assert row["arrived"] == recorded["deliveries"], (row["lost_examples"], logs)
    assert (row["lost"], row["unknown"], row["unverified"]) == (0, 0, 0), logs
    assert row["posts"] == row["arrived"] + row["repeats"], logs
    assert row["states"] == {"succeeded": recorded["deliveries"]}, logs
    assert row["dead_letters"] == 0, logs
    assert row["resumed_s"] is not None and row["resumed_s"] <= row["resume_goal_s"], logs
    assert row["after_fault_delay_ms"]["count"] > 0, logs
    assert row["after_fault_delay_ms"]["max"] <= row["resume_goal_s"] * 1000, logs
    assert row["backlog_s"] is not None, logs
    assert not row["problems"], (row["problems"], logs)
    if fault == "webhooks-receiver-down":  # the outage bit: attempts failed, were retried
        assert row["failed_attempts"] > 0, row
    if fault == "webhooks-dispatcher-kill":  # it was working when it was killed
        assert row["notes"]["victim_delivered"], row["notes"]
