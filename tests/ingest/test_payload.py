"""What ingest reads of a body: message.type (required) and the dedupe key."""

from __future__ import annotations

import pytest

from ingest.errors import InvalidPayload
from ingest.payload import read_envelope
from tests.support.samples import sample_bytes


def test_status_update_dedupes_on_call_type_and_status() -> None:
    envelope = read_envelope(sample_bytes("inbound-1-status-ringing"))
    assert envelope.message_type == "status-update"
    assert envelope.dedupe_key == "db5b5fab-8f4d-4e27-9da1-494c73cf256d:status-update:ringing"


def test_end_of_call_report_dedupes_on_call_and_type() -> None:
    envelope = read_envelope(sample_bytes("inbound-7-end-of-call-report"))
    assert envelope.dedupe_key == "db5b5fab-8f4d-4e27-9da1-494c73cf256d:end-of-call-report"


def test_event_without_call_has_no_dedupe_key() -> None:
    assert read_envelope(b'{"message":{"type":"chat.created"}}').dedupe_key is None


@pytest.mark.parametrize("body", [
    b"", b"not json", b"[1,2]", b'"text"', b"{}", b'{"message": null}',
    b'{"message": {}}', b'{"message": {"type": 3}}', b'{"message": {"type": ""}}',
    b'{"message": {"type": "status-update"}', b"\xff\xfe",
])
def test_bodies_without_a_message_type_are_invalid(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        read_envelope(body)
