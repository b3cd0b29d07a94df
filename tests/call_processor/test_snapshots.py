"""Call snapshots (contract section 6): a call as Vapi's API lists it goes through the
webhook rules. It is read like a report, at SNAPSHOT authority as of its `updatedAt`; alone it
makes the call, its lead and its statistics; with the call's webhooks it converges in any
order, duplicated or not; and a call whose webhooks were all lost ends as if they had come.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import uuid
from collections.abc import Sequence
from decimal import Decimal

import aio_pika
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_processor.calls import REPORT, SNAPSHOT, CallState, merge
from call_processor.deliveries import Delivery
from call_processor.events import PoisonMessage, parse_event
from call_processor.handlers import process_batch
from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.snapshots import (
    CALL_SNAPSHOT,
    SNAPSHOT_ROUTING_KEY,
    snapshot_bundles,
    snapshot_message,
)
from calltrail_common.topology import CALL_PROCESSOR, Topology, declare_topology
from calltrail_testkit.lifecycles import EXTRACTED, lifecycle
from calltrail_testkit.state import assert_invariants, snapshot
from tests.conftest import AMQP_URL
from tests.support.processor import eventually, queue_depth, running_processor
from tests.support.samples import sample, sample_bytes

CALL_ID = "db5b5fab-8f4d-4e27-9da1-494c73cf256d"
ORG = uuid.UUID("0b9c6f4e-3d2a-4f7b-8e1c-5a6d7e8f9a0b")
RECEIVED = dt.datetime(2026, 11, 3, 16, tzinfo=dt.UTC)  # when the API answered
UPDATED_MS = 1793718248000  # the sample's updatedAt
RESET = ("TRUNCATE calls, leads, daily_stats_shards, daily_call_outcome_shards,"
         " daily_assistant_shards, daily_success_signal_shards, events,"
         " unassigned_events")
# What only a report webhook says, or only the latest event: not compared across sources.
NOT_IN_A_SNAPSHOT = ("report_received", "last_event_at")
# The final values a call object carries, where a report carries them too (events.py).
FINAL_KEYS = ("endedReason", "startedAt", "endedAt", "cost", "costs", "costBreakdown",
              "artifact", "analysis", "transcript", "summary", "recordingUrl",
              "stereoRecordingUrl")

_tags = itertools.count(1)


def api_call(**changes) -> dict:
    """The sample call as `GET /call` listed it once it was over."""
    call = copy.deepcopy(sample("api-get-call-item")["apiCall"])
    call.update(changes)
    return call


def in_progress_call(**changes) -> dict:
    """The sample call as the API listed it mid-call: nothing final yet."""
    call = api_call(status="in-progress", **changes)
    for final in ("endedAt", "endedReason", "cost", "costs", "costBreakdown", "artifact",
                  "analysis"):
        call.pop(final)
    return call


def legacy_call() -> dict:
    """The sample call with the older top-level fields instead of artifact and analysis."""
    call = api_call()
    artifact, analysis = call.pop("artifact"), call.pop("analysis")
    # What Vapi extracts after the call has no older form: it stays in the artifact.
    call["artifact"] = {k: artifact[k] for k in ("structuredOutputs", "scorecards")}
    call.update(transcript=artifact["transcript"], recordingUrl=artifact["recordingUrl"],
                stereoRecordingUrl=artifact["stereoRecordingUrl"],
                summary=analysis["summary"], structuredData=analysis["structuredData"],
                successEvaluation=analysis["successEvaluation"])
    return call


def body_of(call: dict, org: uuid.UUID = ORG) -> bytes:
    return snapshot_message(org, call, received_at=RECEIVED).body


def observe(body: bytes):
    return parse_event(body).observation


def as_delivery(message: aio_pika.Message) -> Delivery:
    assert message.message_id is not None and message.headers is not None
    return Delivery.received(next(_tags), message.message_id, message.headers, message.body)


def snapshot_delivery(org: uuid.UUID, call: dict) -> Delivery:
    return as_delivery(snapshot_message(org, call, received_at=RECEIVED))


def webhook_delivery(org: uuid.UUID, body: dict) -> Delivery:
    """A webhook as ingest publishes it from the organization's endpoint."""
    return Delivery.received(next(_tags), uuid.uuid4().hex,
                    {"x-org-id": str(org), "x-endpoint-id": "ep_test",
                     "x-message-type": body["message"]["type"],
                     "x-received-at": 1793718246000}, orjson.dumps(body))


