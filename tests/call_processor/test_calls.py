"""The pure call rules: forward-only status, report authority, no erasing, order-freedom."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import replace
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from call_processor.calls import (
    REPORT,
    SNAPSHOT,
    STATUS_ORDER,
    CallState,
    Observation,
    combine,
    contribution,
    merge,
    stats_day,
    status_rank,
    tombstone,
)
from calltrail_common.erasure import PERSONAL_FIELDS, anonymous_outputs

T0 = dt.datetime(2026, 11, 3, 15, 4, 5, tzinfo=dt.UTC)


def obs(status=None, ms=0, report=False, **values) -> Observation:
    return Observation(
        call_id="c1", event_ms=ms, status=status, is_report=report,
        values={k: v if isinstance(v, tuple) else (v, REPORT if report else SNAPSHOT)
                for k, v in values.items()})


def fold(*observations: Observation) -> CallState:
    state = CallState(call_id="c1")
    for o in observations:
        state = merge(state, o)
    return state


def test_status_only_moves_forward_for_every_pair() -> None:
    for earlier, later in itertools.product(STATUS_ORDER, repeat=2):
        state = fold(obs(status=earlier, ms=1), obs(status=later, ms=2))
        expected = max(earlier, later, key=status_rank)
        assert state.status == expected, (earlier, later)


def test_ended_is_final_and_unknown_statuses_never_move_a_call() -> None:
    assert fold(obs(status="ended", ms=1), obs(status="in-progress", ms=9)).status == "ended"
    assert fold(obs(status="ringing", ms=1), obs(status="not-found", ms=2)).status == "ringing"
    assert fold(obs(status="deletion-failed")).status is None
    assert status_rank("not-found") == 0 and status_rank(None) == 0


def test_an_end_of_call_report_alone_ends_a_call() -> None:
    state = fold(obs(report=True, ms=5, ended_reason="customer-ended-call"))
    assert state.status == "ended" and state.report_received


def test_the_report_is_authoritative_whatever_the_order() -> None:
    status_ended = obs(status="ended", ms=9_000, ended_reason="silence-timed-out")
    report = obs(report=True, ms=5_000, ended_reason="customer-ended-call",
                 cost=Decimal("0.21"))
    for order in ((status_ended, report), (report, status_ended)):
        state = fold(*order)
        assert state.get("ended_reason") == "customer-ended-call"
        assert state.get("cost") == Decimal("0.21")


def test_a_field_an_event_does_not_carry_never_erases_a_value() -> None:
    state = fold(obs(ms=1, customer_name="Ana", assistant_id="a1"), obs(ms=2, assistant_id="a2"))
    assert state.get("customer_name") == "Ana"
    assert state.get("assistant_id") == "a2"  # the later snapshot wins among equals


def test_duration_is_ended_minus_started() -> None:
    state = fold(obs(report=True, ms=1, started_at=T0,
                     ended_at=T0 + dt.timedelta(seconds=95, milliseconds=500)))
    assert state.duration_seconds == Decimal("95.5")
    assert fold(obs(report=True, ms=1, started_at=T0)).duration_seconds is None


def test_contribution_counts_direction_cost_and_duration_on_the_created_day() -> None:
    state = fold(obs(ms=1, direction="inboundPhoneCall", created_at=T0),
                 obs(report=True, ms=2, cost=Decimal("0.5"), started_at=T0,
                     ended_at=T0 + dt.timedelta(seconds=60)))
    part = contribution(state)
    assert part is not None
    assert (part.day, part.calls, part.inbound, part.outbound, part.web) == (
        T0.date(), 1, 1, 0, 0)
    assert (part.duration_seconds, part.cost) == (Decimal(60), Decimal("0.5"))
    assert stats_day(CallState(call_id="x")) is None
    assert contribution(None) is None


_values = st.fixed_dictionaries({}, optional={
    "ended_reason": st.sampled_from(["a", "b", "c"]),
    "assistant_id": st.sampled_from(["x", "y"]),
    "cost": st.sampled_from([Decimal("0.1"), Decimal("0.25")]),
    "metadata": st.sampled_from([{"k": 1}, {"k": 2, "j": [1]}]),
    # Said at SNAPSHOT authority even by a report (events.py): `merge` is the same rule.
    "structured_outputs": st.sampled_from([
        ({"o1": {"name": "Booked", "result": True}}, SNAPSHOT),
        ({"o1": {"name": "Booked", "result": False}, "o2": {"name": "n", "result": "A"}},
         SNAPSHOT)]),
    "scorecards": st.sampled_from([({"s": {"name": "QA", "scoreNormalized": 70}}, SNAPSHOT),
                                   ({"s": {"name": "QA", "scoreNormalized": 100}}, SNAPSHOT)]),
})
_observations = st.builds(
    lambda status, ms, report, values: obs(status=status, ms=ms, report=report, **values),
    st.sampled_from([*STATUS_ORDER, "not-found", None]), st.integers(0, 5), st.booleans(),
    _values)


@given(st.lists(_observations, min_size=1, max_size=6), st.randoms(use_true_random=False),
       st.lists(st.integers(0, 5), max_size=4))
def test_merge_is_order_free_and_duplicate_free(observations, rng, duplicates) -> None:
    reference = fold(*observations)
    delivered = list(observations) + [observations[i % len(observations)] for i in duplicates]
    rng.shuffle(delivered)
    assert fold(*delivered) == reference


@given(st.lists(st.tuples(st.sampled_from(("queued", "ringing", "ended", "odd", None)),
                          st.integers(0, 3), st.booleans(),
                          st.sampled_from(("a", "b", None)), st.booleans()), max_size=8),
       st.integers(0, 8))
def test_combining_partial_merges_is_merging_everything(events, split) -> None:
    observations = [obs(status=status, ms=ms, report=report, summary=summary,
                        **({"cost": (Decimal(ms), REPORT)} if costly else {}))
                    for status, ms, report, summary, costly in events]
    first, second = fold(*observations[:split]), fold(*observations[split:])
    assert combine(first, second) == fold(*observations)
    assert combine(second, first) == fold(*observations)


# -- deleted calls and withheld fields (decision 44) ----------------------------------------

_DELETION = Observation(call_id="c1", event_ms=3, status=None, is_report=False, values={},
                        deletes=True)


@given(st.lists(st.one_of(_observations, st.just(_DELETION)), min_size=1, max_size=6),
       st.randoms(use_true_random=False), st.integers(0, 6))
def test_a_deletion_anywhere_is_the_same_tombstone(observations, rng, split) -> None:
    delivered = list(observations)
    rng.shuffle(delivered)
    assert fold(*delivered) == fold(*observations)
    first, second = fold(*observations[:split]), fold(*observations[split:])
    assert combine(first, second) == combine(second, first) == fold(*observations)
    if _DELETION in observations:
        assert fold(*observations) == tombstone("c1")
        assert contribution(fold(*observations)) is None
    else:
        assert not fold(*observations).deleted


def test_a_tombstone_takes_nothing_and_counts_nowhere() -> None:
    state = fold(obs(status="in-progress", ms=1, direction="inboundPhoneCall",
                     created_at=T0, customer_number="+14155550123"), _DELETION,
                 obs(ms=9, report=True, transcript="late", cost=Decimal(1)))
    assert state == tombstone("c1") and not state.values and state.status is None
    assert contribution(state) is None


@given(st.lists(_observations, min_size=1, max_size=6), st.integers(0, 6))
def test_withheld_fields_are_never_filled_and_erasing_commutes_with_merging(
        observations, split) -> None:
    """Erasing after every event, or between them (the stored state's fields cleared and
    withheld, as calltrail_common.erasure does), ends in the same state."""
    def erased(state: CallState) -> CallState:
        values = {k: v for k, v in state.values.items() if k not in PERSONAL_FIELDS}
        versions = {k: v for k, v in state.versions.items() if k not in PERSONAL_FIELDS}
        outputs = anonymous_outputs(state.values.get("structured_outputs"))
        if outputs is not None:
            values["structured_outputs"] = outputs
            versions["structured_outputs"] = state.versions["structured_outputs"]
        return replace(state, values=values, versions=versions, withheld=PERSONAL_FIELDS)

    late = erased(fold(*observations))
    early = erased(fold(*observations[:split]))
    for o in observations[split:]:
        early = merge(early, o)
    assert early.values.keys() == late.values.keys()
    assert {k: v for k, v in early.values.items() if k != "structured_outputs"} == \
        {k: v for k, v in late.values.items() if k != "structured_outputs"}
    assert not set(early.values) & (PERSONAL_FIELDS - {"structured_outputs"})
    for outputs in (early.values.get("structured_outputs") or {}).values():
        assert isinstance(outputs["result"], bool)  # only the anonymous part


def test_the_anonymous_part_of_structured_outputs() -> None:
    assert anonymous_outputs({"o1": {"name": "Booked", "result": True},
                              "o2": {"name": "Name", "result": "Ana Ruiz"},
                              "o3": {"result": False}, "o4": "odd"}) == \
        {"o1": {"name": "Booked", "result": True}, "o3": {"result": False}}
    assert anonymous_outputs({"o2": {"result": "Ana"}}) is None
    assert anonymous_outputs(None) is None
