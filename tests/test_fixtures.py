"""Our Vapi fixtures are shaped like Vapi's payloads, per the official SDK's models."""

from __future__ import annotations

import pydantic
import pytest

from tests.support.samples import (
    assert_artifact_shaped,
    assert_vapi_shaped,
    sample,
    webhook_samples,
)


@pytest.mark.parametrize("name", webhook_samples())
def test_sample_is_vapi_shaped(name: str) -> None:
    assert_vapi_shaped(sample(name))


def test_the_oracle_refuses_a_malformed_payload() -> None:
    broken = sample("inbound-1-status-ringing")
    broken["message"]["call"] = "not an object"
    with pytest.raises(pydantic.ValidationError):
        assert_vapi_shaped(broken)


def test_the_api_call_sample_carries_structured_outputs_and_a_scorecard() -> None:
    artifact = sample("api-get-call-item")["apiCall"]["artifact"]
    assert_artifact_shaped(artifact)
    assert len(artifact["structuredOutputs"]) == 3 and len(artifact["scorecards"]) == 1
    # A report may carry them too (they are often missing from it: vapi.md).
    assert sample("outbound-5-end-of-call-report")["message"]["artifact"]["scorecards"]


@pytest.mark.parametrize("broken", [
    {"structuredOutputs": {"so-1": {"result": True}}},  # no name
    {"structuredOutputs": {"so-1": "not an object"}},
    {"scorecards": {"sc-1": {"name": "QA", "score": 1}}},  # no normalized score
    {"scorecards": {"sc-1": {"name": "QA", "score": 1, "scoreNormalized": "high",
                             "metricPoints": {}}}},
])
def test_the_oracle_refuses_malformed_outputs_and_scorecards(broken: dict) -> None:
    with pytest.raises((pydantic.ValidationError, AssertionError, KeyError)):
        assert_artifact_shaped(broken)