@functools.cache
def sdk_call_model() -> type:
    from vapi.types import Call  # slow to import (~25 s): only when a test asks for it

    return Call


# -- parsing ------------------------------------------------------------------------------

def test_a_snapshot_is_read_like_a_report_at_snapshot_authority_as_of_updated_at() -> None:
    event = parse_event(body_of(api_call()))
    snap = event.observation
    assert event.message_type == CALL_SNAPSHOT and event.call_id == CALL_ID
    assert (snap.status, snap.is_report, snap.event_ms) == ("ended", False, UPDATED_MS)
    assert {authority for _, authority in snap.values.values()} == {SNAPSHOT}
    # Everything the report of this call says, the API's call object says the same way.
    report = observe(sample_bytes("inbound-7-end-of-call-report")).values
    assert set(report) <= set(snap.values)
    assert {name: snap.values[name][0] for name in report} == {
        name: value for name, (value, _) in report.items()}
    assert snap.values["cost_breakdown"][0]["total"] == 0.2134  # the report lacks it
    assert snap.values["recording_url"][0].endswith("-mono.wav")
    assert snap.values["customer_number"][0] == "+14155550123"


@pytest.mark.parametrize("make", [api_call, in_progress_call, legacy_call],
                         ids=["ended", "in-progress", "legacy"])
def test_the_sdk_reads_each_snapshot_as_a_call_and_its_dump_reads_the_same(make) -> None:
    call = make()
    model = sdk_call_model().model_validate(call)  # the oracle: shaped like Vapi's Call
    assert str(model.id) == call["id"]
    dumped = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert observe(body_of(dumped)) == observe(body_of(call))


def test_older_top_level_call_fields_are_read_when_artifact_and_analysis_lack_them() -> None:
    legacy = observe(body_of(legacy_call())).values
    current = observe(body_of(api_call())).values
    assert legacy == current
    both = api_call(transcript="an older transcript", summary="an older summary")
    values = observe(body_of(both)).values
    assert values["transcript"] == current["transcript"]  # artifact first
    assert values["summary"] == current["summary"]  # analysis first


def test_a_snapshot_without_updated_at_is_as_of_when_the_api_answered() -> None:
    call = api_call()
    del call["updatedAt"]
    assert observe(body_of(call)).event_ms == int(RECEIVED.timestamp() * 1000)


def test_an_in_progress_snapshot_says_nothing_final() -> None:
    snap = observe(body_of(in_progress_call()))
    assert snap.status == "in-progress"
    assert not {"ended_at", "ended_reason", "cost", "transcript", "recording_url"} & set(
        snap.values)
    assert snap.values["started_at"][0] == dt.datetime(2026, 11, 3, 15, 4, 7, tzinfo=dt.UTC)


def test_on_the_shared_path_a_snapshot_routes_by_what_its_call_object_carries() -> None:
    call = api_call(assistantOverrides={"metadata": {"orgId": "from-overrides"}},
                    assistant={"metadata": {"organizationId": "from-assistant", "k": "v"}},
                    phoneNumber={"number": "+1 (415) 555-9876"})
    event = parse_event(orjson.dumps({"message": {"type": CALL_SNAPSHOT, "call": call}}))
    routing = event.routing
    assert routing.metadata_org_ids == ("from-overrides", "from-assistant")
    assert routing.phone_number_id == call["phoneNumberId"]
    assert routing.dialled_number == "+14155559876"
    assert routing.vapi_org_id == call["orgId"]
    assert event.observation.values["metadata"][0] == {
        "orgId": "from-overrides", "organizationId": "from-assistant", "k": "v"}


def test_a_snapshot_without_a_call_id_is_poison() -> None:
    with pytest.raises(PoisonMessage, match=r"call-snapshot without call\.id"):
        parse_event(orjson.dumps({"message": {"type": CALL_SNAPSHOT, "call": {"x": 1}}}))


# -- the merge rules, pure ----------------------------------------------------------------

def fold(bodies: Sequence[bytes]) -> CallState:
    state = CallState(call_id=CALL_ID)
    for body in bodies:
        state = merge(state, observe(body))
    return state


