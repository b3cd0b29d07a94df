"""The api's pure rules: cursors, parameter rules, the token header, shaping."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import cursors, params, request_bounds, shapes
from api.auth import bearer_token
from api.errors import InvalidParameter, NotFound, Unauthorized
from calltrail_common import organizations

_instants = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                         timezones=st.just(UTC))


@given(st.one_of(st.none(), _instants), st.text(max_size=80), st.sampled_from(["c", "l"]))
def test_a_cursor_names_the_position_it_was_made_from(created_at, row_id, kind) -> None:
    position = cursors.Position(created_at, row_id)
    cursor = cursors.encode(kind, position)
    assert cursor.isascii() and "/" not in cursor and "+" not in cursor
    assert cursors.decode(kind, cursor) == position


@given(st.text(max_size=100))
def test_anything_else_is_a_400_naming_the_cursor(text) -> None:
    try:
        cursors.decode("c", text)
    except InvalidParameter as error:
        assert error.parameter == "cursor"


def test_a_cursor_of_one_list_is_refused_by_the_other() -> None:
    cursor = cursors.encode("l", cursors.Position(datetime.now(UTC), "x"))
    with pytest.raises(InvalidParameter):
        cursors.decode("c", cursor)
    naive = cursors.encode("c", cursors.Position(datetime(2026, 1, 1), "x"))
    with pytest.raises(InvalidParameter):
        cursors.decode("c", naive)


def test_date_ranges() -> None:
    today = date(2026, 3, 31)
    assert params.date_range(None, None, today) == params.DateRange(date(2026, 3, 2), today)
    assert params.date_range(date(2026, 3, 1), None, today).end == today
    assert params.date_range(None, date(2026, 1, 30), today).start == date(2026, 1, 1)
    one = params.date_range(today, today, today)
    assert one.days() == [today]
    assert len(params.date_range(date(2025, 1, 1), date(2026, 1, 1), today).days()) == 366
    with pytest.raises(InvalidParameter, match="startDate"):
        params.date_range(date(2026, 3, 2), date(2026, 3, 1), today)
    with pytest.raises(InvalidParameter, match="endDate"):
        params.date_range(date(2024, 12, 31), date(2026, 1, 1), today)
    # The first days of year 1 have no 30 days before them: a 400, never an overflow.
    with pytest.raises(InvalidParameter, match="endDate: is out of range"):
        params.date_range(None, date(1, 1, 1), today)
    assert params.date_range(None, date(1, 1, 30), today).start == date(1, 1, 1)
    assert params.date_range(date(1, 1, 1), date(1, 1, 1), today).days() == [date(1, 1, 1)]


def test_instant_ranges_read_naive_instants_as_utc_and_refuse_reversed_ones() -> None:
    start, end = params.instant_range(datetime(2026, 1, 1), None)
    assert start == datetime(2026, 1, 1, tzinfo=UTC) and end is None
    later = datetime(2026, 1, 2, tzinfo=UTC)
    with pytest.raises(InvalidParameter, match="from"):
        params.instant_range(later, later - timedelta(seconds=1))


def test_search_terms_match_literally_anywhere() -> None:
    assert params.search_term(None) is None and params.search_term("  ") is None
    assert params.search_term(" ann ") == "%ann%"
    assert params.search_term("50%_a\\b") == "%50\\%\\_a\\\\b%"
    with pytest.raises(InvalidParameter, match="q"):
        params.search_term("x" * 101)


def test_path_ids_that_name_nothing_are_not_found_and_filters_are_400() -> None:
    with pytest.raises(NotFound):
        params.path_uuid("not-a-uuid")
    with pytest.raises(NotFound):
        params.path_call_id("x" * 201)
    with pytest.raises(InvalidParameter, match="leadId"):
        params.filter_uuid("leadId", "nope")
    assert params.filter_uuid("leadId", None) is None


def test_bearer_tokens() -> None:
    assert bearer_token(" ct_abc ") == "ct_abc"
    for token in (None, "", "  ", "x" * 257):
        with pytest.raises(Unauthorized):
            bearer_token(token)


def test_overview_fills_every_day_and_sums_exactly() -> None:
    days = params.DateRange(date(2026, 1, 1), date(2026, 1, 3))
    rows = [{"day": date(2026, 1, 2), "calls": 3, "inbound": 2, "outbound": 1, "web": 0,
             "new_leads": 1, "duration_seconds": Decimal(90), "cost": Decimal("0.1")},
            {"day": date(2026, 1, 3), "calls": 1, "inbound": 1, "outbound": 0, "web": 0,
             "new_leads": 0, "duration_seconds": Decimal(30), "cost": Decimal("0.2")}]
    overview = shapes.stats_overview(days, rows)
    assert [d.calls for d in overview.daily] == [0, 3, 1]
    assert overview.calls == 4 and overview.new_leads == 1 and overview.minutes == 2.0
    assert overview.cost == 0.3  # exact sum, then a float
    body = overview.model_dump(by_alias=True, mode="json")
    assert {"startDate", "newLeads", "daily"} <= set(body)
    assert body["daily"][0] == {"date": "2026-01-01", "calls": 0, "inbound": 0, "outbound": 0,
                                "web": 0, "newLeads": 0, "minutes": 0.0, "cost": 0.0}


def test_call_directions_are_named_from_the_vapi_type() -> None:
    row = {"id": "c1", "direction": "outboundPhoneCall", "status": "ended",
           "ended_reason": None, "created_at": None, "started_at": None, "ended_at": None,
           "duration_seconds": None, "cost": None, "customer_number": None,
           "customer_name": None, "assistant_id": None, "phone_number_id": None,
           "lead_id": None, "assistant_name": None, "phone_number_name": None}
    assert shapes.call_summary(row).direction == "outbound"
    assert shapes.call_summary({**row, "direction": "vapi.websocketCall"}).direction == (
        "vapi.websocketCall")


@pytest.mark.parametrize(("stored", "answered"), [
    (None, None), ("", None), ("https://rec.example/a.wav", "https://rec.example/a.wav"),
    ("HTTPS://rec.example/a.wav", "HTTPS://rec.example/a.wav"), ("http://rec.example/a", None),
    ("javascript:alert(1)", None), ("data:audio/wav;base64,AAAA", None), ("https:///a", None),
    ("//rec.example/a.wav", None), ("https://[::1", None)])
def test_only_https_recording_urls_are_answered(stored: str | None, answered: str | None
                                                ) -> None:
    assert shapes.https_only(stored) == answered


@pytest.mark.parametrize(("headers", "bearer"), [
    ([(b"authorization", b"Bearer ct_x")], True), ([(b"authorization", b"bearer ct_x")], True),
    ([(b"authorization", b"Basic abc")], False), ([(b"authorization", b"Bearer")], False),
    ([(b"x-authorization", b"Bearer ct_x")], False), ([], False)])
def test_a_bearer_header_is_recognised_without_reading_the_token(
        headers: list[tuple[bytes, bytes]], bearer: bool) -> None:
    assert request_bounds.has_bearer(headers) is bearer


def test_a_declared_length_that_is_not_a_number_is_refused() -> None:
    assert request_bounds.declared_length([(b"content-length", b"12")]) == 12
    assert request_bounds.declared_length([(b"content-length", b"-1")]) == -1
    assert request_bounds.declared_length([(b"content-length", b"1e9")]) == -1
    assert request_bounds.declared_length([(b"host", b"a")]) is None


def test_token_names() -> None:
    assert organizations.token_name(None) is None
    assert organizations.token_name("  ") is None
    assert organizations.token_name(" CRM sync ") == "CRM sync"
    for bad in ("x" * 81, "two\nlines", "tab\there"):
        with pytest.raises(organizations.InvalidTokenName):
            organizations.token_name(bad)
    assert organizations.token_prefix("ct_AbC1rest") == "ct_AbC1"
