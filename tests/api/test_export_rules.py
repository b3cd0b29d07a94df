"""The export rules (`api.exports`): what each cell holds, formula cells neutralized, the
format asked for, the file's name. Pure."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api import exports, params
from api.errors import InvalidParameter
from calltrail_common.agencies import AS_STORED, cost_view

T0 = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def _call(**fields: object) -> dict[str, object]:
    row: dict[str, object] = {
        "id": "call-1", "created_at": T0, "started_at": T0 + timedelta(seconds=2),
        "ended_at": None, "direction": "inboundPhoneCall", "status": "ended",
        "ended_reason": "customer-ended-call", "duration_seconds": Decimal("61.5"),
        "cost": Decimal("0.1234"), "customer_number": "+14155550100", "customer_name": "Ann",
        "assistant_id": "asst-1", "phone_number_id": "pn-1", "lead_id": None,
        "summary": "Booked a visit.", "success_evaluation": "true"}
    row.update(fields)
    return row


def _parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


@pytest.mark.parametrize("text", ["=1+1", "+14155550100", "-2", "@SUM(A1)", "\tx", "\rx",
                                  "=HYPERLINK(\"http://x\",\"y\")"])
def test_a_text_a_formula_could_start_with_gets_a_quote(text: str) -> None:
    assert exports.neutralized(text) == "'" + text
    assert exports.csv_cell("customerName", text) == "'" + text


@pytest.mark.parametrize("text", ["Ann", "", "1=1", " =x", "'=x", "a-b", "call-1"])
def test_any_other_text_is_left_as_it_is(text: str) -> None:
    assert exports.neutralized(text) == text


@given(st.text())
def test_no_cell_of_text_starts_a_formula(text: str) -> None:
    cell = exports.csv_cell("summary", text)
    assert not cell.startswith(exports.FORMULA_STARTS)
    assert cell.removeprefix("'") == text or cell == text


@given(st.one_of(st.integers(-10**9, 10**9),
                 st.floats(allow_nan=False, allow_infinity=False, width=64)))
def test_numbers_in_numeric_columns_stay_numbers(number: float) -> None:
    cell = exports.csv_cell("cost", number)
    assert float(cell) == number
    assert not cell.startswith("'")


def test_a_negative_number_stays_a_number_but_a_negative_text_does_not() -> None:
    assert exports.csv_cell("durationSeconds", -1.5) == "-1.5"
    assert exports.csv_cell("callCount", -3) == "-3"
    assert exports.csv_cell("customerName", "-1.5") == "'-1.5"
    assert exports.csv_cell("cost", None) == ""


def test_a_call_as_exported() -> None:
    lead = uuid.uuid4()
    record = exports.call_record(_call(lead_id=lead), AS_STORED)
    assert list(record) == list(exports.CALL_COLUMNS)
    assert record == {
        "id": "call-1", "createdAt": "2026-05-01T12:30:00Z",
        "startedAt": "2026-05-01T12:30:02Z", "endedAt": None, "direction": "inbound",
        "status": "ended", "endedReason": "customer-ended-call", "durationSeconds": 61.5,
        "cost": 0.1234, "customerNumber": "+14155550100", "customerName": "Ann",
        "assistantId": "asst-1", "phoneNumberId": "pn-1", "leadId": str(lead),
        "summary": "Booked a visit.", "successEvaluation": "true"}


def test_absent_values_stay_absent_and_unknown_directions_stay_as_vapi_names_them() -> None:
    record = exports.call_record(_call(lead_id=None, success_evaluation=None,
                                       ended_at=T0 + timedelta(minutes=1),
                                       direction="vapi.websocketCall"), AS_STORED)
    assert record["leadId"] is None and record["successEvaluation"] is None
    assert record["endedAt"] == "2026-05-01T12:31:00Z"
    assert record["direction"] == "vapi.websocketCall"
    assert exports.call_record(_call(direction=None), AS_STORED)["direction"] is None
    # A text in a numeric column (never stored so, but never trusted) is still neutralized.
    assert exports.csv_cell("cost", "=1+1") == "'=1+1"


def test_ndjson_is_one_record_per_line() -> None:
    records = [exports.call_record(_call(id=f"call-{i}"), AS_STORED) for i in range(3)]
    lines = exports.encode("calls", "ndjson", records).split(b"\n")
    assert lines[-1] == b"" and [orjson.loads(line)["id"] for line in lines[:-1]] == [
        "call-0", "call-1", "call-2"]


def test_a_clients_view_exports_the_marked_up_cost() -> None:
    client = cost_view("organization", Decimal(25))
    agency = cost_view("agency", Decimal(25))
    assert exports.call_record(_call(cost=Decimal("0.2")), client)["cost"] == 0.25
    assert exports.call_record(_call(cost=Decimal("0.2")), agency)["cost"] == 0.2
    assert exports.call_record(_call(cost=None), client)["cost"] is None


def test_times_are_utc_with_a_z(local_time_not_utc: None) -> None:
    """Whatever the process's local time zone: an offset is converted, no offset is UTC."""
    plus_two = timezone(timedelta(hours=2))
    assert exports.instant(datetime(2026, 5, 1, 14, 30, tzinfo=plus_two)) == \
        "2026-05-01T12:30:00Z"
    assert exports.instant(datetime(2026, 5, 1, 12, 30, 0, 5)) == "2026-05-01T12:30:00.000005Z"
    assert exports.instant(None) is None


