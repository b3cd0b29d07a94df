"""The one phone-number normalization: how each way of writing a number reads."""

from __future__ import annotations

import pytest

from calltrail_common.e164 import to_e164


@pytest.mark.parametrize(("raw", "strict", "bare_digits"), [
    ("+14155550123", "+14155550123", "+14155550123"),
    ("  +1 (415) 555-0123 ", "+14155550123", "+14155550123"),
    ("+1-415-555-0123", "+14155550123", "+14155550123"),
    ("+44 20 7183 8750", "+442071838750", "+442071838750"),
    # Digits alone: a caller's number as Vapi may report it, never a registered number.
    ("14155550123", None, "+14155550123"),
    ("1 415 555 0123", None, "+14155550123"),
    # Text before the number is not a number, however it reads.
    ("tel:+14155550123", None, None),
    ("abc+14155550123", None, None),
    ("sip:+14155550123@sip.vapi.ai", None, None),
    ("(415) 555-0123", None, None),
    ("anonymous", None, None),
    ("+1", None, None),
    ("", None, None),
    ("   ", None, None),
    (None, None, None),
    (14155550123, None, None),
    ({"number": "+14155550123"}, None, None),
])
def test_how_each_way_of_writing_a_number_reads(raw: object, strict: str | None,
                                                 bare_digits: str | None) -> None:
    assert to_e164(raw) == strict
    assert to_e164(raw, bare_digits=True) == bare_digits
