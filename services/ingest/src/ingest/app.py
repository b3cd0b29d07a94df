"""The ingest HTTP app (contract section 3): authenticate, make durable, answer.

The hot path is: look the endpoint up in memory, check the credential headers, read the
body within the limit, verify an HMAC over the raw bytes, read `message.type`, publish with
a confirm (or fsync to the spool), answer. A request that cannot be authenticated (closed or
unknown endpoint, no credential, a wrong header secret, an HMAC without a fresh timestamp)
is answered before its body is read. Nothing on the path touches Postgres, and the body is
never logged.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from calltrail_common.envelope import SHARED_ENDPOINT, EventEnvelope, partition_of
from calltrail_common.logging import get_logger
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology
from ingest.auth import check_headers, check_signature
from ingest.broker import BrokerPublisher
from ingest.endpoints import EndpointDirectory
from ingest.errors import IngestError, InvalidPayload, PayloadTooLarge, UnsupportedMediaType
from ingest.metrics import IngestMetrics
from ingest.openapi import Operation, openapi_document
from ingest.outbox import Outbox
from ingest.payload import AcceptedEvent, read_envelope
from ingest.spool import claim_slot

log = get_logger("ingest")

# Types whose sender waits for a reply body. They belong to the customer's own tool or
# assistant server; Calltrail records them and answers an empty object.
REPLY_EXPECTED_TYPES = frozenset({
    "assistant-request", "tool-calls", "transfer-destination-request",
    "knowledge-base-request", "handoff-destination-request", "campaign.predial",
})
_OK = b'{"ok":true}'
_EMPTY_REPLY = b"{}"
_JSON = "application/json"
WEBHOOK_PATH = "/webhooks/vapi"


@dataclass
class IngestState:
    settings: Settings
    outbox: Outbox
    endpoints: EndpointDirectory
    metrics: IngestMetrics
    shared_secrets: tuple[bytes, ...]
    log_accepted: bool  # one debug line per accepted event, only when asked for


def _json_media_type(content_type: str | None) -> bool:
    # No Content-Type at all is read as JSON rather than lose an event over a header.
    if not content_type:
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == _JSON or (media_type.startswith("application/")
                                   and media_type.endswith("+json"))


async def _read_body(headers: dict[str, str], receive: Receive, limit: int) -> bytes:
    """The whole body, refusing it as soon as it exceeds `limit` bytes while streaming."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def accept_webhook(state: IngestState, endpoint_id: str | None,
                         headers: dict[str, str], receive: Receive) -> tuple[int, bytes]:
    """Authenticate, read and make one webhook durable; the (status, body) to answer."""
    try:
        now = time.time()
        if endpoint_id is None:
            secrets, org_id = state.shared_secrets, None
        else:
            endpoint = state.endpoints.lookup(endpoint_id)
            secrets, org_id = endpoint.live_secrets(now), endpoint.org_id
        signature = check_headers(headers, secrets, now=now, require_timestamp=(
            state.settings.ingest_hmac_require_timestamp))
        body = await _read_body(headers, receive, state.settings.ingest_max_body_bytes)
        if signature is not None:
            check_signature(signature, body, secrets)
        if not _json_media_type(headers.get("content-type")):
            raise UnsupportedMediaType
        envelope = read_envelope(body)
        message_id = uuid.uuid4().hex
        event = AcceptedEvent(EventEnvelope(
            message_id=message_id,
            message_type=envelope.message_type,
            received_at_ms=int(time.time() * 1000),
            endpoint_id=endpoint_id or SHARED_ENDPOINT,
            partition=partition_of(envelope.caller_key, message_id),
            org_id=org_id,
            dedupe_key=envelope.dedupe_key,
        ), body)
        kept = await state.outbox.keep(event)
    except IngestError as error:
        state.metrics.requests.labels(str(error.status_code)).inc()
        log.info("webhook_refused", status=error.status_code, error=error.code,
                 endpoint=endpoint_id or SHARED_ENDPOINT)
        return error.status_code, _error_body(error)
    state.metrics.accepted(kept.value)
    if state.log_accepted:
        log.debug("webhook_accepted", message_id=event.message_id, type=envelope.message_type,
                  dedupe_key=envelope.dedupe_key, kept=kept.value)
    return 200, _EMPTY_REPLY if envelope.message_type in REPLY_EXPECTED_TYPES else _OK


def _error_body(error: IngestError) -> bytes:
    content: dict[str, str] = {"error": error.code}
    if isinstance(error, InvalidPayload) and error.args:
        content["detail"] = str(error.args[0])
    return orjson.dumps(content)


