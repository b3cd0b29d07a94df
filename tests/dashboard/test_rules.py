"""The dashboard's pure rules: CSRF tokens, charts, transcripts, formats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from api.dashboard import charts, formats, session
from api.dashboard.transcripts import Turn, conversation


def test_csrf_token_is_bound_to_nonce_and_session() -> None:
    token = session.csrf_token("nonce", "ct_a")
    assert session.csrf_valid("nonce", "ct_a", token)
    assert not session.csrf_valid("nonce", "ct_b", token)
    assert not session.csrf_valid("other", "ct_a", token)
    assert not session.csrf_valid(None, "ct_a", token)
    assert not session.csrf_valid("nonce", "ct_a", None)
    assert session.csrf_valid("n", None, session.csrf_token("n", None))


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_nice_ceiling_covers_the_value(value: float) -> None:
    assert charts.nice_ceiling(value) >= value * (1 - 1e-9)
    whole = charts.nice_ceiling(value, whole=True)
    assert whole >= value and whole == int(whole) and int(whole) % 2 == 0


def test_bar_chart_geometry() -> None:
    chart = charts.bar_chart([0, 3, 1], ["a", "b", "c"], whole=True)
    assert [t.label for t in chart.wide.ticks] == ["0", "2", "4"]
    assert len(chart.wide.bars) == len(chart.narrow.bars) == 3
    assert chart.wide.bars[0].height == 0 and chart.wide.bars[1].height > 0
    assert not chart.empty and charts.bar_chart([0, 0], ["a", "b"]).empty


def test_conversation() -> None:
    assert conversation("AI: Hi there.\nUser: Hello\nstill me\n\nbot: Bye") == [
        Turn("assistant", "Hi there."), Turn("customer", "Hello still me"),
        Turn("assistant", "Bye")]
    assert conversation(None) == [] and conversation("just words") == [
        Turn("customer", "just words")]


def test_formats() -> None:
    assert formats.money(1234.5) == "$1,234.50" and formats.money(0.004) == "$0.0040"
    assert formats.money(None) == "—" and formats.percent(2 / 3) == "67%"
    assert formats.duration(200) == "3:20" and formats.duration(3700) == "1h 01m"
    assert formats.label("customer-did-not-answer") == "Customer did not answer"
    assert formats.caller("erased:9b1c") == "Erased caller"
    assert formats.caller("+14155550123") == "+14155550123" and formats.caller(None) == "—"


def test_an_unnamed_id_is_shortened_and_a_short_one_kept() -> None:
    assert formats.short_id("7f3c2a91-5d4e-4b8a-9c1f-0e6d2b3a4c5d") == "7f3c2a91…"
    assert formats.short_id("asst-riley") == "asst-ril…"
    assert formats.short_id("asst-1") == "asst-1"
    assert formats.short_id("123456789") == "123456789"  # an ellipsis would save nothing
    assert formats.short_id(None) == formats.short_id("") == "—"
