"""The event envelope: the one writer and reader of event headers, and the partition rule."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from calltrail_common.envelope import (
    CALL_SNAPSHOT,
    EventEnvelope,
    caller_key,
    dead_letter_headers,
    dead_letter_reason,
    partition_of,
    replay_headers,
    retry_count,
    retry_headers,
    webhook_partition,
)
from calltrail_common.topology import CALL_PROCESSOR
from tests.support.samples import sample

envelopes = st.builds(
    EventEnvelope,
    message_id=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() == s),
    message_type=st.sampled_from(["status-update", "end-of-call-report", CALL_SNAPSHOT,
                                  "brand-new.kind"]),
    received_at_ms=st.integers(0, 253_402_300_799_999),
    endpoint_id=st.sampled_from(["shared", "ep_123", "sync"]),
    partition=st.integers(0, CALL_PROCESSOR.partitions - 1),
    org_id=st.none() | st.uuids().map(str),
    dedupe_key=st.none() | st.text(min_size=1, max_size=40).filter(
        lambda s: s.strip() == s and "\x00" not in s),
    retries=st.integers(0, 5),
)


@given(envelopes)
def test_what_the_envelope_writes_it_reads_back(envelope: EventEnvelope) -> None:
    assert EventEnvelope.read(envelope.message_id, envelope.headers()) == envelope


def test_a_snapshot_routes_as_one_and_a_webhook_by_its_type() -> None:
    snapshot = EventEnvelope("m", CALL_SNAPSHOT, 0, "sync", 3)
    assert snapshot.routing_key == "sync.call-snapshot"
    assert EventEnvelope("m", "status-update", 0, "shared", 3).routing_key == \
        "vapi.status-update"


def test_headers_of_another_producer_read_as_absent_never_as_a_failure() -> None:
    read = EventEnvelope.read(None, {"x-received-at": "not a time", "partition": "99",
                                     "x-org-id": b"  ", "x-retries": -2,
                                     "x-dedupe-key": "k\x00ey", "x-message-type": 5})
    assert (read.message_id, read.partition, read.org_id, read.retries, read.message_type) == \
        ("", 0, None, 0, "")
    assert read.dedupe_key == "key"  # NUL means nothing in a header, and Postgres refuses it
    now = dt.datetime.now(dt.UTC)
    assert abs((read.received_at - now).total_seconds()) < 5  # received now, then
    assert EventEnvelope.read("m", None).endpoint_id == "shared"


def test_a_header_number_too_long_for_a_bigint_reads_as_absent() -> None:
    """Python refuses to read an int of more than 4,300 digits; a header is anyone's input."""
    huge = "9" * 100_000
    read = EventEnvelope.read("m", {"x-received-at": huge, "x-retries": str(2**63),
                                    "partition": 1e300})
    assert (read.retries, read.partition) == (0, 0)
    assert abs((read.received_at - dt.datetime.now(dt.UTC)).total_seconds()) < 5
    assert EventEnvelope.read("m", {"x-retries": str(2**63 - 1)}).retries == 2**63 - 1


def test_a_callers_events_share_a_partition_however_the_number_is_written() -> None:
    call = {"id": "call-1", "customer": {"number": "+1 (415) 555-0123"}}
    beside = {"customer": {"number": "+14155550123"}}
    assert caller_key(call) == caller_key({"id": "call-2"}, beside) == "n:14155550123"
    assert caller_key({"id": "call-3"}) == "c:call-3"  # a web call: by its id
    assert caller_key({"id": "c", "customer": {"number": "anonymous"}}) == "c:c"
    assert caller_key({}) is None
    # A webhook and a call snapshot of one caller land on one partition, whatever call.
    inbound = sample("inbound-2-status-in-progress")["message"]
    report = sample("inbound-7-end-of-call-report")["message"]
    snapshot_call = sample("api-get-call-item")["apiCall"]
    partitions = {webhook_partition(inbound, "a"), webhook_partition(report, "b"),
                  partition_of(caller_key(snapshot_call), "c")}
    assert len(partitions) == 1


@settings(max_examples=20)
@given(st.lists(st.text(min_size=7, max_size=15, alphabet="0123456789"), min_size=400,
                max_size=400, unique=True))
def test_callers_spread_over_every_partition(numbers: list[str]) -> None:
    counts = [0] * CALL_PROCESSOR.partitions
    for number in numbers:
        counts[partition_of(f"n:{number}", "unused")] += 1
    assert min(counts) > 0  # 25 callers each on average: none left empty


def test_the_headers_of_a_failed_attempt_come_and_go() -> None:
    original = EventEnvelope("m", "status-update", 1, "ep", 7).headers()
    retried = retry_headers(retry_headers(original))
    assert retry_count(retried) == 2 and retry_count(original) == 0
    dead = dead_letter_headers(retried, "body is not valid JSON", "vapi.status-update")
    assert dead_letter_reason(dead) == "body is not valid JSON"
    assert dead_letter_reason({"x-death": [{"reason": "delivery_limit"}]}) == \
        "broker: delivery_limit"
    assert replay_headers(dead) == original  # the event's own, partition included
