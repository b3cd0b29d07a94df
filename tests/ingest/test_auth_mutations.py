"""Every hex digit of an HMAC signature counts: one wrong digit, anywhere, or a digest cut
short, is refused (a check of the first 8 digits alone passed the older tests: issue 16);
and the timestamp rule to its edges. A signature without a timestamp is checked with
`require_timestamp=False` (else the missing timestamp alone would refuse it)."""

from __future__ import annotations

import pytest

from ingest.auth import MAX_TIMESTAMP_SKEW_SECONDS, timestamp_seconds
from tests.ingest.test_auth import BODY, NOW, accepted, sign

SIGNATURE = sign(BODY)
TIMESTAMP = "1793718240"
TIMESTAMPED = sign(TIMESTAMP.encode() + b"." + BODY)


def one_digit_off(signature: str, position: int) -> str:
    digit = signature[position]
    other = "0" if digit != "0" else "1"
    return signature[:position] + other + signature[position + 1:]


def test_the_untouched_signatures_are_accepted() -> None:
    assert accepted({"x-vapi-signature": SIGNATURE}, require_timestamp=False)
    assert accepted({"x-signature": TIMESTAMPED, "x-timestamp": TIMESTAMP})


@pytest.mark.parametrize("position", range(len(SIGNATURE)))
def test_a_signature_wrong_in_any_one_digit_is_refused(position: int) -> None:
    assert not accepted({"x-vapi-signature": one_digit_off(SIGNATURE, position)},
                        require_timestamp=False)
    assert not accepted({"x-signature": one_digit_off(TIMESTAMPED, position),
                         "x-timestamp": TIMESTAMP})


def test_a_signature_wrong_only_in_its_last_digit_is_refused() -> None:
    assert not accepted({"x-vapi-signature": "sha256=" + one_digit_off(SIGNATURE, -1 % 64)},
                        require_timestamp=False)


@pytest.mark.parametrize("digits", [0, 2, 8, 32, 62])
def test_a_digest_cut_short_is_refused(digits: int) -> None:
    assert not accepted({"x-vapi-signature": SIGNATURE[:digits]}, require_timestamp=False)
    # nor one made longer
    assert not accepted({"x-vapi-signature": SIGNATURE + "00"}, require_timestamp=False)


@pytest.mark.parametrize("raw", ["nan", "NaN", "inf", "-inf", "Infinity", "1e400"])
def test_a_timestamp_that_is_not_a_finite_number_is_refused(raw: str) -> None:
    with pytest.raises(ValueError, match="not a finite number"):
        timestamp_seconds(raw)
    assert not accepted({"x-vapi-signature": sign(raw.encode() + b"." + BODY),
                         "x-timestamp": raw})


@pytest.mark.parametrize("offset", [-MAX_TIMESTAMP_SKEW_SECONDS, MAX_TIMESTAMP_SKEW_SECONDS])
def test_a_timestamp_exactly_five_minutes_off_is_still_accepted(offset: int) -> None:
    timestamp = str(int(NOW) + offset)
    assert accepted({"x-vapi-signature": sign(timestamp.encode() + b"." + BODY),
                     "x-timestamp": timestamp})


def test_a_bearer_token_after_more_than_one_space_is_accepted() -> None:
    assert accepted({"authorization": "Bearer   s3cret-value"})
