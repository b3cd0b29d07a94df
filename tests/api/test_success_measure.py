"""What counts as a call's success (decision 41): an organization chooses a boolean
structured output or a scorecard with a pass mark, and the overview's success rate counts
each call by it where the call carries it, else by analysis.successEvaluation, for past
days as for new ones. And a call's outputs and scorecards in its JSON shape, by name.

The calls are made by the processor from call snapshots, so the daily figures the overview
reads are the ones it maintains."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import uuid

import pytest

from api.outcomes import success_counts
from call_processor.deliveries import Delivery
from call_processor.handlers import process_batch
from calltrail_common.snapshots import snapshot_message
from calltrail_common.success_measures import SuccessMeasure, measure_of
from calltrail_testkit.state import assert_invariants
from tests.api.conftest import RunningApi, assert_error
from tests.support.samples import sample

BOOKED, DETAILS, CSAT = ("5b8f9c1e-2d3a-4e6f-9a0b-1c2d3e4f5a61",
                         "7c9d0e2f-3b4a-4f5e-8a1b-2c3d4e5f6a72",
                         "9e1f2a3b-4c5d-4e6f-9b2c-3d4e5f6a7b83")
QA = "c5bd0d4e-0c7f-4b0a-82e9-5d0baf6e4a01"
DAY = "2026-11-03"
RANGE = {"startDate": DAY, "endDate": DAY}
_tags = itertools.count(1)


def _call(number: int, *, booked: bool | None, score: int | None,
          evaluation: str | None) -> dict:
    """The sample call with its outputs, scorecard and successEvaluation set (None: none)."""
    call = copy.deepcopy(sample("api-get-call-item")["apiCall"])
    call["id"] = f"call-{number}"
    call["customer"] = {"number": f"+1415555{number:04d}"}
    artifact, analysis = call["artifact"], call["analysis"]
    outputs = artifact["structuredOutputs"]
    if booked is None:
        del outputs[BOOKED]
    else:
        outputs[BOOKED]["result"] = booked
    if score is None:
        del artifact["scorecards"]
    else:
        artifact["scorecards"][QA].update(score=score, scoreNormalized=score)
    if evaluation is None:
        del analysis["successEvaluation"]
    else:
        analysis["successEvaluation"] = evaluation
    return call


CALLS = [
    _call(1, booked=True, score=100, evaluation="false"),
    _call(2, booked=False, score=30, evaluation="true"),
    _call(3, booked=None, score=None, evaluation="true"),
    _call(4, booked=True, score=None, evaluation=None),
    _call(5, booked=None, score=None, evaluation=None),
]


async def _processed(api: RunningApi, org_id: uuid.UUID, calls: list[dict]) -> None:
    received = dt.datetime(2026, 11, 3, 16, tzinfo=dt.UTC)
    deliveries = []
    for call in calls:
        message = snapshot_message(org_id, call, received_at=received)
        deliveries.append(Delivery.received(next(_tags), message.message_id or "",
                                            message.headers or {}, message.body))
    outcome = await process_batch(api.connection, deliveries)
    assert not outcome.dead and len(outcome.applied) == len(calls)
    await assert_invariants(api.connection)


async def _rate(client) -> tuple[float | None, int]:
    body = (await client.get("/api/stats/overview", params=RANGE)).json()
    return body["successRate"], body["evaluatedCalls"]


async def test_the_chosen_source_changes_the_success_rate_of_past_days(api: RunningApi
                                                                      ) -> None:
    tenant, other = await api.tenant("A"), await api.tenant("B")
    await _processed(api, tenant.org_id, CALLS)
    await _processed(api, other.org_id, [_call(9, booked=False, score=0, evaluation="false")])

    # No measure: every call by its successEvaluation (1 false, 2 and 3 true).
    assert await _rate(tenant.client) == (pytest.approx(2 / 3), 3)
    overview = (await tenant.client.get("/api/stats/overview", params=RANGE)).json()
    assert overview["successMeasure"] is None

    # The boolean output: 1, 2 and 4 by it (true, false, true), 3 by its evaluation.
    chosen = await tenant.client.put("/api/success-measure", json={
        "kind": "output", "sourceId": BOOKED})
    assert chosen.status_code == 200, chosen.text
    assert chosen.json()["measure"] == {"kind": "output", "sourceId": BOOKED,
                                        "passMark": None}
    assert await _rate(tenant.client) == (0.75, 4)

    # The scorecard at 25: 1 (100) and 2 (30) pass by it, 3 by its evaluation, 4 has none.
    await tenant.client.put("/api/success-measure", json={
        "kind": "scorecard", "sourceId": QA, "passMark": 25})
    assert await _rate(tenant.client) == (1.0, 3)
    # At the default pass mark (80), 2 fails.
    await tenant.client.put("/api/success-measure", json={"kind": "scorecard",
                                                           "sourceId": QA})
    assert await _rate(tenant.client) == (pytest.approx(2 / 3), 3)
    overview = (await tenant.client.get("/api/stats/overview", params=RANGE)).json()
    assert overview["successMeasure"] == {"kind": "scorecard", "sourceId": QA,
                                          "passMark": 80.0}

    # A source no call carries: every call falls back to its evaluation.
    await tenant.client.put("/api/success-measure", json={"kind": "output",
                                                           "sourceId": "never-seen"})
    assert await _rate(tenant.client) == (pytest.approx(2 / 3), 3)

    cleared = await tenant.client.delete("/api/success-measure")
    assert cleared.status_code == 200 and cleared.json()["measure"] is None
    assert await _rate(tenant.client) == (pytest.approx(2 / 3), 3)
    # Another organization's figures and choice were never part of it.
    assert await _rate(other.client) == (0.0, 1)

    # A call regraded later (a new poll) moves the rate at once.
    await tenant.client.put("/api/success-measure", json={"kind": "output",
                                                           "sourceId": BOOKED})
    regraded = _call(2, booked=True, score=30, evaluation="true")
    regraded["updatedAt"] = "2026-11-03T15:30:00.000Z"
    await _processed(api, tenant.org_id, [regraded])
    assert await _rate(tenant.client) == (1.0, 4)

    actions = await api.connection.fetch(
        "SELECT target FROM audit_log WHERE org_id = $1 AND action = 'success_measure.set'"
        " ORDER BY at, id", tenant.org_id)
    assert [r["target"] for r in actions] == [
        f"output {BOOKED} is true", f"scorecard {QA} scores at least 25.00",
        f"scorecard {QA} scores at least 80.00", "output never-seen is true",
        "analysis.successEvaluation", f"output {BOOKED} is true"]


async def test_the_sources_offered_are_the_boolean_outputs_and_scorecards_seen(
        api: RunningApi) -> None:
    tenant = await api.tenant()
    assert (await tenant.client.get("/api/success-measure")).json() == {
        "measure": None, "sources": []}
    await _processed(api, tenant.org_id, CALLS)
    body = (await tenant.client.get("/api/success-measure")).json()
    # "Customer details" (an object) and "CSAT" (a number) cannot say success.
    assert body["sources"] == [
        {"kind": "output", "sourceId": BOOKED, "name": "Appointment booked"},
        {"kind": "scorecard", "sourceId": QA, "name": "Support QA"}]


@pytest.mark.parametrize(("body", "parameter"), [
    ({"kind": "output", "sourceId": BOOKED, "passMark": 50}, "passMark"),
    ({"kind": "scorecard", "sourceId": QA, "passMark": 101}, "passMark"),
    ({"kind": "scorecard", "sourceId": QA, "passMark": -1}, "passMark"),
    ({"kind": "grade", "sourceId": QA}, "kind"),
    ({"kind": "output", "sourceId": ""}, "sourceId"),
    ({"kind": "output", "sourceId": "   "}, "sourceId"),
    ({"kind": "output", "sourceId": "x" * 256}, "sourceId"),
    ({"kind": "output"}, "sourceId"),
])
async def test_a_bad_choice_is_refused_and_changes_nothing(api: RunningApi, body: dict,
                                                           parameter: str) -> None:
    tenant = await api.tenant()
    response = await tenant.client.put("/api/success-measure", json=body)
    assert_error(response, 400, "invalid_parameter")
    assert parameter in response.json()["message"]
    assert (await tenant.client.get("/api/success-measure")).json()["measure"] is None


async def test_a_call_shows_its_outputs_and_scorecards_by_name(api: RunningApi) -> None:
    tenant = await api.tenant()
    await _processed(api, tenant.org_id, CALLS[:1])
    body = (await tenant.client.get("/api/calls/call-1")).json()
    assert body["structuredOutputs"] == [
        {"id": BOOKED, "name": "Appointment booked", "result": True},
        {"id": CSAT, "name": "CSAT", "result": 9},
        {"id": DETAILS, "name": "Customer details",
         "result": {"name": "Ana Ruiz", "email": "dana@example.com"}}]
    assert body["scorecards"] == [
        {"id": QA, "name": "Support QA", "score": 100.0, "scoreNormalized": 100.0,
         "metricPoints": {BOOKED: 70.0, CSAT: 30.0}}]
    await _processed(api, tenant.org_id, CALLS[2:3])
    bare = (await tenant.client.get("/api/calls/call-3")).json()
    assert bare["scorecards"] == [] and [o["name"] for o in bare["structuredOutputs"]] == [
        "CSAT", "Customer details"]


# -- the rule, pure ------------------------------------------------------------------------

def test_success_counts_take_calls_with_the_source_out_of_the_evaluations() -> None:
    from decimal import Decimal

    outcomes = [("true", 5), ("false", 3), (None, 4), ("8/10", 2)]
    # Of the calls with the output: 2 evaluated true, 1 false, 3 not evaluated.
    signals = [(Decimal(1), "true", 2), (Decimal(0), "false", 1), (Decimal(1), None, 3)]
    assert success_counts(outcomes, signals, None) == (8, 5)
    assert success_counts(outcomes, signals, SuccessMeasure("output", BOOKED)) == (11, 8)
    scores = [(Decimal(90), "false", 2), (Decimal("79.99"), "true", 1)]
    assert success_counts(outcomes, scores, measure_of("scorecard", QA, 80)) == (8, 6)
    assert success_counts([], [], measure_of("scorecard", QA)) == (0, 0)


async def test_an_agencys_roll_up_counts_each_client_by_its_own_measure(api: RunningApi
                                                                       ) -> None:
    from calltrail_common.agencies import create_agency, create_client

    agency = await create_agency(api.connection, "Agency")
    measured = await create_client(api.connection, agency.org_id, "Measured")
    plain = await create_client(api.connection, agency.org_id, "Plain")
    await _processed(api, measured.org_id, CALLS)
    await _processed(api, plain.org_id, [_call(n, booked=True, score=10, evaluation="false")
                                         for n in (11, 12)])
    client = api.client(measured.api_token)
    await client.put("/api/success-measure", json={"kind": "output", "sourceId": BOOKED})
    rollup = (await api.client(agency.api_token).get("/api/clients/overview",
                                                     params=RANGE)).json()
    rates = {c["name"]: (c["successRate"], c["evaluatedCalls"]) for c in rollup["clients"]}
    assert rates == {"Measured": (0.75, 4), "Plain": (0.0, 2)}
    assert rates["Measured"] == await _rate(client)
    assert (rollup["totals"]["successRate"], rollup["totals"]["evaluatedCalls"]) == (0.5, 6)