REPORT_BODY = sample_bytes("inbound-7-end-of-call-report")  # at 15:05:50.5
AFTER_REPORT = "2026-11-03T15:06:00.000Z"
SCENARIOS = {
    "in-progress snapshot, report": [body_of(in_progress_call()), REPORT_BODY],
    "report, older snapshot": [REPORT_BODY, body_of(api_call())],
    "report, later snapshot with its values": [REPORT_BODY,
                                               body_of(api_call(updatedAt=AFTER_REPORT))],
    "two snapshots": [body_of(in_progress_call()), body_of(api_call(updatedAt=AFTER_REPORT))],
}


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_order_of_a_scenario_is_one_state(name: str) -> None:
    state, *others = [fold(order) for order in itertools.permutations(SCENARIOS[name])]
    assert all(other == state for other in others)
    assert state.status == "ended"
    assert state.report_received == (REPORT_BODY in SCENARIOS[name])
    report_alone = fold([REPORT_BODY])
    if state.report_received:  # the report's own fields keep the report's word
        for field, (_, authority) in observe(REPORT_BODY).values.items():
            if authority == REPORT:
                assert state.versions[field][0] == REPORT, field
                assert state.values[field] == report_alone.values[field], field
    else:
        assert state.get("transcript") == report_alone.get("transcript")
        assert state.get("cost") == Decimal("0.2134")


def test_between_a_snapshot_and_a_status_update_the_later_wins_each_field() -> None:
    update = sample("inbound-2-status-in-progress")  # at 15:04:07, caller "Ana Ruiz"
    renamed = {"number": "+14155550123", "name": "Ana R."}
    earlier = body_of(in_progress_call(updatedAt="2026-11-03T15:04:06.000Z", customer=renamed))
    later = body_of(in_progress_call(updatedAt="2026-11-03T15:04:09.000Z", customer=renamed))
    for snapshot_body, name in ((earlier, "Ana Ruiz"), (later, "Ana R.")):
        for order in itertools.permutations([orjson.dumps(update), snapshot_body]):
            assert fold(order).get("customer_name") == name


def test_an_unknown_status_in_a_snapshot_never_moves_a_call_back() -> None:
    state = fold([sample_bytes("inbound-6-status-ended"),
                  body_of(api_call(status="not-found", updatedAt=AFTER_REPORT)),
                  body_of(in_progress_call(updatedAt=AFTER_REPORT))])
    assert state.status == "ended"


# -- through the handler, on Postgres ------------------------------------------------------

async def apply(connection, deliveries: Sequence[Delivery]) -> None:
    outcome = await process_batch(connection, deliveries)
    assert not outcome.dead and len(outcome.applied) == len(deliveries)
    await assert_invariants(connection)


async def test_a_snapshot_alone_makes_the_call_its_lead_and_its_statistics(connection,
                                                                           org_id) -> None:
    await apply(connection, [snapshot_delivery(org_id, api_call())])
    row = await connection.fetchrow(
        "SELECT status, ended_reason, duration_seconds, cost, transcript, recording_url,"
        " stereo_recording_url, summary, success_evaluation, report_received, lead_id"
        " FROM calls WHERE id = $1", CALL_ID)
    assert row["status"] == "ended" and row["ended_reason"] == "customer-ended-call"
    assert (row["duration_seconds"], row["cost"]) == (Decimal("95.5"), Decimal("0.2134"))
    assert row["transcript"].startswith("AI: schedule estimate")
    assert row["recording_url"].endswith("-mono.wav")
    assert row["stereo_recording_url"].endswith("-stereo.wav")
    assert row["summary"].startswith("Caller asked") and row["success_evaluation"] == "true"
    assert row["report_received"] is False  # no report webhook came
    lead = await connection.fetchrow("SELECT id, phone_number, name, email, call_count"
                                     " FROM leads")
    assert dict(lead) == {"id": row["lead_id"], "phone_number": "+14155550123",
                          "name": "Ana Ruiz", "email": "dana@example.com", "call_count": 1}
    stats = await connection.fetchrow("SELECT calls, inbound, new_leads, duration_seconds,"
                                      " cost FROM daily_stats")
    assert dict(stats) == {"calls": 1, "inbound": 1, "new_leads": 1,
                           "duration_seconds": Decimal("95.5"), "cost": Decimal("0.2134")}
    archived = await connection.fetchrow("SELECT org_id, message_type, endpoint_id, call_id"
                                         " FROM events")
    assert dict(archived) == {"org_id": org_id, "message_type": CALL_SNAPSHOT,
                              "endpoint_id": "sync", "call_id": CALL_ID}


