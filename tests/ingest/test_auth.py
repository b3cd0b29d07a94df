"""Webhook credential rules (contract section 3), as pure functions over headers and bytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.auth import MAX_TIMESTAMP_SKEW_SECONDS, check_headers, verify_credentials
from ingest.errors import Unauthorized

SECRET = b"s3cret-value"
BODY = b'{"message":{"type":"status-update"}}'
NOW = 1_793_718_246.0


def sign(payload: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def accepted(headers: dict[str, str], body: bytes = BODY, secrets=(SECRET,), now=NOW,
             require_timestamp: bool = True) -> bool:
    try:
        verify_credentials(headers, body, secrets, now=now, require_timestamp=require_timestamp)
    except Unauthorized:
        return False
    return True


def refused_before_the_body(headers: dict[str, str], secrets=(SECRET,)) -> bool:
    try:
        check_headers(headers, secrets, now=NOW, require_timestamp=True)
    except Unauthorized:
        return True
    return False


@pytest.mark.parametrize("headers", [
    {"x-vapi-secret": "s3cret-value"},
    {"authorization": "Bearer s3cret-value"},
    {"authorization": "bearer s3cret-value"},
    {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": "1793718240"},
    {"x-vapi-signature": "sha256=" + sign(b"1793718240." + BODY), "x-timestamp": "1793718240"},
    {"x-signature": sign(b"1793718240123." + BODY), "x-timestamp": "1793718240123"},
    {"x-signature": "sha256=" + sign(b"1793718240." + BODY).upper(),
     "x-timestamp": "1793718240"},
])
def test_each_credential_kind_is_accepted(headers: dict[str, str]) -> None:
    assert accepted(headers)


@pytest.mark.parametrize("headers", [
    {"x-vapi-signature": sign(BODY)},
    {"x-vapi-signature": "sha256=" + sign(BODY)},
    {"x-signature": sign(BODY)},
    {"x-signature": "sha256=" + sign(BODY).upper()},
])
def test_an_hmac_without_a_timestamp_is_accepted_only_when_timestamps_are_not_required(
        headers: dict[str, str]) -> None:
    assert not accepted(headers)
    assert refused_before_the_body(headers)
    assert accepted(headers, require_timestamp=False)
    assert not accepted(headers, body=BODY + b" ", require_timestamp=False)


@pytest.mark.parametrize("headers", [
    {},
    {"x-vapi-secret": "wrong"},
    {"x-vapi-secret": "s3cret-valuE"},
    {"authorization": "Bearer wrong"},
    {"authorization": "Basic s3cret-value"},
    {"authorization": "s3cret-value"},
    {"x-vapi-signature": sign(BODY, b"other-secret")},
    {"x-vapi-signature": "not-hex"},
    {"x-vapi-signature": ""},
    # Signed over the body alone while a timestamp is sent: the payload must be ts.body.
    {"x-vapi-signature": sign(BODY), "x-timestamp": "1793718240"},
    {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": "soon"},
])
@pytest.mark.parametrize("require_timestamp", [True, False])
def test_missing_or_wrong_credentials_are_refused(headers: dict[str, str],
                                                  require_timestamp: bool) -> None:
    assert not accepted(headers, require_timestamp=require_timestamp)


def test_signature_is_over_the_raw_bytes() -> None:
    reformatted = b'{"message": {"type": "status-update"}}'
    headers = {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": "1793718240"}
    assert not accepted(headers, body=reformatted)


@pytest.mark.parametrize("headers", [
    {},
    {"content-type": "application/json"},
    {"x-vapi-secret": "wrong"},
    {"authorization": "Bearer wrong"},
    {"authorization": "Basic s3cret-value"},
    {"x-vapi-signature": "not-hex", "x-timestamp": "1793718240"},
    {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": "soon"},
    {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": str(int(NOW) - 6 * 60)},
])
def test_what_cannot_match_is_refused_before_the_body(headers: dict[str, str]) -> None:
    assert refused_before_the_body(headers)


def test_a_header_secret_needs_no_body_and_a_signature_waits_for_it() -> None:
    assert check_headers({"x-vapi-secret": "s3cret-value"}, (SECRET,), now=NOW,
                         require_timestamp=True) is None
    assert check_headers({"authorization": "Bearer s3cret-value"}, (SECRET,), now=NOW,
                         require_timestamp=True) is None
    pending = check_headers({"x-vapi-secret": "wrong", "x-signature": sign(b"1." + BODY),
                             "x-timestamp": str(int(NOW))}, (SECRET,), now=NOW,
                            require_timestamp=True)
    assert pending is not None
    assert pending.timestamp == str(int(NOW))


@pytest.mark.parametrize(("offset", "ok"), [
    (-6 * 60, False), (6 * 60, False),
    (-MAX_TIMESTAMP_SKEW_SECONDS + 1, True), (MAX_TIMESTAMP_SKEW_SECONDS - 1, True),
])
@pytest.mark.parametrize("unit", [1, 1000])
def test_timestamp_more_than_five_minutes_off_is_refused(offset: int, ok: bool,
                                                         unit: int) -> None:
    timestamp = str(int((NOW + offset) * unit))
    headers = {"x-vapi-signature": sign(timestamp.encode() + b"." + BODY),
               "x-timestamp": timestamp}
    assert accepted(headers) is ok


def test_any_secret_of_a_rotation_list_is_accepted() -> None:
    secrets = (b"old-secret", SECRET)
    assert accepted({"x-vapi-secret": "old-secret"}, secrets=secrets)
    assert accepted({"x-vapi-signature": sign(b"1793718240." + BODY, b"old-secret"),
                     "x-timestamp": "1793718240"}, secrets=secrets)
    assert accepted({"authorization": "Bearer s3cret-value"}, secrets=secrets)


def test_no_secrets_means_closed_not_open() -> None:
    assert not accepted({}, secrets=())
    assert not accepted({"x-vapi-secret": ""}, secrets=())
    assert refused_before_the_body({"x-vapi-secret": "anything"}, secrets=())
