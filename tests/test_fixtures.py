"""Our Vapi fixtures are shaped like Vapi's payloads, per the official SDK's models."""

from __future__ import annotations

import pydantic
import pytest

from tests.support.samples import assert_vapi_shaped, sample, webhook_samples


@pytest.mark.parametrize("name", webhook_samples())
def test_sample_is_vapi_shaped(name: str) -> None:
    assert_vapi_shaped(sample(name))


def test_the_oracle_refuses_a_malformed_payload() -> None:
    broken = sample("inbound-1-status-ringing")
    broken["message"]["call"] = "not an object"
    with pytest.raises(pydantic.ValidationError):
        assert_vapi_shaped(broken)
