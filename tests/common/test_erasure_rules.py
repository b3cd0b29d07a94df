"""The pure rules of erasure and retention (calltrail_common.erasure, decision 44): which
fields a call keeps withheld, what stands for an erased number, and how a retention is read.
The database side is proven on `pg_dump` in tests/call_processor/test_erasure.py."""

from __future__ import annotations

import uuid

import pytest

from calltrail_common.erasure import (
    PERSONAL_FIELDS,
    RETAINED_CONTENT,
    erased_number,
    parse_retention,
    withheld_fields,
)


def test_an_erased_call_withholds_everything_personal_and_a_purged_one_its_content() -> None:
    assert withheld_fields(False, False) == frozenset()
    assert withheld_fields(True, False) == PERSONAL_FIELDS
    assert withheld_fields(False, True) == RETAINED_CONTENT == frozenset(
        {"transcript", "recording_url", "stereo_recording_url"})
    assert withheld_fields(True, True) == PERSONAL_FIELDS | RETAINED_CONTENT
    assert "summary" not in withheld_fields(False, True)  # retention keeps summaries


def test_an_erased_number_names_the_lead_and_no_number() -> None:
    lead = uuid.UUID("00000000-0000-0000-0000-00000000002a")
    assert erased_number(lead) == "erased:00000000-0000-0000-0000-00000000002a"


@pytest.mark.parametrize(("written", "days"), [
    (None, None), ("", None), ("  ", None), ("forever", None), (" Forever ", None),
    ("1", 1), (" 30 ", 30), (90, 90), ("36500", 36500)])
def test_a_retention_is_days_or_forever(written: str | int | None, days: int | None) -> None:
    assert parse_retention(written) == days


RANGE = "retention must be between 1 and 36500 days"
NOT_DAYS = "retention must be a number of days or 'forever'"


@pytest.mark.parametrize(("written", "message"), [
    ("0", RANGE), ("36501", RANGE), (-5, RANGE), ("thirty", NOT_DAYS), ("1.5", NOT_DAYS)])
def test_any_other_retention_is_refused_with_why(written: str | int, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_retention(written)
    assert str(refused.value) == message
