"""The api app: wiring (lifespan), error answers and probes. Routes live in `routes.py`.

Prometheus scrapes `/metrics` on API_METRICS_PORT, served by the lifespan's probe server;
the public port answers it 404 (decision 37). Bodies of `/api/` requests are bounded before
anything else reads them (`request_bounds`).

Every error is `{"error": code, "message": text}`: `api.errors` with their own status,
FastAPI's parameter validation as 400 `invalid_parameter` naming the parameter (never the
value it had: it may be a key), unknown paths 404 and wrong methods 405.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from api.broker import SyncCommands
from api.dashboard.app import content_security_policy
from api.dashboard.app import install as install_dashboard
from api.errors import ApiError
from api.live import LiveFeed, LiveHub
from api.metrics import ApiMetrics
from api.outbound_webhooks import router as outbound_router
from api.recordings import RecordingLinks
from api.repository import Repository
from api.request_bounds import BodyBounds
from api.routes import ApiState, router
from api.sessions import Sessions
from api.vapi_wiring import router as wiring_router
from calltrail_common import db
from calltrail_common.crypto import KeyRing
from calltrail_common.logging import get_logger
from calltrail_common.probes import ProbeServer
from calltrail_common.settings import Settings
from calltrail_common.topology import Topology

log = get_logger("api")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error(exc.status_code, exc.code, exc.message)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part not in ("query", "path")]
        if location[:1] == ["body"]:
            location = location[1:] or ["body"]
        # error["msg"] never holds the value; error["input"] would, so it is left out.
        problems.append(f"{'.'.join(location) or 'request'}: {error.get('msg', 'invalid')}")
    return _error(400, "invalid_parameter", "; ".join(problems))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail))


class RequestMetrics:
    """Counts and times each request by its route template (never the raw path: ids would
    make one series per call)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self._metrics.requests.labels(route, str(status)).inc()
            self._metrics.seconds.labels(route).observe(time.perf_counter() - started)


def create_app(settings: Settings, keyring: KeyRing) -> FastAPI:
    """The api app; its pool, Vapi HTTP client and broker link start with its lifespan."""
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, ApiState]]:
        pool = await db.create_pool(settings.database_url, min_size=1, max_size=10,
                                    command_timeout=settings.database_command_timeout_seconds)
        commands = SyncCommands(settings.amqp_url.get_secret_value(),
                                Topology(settings.amqp_prefix), settings.amqp_heartbeat_seconds)
        await commands.start()
        repository = Repository(pool)
        live = LiveHub(repository.live_calls, metrics)
        feed = LiveFeed(settings.amqp_url.get_secret_value(), Topology(settings.amqp_prefix),
                        settings.amqp_heartbeat_seconds, live)
        await feed.start()
        scrape = ProbeServer(metrics.registry, None)  # /metrics only: probes are on API_PORT
        if settings.api_metrics_port:
            await scrape.start(settings.api_host, settings.api_metrics_port)
        try:
            async with httpx.AsyncClient(
                    timeout=settings.vapi_request_timeout_seconds) as vapi_http:
                sessions = Sessions(
                    pool, idle=timedelta(minutes=settings.dashboard_session_idle_minutes),
                    absolute=timedelta(hours=settings.dashboard_session_max_hours))
                yield {"api": ApiState(settings=settings, repository=repository,
                                       keyring=keyring, pool=pool, vapi_http=vapi_http,
                                       commands=commands, sessions=sessions,
                                       recordings=RecordingLinks(), live=live)}
        finally:
            live.resync("shutting down")  # the streams end, so the server can stop
            await feed.close()
            await scrape.close()
            await commands.close()
            await pool.close()

    app = FastAPI(
        title="Calltrail tenant API", version="1", lifespan=lifespan,
        description="Calls, leads, statistics, the connected Vapi account and the outbound "
                    "webhooks of the organization whose token is given. Errors: "
                    '`{"error": code, "message": text}`.',
        docs_url=None, redoc_url=None)
    app.include_router(router)
    app.include_router(outbound_router)
    app.include_router(wiring_router)
    install_dashboard(app, force_https=settings.dashboard_force_https,
                      policy=content_security_policy(settings.vapi_api_base_url))
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response(b'{"ok":true}', media_type="application/json")

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        state: ApiState = request.state.api
        try:
            ready = await state.repository.ready()
        except Exception as error:  # any failure: not ready, and say why
            log.warning("api_not_ready", error=type(error).__name__)
            ready = False
        if ready:
            return Response(b'{"ready":true}', media_type="application/json")
        return Response(b'{"ready":false,"reasons":["database"]}', status_code=503,
                        media_type="application/json")

    app.add_middleware(BodyBounds, max_body_bytes=settings.api_max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app
