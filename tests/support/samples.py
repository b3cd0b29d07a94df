"""Vapi-shaped payloads from tests/fixtures/vapi, and the SDK as an oracle of their shape."""

from __future__ import annotations

import json
import typing
from functools import cache
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vapi"


def sample(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def sample_bytes(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def webhook_samples() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json") if p.stem != "api-get-call-item")


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
