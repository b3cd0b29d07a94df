"""The day a call counts on, field by field (issue 16, mutation testing): creation first,
then the start, then the end, then when it was last heard of, each as a UTC day; and a
merge that skips what an event does not know."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from call_processor.calls import SNAPSHOT, CallState, Observation, contribution, merge, stats_day

BEFORE_MIDNIGHT = dt.datetime(2026, 11, 21, 23, 59, 50, tzinfo=dt.UTC)
AFTER_MIDNIGHT = dt.datetime(2026, 11, 22, 0, 0, 10, tzinfo=dt.UTC)
NEXT_DAY = dt.datetime(2026, 11, 23, 0, 0, 10, tzinfo=dt.UTC)


def test_each_instant_counts_only_when_those_before_it_are_unknown() -> None:
    every = {"created_at": BEFORE_MIDNIGHT, "started_at": AFTER_MIDNIGHT, "ended_at": NEXT_DAY}
    assert stats_day(CallState("c", values=every)) == dt.date(2026, 11, 21)
    started = {"started_at": AFTER_MIDNIGHT, "ended_at": NEXT_DAY}
    assert stats_day(CallState("c", values=started)) == dt.date(2026, 11, 22)
    assert stats_day(CallState("c", values={"ended_at": NEXT_DAY})) == dt.date(2026, 11, 23)
    heard = CallState("c", last_event_ms=int(NEXT_DAY.timestamp() * 1000))
    assert stats_day(heard) == dt.date(2026, 11, 23)


def test_an_instant_in_another_offset_counts_on_its_utc_day() -> None:
    evening_in_new_york = AFTER_MIDNIGHT.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert evening_in_new_york.date() == dt.date(2026, 11, 21)
    state = CallState("c", values={"created_at": evening_in_new_york})
    assert stats_day(state) == dt.date(2026, 11, 22)


def test_a_calls_contribution_to_its_day() -> None:
    state = CallState("c", values={"created_at": BEFORE_MIDNIGHT, "direction": "webCall",
                                   "started_at": BEFORE_MIDNIGHT, "ended_at": AFTER_MIDNIGHT,
                                   "cost": Decimal("0.12")})
    part = contribution(state)
    assert part is not None
    assert (part.day, part.calls, part.inbound, part.outbound, part.web) == (
        dt.date(2026, 11, 21), 1, 0, 0, 1)
    assert (part.duration_seconds, part.cost) == (Decimal(20), Decimal("0.12"))
    assert contribution(None) is None
    assert contribution(CallState("c")) is None


@pytest.mark.usefixtures("local_time_not_utc")
def test_the_day_is_the_utc_day_whatever_the_processs_local_time() -> None:
    late_evening_utc = dt.datetime(2026, 11, 22, 23, 30, tzinfo=dt.UTC)  # 18:30 in New York
    assert stats_day(CallState("c", values={"created_at": late_evening_utc})) == \
        dt.date(2026, 11, 22)
    early_morning_utc = dt.datetime(2026, 11, 22, 2, 30, tzinfo=dt.UTC)  # the 21st there
    assert stats_day(CallState("c", values={"created_at": early_morning_utc})) == \
        dt.date(2026, 11, 22)


def test_a_value_an_event_does_not_know_never_stops_the_others_merging() -> None:
    observation = Observation(call_id="c", event_ms=5, status=None, is_report=False,
                              values={"summary": (None, SNAPSHOT), "cost": (Decimal(1), SNAPSHOT),
                                      "transcript": ("AI: Hi", SNAPSHOT)})
    state = merge(CallState("c", values={"summary": "kept"}), observation)
    assert dict(state.values) == {"summary": "kept", "cost": Decimal(1), "transcript": "AI: Hi"}
