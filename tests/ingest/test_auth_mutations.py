"""Every hex digit of an HMAC signature counts: one wrong digit, anywhere, or a digest cut
short, is refused. (A check of the first 8 digits alone passed the older tests: issue 16.)"""

from __future__ import annotations

import pytest

from tests.ingest.test_auth import BODY, accepted, sign

SIGNATURE = sign(BODY)
TIMESTAMP = "1793718240"
TIMESTAMPED = sign(TIMESTAMP.encode() + b"." + BODY)


def one_digit_off(signature: str, position: int) -> str:
    digit = signature[position]
    other = "0" if digit != "0" else "1"
    return signature[:position] + other + signature[position + 1:]


def test_the_untouched_signatures_are_accepted() -> None:
    assert accepted({"x-vapi-signature": SIGNATURE})
    assert accepted({"x-signature": TIMESTAMPED, "x-timestamp": TIMESTAMP})


@pytest.mark.parametrize("position", range(len(SIGNATURE)))
def test_a_signature_wrong_in_any_one_digit_is_refused(position: int) -> None:
    assert not accepted({"x-vapi-signature": one_digit_off(SIGNATURE, position)})
    assert not accepted({"x-signature": one_digit_off(TIMESTAMPED, position),
                         "x-timestamp": TIMESTAMP})


def test_a_signature_wrong_only_in_its_last_digit_is_refused() -> None:
    assert not accepted({"x-vapi-signature": "sha256=" + one_digit_off(SIGNATURE, -1 % 64)})


@pytest.mark.parametrize("digits", [0, 2, 8, 32, 62])
def test_a_digest_cut_short_is_refused(digits: int) -> None:
    assert not accepted({"x-vapi-signature": SIGNATURE[:digits]})
    assert not accepted({"x-vapi-signature": SIGNATURE + "00"})  # nor one made longer
