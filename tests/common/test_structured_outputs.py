"""Reading Vapi's structured outputs and scorecards: the items by name, what a call says
about success, and the lead's name and email the outputs carry."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calltrail_common.structured_outputs import (
    Contact,
    Signal,
    contact,
    outputs,
    passes,
    scorecards,
    success_signals,
)
from tests.support.samples import sample

SAMPLE = sample("api-get-call-item")["apiCall"]["artifact"]
BOOKED, CUSTOMER, CSAT = ("5b8f9c1e-2d3a-4e6f-9a0b-1c2d3e4f5a61",
                          "7c9d0e2f-3b4a-4f5e-8a1b-2c3d4e5f6a72",
                          "9e1f2a3b-4c5d-4e6f-9b2c-3d4e5f6a7b83")
QA = "c5bd0d4e-0c7f-4b0a-82e9-5d0baf6e4a01"


def test_outputs_are_listed_by_name_with_their_results() -> None:
    listed = outputs(SAMPLE["structuredOutputs"])
    assert [(o.name, o.result) for o in listed] == [
        ("Appointment booked", True), ("CSAT", 9),
        ("Customer details", {"name": "Ana Ruiz", "email": "dana@example.com"})]
    assert [o.id for o in listed] == [BOOKED, CSAT, CUSTOMER]


def test_an_output_without_a_name_is_listed_by_its_id_and_junk_is_left_out() -> None:
    listed = outputs({"b-id": {"result": 1}, "a-id": {"name": " ", "result": None},
                      "c-id": "not an object", "": {"name": "no id"}, "x" * 256: {"name": "long"},
                      "z-id": {"name": "Alpha", "result": "x"}})
    assert [(o.id, o.name) for o in listed] == [("a-id", None), ("z-id", "Alpha"),
                                                ("b-id", None)]
    for junk in (None, [], "text", 3, {"k": [1]}):
        assert outputs(junk) == []


def test_scorecards_are_listed_by_name_with_their_scores() -> None:
    (card,) = scorecards(SAMPLE["scorecards"])
    assert (card.id, card.name, card.score, card.score_normalized) == (QA, "Support QA", 100,
                                                                      100)
    assert card.metric_points == {BOOKED: 70, CSAT: 30}
    odd = scorecards({"s": {"name": "Odd", "score": "high", "scoreNormalized": True,
                            "metricPoints": {"a": "x", "b": 2.5}}})
    assert (odd[0].score, odd[0].score_normalized, dict(odd[0].metric_points)) == (
        None, None, {"b": 2.5})


def test_success_signals_are_boolean_outputs_and_normalized_scores() -> None:
    assert success_signals(SAMPLE["structuredOutputs"], SAMPLE["scorecards"]) == [
        Signal("output", BOOKED, Decimal(1)), Signal("scorecard", QA, Decimal("100.00"))]
    assert success_signals({"o": {"name": "Booked", "result": False}}, None) == [
        Signal("output", "o", Decimal(0))]
    # Text, numbers and objects say nothing about success; "true" as text is not a boolean.
    assert success_signals({"o": {"name": "x", "result": "true"}, "n": {"result": 1}},
                           {"s": {"name": "no score"}, "t": {"scoreNormalized": float("nan")},
                            "u": {"scoreNormalized": 1e300}}) == []
    assert success_signals(None, None) == success_signals([], "x") == []


def test_a_score_is_kept_to_two_places() -> None:
    (signal,) = success_signals(None, {"s": {"scoreNormalized": 66.666}})
    assert signal.value == Decimal("66.67")


@pytest.mark.parametrize(("value", "kind", "mark", "expected"), [
    (Decimal(1), "output", None, True), (Decimal(0), "output", None, False),
    (Decimal(80), "scorecard", Decimal(80), True),
    (Decimal("79.99"), "scorecard", Decimal(80), False),
    (Decimal(100), "scorecard", None, False),
])
def test_passes(value, kind, mark, expected) -> None:
    assert passes(value, kind, mark) is expected


def test_the_lead_contact_from_an_object_result() -> None:
    assert contact(SAMPLE["structuredOutputs"]) == Contact("Ana Ruiz", "dana@example.com")


@pytest.mark.parametrize("label", ["name", "Name", "Customer Name", "customer_name",
                                   "customerName", "FULL-NAME", "caller name"])
def test_an_output_named_for_the_name_carries_it(label: str) -> None:
    assert contact({"o": {"name": label, "result": "  Ana   Ruiz "}}).name == "Ana Ruiz"


@pytest.mark.parametrize("label", ["email", "Email Address", "customer_email", "leadEmail"])
def test_an_output_named_for_the_email_carries_it(label: str) -> None:
    assert contact({"o": {"name": label, "result": " ana@example.com "}}).email == \
        "ana@example.com"


def test_an_output_named_for_it_comes_before_an_object_and_ids_break_ties() -> None:
    found = contact({
        "a": {"name": "Lead", "result": {"name": "From object", "email": "obj@example.com"}},
        "b": {"name": "Name", "result": "Named output"},
        "c": {"name": "Email", "result": "named@example.com"},
        "d": {"name": "name", "result": "Later id"}})
    assert found == Contact("Named output", "named@example.com")
    assert contact({"b": {"name": "x", "result": {"name": "B"}},
                    "a": {"name": "y", "result": {"fullName": "A"}}}).name == "A"


@pytest.mark.parametrize("result", ["unknown", "N/A", "", "   ", None, 42, True, ["Ana"],
                                    "x" * 201, "nul\x00in"])
def test_what_is_not_a_name_carries_none(result) -> None:
    assert contact({"o": {"name": "name", "result": result},
                    "p": {"name": "details", "result": {"name": result}}}).name is None


@pytest.mark.parametrize("result", ["not provided", "ana at example.com", "ana@example",
                                    "a b@example.com", "@example.com", 7, {"email": "x"}])
def test_what_is_not_an_email_carries_none(result) -> None:
    assert contact({"o": {"name": "email", "result": result}}).email is None


def test_outputs_named_otherwise_carry_nothing() -> None:
    assert contact({"o": {"name": "Summary", "result": "Ana Ruiz called"},
                    "p": {"name": "Names mentioned", "result": ["Ana"]},
                    "q": {"name": "Booking", "result": {"username": "ana1"}}}) == Contact()
    assert contact(None) == contact("x") == Contact()


_results = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8),
                     st.dictionaries(st.sampled_from(["name", "email", "x"]),
                                     st.text(max_size=12), max_size=2))
_outputs = st.dictionaries(
    st.text(min_size=1, max_size=4),
    st.fixed_dictionaries({"name": st.sampled_from(["name", "Email", "x"]),
                           "result": _results}), max_size=4)


@given(_outputs)
def test_contact_does_not_depend_on_the_order_of_the_outputs(value: dict) -> None:
    reordered = dict(reversed(list(value.items())))
    assert contact(reordered) == contact(value)
    assert outputs(reordered) == outputs(value)
    assert success_signals(reordered, None) == success_signals(value, None)


# -- the limits, each at its edge --------------------------------------------------------

def test_an_id_of_255_characters_is_kept_and_a_longer_one_or_a_nul_is_not() -> None:
    longest, longer = "k" * 255, "k" * 256
    items = {longest: {"name": "A", "result": True}, longer: {"name": "B", "result": True},
             "bad\x00id": {"name": "C", "result": True}}
    assert [o.id for o in outputs(items)] == [longest]


def test_scorecards_sort_by_name_then_id_and_points_need_an_object() -> None:
    cards = {"id-b": {"name": "Zeta", "score": 1, "scoreNormalized": 50, "metricPoints": {}},
             "id-a": {"name": "alpha", "score": 1, "scoreNormalized": 50,
                      "metricPoints": [["x", 1]]},
             "id-d": {"name": "Mid", "score": 1, "scoreNormalized": 50, "metricPoints": {}},
             "id-c": {"name": "Mid", "score": 1, "scoreNormalized": 50, "metricPoints": {}}}
    found = scorecards(cards)
    assert [c.id for c in found] == ["id-a", "id-c", "id-d", "id-b"]
    assert found[0].metric_points == {}  # a list of pairs is no object of points


def test_a_normalized_score_rounds_half_up_and_a_huge_one_says_nothing() -> None:
    signals = success_signals({}, {"a": {"scoreNormalized": 12.345},
                                   "b": {"scoreNormalized": 999_999.99},
                                   "c": {"scoreNormalized": 1_000_000}})
    assert signals == [Signal("scorecard", "a", Decimal("12.35")),
                       Signal("scorecard", "b", Decimal("999999.99"))]


def test_a_name_of_200_characters_and_an_email_of_320_are_the_longest_kept() -> None:
    name = "N" * 200
    email = "e" * (320 - len("@example.com")) + "@example.com"
    assert contact({"1": {"name": "name", "result": name},
                    "2": {"name": "email", "result": email}}) == Contact(name, email)
    assert contact({"1": {"name": "name", "result": name + "N"},
                    "2": {"name": "email", "result": "e" + email}}) == Contact(None, None)
    assert contact({"1": {"name": "email", "result": "a\x00b@example.com"}}).email is None
