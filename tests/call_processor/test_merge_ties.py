"""Ties between two values said with the same authority at the same instant (issue 16,
mutation testing): the larger canonical value wins, whichever way states are combined, and
the canonical form does not depend on the order of a JSON object's keys (jsonb reorders
them when a value is read back)."""

from __future__ import annotations

from call_processor.calls import SNAPSHOT, CallState, Observation, canonical, combine, merge


def said(value: object) -> CallState:
    return merge(CallState("c"), Observation(call_id="c", event_ms=5, status=None,
                                             is_report=False,
                                             values={"summary": (value, SNAPSHOT)}))


def test_a_tie_goes_to_the_larger_canonical_value_whichever_way_states_combine() -> None:
    larger, smaller = said("b"), said("a")
    assert combine(larger, smaller).values["summary"] == "b"
    assert combine(smaller, larger).values["summary"] == "b"
    assert merge(smaller, Observation("c", 5, None, False, {"summary": ("b", SNAPSHOT)})) \
        .values["summary"] == "b"


def test_the_canonical_form_of_an_object_ignores_its_key_order() -> None:
    assert canonical({"b": 1, "a": {"d": 2, "c": 3}}) == canonical({"a": {"c": 3, "d": 2},
                                                                     "b": 1})
