"""The organization's own day (decision 45), as pure rules: a call counts on the day of its
creation in the zone the organization's figures count by, 23:30 and 00:30 local either side
of midnight, whatever the offset, and on the 23- and 25-hour days of a DST change."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest

from call_processor.calls import CallState, contribution, stats_day
from call_processor.figures import DailyFigures
from call_processor.outbound import (
    DAY_CLOSE_GRACE,
    candidate_days,
    day_end,
    days_to_close,
)
from calltrail_common.time_zones import (
    InvalidTimeZone,
    OrganizationZone,
    local_day,
    today,
    zone,
)

LOS_ANGELES = ZoneInfo("America/Los_Angeles")


def call_created(moment: dt.datetime) -> CallState:
    return CallState("c", values={"created_at": moment.astimezone(dt.UTC),
                                  "direction": "inboundPhoneCall"})


@pytest.mark.parametrize("name", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
@pytest.mark.parametrize("day", [dt.date(2026, 6, 15), dt.date(2026, 3, 8),
                                 dt.date(2026, 11, 1), dt.date(2026, 12, 31)])
def test_half_past_eleven_and_half_past_midnight_local_are_two_days(name: str,
                                                                    day: dt.date) -> None:
    where = zone(name)
    late = dt.datetime.combine(day, dt.time(23, 30), tzinfo=where)
    early = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 30), tzinfo=where)
    assert contribution(call_created(late), where).day == day  # type: ignore[union-attr]
    assert contribution(call_created(early), where).day == day + dt.timedelta(days=1)  # type: ignore[union-attr]


def test_the_same_moment_is_another_day_in_another_zone() -> None:
    moment = dt.datetime(2026, 11, 21, 20, 0, tzinfo=dt.UTC)  # 01:30 on the 22nd in Kolkata
    state = call_created(moment)
    assert contribution(state, zone("Asia/Kolkata")).day == dt.date(2026, 11, 22)  # type: ignore[union-attr]
    assert contribution(state, LOS_ANGELES).day == dt.date(2026, 11, 21)  # type: ignore[union-attr]
    assert contribution(state).day == dt.date(2026, 11, 21)  # type: ignore[union-attr]
    assert stats_day(state) == dt.date(2026, 11, 21)  # the column stays the UTC day


@pytest.mark.parametrize(("day", "first_utc", "hours"), [
    (dt.date(2026, 3, 8), dt.datetime(2026, 3, 8, 8, tzinfo=dt.UTC), 23),  # clocks go forward
    (dt.date(2026, 11, 1), dt.datetime(2026, 11, 1, 7, tzinfo=dt.UTC), 25),  # and back
])
def test_a_dst_change_day_in_los_angeles_lasts_23_or_25_hours(
        day: dt.date, first_utc: dt.datetime, hours: int) -> None:
    last_utc = first_utc + dt.timedelta(hours=hours)
    tick = dt.timedelta(microseconds=1)
    assert local_day(first_utc - tick, LOS_ANGELES) == day - dt.timedelta(days=1)
    assert local_day(first_utc, LOS_ANGELES) == day
    assert local_day(last_utc - tick, LOS_ANGELES) == day
    assert local_day(last_utc, LOS_ANGELES) == day + dt.timedelta(days=1)


def test_the_repeated_hour_of_november_1_counts_once_on_that_day() -> None:
    first = dt.datetime(2026, 11, 1, 1, 30, tzinfo=LOS_ANGELES, fold=0)  # PDT
    second = dt.datetime(2026, 11, 1, 1, 30, tzinfo=LOS_ANGELES, fold=1)  # PST, an hour on
    assert second.astimezone(dt.UTC) - first.astimezone(dt.UTC) == dt.timedelta(hours=1)
    figures = DailyFigures()
    org = uuid.uuid4()
    for moment in (first, second):
        figures.add_change(org, None, call_created(moment), LOS_ANGELES)
    assert [(key, delta.calls) for key, delta in figures.stats_rows()] == [
        ((org, dt.date(2026, 11, 1)), 2)]


def test_a_batch_keys_each_organizations_calls_by_its_own_zone() -> None:
    moment = dt.datetime(2026, 11, 21, 20, 0, tzinfo=dt.UTC)
    kolkata, utc = uuid.UUID(int=1), uuid.UUID(int=2)
    figures = DailyFigures()
    figures.add_change(kolkata, None, call_created(moment), zone("Asia/Kolkata"))
    figures.add_change(utc, None, call_created(moment), dt.UTC)
    assert [key for key, _ in figures.stats_rows()] == [
        (kolkata, dt.date(2026, 11, 22)), (utc, dt.date(2026, 11, 21))]


def test_a_call_moved_across_local_midnight_leaves_one_day_for_the_other() -> None:
    where = zone("Asia/Kolkata")
    before = call_created(dt.datetime(2026, 11, 21, 23, 30, tzinfo=where))
    after = call_created(dt.datetime(2026, 11, 22, 0, 30, tzinfo=where))
    figures = DailyFigures()
    org = uuid.uuid4()
    figures.add_change(org, before, after, where)
    assert [(key[1], delta.calls) for key, delta in figures.stats_rows()] == [
        (dt.date(2026, 11, 21), -1), (dt.date(2026, 11, 22), 1)]


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/localtime",
                                  " UTC", "x" * 65, "Europe/Paris\x00"])
def test_only_iana_names_are_zones(name: str) -> None:
    with pytest.raises(InvalidTimeZone):
        zone(name)


def test_figures_rebuild_while_the_zones_differ() -> None:
    assert OrganizationZone("Asia/Kolkata", "UTC").rebuilding
    assert not OrganizationZone("UTC", "UTC").rebuilding


def test_a_day_closes_after_its_local_midnight_and_grace() -> None:
    """`usage.day_closed` closes the organization's day: Los Angeles' 2026-11-01 (25 hours)
    ends at 08:00 UTC on the 2nd, not at UTC midnight."""
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    local_midnight = dt.datetime(2026, 11, 2, 8, tzinfo=dt.UTC)
    assert day_end(dt.date(2026, 11, 1), LOS_ANGELES) == local_midnight
    assert day_end(dt.date(2026, 3, 8), LOS_ANGELES) == dt.datetime(2026, 3, 9, 7,
                                                                    tzinfo=dt.UTC)
    just_before = local_midnight + DAY_CLOSE_GRACE - dt.timedelta(seconds=1)
    assert days_to_close(long_ago, just_before, LOS_ANGELES)[-1] == dt.date(2026, 10, 31)
    assert days_to_close(long_ago, just_before)[-1] == dt.date(2026, 11, 1)  # UTC's
    assert days_to_close(long_ago, local_midnight + DAY_CLOSE_GRACE,
                         LOS_ANGELES)[-1] == dt.date(2026, 11, 1)
    org = uuid.uuid4()
    assert candidate_days({org: long_ago}, local_midnight + DAY_CLOSE_GRACE,
                          {org: LOS_ANGELES})[-1][1:] == (org, dt.date(2026, 11, 1))


def test_today_is_the_local_date_now_or_at_the_moment_given() -> None:
    evening = dt.datetime(2026, 12, 5, 20, 0, tzinfo=dt.UTC)  # 01:30 on the 6th in Kolkata
    assert today(zone("Asia/Kolkata"), evening) == dt.date(2026, 12, 6)
    assert today(LOS_ANGELES, evening) == dt.date(2026, 12, 5)
    before = dt.datetime.now(dt.UTC).astimezone(LOS_ANGELES).date()
    found = today(LOS_ANGELES)
    assert found in {before, dt.datetime.now(dt.UTC).astimezone(LOS_ANGELES).date()}