@pytest.mark.parametrize("name", SCENARIOS)
async def test_every_order_of_a_scenario_is_one_row(connection, org_id, name: str) -> None:
    states = []
    for order in itertools.permutations(SCENARIOS[name]):
        await connection.execute(RESET)
        for body in order:
            kind = orjson.loads(body)["message"]["type"]
            await apply(connection, [Delivery.received(next(_tags), uuid.uuid4().hex, {
                "x-org-id": str(org_id), "x-message-type": kind}, body)])
        states.append(await snapshot(connection))
    assert all(state == states[0] for state in states)


async def test_a_bundle_is_its_calls_snapshots_and_is_archived_once(
        connection, database_url, org_id) -> None:
    """metrics-sync sends a poll's calls in bundles: the state is the one their snapshots
    one by one give, the bundle is one row of the archive, and a call in it without a usable
    id is left out while the others are applied."""
    calls = [api_call(id=str(uuid.uuid4()), customer={"number": f"+1415555{n:04d}"})
             for n in range(6)]
    for envelope, body in snapshot_bundles(org_id, calls, received_at=RECEIVED):
        await apply(connection, [Delivery.received(next(_tags), envelope.message_id,
                                                   envelope.headers(), body)])
    by_bundle = await snapshot(connection)
    bundles = await connection.fetchval(
        "SELECT count(*) FROM events WHERE message_type = 'call-snapshots'")
    assert bundles == len(snapshot_bundles(org_id, calls, received_at=RECEIVED)) >= 2
    await connection.execute(RESET)
    await apply(connection, [snapshot_delivery(org_id, call) for call in calls])
    assert await snapshot(connection) == by_bundle
    await connection.execute(RESET)
    envelope, body = snapshot_bundles(org_id, calls[:2], received_at=RECEIVED)[0]
    document = orjson.loads(body)
    document["message"]["calls"].append({"timestamp": UPDATED_MS, "call": {"id": ""}})
    outcome = await process_batch(connection, [Delivery.received(
        1, envelope.message_id, envelope.headers(), orjson.dumps(document))])
    assert (outcome.applied, outcome.dead) == ([1], {})
    assert await connection.fetchval("SELECT count(*) FROM calls") == \
        len(document["message"]["calls"]) - 1


async def test_a_repolled_snapshot_is_archived_once_and_changes_nothing(connection,
                                                                        org_id) -> None:
    await apply(connection, [snapshot_delivery(org_id, api_call())])
    before = await snapshot(connection)
    await apply(connection, [snapshot_delivery(org_id, api_call()),
                             snapshot_delivery(org_id, api_call())])
    assert await snapshot(connection) == before
    assert await connection.fetchval("SELECT count(*) FROM events") == 1


async def test_an_outbound_snapshot_links_to_a_lead_but_makes_none(connection,
                                                                   org_id) -> None:
    await apply(connection, [snapshot_delivery(org_id, api_call(
        id="out-1", type="outboundPhoneCall"))])
    assert await connection.fetchval("SELECT count(*) FROM leads") == 0
    await apply(connection, [snapshot_delivery(org_id, api_call(id="in-1"))])
    assert await connection.fetchval("SELECT call_count FROM leads") == 2


async def test_the_inbound_webhooks_and_the_api_item_alone_end_alike(connection,
                                                                     org_id) -> None:
    names = ["inbound-1-status-ringing", "inbound-2-status-in-progress",
             "inbound-3-speech-update", "inbound-4-conversation-update",
             "inbound-5-user-interrupted", "inbound-6-status-ended",
             "inbound-7-end-of-call-report"]
    await apply(connection, [webhook_delivery(org_id, sample(n)) for n in names])
    by_webhooks = await snapshot(connection)
    await connection.execute(RESET)
    await apply(connection, [snapshot_delivery(org_id, api_call())])
    by_sync = await snapshot(connection)
    webhooks_row, sync_row = by_webhooks["calls"][0], by_sync["calls"][0]
    carried = {k for k, v in webhooks_row.items() if v is not None} - set(NOT_IN_A_SNAPSHOT)
    assert {k: sync_row[k] for k in carried} == {k: webhooks_row[k] for k in carried}
    assert sync_row["cost_breakdown"] is not None  # and more: the report lacks it
    assert (by_sync["leads"], by_sync["stats"]) == (by_webhooks["leads"], by_webhooks["stats"])


