"""Webhook credential rules (contract section 3), as pure functions over headers and bytes."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ingest.auth import MAX_TIMESTAMP_SKEW_SECONDS, verify_credentials
from ingest.errors import Unauthorized

SECRET = b"s3cret-value"
BODY = b'{"message":{"type":"status-update"}}'
NOW = 1_793_718_246.0


def sign(payload: bytes, secret: bytes = SECRET) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def accepted(headers: dict[str, str], body: bytes = BODY, secrets=(SECRET,), now=NOW) -> bool:
    try:
        verify_credentials(headers, body, secrets, now=now)
    except Unauthorized:
        return False
    return True


@pytest.mark.parametrize("headers", [
    {"x-vapi-secret": "s3cret-value"},
    {"authorization": "Bearer s3cret-value"},
    {"authorization": "bearer s3cret-value"},
    {"x-vapi-signature": sign(BODY)},
    {"x-vapi-signature": "sha256=" + sign(BODY)},
    {"x-signature": sign(BODY)},
    {"x-signature": "sha256=" + sign(BODY).upper()},
    {"x-vapi-signature": sign(b"1793718240." + BODY), "x-timestamp": "1793718240"},
    {"x-signature": sign(b"1793718240123." + BODY), "x-timestamp": "1793718240123"},
])
def test_each_credential_kind_is_accepted(headers: dict[str, str]) -> None:
    assert accepted(headers)


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
def test_missing_or_wrong_credentials_are_refused(headers: dict[str, str]) -> None:
    assert not accepted(headers)


def test_signature_is_over_the_raw_bytes() -> None:
    reformatted = b'{"message": {"type": "status-update"}}'
    assert not accepted({"x-vapi-signature": sign(BODY)}, body=reformatted)


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
    assert accepted({"x-vapi-signature": sign(BODY, b"old-secret")}, secrets=secrets)
    assert accepted({"authorization": "Bearer s3cret-value"}, secrets=secrets)


def test_no_secrets_means_closed_not_open() -> None:
    assert not accepted({}, secrets=())
    assert not accepted({"x-vapi-secret": ""}, secrets=())
