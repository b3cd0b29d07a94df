"""The pure rules of metrics-sync: when an account is due, how it backs off, what a call
contributes to its day."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from metrics_sync.schedule import (
    MAX_BACKOFF_SECONDS,
    backoff_seconds,
    next_sync_after,
    phase_seconds,
)
from metrics_sync.usage import call_seconds, call_usage, day_minutes

instants = st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 1, 1),
                        timezones=st.just(dt.UTC))
intervals = st.integers(min_value=10, max_value=86_400)


@given(st.uuids(), instants, intervals)
def test_next_sync_is_the_accounts_own_slot_between_half_and_one_and_a_half_intervals_away(
        org_id: uuid.UUID, now: dt.datetime, interval: int) -> None:
    at = next_sync_after(org_id, now, interval)
    gap = (at - now).total_seconds()
    assert interval / 2 - 1e-3 <= gap <= 1.5 * interval + 1e-3
    offset = (at.timestamp() - phase_seconds(org_id, interval)) % interval
    assert min(offset, interval - offset) < 1e-3  # on the account's phase


def test_accounts_connected_together_are_spread_over_the_interval() -> None:
    now = dt.datetime(2026, 11, 22, 12, tzinfo=dt.UTC)
    slots = sorted((next_sync_after(uuid.uuid4(), now, 300) - now).total_seconds()
                   for _ in range(1000))
    per_minute = [sum(1 for s in slots if start <= s % 300 < start + 60)
                  for start in range(0, 300, 60)]
    assert all(150 <= n <= 250 for n in per_minute), per_minute  # about 200 each


@given(st.integers(min_value=1, max_value=50),
       st.one_of(st.none(), st.floats(min_value=0, max_value=3600)))
def test_backoff_grows_is_bounded_and_never_sooner_than_retry_after(
        failures: int, retry_after: float | None) -> None:
    delay = backoff_seconds(failures, retry_after, random.Random(failures))
    assert delay >= (retry_after or 0)
    assert delay <= max(MAX_BACKOFF_SECONDS, retry_after or 0)
    assert backoff_seconds(1, None, random.Random(0)) <= backoff_seconds(
        6, None, random.Random(0))


def test_a_calls_usage() -> None:
    usage = call_usage({
        "id": "c1", "createdAt": "2026-11-21T23:59:59.999Z", "updatedAt": "2026-11-22T00:03Z",
        "startedAt": "2026-11-22T00:00:01.250Z", "endedAt": "2026-11-22T00:02:31.750Z",
        "cost": 0.1, "costBreakdown": {"llm": 0.05, "tts": 0.03, "analysisCostBreakdown": {},
                                       "total": 0.1}})
    assert usage is not None
    assert usage.day == dt.date(2026, 11, 21)  # the day it was created, in UTC
    assert usage.seconds == Decimal("150.5")
    assert usage.cost == Decimal("0.1")  # the decimal Vapi wrote, not the float's binary
    assert dict(usage.cost_breakdown) == {"llm": Decimal("0.05"), "tts": Decimal("0.03"),
                                          "total": Decimal("0.1")}


def test_rows_that_are_not_usable_calls_are_left_out() -> None:
    assert call_usage({"createdAt": "2026-11-21T10:00:00Z"}) is None
    assert call_usage({"id": "c2"}) is None
    no_times = call_usage({"id": "c3", "createdAt": "2026-11-21T10:00:00Z", "cost": "bad"})
    assert no_times is not None and no_times.seconds == 0 and no_times.cost == 0


@given(st.lists(st.integers(min_value=0, max_value=4 * 3600 * 1_000_000), max_size=50))
def test_a_days_minutes_do_not_depend_on_the_order_calls_are_summed_in(
        micros: list[int]) -> None:
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    seconds = [call_seconds(start, start + dt.timedelta(microseconds=m)) for m in micros]
    shuffled = list(seconds)
    random.Random(len(micros)).shuffle(shuffled)
    assert day_minutes(sum(seconds, Decimal(0))) == day_minutes(sum(shuffled, Decimal(0)))
    assert day_minutes(sum(seconds, Decimal(0))) == (
        Decimal(sum(micros)) / 60_000_000).quantize(Decimal("0.000001"), "ROUND_HALF_UP")
