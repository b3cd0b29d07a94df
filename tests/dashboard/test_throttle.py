"""The sign-in throttle's rule: failures within a window, a limit, a wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from api.dashboard.throttle import Limit, account_key, address_key, minutes, wait

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
LIMIT = Limit(failures=5, window=timedelta(minutes=15))


def ago(*minutes_ago: float) -> list[datetime]:
    return [NOW - timedelta(minutes=m) for m in minutes_ago]


def test_under_the_limit_no_wait() -> None:
    assert wait([], NOW, LIMIT) is None
    assert wait(ago(1, 2, 3, 4), NOW, LIMIT) is None


def test_at_the_limit_wait_until_the_oldest_leaves_the_window() -> None:
    assert wait(ago(1, 2, 3, 4, 10), NOW, LIMIT) == timedelta(minutes=5)
    # Order does not matter.
    assert wait(ago(10, 3, 1, 4, 2), NOW, LIMIT) == timedelta(minutes=5)


def test_over_the_limit_wait_until_enough_leave() -> None:
    # Seven failures, five allowed: one more fits once three are out of the window.
    assert wait(ago(14, 13, 12, 2, 1, 1, 1), NOW, LIMIT) == timedelta(minutes=3)


def test_failures_outside_the_window_do_not_count() -> None:
    assert wait(ago(15, 16, 60, 1, 2, 3, 4), NOW, LIMIT) is None
    assert wait(ago(15.0) + ago(1, 2, 3, 4), NOW, LIMIT) is None  # exactly a window ago
    assert wait(ago(14.99, 1, 2, 3, 4), NOW, LIMIT) is not None
    # A time after now (another replica's clock) is not counted either.
    assert wait([NOW + timedelta(seconds=5), *ago(1, 2, 3, 4)], NOW, LIMIT) is None


def test_minutes_round_up_and_say_at_least_one() -> None:
    assert minutes(timedelta(seconds=1)) == 1
    assert minutes(timedelta(minutes=4, seconds=1)) == 5
    assert minutes(timedelta(minutes=5)) == 5
    assert minutes(timedelta(0)) == 1


def test_keys_keep_accounts_and_addresses_apart() -> None:
    assert account_key("a@b.example") != address_key("a@b.example")
    assert account_key("a@b.example") == "account:a@b.example"


@given(st.lists(st.floats(min_value=0, max_value=40), max_size=30),
       st.integers(min_value=1, max_value=10))
def test_the_wait_ends_exactly_when_one_more_fits(minutes_ago: list[float], limit: int
                                                  ) -> None:
    rule = Limit(limit, timedelta(minutes=15))
    failures = ago(*minutes_ago)
    waited = wait(failures, NOW, rule)
    recent = [at for at in failures if NOW - rule.window < at <= NOW]
    if waited is None:
        assert len(recent) < limit
        return
    assert waited > timedelta(0)
    later = NOW + waited
    assert wait(failures, later, rule) is None
    assert wait(failures, later - timedelta(microseconds=1), rule) is not None