# -- convergence: webhooks and snapshots of the same calls, in any order -------------------

def _iso_ms(ms: int) -> str:
    moment = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stage_snapshot(status_update: dict, delay_ms: int) -> dict:
    """The call as the API listed it `delay_ms` after this status-update."""
    message = status_update["message"]
    call = {**copy.deepcopy(message["call"]), "status": message["status"],
            "updatedAt": _iso_ms(message["timestamp"] + delay_ms)}
    if "endedReason" in message:
        call["endedReason"] = message["endedReason"]
    if message["status"] == "in-progress":  # the costs so far: a later stage replaces them
        call.update(startedAt=call["createdAt"], cost=0.01,
                    costs=[{"type": "vapi", "minutes": 0.1, "cost": 0.01}])
    return call


def final_snapshot(webhooks: Sequence[dict], delay_ms: int) -> dict:
    """The call as the API lists it once over: what its report said, or its last status."""
    report = next((b["message"] for b in webhooks
                   if b["message"]["type"] == "end-of-call-report"), None)
    if report is None:
        last = [b for b in webhooks if b["message"]["type"] == "status-update"][-1]
        return stage_snapshot(last, abs(delay_ms))
    call = {**copy.deepcopy(report["call"]), "status": "ended",
            # Vapi may store the analysed call just before or after it sends the report.
            "updatedAt": _iso_ms(report["timestamp"] + delay_ms)}
    call.update({key: copy.deepcopy(report[key]) for key in FINAL_KEYS if key in report})
    return call


@st.composite
def seen_both_ways(draw, call_id: str) -> tuple[list[tuple[str, dict]], dict]:
    """A call's webhooks in Vapi's order, with snapshots of it at some stages, each after the
    webhook it follows, then the final snapshot: [("webhook" | "snapshot", payload)], and
    the final snapshot."""
    webhooks = draw(lifecycle(call_id))
    # Vapi sends the report once the call is over and analysed, after its last status; the
    # call it then stores is what the report's call says, with the report's final values.
    last_status_ms = max(b["message"]["timestamp"] for b in webhooks
                         if b["message"]["type"] == "status-update")
    for body in webhooks:
        if body["message"]["type"] == "end-of-call-report":
            body["message"]["timestamp"] = max(body["message"]["timestamp"],
                                               last_status_ms + 1_000)
    seen: list[tuple[str, dict]] = []
    for body in webhooks:
        seen.append(("webhook", body))
        if body["message"]["type"] == "status-update" and draw(st.booleans()):
            seen.append(("snapshot", stage_snapshot(body, draw(st.integers(0, 5_000)))))
    final = final_snapshot(webhooks, draw(st.integers(-5_000, 10_000)))
    seen.append(("snapshot", final))
    if draw(st.booleans()):  # what Vapi extracted after the call, on a later poll
        later = copy.deepcopy(final)
        later["updatedAt"] = _iso_ms(int(dt.datetime.fromisoformat(
            final["updatedAt"].replace("Z", "+00:00")).timestamp() * 1000) + 30_000)
        later.setdefault("artifact", {}).update(draw(st.sampled_from(EXTRACTED)))
        seen.append(("snapshot", later))
    return seen, final


@st.composite
def calls_seen_both_ways(draw) -> list[tuple[int, list[tuple[str, dict]], dict]]:
    """(organization index, what was seen, final snapshot) for a few calls."""
    ids = draw(st.lists(st.uuids(), min_size=1, max_size=4, unique=True))
    return [(draw(st.integers(0, 1)), *draw(seen_both_ways(str(call_id)))) for call_id in ids]


def deliveries_for(org: uuid.UUID, seen: Sequence[tuple[str, dict]]) -> list[Delivery]:
    return [webhook_delivery(org, payload) if kind == "webhook"
            else snapshot_delivery(org, payload) for kind, payload in seen]


