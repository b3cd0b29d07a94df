"""Reading Vapi's shapes: legacy reports, ISO timestamps, web calls, numbers; poison."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import orjson
import pytest

from call_processor.calls import REPORT
from call_processor.events import PoisonMessage, parse_event, parse_time
from calltrail_common.e164 import to_e164
from tests.support.samples import sample, sample_bytes


def test_end_of_call_report_reads_artifact_and_analysis_with_authority() -> None:
    event = parse_event(sample_bytes("inbound-7-end-of-call-report"))
    values = event.observation.values
    assert values["ended_reason"] == ("customer-ended-call", REPORT)
    assert values["cost"] == (Decimal("0.2134"), REPORT)
    assert values["summary"][0].startswith("Caller asked about a repair estimate")
    assert values["recording_url"][0].endswith("-mono.wav")
    assert values["stereo_recording_url"][0].endswith("-stereo.wav")
    assert values["structured_data"][0] == {"name": "Ana Ruiz", "email": "dana@example.com"}
    assert values["success_evaluation"] == ("true", REPORT)
    assert values["customer_number"][0] == "+14155550123"
    assert event.observation.is_report and event.observation.event_ms == 1793718350500


def test_legacy_report_falls_back_to_top_level_fields() -> None:
    event = parse_event(sample_bytes("legacy-end-of-call-report"))
    values = event.observation.values
    assert values["transcript"][0].startswith("AI: schedule estimate")
    assert values["summary"][0].startswith("Caller asked")
    assert values["recording_url"][0].endswith("-mono.wav")


def test_artifact_wins_over_legacy_top_level_in_one_report() -> None:
    payload = sample("inbound-7-end-of-call-report")
    payload["message"]["transcript"] = "old transcript"
    event = parse_event(orjson.dumps(payload))
    assert event.observation.values["transcript"][0].startswith("AI: schedule")


def test_iso_string_timestamps_are_read_like_epoch_milliseconds() -> None:
    payload = sample("inbound-2-status-in-progress")
    payload["message"]["timestamp"] = "2026-11-03T15:04:06.000Z"
    iso = parse_event(orjson.dumps(payload)).observation.event_ms
    payload["message"]["timestamp"] = 1793718246000
    assert iso == parse_event(orjson.dumps(payload)).observation.event_ms == 1793718246000
    assert parse_time("2026-11-03T15:04:06") == dt.datetime(2026, 11, 3, 15, 4, 6, tzinfo=dt.UTC)
    assert parse_time("not a time") is None and parse_time(True) is None


def test_a_missing_timestamp_is_tolerated() -> None:
    payload = sample("inbound-1-status-ringing")
    del payload["message"]["timestamp"]
    assert parse_event(orjson.dumps(payload)).observation.event_ms == 0


def test_web_call_has_no_numbers() -> None:
    event = parse_event(sample_bytes("webcall-end-of-call-report"))
    assert event.observation.values["direction"][0] == "webCall"
    assert "customer_number" not in event.observation.values
    assert event.routing.dialled_number is None and event.routing.phone_number_id is None


def test_routing_reads_metadata_in_vapi_order_and_numbers() -> None:
    payload = sample("outbound-1-status-queued")
    payload["message"]["call"]["metadata"] = {"organizationId": "second"}
    payload["message"]["assistant"] = {"metadata": {"orgId": "third"}}
    routing = parse_event(orjson.dumps(payload)).routing
    assert routing.metadata_org_ids == ("REPLACE-WITH-ORG-ID", "second", "third")
    assert routing.phone_number_id == "61b339ff-2481-44e5-998b-88dbaa99e079"
    assert routing.dialled_number == "+14155559876"
    assert routing.vapi_org_id == "7d3e2a10-6c1b-4f0e-9a55-2f4be1c0a001"


def test_chatter_is_not_a_call_observation() -> None:
    event = parse_event(sample_bytes("inbound-3-speech-update"))
    assert event.observation is None and event.call_id is not None


@pytest.mark.parametrize(("body", "reason"), [
    (b"not json", "not valid JSON"),
    (b'{"message": {}}', "message.type"),
    (b'{"message": {"type": "status-update", "status": "ringing"}}', "without call.id"),
    (b'{"message": {"type": "end-of-call-report", "call": {"id": ""}}}', "without call.id"),
])
def test_messages_that_can_never_be_processed_are_poison(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        parse_event(body)


@pytest.mark.parametrize(("raw", "e164"), [
    ("+14155550123", "+14155550123"),
    ("+1 (415) 555-0123", "+14155550123"),
    ("+1-415-555-0123", "+14155550123"),
    ("14155550123", "+14155550123"),
    ("+44 20 7183 8750", "+442071838750"),
    ("sip:alice@example.com", None),
    ("anonymous", None),
    ("", None),
    (None, None),
    ("+1", None),
])
def test_numbers_normalize_to_e164(raw, e164) -> None:
    assert to_e164(raw, bare_digits=True) == e164  # a caller's number, as events are read
