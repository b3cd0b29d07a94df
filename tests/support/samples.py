"""Vapi-shaped payloads from tests/fixtures/vapi (read by the test kit), and the SDK as an
oracle of their shape."""

from __future__ import annotations

import typing
from functools import cache

from calltrail_testkit.samples import sample, sample_bytes, webhook_samples

__all__ = ["assert_artifact_shaped", "assert_vapi_shaped", "sample", "sample_bytes",
           "webhook_samples"]


@cache
def _models_by_type() -> dict[str, type]:
    from vapi.types import ServerMessage

    union = typing.get_type_hints(ServerMessage)["message"]
    models: dict[str, type] = {}
    for model in typing.get_args(union):
        field = model.model_fields.get("type")
        if field is None:
            continue
        for literal in typing.get_args(field.annotation) or (field.annotation,):
            for value in typing.get_args(literal) or (literal,):
                if isinstance(value, str):
                    models.setdefault(value, model)
    return models


def assert_vapi_shaped(payload: dict) -> None:
    """Validate `payload["message"]` with the SDK model for its own `type`, and its
    artifact's structured outputs and scorecards (`assert_artifact_shaped`)."""
    message_type = payload["message"]["type"]
    model = _models_by_type().get(message_type)
    assert model is not None, f"the SDK knows no message type {message_type!r}"
    model.model_validate(payload["message"])
    for artifact in (payload["message"].get("artifact"),
                     (payload["message"].get("call") or {}).get("artifact")):
        if isinstance(artifact, dict):
            assert_artifact_shaped(artifact)


def assert_artifact_shaped(artifact: dict) -> None:
    """The SDK types `artifact.structuredOutputs` and `artifact.scorecards` as any object:
    check their items too. A structured output is the SDK's `StructuredOutputRunResult`
    ({name, result}); a scorecard is as Vapi's scorecard docs show it (the SDK has no model
    of it): {name, score, scoreNormalized, metricPoints: {structured output id: points}}."""
    from vapi.types import Artifact, StructuredOutputRunResult

    Artifact.model_validate(artifact)
    outputs = artifact.get("structuredOutputs", {})
    assert isinstance(outputs, dict), "structuredOutputs is an object keyed by id"
    for key, item in outputs.items():
        assert isinstance(key, str) and key
        StructuredOutputRunResult.model_validate(item)
        assert isinstance(item["name"], str), key
    scorecards = artifact.get("scorecards", {})
    assert isinstance(scorecards, dict), "scorecards is an object keyed by id"
    for key, card in scorecards.items():
        assert isinstance(key, str) and key
        assert set(card) <= {"name", "score", "scoreNormalized", "metricPoints"}, key
        assert isinstance(card.get("name"), str), key
        for number in ("score", "scoreNormalized"):
            assert isinstance(card[number], int | float) and not isinstance(
                card[number], bool), (key, number)
        assert 0 <= card["scoreNormalized"] <= 100, key
        points = card["metricPoints"]
        assert isinstance(points, dict) and all(
            isinstance(p, int | float) and not isinstance(p, bool) for p in points.values())
