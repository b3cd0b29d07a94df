"""The call processor against real RabbitMQ and PostgreSQL: resolution, dead letters,
unassigned events, outages, crashes and several consumers."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx
import orjson

from call_processor.handlers import FOREIGN_CALL
from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from calltrail_testkit.state import assert_invariants, snapshot
from calltrail_testkit.tcp_proxy import TcpProxy
from tests.admin.test_cli import calltrail
from tests.conftest import AMQP_URL, free_port
from tests.support.processor import eventually, publish, queue_depth, running_processor
from tests.support.samples import sample

INBOUND = [f"inbound-{n}" for n in ("1-status-ringing", "2-status-in-progress",
                                    "3-speech-update", "4-conversation-update",
                                    "5-user-interrupted", "6-status-ended",
                                    "7-end-of-call-report")]


def with_call_id(name: str, call_id: str) -> dict:
    body = copy.deepcopy(sample(name))
    body["message"]["call"]["id"] = call_id
    return body


async def fetchval(database_url: str, query: str, *args):
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def test_a_lifecycle_becomes_a_call_and_a_lead_and_every_message_is_acked(
        database_url: str, topology: Topology, org) -> None:
    async with running_processor(database_url, AMQP_URL, topology):
        await publish(AMQP_URL, topology, [sample(n) for n in INBOUND], org.org_id)
        await eventually(lambda: fetchval(
            database_url, "SELECT status = 'ended' AND report_received FROM calls"))
        await eventually(lambda: fetchval(database_url, "SELECT count(*) = 7 FROM events"))
        assert await fetchval(database_url, "SELECT phone_number FROM leads") == "+14155550123"
        await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)))
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
    finally:
        await connection.close()


async def _is_zero(depth) -> bool:
    return await depth == 0


async def test_poison_goes_to_the_dead_letters_with_its_reason_and_the_next_is_processed(
        database_url: str, topology: Topology, org) -> None:
    no_call_id = copy.deepcopy(sample("inbound-1-status-ringing"))
    del no_call_id["message"]["call"]["id"]
    async with running_processor(database_url, AMQP_URL, topology):
        # A corrupted call event on an organization's endpoint, and garbage on the shared one
        # (ingest refuses non-JSON; only another producer could send these).
        await publish(AMQP_URL, topology, [b"{not json"], org.org_id,
                      message_type="status-update")
        await publish(AMQP_URL, topology, [b"\xff garbage"])
        await publish(AMQP_URL, topology, [no_call_id, sample("inbound-2-status-in-progress")],
                      org.org_id)
        await eventually(lambda: fetchval(database_url, "SELECT count(*) = 1 FROM calls"))
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology, dead=True), 3))
    env = {"AMQP_PREFIX": topology.prefix, "AMQP_URL": AMQP_URL}
    listed = calltrail("dlq", "list", database_url=database_url, **env)
    assert listed.returncode == 0, listed.stderr
    reasons = sorted(d["reason"] for d in orjson.loads(listed.stdout))
    assert reasons == ["body is not valid JSON", "body is not valid JSON",
                       "status-update without call.id"]
    assert await queue_depth(AMQP_URL, topology, dead=True) == 3  # listing removes nothing
    replayed = calltrail("dlq", "replay", database_url=database_url, **env)
    assert orjson.loads(replayed.stdout) == {"replayed": 3}
    assert await queue_depth(AMQP_URL, topology, dead=True) == 0
    assert await queue_depth(AMQP_URL, topology) == 3  # back with the processor


async def _equals(depth, expected: int) -> bool:
    return await depth == expected


async def test_a_call_id_of_another_organization_is_refused(
        database_url: str, topology: Topology, org) -> None:
    connection = await db.connect(database_url)
    other = await create_organization(connection, "Other")
    await connection.close()
    async with running_processor(database_url, AMQP_URL, topology):
        await publish(AMQP_URL, topology, [sample("inbound-1-status-ringing")], org.org_id)
        await eventually(lambda: fetchval(database_url, "SELECT count(*) = 1 FROM calls"))
        await publish(AMQP_URL, topology, [sample("inbound-7-end-of-call-report")],
                      other.org_id)
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology, dead=True), 1))
    listed = calltrail("dlq", "list", database_url=database_url, AMQP_PREFIX=topology.prefix)
    assert [d["reason"] for d in orjson.loads(listed.stdout)] == [FOREIGN_CALL]
    assert await fetchval(database_url, "SELECT org_id FROM calls") == org.org_id
    assert await fetchval(database_url, "SELECT status FROM calls") == "ringing"


async def test_each_organization_resolution_path_on_the_shared_endpoint(
        database_url: str, topology: Topology, org) -> None:
    connection = await db.connect(database_url)
    by_phone_id, by_number, by_account = [
        (await create_organization(connection, n)).org_id for n in ("pid", "num", "acct")]
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, vapi_phone_number_id) VALUES ($1, $2, 'pn-x')",
        uuid.uuid4(), by_phone_id)
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, number) VALUES ($1, $2, '+15550001111')",
        uuid.uuid4(), by_number)
    await connection.execute(
        "INSERT INTO vapi_accounts (org_id, vapi_org_id) VALUES ($1, 'vapi-org-9')", by_account)
    await connection.close()

    def event(call_id: str, *, metadata=None, phone_id=None, number=None, vapi_org="none"):
        body = with_call_id("inbound-1-status-ringing", call_id)
        message = body["message"]
        message["call"].pop("phoneNumberId", None)
        message["call"]["orgId"] = vapi_org
        message["phoneNumber"] = {"number": number} if number else {}
        if metadata is not None:
            message["call"]["assistantOverrides"] = {"metadata": metadata}
        if phone_id is not None:
            message["call"]["phoneNumberId"] = phone_id
        return body

    expected = {
        "c-meta": (event("c-meta", metadata={"orgId": str(org.org_id)}, phone_id="pn-x"),
                   org.org_id),
        "c-meta-organizationId": (event("c-meta-organizationId",
                                        metadata={"organizationId": str(org.org_id)}),
                                  org.org_id),
        # An id that names no organization falls through to the next rule.
        "c-meta-unknown": (event("c-meta-unknown", metadata={"orgId": str(uuid.uuid4())},
                                 phone_id="pn-x"), by_phone_id),
        "c-meta-not-a-uuid": (event("c-meta-not-a-uuid", metadata={"orgId": "acme"},
                                    number="+1 555 000 1111"), by_number),
        "c-phone-id": (event("c-phone-id", phone_id="pn-x", number="+15550001111"),
                       by_phone_id),
        "c-number": (event("c-number", number="+15550001111"), by_number),
        # call.orgId of a connected account decides (issue 17).
        "c-account": (event("c-account", vapi_org="vapi-org-9"), by_account),
    }
    # A number of another organization disagrees with the account's: kept aside.
    disagrees = event("c-disagrees", number="+15550001111", vapi_org="vapi-org-9")
    async with running_processor(database_url, AMQP_URL, topology):
        await publish(AMQP_URL, topology, [body for body, _ in expected.values()]
                      + [event("c-nobody", number="+15559999999"), disagrees])
        await eventually(lambda: fetchval(database_url, "SELECT count(*) = 9 FROM events"))
    connection = await db.connect(database_url)
    try:
        rows = {r["id"]: r["org_id"] for r in await connection.fetch(
            "SELECT id, org_id FROM calls")}
        assert rows == {call_id: org_id for call_id, (_, org_id) in expected.items()}
        # Never given to some default organization: kept aside, listed.
        assert {r["reason"] for r in await connection.fetch(
            "SELECT reason FROM unassigned_events")} == {
            "no organization matches",
            "disagrees: the dialled number is registered to another organization than "
            "call.orgId's account"}
    finally:
        await connection.close()


async def test_an_unmatched_event_is_kept_and_processed_once_its_number_is_added(
        database_url: str, topology: Topology, org) -> None:
    env = {"AMQP_PREFIX": topology.prefix, "AMQP_URL": AMQP_URL}
    lifecycle = [sample(n) for n in INBOUND]  # dialled number +14155559876, unknown yet
    async with running_processor(database_url, AMQP_URL, topology):
        await publish(AMQP_URL, topology, lifecycle)
        await eventually(lambda: fetchval(
            database_url, "SELECT count(*) = 7 FROM unassigned_events"))
        listed = orjson.loads(calltrail("unassigned", "list", database_url=database_url,
                                        **env).stdout)
        assert {e["dialledNumber"] for e in listed} == {"+14155559876"}
        assert {e["reason"] for e in listed} == {"no organization matches"}
        assert await fetchval(database_url, "SELECT count(*) FROM calls") == 0
        added = calltrail("phone-number", "add", "--org", str(org.org_id), "--number",
                          "+1 415 555 9876", database_url=database_url, **env)
        assert added.returncode == 0, added.stderr
        assert orjson.loads(added.stdout)["unassignedEventsRequeued"] == 7
        await eventually(lambda: fetchval(
            database_url, "SELECT status = 'ended' FROM calls WHERE org_id = $1", org.org_id))
        await eventually(lambda: fetchval(
            database_url, "SELECT count(*) = 0 FROM unassigned_events"))
    assert await fetchval(database_url, "SELECT count(*) FROM events") == 7  # no copies
    assert await fetchval(database_url,
                          "SELECT count(*) FROM events WHERE org_id = $1", org.org_id) == 7


async def test_events_replay_rebuilds_the_same_state(database_url: str, topology: Topology,
                                                    org) -> None:
    async with running_processor(database_url, AMQP_URL, topology):
        await publish(AMQP_URL, topology, [sample(n) for n in INBOUND], org.org_id)
        await eventually(lambda: fetchval(database_url, "SELECT count(*) = 7 FROM events"))
        await eventually(lambda: fetchval(database_url, "SELECT report_received FROM calls"))
        connection = await db.connect(database_url)
        before = await snapshot(connection)
        await connection.execute("TRUNCATE calls, leads, daily_stats_shards,"
                                 " daily_call_outcome_shards, daily_assistant_shards,"
                                 " daily_success_signal_shards")
        await connection.close()
        replayed = calltrail("events", "replay", "--org", str(org.org_id),
                             database_url=database_url, AMQP_PREFIX=topology.prefix)
        assert orjson.loads(replayed.stdout)["replayed"] == 7
        await eventually(lambda: fetchval(database_url, "SELECT report_received FROM calls"))
        await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)))
    connection = await db.connect(database_url)
    try:
        assert await snapshot(connection) == before
    finally:
        await connection.close()


async def test_postgres_down_mid_stream_pauses_and_loses_nothing(
        database_url: str, topology: Topology, org) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    proxied = database_url.replace(":5432/", f":{proxy.port}/")
    calls = [str(uuid.uuid4()) for _ in range(30)]
    try:
        async with running_processor(proxied, AMQP_URL, topology):
            await publish(AMQP_URL, topology,
                          [with_call_id("inbound-2-status-in-progress", c) for c in calls[:10]],
                          org.org_id)
            await eventually(lambda: fetchval(database_url, "SELECT count(*) = 10 FROM calls"))
            await proxy.cut()
            await publish(AMQP_URL, topology,
                          [with_call_id("inbound-7-end-of-call-report", c) for c in calls],
                          org.org_id)
            await asyncio.sleep(2)  # the processor is paused, retrying with back-off
            assert await fetchval(database_url, "SELECT count(*) FROM calls") == 10
            await proxy.restore()
            await eventually(lambda: fetchval(
                database_url, "SELECT count(*) = 30 FROM calls WHERE report_received"), 60)
            await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)))
    finally:
        await proxy.close()
    assert await queue_depth(AMQP_URL, topology, dead=True) == 0
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
    finally:
        await connection.close()


def _processor_process(database_url: str, topology: Topology, log: Path,
                       metrics_port: int = 0) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "AMQP_URL": AMQP_URL,
           "AMQP_PREFIX": topology.prefix, "PROCESSOR_BATCH_SIZE": "20",
           "LOG_LEVEL": "info", "PROCESSOR_METRICS_PORT": str(metrics_port)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "call_processor"], env=env,
                                stdout=out, stderr=out)


async def test_kill_9_mid_stream_loses_nothing_and_counts_nothing_twice(
        database_url: str, topology: Topology, org, tmp_path: Path) -> None:
    calls = [str(uuid.uuid4()) for _ in range(150)]
    bodies = [with_call_id(n, c) for c in calls for n in INBOUND]
    await publish(AMQP_URL, topology, bodies, org.org_id)
    first = _processor_process(database_url, topology, tmp_path / "p1.log")
    try:
        await eventually(lambda: fetchval(database_url, "SELECT count(*) > 100 FROM events"),
                         60, 0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        processed_before_kill = await fetchval(database_url, "SELECT count(*) FROM events")
        assert processed_before_kill < len(bodies), "killed too late to prove anything"
        port = free_port()
        second = _processor_process(database_url, topology, tmp_path / "p2.log", port)
        try:
            await eventually(lambda: fetchval(
                database_url, "SELECT count(*) = 150 FROM calls WHERE report_received"), 90)
            await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)), 60)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
            assert "calltrail_processor_broker_connected 1.0" in metrics
            applied = next(float(line.split()[-1]) for line in metrics.splitlines()
                           if line.startswith(
                               'calltrail_processor_events_total{outcome="applied"}'))
            # The second process applied what the first had not committed (and maybe a
            # redelivered batch or two again): never less than what was left.
            assert applied >= len(bodies) - processed_before_kill
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()
    logs = (tmp_path / "p1.log").read_text() + (tmp_path / "p2.log").read_text()
    assert "batch_applied" in logs  # logging did happen...
    for personal in ("+14155550123", "Ana Ruiz", "dana@example.com", "schedule estimate"):
        assert personal not in logs  # ...with ids and counts, never callers' data
    connection = await db.connect(database_url)
    try:
        await assert_invariants(connection)
        assert await connection.fetchval("SELECT sum(calls) FROM daily_stats") == 150
        assert await connection.fetchval("SELECT call_count FROM leads") == 150
        assert await connection.fetchval("SELECT count(*) FROM events") == len(bodies)
    finally:
        await connection.close()


async def test_two_processors_on_one_queue_reach_the_same_state_as_one(
        database_url: str, template_database: str, topology: Topology, org) -> None:
    rng_calls = [str(uuid.uuid4()) for _ in range(40)]
    bodies = []
    for call_id in rng_calls:
        for name in INBOUND:
            body = with_call_id(name, call_id)
            bodies += [body] * (1 + hash(call_id + name) % 2)  # some twice
    # Reference: one processor, in order, in a database of its own.
    reference_url = database_url.rsplit("/", 1)[0] + f"/ref_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(database_url.rsplit("/", 1)[0] + "/postgres")
    await admin.execute(f'CREATE DATABASE "{reference_url.rsplit("/", 1)[1]}" '
                        f'TEMPLATE "{template_database}"')
    try:
        connection = await db.connect(reference_url)
        await connection.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Acme')",
                                 org.org_id)
        await connection.close()
        reference_topology = Topology(topology.prefix + "-ref")
        async with running_processor(reference_url, AMQP_URL, reference_topology):
            await publish(AMQP_URL, reference_topology, bodies, org.org_id)
            await eventually(lambda: fetchval(
                reference_url, "SELECT count(*) = 40 FROM calls WHERE report_received"), 60)
            await eventually(lambda: _is_zero(queue_depth(AMQP_URL, reference_topology)))
        connection = await db.connect(reference_url)
        expected = await snapshot(connection)
        await connection.close()
        from tests.conftest import _delete_topology

        await _delete_topology(reference_topology)

        shuffled = list(reversed(bodies))
        async with running_processor(database_url, AMQP_URL, topology, batch_size=7), \
                running_processor(database_url, AMQP_URL, topology, batch_size=13):
            await publish(AMQP_URL, topology, shuffled, org.org_id)
            await eventually(lambda: fetchval(
                database_url, "SELECT count(*) = 40 FROM calls WHERE report_received"), 60)
            await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)))
        connection = await db.connect(database_url)
        try:
            await assert_invariants(connection)
            assert await snapshot(connection) == expected
        finally:
            await connection.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{reference_url.rsplit("/", 1)[1]}" '
                            "WITH (FORCE)")
        await admin.close()
