"""What one call contributes to its day, edge by edge (issue 16, mutation testing): values
that are not what they should be, calls over a day long, instants in any offset and in a
process whose local time is not UTC, and the day's rounding."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from metrics_sync.usage import call_seconds, call_usage, day_minutes, money, parse_time

START = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)


@pytest.mark.parametrize("value", [None, "", 12, 1.5, ["2026-11-22T10:00:00Z"], "noon"])
def test_what_is_not_an_instant_is_none(value: object) -> None:
    assert parse_time(value) is None


@pytest.mark.usefixtures("local_time_not_utc")
@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-22T10:00:00Z", START),
    ("2026-11-22T10:00:00.000Z", START),
    ("2026-11-22T10:00:00", START),  # no offset: UTC, not the process's local time
    ("2026-11-22T12:00:00+02:00", START),
    ("2026-11-22T05:00:00-05:00", START),
])
def test_an_instant_in_any_offset_is_the_same_instant_in_utc(text: str,
                                                             expected: dt.datetime) -> None:
    moment = parse_time(text)
    assert moment == expected
    assert moment is not None and moment.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(("value", "expected"), [
    (0.1, Decimal("0.1")), (2, Decimal(2)), ("0.25", Decimal("0.25")),
    (True, None), (False, None), (None, None), ({}, None), ([1], None), ("bad", None),
    ("Infinity", None), ("-Infinity", None), ("NaN", None), (float("inf"), None),
])
def test_money_is_a_finite_decimal_or_none(value: object, expected: Decimal | None) -> None:
    assert money(value) == expected


def test_a_calls_seconds() -> None:
    assert call_seconds(START, None) == 0
    assert call_seconds(None, START) == 0
    assert call_seconds(START, START - dt.timedelta(seconds=1)) == 0  # ended before it began
    assert call_seconds(START, START) == 0
    assert call_seconds(START, START + dt.timedelta(microseconds=1)) == Decimal("0.000001")
    assert call_seconds(START, START + dt.timedelta(days=2, seconds=1, microseconds=5)) == \
        Decimal("172801.000005")


def test_a_days_minutes_round_half_up_to_the_millionth() -> None:
    assert day_minutes(Decimal("0.00003")) == Decimal("0.000001")  # 0.0000005: up, not even
    assert day_minutes(Decimal("0.00009")) == Decimal("0.000002")  # 0.0000015
    assert day_minutes(Decimal(90)) == Decimal("1.5")


def test_a_calls_usage_keeps_its_id_and_when_it_was_updated() -> None:
    usage = call_usage({"id": "c7", "createdAt": "2026-11-22T10:00:00Z",
                        "updatedAt": "2026-11-22T10:05:00.500Z",
                        "costBreakdown": {"llm": "0.5", "tts": 0.25, "stt": True}})
    assert usage is not None
    assert usage.call_id == "c7"
    assert usage.updated_at == START + dt.timedelta(minutes=5, milliseconds=500)
    assert dict(usage.cost_breakdown) == {"tts": Decimal("0.25")}  # numbers only


@pytest.mark.parametrize("call", [
    {"id": 5, "createdAt": "2026-11-22T10:00:00Z"},
    {"id": "", "createdAt": "2026-11-22T10:00:00Z"},
    {"id": "c8", "createdAt": 1_763_805_600_000},
    {"id": "c9", "createdAt": "not a time"},
])
def test_a_row_without_a_usable_id_or_creation_time_is_left_out(call: dict[str, object]
                                                                ) -> None:
    assert call_usage(call) is None