async def _answer(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def webhooks(scope: Scope, receive: Receive, send: Send) -> None:
    """`POST /webhooks/vapi[/{endpoint_id}]` as plain ASGI: the hot path, kept lean."""
    rest = scope["path"][len(WEBHOOK_PATH):].strip("/")
    if "/" in rest:
        await _answer(send, 404, b'{"error":"not_found"}')
        return
    if scope["method"] != "POST":
        await _answer(send, 405, b'{"error":"method_not_allowed"}')
        return
    headers = {name.decode("latin-1"): value.decode("latin-1")
               for name, value in scope["headers"]}
    try:
        status, body = await accept_webhook(scope["state"]["ingest"], rest or None, headers,
                                            receive)
    except ClientDisconnect:
        return  # nobody is waiting for an answer, and nothing was accepted
    await _answer(send, status, body)


async def healthz(request: Request) -> Response:
    return Response(_OK, media_type=_JSON)


async def readyz(request: Request) -> Response:
    state: IngestState = request.state.ingest
    if state.outbox.ready():
        return Response(_OK, media_type=_JSON)
    return Response(b'{"ok":false}', status_code=503, media_type=_JSON)


async def metrics(request: Request) -> Response:
    state: IngestState = request.state.ingest
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


# The route table. The OpenAPI document is built from it, the probes are routed from it
# (None: the document itself), and `create_app`'s dispatcher sends both webhook paths to
# `webhooks`.
WEBHOOK_OPERATIONS = (
    Operation(WEBHOOK_PATH, "post", "A Vapi webhook on the shared endpoint "
              "(VAPI_WEBHOOK_SECRET); the organization is found later from the event",
              "webhook"),
    Operation(WEBHOOK_PATH + "/{endpoint_id}", "post",
              "A Vapi webhook on an organization's own endpoint, with its own secret",
              "webhook"),
)
PLAIN_ROUTES: tuple[tuple[Operation, Callable[[Request], Awaitable[Response]] | None], ...] = (
    (Operation("/healthz", "get", "The process is alive", "probe"), healthz),
    (Operation("/readyz", "get", "The broker is connected or the spool writable", "probe",
               answers_503=True), readyz),
    (Operation("/metrics", "get", "Requests by status, publish latency, spool depth",
               "metrics"), metrics),
    (Operation("/openapi.json", "get", "This document", "document"), None),
)


def operations() -> tuple[Operation, ...]:
    return WEBHOOK_OPERATIONS + tuple(operation for operation, _ in PLAIN_ROUTES)


def create_app(settings: Settings) -> ASGIApp:
    """The ingest app; its broker, spool and endpoint directory start with its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, IngestState]]:
        spool_root = settings.spool_dir
        spool = claim_slot(spool_root)
        ingest_metrics = IngestMetrics()
        broker = BrokerPublisher(
            settings.amqp_url.get_secret_value(),
            Topology(settings.amqp_prefix),
            confirm_timeout=settings.ingest_confirm_timeout_seconds,
            heartbeat_seconds=settings.amqp_heartbeat_seconds,
            observe_publish=ingest_metrics.publish_seconds.observe,
        )
        outbox = Outbox(broker, spool, spool_root)
        ingest_metrics.spool_depth.set_function(lambda: outbox.spool_depth)
        ingest_metrics.broker_connected.set_function(lambda: float(broker.connected))
        endpoints = EndpointDirectory(
            settings.database_url, spool_root / "endpoints.json",
            settings.ingest_endpoint_refresh_seconds)
        broker.start()
        outbox.start()
        endpoints.start()
        log.info("ingest_started", spool_slot=spool.directory.name, spool_backlog=spool.backlog)
        try:
            yield {"ingest": IngestState(settings, outbox, endpoints, ingest_metrics,
                                         settings.webhook_secrets(),
                                         settings.log_level == "debug")}
        finally:
            # uvicorn has already let in-flight requests finish: every 200 is durable.
            await endpoints.close()
            await outbox.close()
            await broker.close()
            spool.close()
            log.info("ingest_stopped", spool_backlog=spool.backlog)

    document = orjson.dumps(openapi_document(operations()))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type=_JSON)

    plain = Starlette(
        routes=[Route(operation.path, endpoint or openapi_json,
                      methods=[operation.method.upper()])
                for operation, endpoint in PLAIN_ROUTES],
        lifespan=lifespan,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Webhooks skip Starlette's request/response objects and middleware: at thousands of
        # requests a second on two shared cores that per-request overhead is measurable.
        if scope["type"] == "http" and (scope["path"] == WEBHOOK_PATH
                                        or scope["path"].startswith(WEBHOOK_PATH + "/")):
            await webhooks(scope, receive, send)
        else:
            await plain(scope, receive, send)

    return app