async def two_organizations(connection) -> list[uuid.UUID]:
    org_ids = [r["id"] for r in await connection.fetch(
        "SELECT id FROM organizations ORDER BY name")]
    if len(org_ids) < 2:
        org_ids = [(await create_organization(connection, name)).org_id
                   for name in ("org-a", "org-b")]
    await connection.execute(RESET)
    return org_ids


_PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])


@_PROPERTY
@given(calls=calls_seen_both_ways(), data=st.data())
async def test_webhooks_and_snapshots_in_any_order_and_duplicates_converge(
        connection, calls, data) -> None:
    org_ids = await two_organizations(connection)
    in_order = [d for org, seen, _ in calls for d in deliveries_for(org_ids[org], seen)]
    for delivery in in_order:
        await apply(connection, [delivery])
    reference = await snapshot(connection)

    await connection.execute(RESET)
    # A duplicate: a redelivery or a re-poll (same message id), or a Vapi retry (a new one).
    messy = []
    for d in in_order:
        for copy_number in range(data.draw(st.integers(1, 3))):
            retry = copy_number and d.envelope.endpoint_id != "sync" \
                and data.draw(st.booleans())
            message_id = uuid.uuid4().hex if retry else d.message_id
            messy.append(Delivery.received(len(messy) + 1, message_id,
                                           d.envelope.headers(), d.body))
    messy = data.draw(st.permutations(messy))
    while messy:
        size = data.draw(st.integers(1, len(messy)))
        batch, messy = messy[:size], messy[size:]
        await apply(connection, batch)  # invariants at every commit
    assert await snapshot(connection) == reference


def _comparable(state: dict) -> dict:
    return {**state, "calls": [{k: v for k, v in row.items() if k not in NOT_IN_A_SNAPSHOT}
                               for row in state["calls"]]}


@_PROPERTY
@given(calls=calls_seen_both_ways())
async def test_a_call_whose_webhooks_were_lost_ends_as_if_they_had_come(connection,
                                                                         calls) -> None:
    org_ids = await two_organizations(connection)
    for org, seen, _ in calls:
        await apply(connection, [webhook_delivery(org_ids[org], body)
                                 for kind, body in seen if kind == "webhook"])
    by_webhooks = await snapshot(connection)

    await connection.execute(RESET)
    await apply(connection, [snapshot_delivery(org_ids[org], final)
                             for org, _, final in calls])
    assert _comparable(await snapshot(connection)) == _comparable(by_webhooks)


# -- through the consumer, on RabbitMQ -----------------------------------------------------

async def test_a_published_snapshot_becomes_a_call_through_the_consumer(
        database_url: str, topology: Topology, org) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        events = await declare_topology(channel, topology)
        async with running_processor(database_url, AMQP_URL, topology):
            for _ in range(2):  # polled twice: one event
                await events.publish(snapshot_message(org.org_id, api_call(),
                                                      received_at=RECEIVED),
                                     SNAPSHOT_ROUTING_KEY, mandatory=True)
            store = await db.connect(database_url)
            try:
                await eventually(lambda: store.fetchval(
                    "SELECT status = 'ended' AND transcript IS NOT NULL FROM calls"))
                await eventually(lambda: _is_zero(queue_depth(AMQP_URL, topology)))
                assert await store.fetchval("SELECT count(*) FROM events") == 1
                assert await store.fetchval("SELECT phone_number FROM leads") == "+14155550123"
                await assert_invariants(store)
            finally:
                await store.close()
        assert await queue_depth(AMQP_URL, topology, dead=True) == 0
    finally:
        await connection.close()


async def _is_zero(depth) -> bool:
    return await depth == 0


async def test_a_processor_queue_declared_before_snapshots_gains_their_binding(
        topology: Topology) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        events = await declare_topology(channel, topology)
        partitions = await channel.get_exchange(topology.partitions_exchange(CALL_PROCESSOR),
                                                ensure=False)
        await partitions.unbind(events, SNAPSHOT_ROUTING_KEY)  # as if declared before snapshots
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await events.publish(snapshot_message(ORG, api_call(), received_at=RECEIVED),
                                 SNAPSHOT_ROUTING_KEY, mandatory=True)
        events = await declare_topology(channel, topology)  # what every process does
        await events.publish(snapshot_message(ORG, api_call(), received_at=RECEIVED),
                             SNAPSHOT_ROUTING_KEY, mandatory=True)
        assert await queue_depth(AMQP_URL, topology) == 1
    finally:
        await connection.close()
