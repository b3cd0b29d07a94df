"""Ingest's OpenAPI 3.1 document, built from the app's route table and these models.

Ingest is plain ASGI (no FastAPI on the webhook path), so the document is assembled here:
the paths come from `app.py`'s routes, the bodies from the pydantic models below, the
answers from `ingest.errors`. Built once when the app is created, served at
`GET /openapi.json`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from ingest.errors import (
    IngestError,
    InvalidPayload,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnknownEndpoint,
    UnsupportedMediaType,
)


class WebhookCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = Field(None, description="Vapi's call id: with `type` and `status`, the "
                                             "dedupe key of the event")


class WebhookMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = Field(description="Any Vapi message type, known or not")
    status: str | None = None
    call: WebhookCall | None = None


class VapiWebhook(BaseModel):
    """A Vapi server message. Only `message.type` is required; the rest travels unchanged."""

    model_config = ConfigDict(extra="allow")
    message: WebhookMessage


class Accepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ok: Literal[True]


class EmptyReply(BaseModel):
    """The answer to a type that expects a reply (`assistant-request`, `tool-calls`, ...):
    it belongs to the customer's own server, Calltrail only records it."""

    model_config = ConfigDict(extra="forbid")


class IngestErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    error: str
    detail: str | None = Field(None, description="only for `invalid_payload`")


class Health(BaseModel):
    ok: bool


@dataclass(frozen=True)
class Operation:
    """One route of the app as the document shows it."""

    path: str
    method: Literal["get", "post"]
    summary: str
    kind: Literal["webhook", "probe", "metrics", "document"]
    answers_503: bool = False


_SCHEMES: dict[str, dict[str, Any]] = {
    "vapiSecret": {"type": "apiKey", "in": "header", "name": "X-Vapi-Secret",
                   "description": "Vapi's legacy server secret"},
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "Vapi's bearer credential: the endpoint's secret"},
    "hmacSignature": {
        "type": "apiKey", "in": "header", "name": "X-Vapi-Signature",
        "description": "Vapi's HMAC credential: hex HMAC-SHA256 (optional `sha256=` prefix) "
                       "of `{X-Timestamp}.{body}` (seconds or milliseconds; refused when "
                       "missing or more than 5 minutes off; of the raw body alone only when "
                       "INGEST_HMAC_REQUIRE_TIMESTAMP=false). "
                       "The header may also be named X-Signature."},
}

_SIGNATURE_HEADERS = (
    ("X-Signature", "HMAC signature, as X-Vapi-Signature"),
    ("X-Timestamp", "Unix time of the HMAC signature, in seconds or milliseconds"),
)

_WEBHOOK_REFUSALS: tuple[type[IngestError], ...] = (
    InvalidPayload, Unauthorized, PayloadTooLarge, UnsupportedMediaType, Unavailable)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _webhook_operation(operation: Operation) -> dict[str, Any]:
    refusals: Iterable[type[IngestError]] = _WEBHOOK_REFUSALS
    parameters = [{"name": name, "in": "header", "required": False,
                   "schema": {"type": "string"}, "description": description}
                  for name, description in _SIGNATURE_HEADERS]
    if "{endpoint_id}" in operation.path:
        refusals = (*_WEBHOOK_REFUSALS, UnknownEndpoint)
        parameters.insert(0, {
            "name": "endpoint_id", "in": "path", "required": True,
            "schema": {"type": "string"},
            "description": "the organization's endpoint id (`calltrail org create`)"})
    responses: dict[str, Any] = {
        "200": _json({"anyOf": [_ref(Accepted), _ref(EmptyReply)]},
                     "Durable: the broker confirmed it, or it is fsynced in the spool"),
    }
    for error in refusals:
        responses[str(error.status_code)] = _json(_ref(IngestErrorBody), f"`{error.code}`")
    return {
        "summary": operation.summary,
        "operationId": "webhook_" + ("endpoint" if "{" in operation.path else "shared"),
        "security": [{name: []} for name in _SCHEMES],
        "parameters": parameters,
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref(VapiWebhook)}}},
        "responses": responses,
    }


def _plain_operation(operation: Operation) -> dict[str, Any]:
    if operation.kind == "metrics":
        ok: dict[str, Any] = {"description": "Prometheus text exposition",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}
    elif operation.kind == "document":
        ok = _json({"type": "object"}, "This document")
    else:
        ok = _json(_ref(Health), "Healthy")
    responses: dict[str, Any] = {"200": ok}
    if operation.answers_503:
        responses["503"] = _json(_ref(Health), "Not ready: no broker and no writable spool")
    return {"summary": operation.summary, "operationId": operation.path.strip("/"),
            "responses": responses}


def openapi_document(operations: Sequence[Operation]) -> dict[str, Any]:
    _, definitions = models_json_schema(
        [(model, "validation") for model in
         (VapiWebhook, Accepted, EmptyReply, IngestErrorBody, Health)],
        ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        build = _webhook_operation if operation.kind == "webhook" else _plain_operation
        paths.setdefault(operation.path, {})[operation.method] = build(operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Calltrail ingest", "version": "1",
                 "description": "Receives Vapi webhooks, authenticates them over the raw "
                                "body and makes each one durable before answering."},
        "paths": paths,
        "components": {"schemas": definitions.get("$defs", {}),
                       "securitySchemes": _SCHEMES},
    }
