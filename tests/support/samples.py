"""Vapi-shaped payloads from tests/fixtures/vapi (read by the test kit), and the SDK as an
oracle of their shape."""

from __future__ import annotations

import typing
from functools import cache

from calltrail_testkit.samples import sample, sample_bytes, webhook_samples

__all__ = ["assert_vapi_shaped", "sample", "sample_bytes", "webhook_samples"]


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
    """Validate `payload["message"]` with the SDK model for its own `type`."""
    message_type = payload["message"]["type"]
    model = _models_by_type().get(message_type)
    assert model is not None, f"the SDK knows no message type {message_type!r}"
    model.model_validate(payload["message"])
