"""Every field the parser reads, where it reads it from and with which authority (issue 16,
mutation testing: the named shapes of test_events.py left most field mappings untested).

Each message below gives every field a distinct value, in every place Vapi may put it, so
that reading one field from another's place, or one place before another, shows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from call_processor.calls import REPORT, SNAPSHOT
from call_processor.events import (
    NO_ROUTING,
    PoisonMessage,
    archived_chatter,
    parse_event,
    parse_snapshot_bundle,
    parse_time,
)
from calltrail_common.snapshots import CALL_SNAPSHOT, CALL_SNAPSHOTS

T0 = dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)


def at(seconds: int) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: int) -> str:
    return at(seconds).isoformat().replace("+00:00", "Z")


def the_call(**changes: Any) -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": "call-1", "type": "inboundPhoneCall", "orgId": "vapi-org",
        "createdAt": iso(0), "startedAt": iso(1), "endedAt": iso(2),
        "endedReason": "call-said-ended", "cost": 0.5,
        "costBreakdown": {"llm": 0.25}, "costs": [{"type": "vapi", "cost": 0.5}],
        "phoneNumberId": "pn-1", "assistantId": "as-1",
        "customer": {"number": "+1 415 555 0100", "name": "Call Name"},
        "metadata": {"b": "call", "c": "call"},
        "assistantOverrides": {"metadata": {"c": "overrides", "orgId": "org-in-overrides"}},
        "status": "ended", "updatedAt": iso(9),
    }
    call.update(changes)
    return call


def body(message: dict[str, Any]) -> bytes:
    return orjson.dumps({"message": message})


def values(message: dict[str, Any]) -> dict[str, tuple[Any, int]]:
    event = parse_event(body(message))
    assert event.observation is not None
    return dict(event.observation.values)


def test_a_status_update_reads_the_call_and_what_is_beside_it() -> None:
    message = {
        "type": "status-update", "status": " in-progress ", "timestamp": 1_763_805_600_000,
        "endedReason": "message-said-ended",
        "customer": {"number": "+1 415 555 0199", "name": "Beside", "email": "b@example.com"},
        "assistant": {"metadata": {"a": "assistant", "b": "assistant", "orgId": "org-a"}},
        "phoneNumber": {"number": "+1 (415) 555-0111"},
        "call": the_call(),
    }
    event = parse_event(body(message))
    observation = event.observation
    assert observation is not None
    assert (observation.call_id, observation.status, observation.is_report) == (
        "call-1", "in-progress", False)
    assert observation.event_ms == 1_763_805_600_000
    assert event.call_id == "call-1" and event.message_type == "status-update"
    assert dict(observation.values) == {
        "direction": ("inboundPhoneCall", SNAPSHOT),
        "created_at": (at(0), SNAPSHOT),
        # The call's customer object wins over the one beside it, field by field.
        "customer_number": ("+14155550100", SNAPSHOT),
        "customer_name": ("Call Name", SNAPSHOT),
        "customer_email": ("b@example.com", SNAPSHOT),
        "phone_number_id": ("pn-1", SNAPSHOT),
        "assistant_id": ("as-1", SNAPSHOT),
        # Later places win: the assistant's, then the call's, then the overrides'.
        "metadata": ({"a": "assistant", "b": "call", "c": "overrides",
                      "orgId": "org-in-overrides"}, SNAPSHOT),
        "started_at": (at(1), SNAPSHOT),
        "ended_at": (at(2), SNAPSHOT),
        "ended_reason": ("message-said-ended", SNAPSHOT),
        "cost": (Decimal("0.5"), SNAPSHOT),
        "cost_breakdown": ({"llm": 0.25}, SNAPSHOT),
        "costs": ([{"type": "vapi", "cost": 0.5}], SNAPSHOT),
    }
    routing = event.routing
    assert routing.metadata_org_ids == ("org-in-overrides", "org-a")
    assert routing.phone_number_id == "pn-1"
    assert routing.dialled_number == "+14155550111"
    assert routing.vapi_org_id == "vapi-org"


def test_a_status_updates_ended_reason_falls_back_to_the_calls() -> None:
    message = {"type": "status-update", "status": "ended", "call": the_call()}
    assert values(message)["ended_reason"] == ("call-said-ended", SNAPSHOT)


def test_a_report_reads_artifact_and_analysis_first_with_a_reports_authority() -> None:
    message = {
        "type": "end-of-call-report", "timestamp": iso(5), "status": "ignored",
        "endedReason": "report-said-ended", "startedAt": iso(11), "endedAt": iso(12),
        "cost": "0.75", "costBreakdown": {"tts": 0.5}, "costs": [{"type": "tts"}],
        "artifact": {"transcript": " AI: Hi ", "recordingUrl": "https://r/mono",
                     "stereoRecordingUrl": "https://r/stereo"},
        "analysis": {"summary": "Analysed", "structuredData": {"name": "Ana"},
                     "successEvaluation": True},
        "transcript": "top-level transcript", "summary": "top-level summary",
        "structuredData": {"name": "top"}, "successEvaluation": "false",
        "recordingUrl": "https://top/mono", "stereoRecordingUrl": "https://top/stereo",
        "call": the_call(),
    }
    event = parse_event(body(message))
    observation = event.observation
    assert observation is not None
    assert observation.is_report and observation.status is None
    assert observation.event_ms == int(at(5).timestamp() * 1000)
    got = dict(observation.values)
    assert {name: got[name] for name in (
        "ended_reason", "started_at", "ended_at", "cost", "cost_breakdown", "costs",
        "transcript", "summary", "structured_data", "success_evaluation", "recording_url",
        "stereo_recording_url")} == {
        "ended_reason": ("report-said-ended", REPORT),
        "started_at": (at(11), REPORT),
        "ended_at": (at(12), REPORT),
        "cost": (Decimal("0.75"), REPORT),
        "cost_breakdown": ({"tts": 0.5}, REPORT),
        "costs": ([{"type": "tts"}], REPORT),
        "transcript": ("AI: Hi", REPORT),
        "summary": ("Analysed", REPORT),
        "structured_data": ({"name": "Ana"}, REPORT),
        "success_evaluation": ("true", REPORT),
        "recording_url": ("https://r/mono", REPORT),
        "stereo_recording_url": ("https://r/stereo", REPORT),
    }
    assert got["direction"] == ("inboundPhoneCall", SNAPSHOT)


def test_an_older_report_falls_back_to_its_top_level_fields() -> None:
    message = {
        "type": "end-of-call-report", "artifact": {"recording": {
            "mono": {"combinedUrl": "https://nested/mono"}, "stereoUrl": "https://nested/st"}},
        "analysis": {},
        "transcript": "top-level transcript", "summary": "top-level summary",
        "structuredData": {"name": "top"}, "successEvaluation": 7,
        "recordingUrl": "https://top/mono", "stereoRecordingUrl": "https://top/stereo",
        "call": the_call(cost=None, costBreakdown=None, costs=None, endedReason=None),
    }
    got = values(message)
    assert got["transcript"] == ("top-level transcript", REPORT)
    assert got["summary"] == ("top-level summary", REPORT)
    assert got["structured_data"] == ({"name": "top"}, REPORT)
    assert got["success_evaluation"] == ("7", REPORT)
    assert got["recording_url"] == ("https://nested/mono", REPORT)
    assert got["stereo_recording_url"] == ("https://nested/st", REPORT)
    message["artifact"] = {}
    got = values(message)
    assert got["recording_url"] == ("https://top/mono", REPORT)
    assert got["stereo_recording_url"] == ("https://top/stereo", REPORT)
    # What the report does not say keeps the call's own value, at a call's authority.
    assert got["started_at"] == (at(1), SNAPSHOT)
    assert "cost" not in got and "ended_reason" not in got


@pytest.mark.parametrize(("evaluation", "expected"), [
    (True, "true"), (False, "false"), (0, "0"), (0.5, "0.5"), (" pass ", "pass"), ("", None),
    (None, None), ({"x": 1}, None)])
def test_a_success_evaluation_as_text(evaluation: Any, expected: str | None) -> None:
    message = {"type": "end-of-call-report", "analysis": {"successEvaluation": evaluation},
               "call": the_call()}
    assert values(message).get("success_evaluation") == (
        None if expected is None else (expected, REPORT))


def snapshot_bundle(*calls: dict[str, Any], timestamp: int = 1_763_805_000_000) -> bytes:
    return orjson.dumps({"message": {"type": CALL_SNAPSHOTS, "calls": [
        {"timestamp": timestamp, "call": call} for call in calls]}})


def test_a_snapshot_is_the_call_as_vapi_stored_it_at_its_update() -> None:
    call = the_call(artifact={"transcript": "From the call"},
                    analysis={"summary": "Call summary", "successEvaluation": "true"},
                    customer={"number": "+14155550100", "email": "c@example.com"})
    events, unusable = parse_snapshot_bundle(snapshot_bundle(call))
    assert unusable == 0
    (event,) = events
    assert event.message_type == CALL_SNAPSHOT and event.call_id == "call-1"
    observation = event.observation
    assert observation is not None
    assert not observation.is_report and observation.status == "ended"
    assert observation.event_ms == int(at(9).timestamp() * 1000)  # its updatedAt
    got = dict(observation.values)
    assert got["transcript"] == ("From the call", SNAPSHOT)
    assert got["summary"] == ("Call summary", SNAPSHOT)
    assert got["success_evaluation"] == ("true", SNAPSHOT)
    assert got["ended_reason"] == ("call-said-ended", SNAPSHOT)
    assert got["cost"] == (Decimal("0.5"), SNAPSHOT)
    assert got["customer_email"] == ("c@example.com", SNAPSHOT)
    assert event.routing.metadata_org_ids == ()  # a bundle's organization is decided


def test_a_snapshot_without_an_update_time_takes_the_bundles() -> None:
    (event,), _ = parse_snapshot_bundle(snapshot_bundle(the_call(updatedAt=None),
                                                        timestamp=1_763_805_000_123))
    assert event.observation is not None and event.observation.event_ms == 1_763_805_000_123


def test_a_bundle_leaves_out_calls_it_cannot_read_and_counts_them() -> None:
    good = the_call(id="good")
    events, unusable = parse_snapshot_bundle(snapshot_bundle(
        good, the_call(id=""), the_call(id="x\x00y"), the_call(id=None), the_call(id="ok-2")))
    assert [e.call_id for e in events] == ["good", "ok-2"]
    assert unusable == 3


@pytest.mark.parametrize("document", [
    {"message": {"type": "call-snapshot", "calls": []}},
    {"message": {"type": CALL_SNAPSHOTS, "calls": {}}},
    {"message": {"type": CALL_SNAPSHOTS}},
    {"message": {}}, [], "bundle",
])
def test_what_is_not_a_bundle_is_poison(document: Any) -> None:
    with pytest.raises(PoisonMessage, match=r"^not a bundle of call snapshots$"):
        parse_snapshot_bundle(orjson.dumps(document))


@pytest.mark.parametrize(("message", "reason"), [
    ({"call": the_call()}, "message.type is missing"),
    ({"type": "  ", "call": the_call()}, "message.type is missing"),
    ({"type": "status-update", "call": the_call(id=None)}, "status-update without call.id"),
    ({"type": "end-of-call-report", "call": the_call(id="a\x00b")},
     "end-of-call-report with an unusable call.id"),
    ({"type": "status-update", "call": the_call(id="x" * 256)},
     "status-update with an unusable call.id"),
])
def test_a_call_event_without_a_usable_call_id_is_poison(message: dict[str, Any],
                                                         reason: str) -> None:
    with pytest.raises(PoisonMessage, match=f"^{reason}$"):
        parse_event(body(message))
    assert parse_event(body({"type": "status-update", "call": the_call(
        id="x" * 255)})).call_id == "x" * 255


def test_a_body_that_is_not_json_is_poison_saying_so() -> None:
    with pytest.raises(PoisonMessage, match=r"^body is not valid JSON$"):
        parse_event(b"{not json")


def test_chatter_takes_the_call_from_its_dedupe_key() -> None:
    event = archived_chatter("speech-update", "call-9:speech-update")
    assert (event.message_type, event.call_id, event.observation) == (
        "speech-update", "call-9", None)
    assert archived_chatter("hang", None).call_id is None
    assert archived_chatter("hang", ":hang").call_id is None


def test_text_loses_nul_and_surrounding_space_and_json_loses_nul() -> None:
    message = {"type": "end-of-call-report",
               "analysis": {"summary": " a\x00b ", "structuredData": {
                   "k\x00": ["v\x00", {"n\x00": "x\x00"}, 1, None]}},
               "costBreakdown": {}, "call": the_call()}
    got = values(message)
    assert got["summary"] == ("ab", REPORT)
    assert got["structured_data"] == ({"k": ["v", {"n": "x"}, 1, None]}, REPORT)
    assert "cost_breakdown" in got and got["cost_breakdown"] == ({"llm": 0.25}, SNAPSHOT)


@pytest.mark.parametrize(("cost", "expected"), [
    (0.1, Decimal("0.1")), ("0.30000000000000004", Decimal("0.300000000000")),
    (999_999_999_999, Decimal("999999999999")), (1_000_000_000_000, None),
    ("NaN", None), ("Infinity", None), (True, None), ("cheap", None), ([1], None)])
def test_money_is_exact_bounded_and_finite(cost: Any, expected: Decimal | None) -> None:
    got = values({"type": "status-update", "call": the_call(cost=cost)}).get("cost")
    assert got == (None if expected is None else (expected, SNAPSHOT))


@pytest.mark.parametrize(("value", "expected"), [
    (1_763_805_600_000, dt.datetime(2025, 11, 22, 10, tzinfo=dt.UTC)),
    ("2026-11-22T10:00:00", T0), ("2026-11-22T12:00:00+02:00", T0),
    (True, None), (None, None), ("", None), ("soon", None), (10**20, None),
    ("0001-01-01T00:00:00Z", None), ("9999-12-31T00:00:00Z", None),
    ("0001-01-02T00:00:00Z", dt.datetime(1, 1, 2, tzinfo=dt.UTC))])
def test_an_instant_is_iso_text_or_epoch_milliseconds_within_what_postgres_keeps(
        value: Any, expected: dt.datetime | None) -> None:
    assert parse_time(value) == expected


def test_a_reports_call_keeps_its_own_ended_reason_when_the_report_has_none() -> None:
    got = values({"type": "end-of-call-report", "call": the_call()})
    assert got["ended_reason"] == ("call-said-ended", SNAPSHOT)


def test_numbers_given_as_digits_alone_are_read_as_international() -> None:
    message = {"type": "status-update", "status": "ringing",
               "phoneNumber": {"number": "14155550111"},
               "call": the_call(customer={"number": "14155550100"})}
    event = parse_event(body(message))
    assert event.observation is not None
    assert event.observation.values["customer_number"] == ("+14155550100", SNAPSHOT)
    assert event.routing.dialled_number == "+14155550111"


def test_a_single_snapshot_finds_what_webhooks_put_beside_the_call_inside_it() -> None:
    call = the_call(phoneNumber={"number": "+14155550111"}, customer={"name": "Inside"},
                    assistant={"metadata": {"orgId": "org-of-assistant", "x": "y"}},
                    assistantOverrides=None, metadata=None)
    message = {"type": CALL_SNAPSHOT, "customer": {"name": "Beside"},
               "phoneNumber": {"number": "+14155550199"}, "call": call}
    event = parse_event(body(message))
    assert event.routing.dialled_number == "+14155550111"
    assert event.routing.metadata_org_ids == ("org-of-assistant",)
    assert event.observation is not None
    assert event.observation.values["metadata"] == (
        {"orgId": "org-of-assistant", "x": "y"}, SNAPSHOT)
    assert event.observation.values["customer_name"] == ("Inside", SNAPSHOT)


def test_chatter_has_no_routing_to_look_up() -> None:
    assert archived_chatter("speech-update", "c:speech-update").routing == NO_ROUTING


@pytest.mark.parametrize(("cost", "text"), [(0.5, "0.5"), ("1.20", "1.20"), (3, "3"),
                                            ("0.000000000001", "1E-12")])
def test_money_keeps_the_digits_vapi_wrote(cost: Any, text: str) -> None:
    got = values({"type": "status-update", "call": the_call(cost=cost)})["cost"]
    assert str(got[0]) == text


def test_the_latest_instant_postgres_keeps_is_kept() -> None:
    assert parse_time("9999-12-30T00:00:00Z") == dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


@pytest.mark.usefixtures("local_time_not_utc")
@pytest.mark.parametrize("text", ["2026-11-22T10:00:00", "2026-11-22T05:00:00-05:00"])
def test_an_instant_is_utc_whatever_the_processs_local_time(text: str) -> None:
    moment = parse_time(text)
    assert moment == T0 and moment is not None and moment.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("url", [
    "javascript:alert(document.cookie)", "JavaScript:alert(1)", " javascript:alert(1)",
    "java\nscript:alert(1)", "data:text/html;base64,PHNjcmlwdD4=", "http://r/mono",
    "vbscript:msgbox(1)", "//evil.example/mono", "https:/no-host", "https://", "ftp://r/x",
    "https://r/mono\\@evil", "https://r/a b",
])
def test_a_recording_url_that_is_not_https_is_dropped_and_logged_by_call_id(url: str) -> None:
    message = {"type": "end-of-call-report", "artifact": {"recordingUrl": url,
                                                         "stereoRecordingUrl": url},
               "recordingUrl": url, "call": the_call()}
    with capture_logs() as logs:
        got = values(message)
    assert "recording_url" not in got and "stereo_recording_url" not in got
    assert logs and {entry["event"] for entry in logs} == {"recording_url_dropped"}
    assert {entry["call_id"] for entry in logs} == {"call-1"}
    assert url.strip() not in repr(logs)  # never the URL


def test_a_bad_recording_url_falls_back_to_the_next_place_that_is_https() -> None:
    message = {"type": "end-of-call-report",
               "artifact": {"recordingUrl": "javascript:alert(1)",
                            "recording": {"mono": {"combinedUrl": "https://nested/mono"}}},
               "call": the_call()}
    assert values(message)["recording_url"] == ("https://nested/mono", REPORT)
    snapshot = {"type": CALL_SNAPSHOT, "call": the_call(
        recordingUrl="javascript:alert(1)", stereoRecordingUrl="HTTPS://r/stereo")}
    got = values(snapshot)
    assert "recording_url" not in got
    assert got["stereo_recording_url"] == ("HTTPS://r/stereo", SNAPSHOT)


@pytest.mark.parametrize(("place", "message"), [
    ("artifact.recordingUrl", {"artifact": {"recordingUrl": "http://r/x"}}),
    ("artifact.recording.mono.combinedUrl",
     {"artifact": {"recording": {"mono": {"combinedUrl": "http://r/x"}}}}),
    ("recordingUrl", {"recordingUrl": "http://r/x"}),
    ("artifact.stereoRecordingUrl", {"artifact": {"stereoRecordingUrl": "http://r/x"}}),
    ("artifact.recording.stereoUrl", {"artifact": {"recording": {"stereoUrl": "http://r/x"}}}),
    ("stereoRecordingUrl", {"stereoRecordingUrl": "http://r/x"}),
])
def test_a_dropped_recording_url_is_logged_with_the_field_it_came_in(
        place: str, message: dict[str, Any]) -> None:
    with capture_logs() as logs:
        got = values({"type": "end-of-call-report", "call": the_call(), **message})
    assert "recording_url" not in got and "stereo_recording_url" not in got
    assert logs == [{"event": "recording_url_dropped", "log_level": "warning",
                     "call_id": "call-1", "field": place}]


def test_a_snapshots_dropped_recording_url_is_logged_by_its_call_id() -> None:
    with capture_logs() as logs:
        values({"type": CALL_SNAPSHOT, "call": the_call(id="call-7",
                                                         recordingUrl="http://r/x")})
    assert logs == [{"event": "recording_url_dropped", "log_level": "warning",
                     "call_id": "call-7", "field": "recordingUrl"}]


@pytest.mark.parametrize("url", [
    "https://r/take!1.wav",         # "!" is the first printable character: kept
    "https://r/X-mono.wav",         # and so is any letter
    "https://r/a~b-c_d.wav?x=1&y=%20#t",
])
def test_an_https_recording_url_with_any_printable_character_but_a_backslash_is_kept(
        url: str) -> None:
    with capture_logs() as logs:
        got = values({"type": "end-of-call-report", "call": the_call(),
                      "artifact": {"recordingUrl": url}})
    assert got["recording_url"] == (url, REPORT)
    assert logs == []


def test_a_recording_url_that_cannot_be_read_as_a_url_is_dropped() -> None:
    with capture_logs() as logs:
        got = values({"type": "end-of-call-report", "call": the_call(),
                      "artifact": {"recordingUrl": "https://[::1/x.wav"}})
    assert "recording_url" not in got
    assert [entry["field"] for entry in logs] == ["artifact.recordingUrl"]
