"""Structured outputs and scorecards (decision 41): read from a report or a call snapshot,
merged by time whoever says them (Vapi extracts them after the call, often after the
report), never erased by an event without them; counted per day as success signals; and
the lead's name and email filled from the outputs that carry them."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import uuid
from decimal import Decimal

import orjson

from call_processor.calls import REPORT, SNAPSHOT, CallState, merge
from call_processor.deliveries import Delivery
from call_processor.events import parse_event
from call_processor.figures import DailyFigures
from call_processor.handlers import process_batch
from calltrail_common.snapshots import snapshot_bundles, snapshot_message
from calltrail_testkit.state import assert_invariants
from tests.support.samples import sample, sample_bytes

CALL_ID = "db5b5fab-8f4d-4e27-9da1-494c73cf256d"
ORG = uuid.UUID("0b9c6f4e-3d2a-4f7b-8e1c-5a6d7e8f9a0b")
RECEIVED = dt.datetime(2026, 11, 3, 16, tzinfo=dt.UTC)
BOOKED, DETAILS, CSAT = ("5b8f9c1e-2d3a-4e6f-9a0b-1c2d3e4f5a61",
                         "7c9d0e2f-3b4a-4f5e-8a1b-2c3d4e5f6a72",
                         "9e1f2a3b-4c5d-4e6f-9b2c-3d4e5f6a7b83")
QA = "c5bd0d4e-0c7f-4b0a-82e9-5d0baf6e4a01"
REPORT_BODY = sample_bytes("inbound-7-end-of-call-report")  # 15:05:50.5, no outputs
AFTER_REPORT = "2026-11-03T15:06:30.000Z"
BEFORE_REPORT = "2026-11-03T15:05:40.000Z"

_tags = itertools.count(1)


def api_call(updated_at: str = AFTER_REPORT, **artifact) -> dict:
    """The sample call as `GET /call/{id}` answers it, with these artifact keys replaced
    (None: removed)."""
    call = copy.deepcopy(sample("api-get-call-item")["apiCall"])
    call["updatedAt"] = updated_at
    for key, value in artifact.items():
        if value is None:
            call["artifact"].pop(key, None)
        else:
            call["artifact"][key] = value
    return call


def snapshot_body(call: dict) -> bytes:
    return snapshot_message(ORG, call, received_at=RECEIVED).body


def report_body(**artifact) -> bytes:
    body = sample("inbound-7-end-of-call-report")
    body["message"]["artifact"].update(artifact)
    return orjson.dumps(body)


def fold(bodies) -> CallState:
    state = CallState(call_id=CALL_ID)
    for body in bodies:
        state = merge(state, parse_event(body).observation)
    return state


# -- parsing -------------------------------------------------------------------------------

def test_a_snapshot_carries_the_outputs_and_scorecards_as_vapi_sent_them() -> None:
    values = parse_event(snapshot_body(api_call())).observation.values
    artifact = sample("api-get-call-item")["apiCall"]["artifact"]
    assert values["structured_outputs"] == (artifact["structuredOutputs"], SNAPSHOT)
    assert values["scorecards"] == (artifact["scorecards"], SNAPSHOT)


def test_a_report_says_them_at_snapshot_authority_and_its_own_fields_at_report() -> None:
    values = parse_event(sample_bytes("outbound-5-end-of-call-report")).observation.values
    assert values["structured_outputs"][0][BOOKED] == {"name": "Appointment booked",
                                                       "result": False}
    assert values["structured_outputs"][1] == values["scorecards"][1] == SNAPSHOT
    assert values["transcript"][1] == values["success_evaluation"][1] == REPORT


def test_what_is_not_an_object_of_outputs_is_not_read() -> None:
    for junk in ([1, 2], "text", {}, None, 7):
        values = parse_event(report_body(structuredOutputs=junk, scorecards=junk)
                             ).observation.values
        assert "structured_outputs" not in values and "scorecards" not in values
    assert "structured_outputs" not in parse_event(REPORT_BODY).observation.values


def test_nul_in_an_output_is_removed_before_it_is_stored() -> None:
    values = parse_event(report_body(structuredOutputs={
        "so-1": {"name": "Na\x00me", "result": "A\x00na"}})).observation.values
    assert values["structured_outputs"][0] == {"so-1": {"name": "Name", "result": "Ana"}}


# -- merging -------------------------------------------------------------------------------

def test_outputs_a_later_snapshot_brings_join_a_report_without_them_in_any_order() -> None:
    later = snapshot_body(api_call())
    for order in itertools.permutations([REPORT_BODY, later]):
        state = fold(order)
        assert state.get("structured_outputs")[BOOKED]["result"] is True
        assert state.get("scorecards")[QA]["scoreNormalized"] == 100
        assert state.get("transcript") == fold([REPORT_BODY]).get("transcript")


def test_the_newest_view_of_the_outputs_wins_wherever_it_came_from() -> None:
    partial = {BOOKED: {"name": "Appointment booked", "result": False}}
    report = report_body(structuredOutputs=partial)
    full = sample("api-get-call-item")["apiCall"]["artifact"]["structuredOutputs"]
    # A later poll, after the extraction finished (or ran again), beats the report's...
    for order in itertools.permutations([report, snapshot_body(api_call())]):
        assert fold(order).get("structured_outputs") == full
    # ...and the report beats an older poll, in any order.
    for order in itertools.permutations([report, snapshot_body(api_call(BEFORE_REPORT))]):
        assert fold(order).get("structured_outputs") == partial


def test_an_event_without_outputs_never_erases_them() -> None:
    without = snapshot_body(api_call("2026-11-03T15:09:00.000Z", structuredOutputs=None,
                                     scorecards=None))
    for order in itertools.permutations([snapshot_body(api_call()), without, REPORT_BODY]):
        state = fold(order)
        assert state.get("structured_outputs") is not None and state.get("scorecards")


# -- daily figures -------------------------------------------------------------------------

def test_each_boolean_output_and_scorecard_is_counted_with_the_success_evaluation() -> None:
    before = fold([REPORT_BODY])
    after = fold([REPORT_BODY, snapshot_body(api_call())])
    figures = DailyFigures()
    figures.add_change(ORG, before, after)
    day = dt.date(2026, 11, 3)
    assert sorted(figures.signal_rows()) == [
        ((ORG, day, "output", BOOKED, Decimal(1), "true"), 1),
        ((ORG, day, "scorecard", QA, Decimal(100), "true"), 1)]
    moved = DailyFigures()
    regraded = fold([REPORT_BODY, snapshot_body(api_call(
        "2026-11-03T15:09:00.000Z", scorecards={QA: {"name": "Support QA", "score": 70,
                                                     "scoreNormalized": 70}}))])
    moved.add_change(ORG, after, regraded)
    assert sorted(moved.signal_rows()) == [
        ((ORG, day, "scorecard", QA, Decimal(70), "true"), 1),
        ((ORG, day, "scorecard", QA, Decimal(100), "true"), -1)]


# -- through the handler, on Postgres ------------------------------------------------------

def _webhook(org: uuid.UUID, body: bytes) -> Delivery:
    return Delivery.received(next(_tags), uuid.uuid4().hex,
                             {"x-org-id": str(org), "x-endpoint-id": "ep_test",
                              "x-message-type": "end-of-call-report",
                              "x-received-at": 1793718351000}, body)


async def _apply(connection, deliveries) -> None:
    outcome = await process_batch(connection, deliveries)
    assert not outcome.dead and len(outcome.applied) == len(deliveries)
    await assert_invariants(connection)


async def test_a_report_without_outputs_then_a_snapshot_with_them_fills_call_and_lead(
        connection, org_id) -> None:
    """The report comes first, without outputs and without the caller's name and email;
    metrics-sync's next poll finds the call with its outputs and sends it in a bundle."""
    body = sample("inbound-7-end-of-call-report")
    message = body["message"]
    message["call"]["customer"].pop("name")
    message["analysis"].pop("structuredData")
    await _apply(connection, [_webhook(org_id, orjson.dumps(body))])
    assert await connection.fetchval("SELECT structured_outputs FROM calls") is None
    lead = await connection.fetchrow("SELECT name, email FROM leads")
    assert (lead["name"], lead["email"]) == (None, None)

    call = api_call()
    call["customer"].pop("name")
    call["analysis"].pop("structuredData")
    call["artifact"]["structuredOutputs"][DETAILS]["result"] = {
        "name": "Ana From Outputs", "email": "ana.outputs@example.com"}
    for envelope, bundle in snapshot_bundles(org_id, [call], received_at=RECEIVED):
        await _apply(connection, [Delivery.received(next(_tags), envelope.message_id,
                                                    envelope.headers(), bundle)])

    row = await connection.fetchrow(
        "SELECT structured_outputs, scorecards, output_name, output_email, transcript,"
        " report_received FROM calls WHERE id = $1", CALL_ID)
    assert row["structured_outputs"] == call["artifact"]["structuredOutputs"]
    assert row["scorecards"] == call["artifact"]["scorecards"]
    assert (row["output_name"], row["output_email"]) == ("Ana From Outputs",
                                                         "ana.outputs@example.com")
    assert row["report_received"] and row["transcript"].startswith("AI: schedule")
    lead = await connection.fetchrow("SELECT name, email FROM leads")
    assert (lead["name"], lead["email"]) == ("Ana From Outputs", "ana.outputs@example.com")
    signals = await connection.fetch(
        "SELECT kind, source_id, value, success_evaluation, calls FROM daily_success_signals"
        " ORDER BY kind")
    assert [tuple(r) for r in signals] == [("output", BOOKED, 1, "true", 1),
                                           ("scorecard", QA, 100, "true", 1)]

    # A report redelivered or an older poll without outputs erases nothing.
    older = api_call(BEFORE_REPORT, structuredOutputs=None, scorecards=None)
    older["customer"].pop("name")
    older["analysis"].pop("structuredData")
    await _apply(connection, [_webhook(org_id, orjson.dumps(body))])
    await _apply(connection, [Delivery.received(
        next(_tags), uuid.uuid4().hex, {"x-org-id": str(org_id),
                                        "x-message-type": "call-snapshot"},
        snapshot_message(org_id, older, received_at=RECEIVED).body)])
    assert await connection.fetchval("SELECT output_name FROM calls") == "Ana From Outputs"
    assert await connection.fetchval("SELECT name FROM leads") == "Ana From Outputs"


async def test_the_customer_object_still_names_the_lead_before_the_outputs(connection,
                                                                           org_id) -> None:
    call = api_call()
    call["artifact"]["structuredOutputs"][DETAILS]["result"] = {
        "name": "Other Name", "email": "other@example.com"}
    call["analysis"].pop("structuredData")
    for envelope, bundle in snapshot_bundles(org_id, [call], received_at=RECEIVED):
        await _apply(connection, [Delivery.received(next(_tags), envelope.message_id,
                                                    envelope.headers(), bundle)])
    lead = await connection.fetchrow("SELECT name, email FROM leads")
    # The customer object has the name; the outputs fill the email it lacks.
    assert (lead["name"], lead["email"]) == ("Ana Ruiz", "other@example.com")