def test_a_lead_as_exported() -> None:
    lead_id = uuid.uuid4()
    record = exports.lead_record({
        "id": lead_id, "phone_number": "+14155550100", "name": "=cmd", "email": None,
        "first_call_at": T0, "last_call_at": T0, "call_count": 3, "created_at": T0})
    assert list(record) == list(exports.LEAD_COLUMNS)
    assert record["id"] == str(lead_id) and record["callCount"] == 3
    rows = _parse(exports.csv_header("leads").decode()
                  + exports.encode("leads", "csv", [record]).decode())
    assert rows == [list(exports.LEAD_COLUMNS),
                    [str(lead_id), "'+14155550100", "'=cmd", "", "2026-05-01T12:30:00Z",
                     "2026-05-01T12:30:00Z", "3", "2026-05-01T12:30:00Z"]]


def test_csv_quotes_what_needs_quoting_and_ndjson_keeps_values() -> None:
    record = exports.call_record(
        _call(summary='Said "hi",\nthen left.', cost=Decimal("-1.5")), AS_STORED)
    [row] = _parse(exports.encode("calls", "csv", [record]).decode())
    assert row[exports.CALL_COLUMNS.index("summary")] == 'Said "hi",\nthen left.'
    assert row[exports.CALL_COLUMNS.index("cost")] == "-1.5"
    [line] = exports.encode("calls", "ndjson", [record]).splitlines()
    assert orjson.loads(line) == record


@pytest.mark.parametrize(("accept", "fmt"), [
    (None, "csv"), ("*/*", "csv"), ("text/csv", "csv"), ("application/json", "csv"),
    ("application/x-ndjson", "ndjson"), ("text/csv;q=0.5, Application/X-NDJSON; q=1", "ndjson"),
    ("text/csv,application/x-ndjson", "ndjson"),
    ("application/x-ndjsonx", "csv")])
def test_the_format_asked_for(accept: str | None, fmt: str) -> None:
    assert exports.negotiate(accept) == fmt


def test_the_files_name() -> None:
    assert exports.content_disposition("calls", "csv", date(2026, 5, 1)) == \
        'attachment; filename="calls-2026-05-01.csv"'
    assert exports.filename("leads", "ndjson", date(2026, 12, 31)) == "leads-2026-12-31.ndjson"


def test_the_audited_filters_name_the_lists_parameters() -> None:
    assert exports.CallFilters().audited() == {}
    assert exports.CallFilters(call_type="vapi.websocketCall",
                               created_to=T0).audited() == {
        "direction": "vapi.websocketCall", "to": "2026-05-01T12:30:00Z"}
    assert exports.CallFilters(call_type="outboundPhoneCall", status="ended", lead_id="x",
                               created_from=T0).audited() == {
        "direction": "outbound", "status": "ended", "leadId": "x",
        "from": "2026-05-01T12:30:00Z"}


def test_filters_postgres_cannot_hold_are_400s_before_any_query() -> None:
    """Found by schemathesis on the exports, where a failing query would cut a 200 short;
    the lists answered them 500."""
    with pytest.raises(InvalidParameter, match="q"):
        params.search_term("a\x00b")
    with pytest.raises(InvalidParameter, match="from"):
        params.instant_range(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1))), None)
    with pytest.raises(InvalidParameter, match="to"):
        params.instant_range(None, datetime(9999, 12, 31, 23, tzinfo=timezone(-timedelta(hours=2))))
    assert params.instant_range(datetime(1, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
                                None) == (datetime(1, 1, 1, tzinfo=UTC), None)
