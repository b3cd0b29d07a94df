"""A receiver of Calltrail's outbound webhooks, served for real over HTTP (Starlette + uvicorn
on a real socket), for the dispatcher's tests, its benchmark and the fault suite.

Every POST to any path is recorded (`Received`: the path, `webhook-id`, `webhook-timestamp`,
the body, when it arrived) and, when the receiver was given the endpoint's `whsec_` secret
for that path, verified with the `standardwebhooks` package as a receiver would. How a path
answers is set per path (`behave`), from the test's thread or, for a receiver in another
process, through its admin routes:

    status        the answer's status (200; 500 to fail, 302 with `redirect_to`, ...)
    latency       seconds before answering
    hang          never answer (until the client gives up or the receiver stops)
    redirect_to   a Location header (with a 3xx status)
    body_bytes    the answer's body size, streamed; -1: endless

    POST /_receiver/behave   {path, status, latency, hang, redirect_to, body_bytes, secret}
    GET  /_receiver/stats    {path: {received, unique, unverified, body_bytes_sent}}
    GET  /_receiver/received?path=   [{path, id, timestamp, received_at, verified}, ...]

`stop()` closes the socket (a sender then gets "connection refused") and `start()` serves
again on the same port: a receiver down for a while, then back.

In a test: `with WebhookReceiver() as receiver: url = receiver.url("a")` (its own thread and
loop, so the test's loop may block on it). From a shell, or the fault suite's other process:
`python -m calltrail_testkit.webhook_receiver --port 8099 [--latency 0.05]`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import uvicorn
import uvloop
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HOST = "127.0.0.1"
_CHUNK = 64 * 1024
_START_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Behaviour:
    """How a path answers."""

    status: int = 200
    latency: float = 0.0
    hang: bool = False
    redirect_to: str | None = None
    body_bytes: int = 0  # -1: an endless body


@dataclass(frozen=True)
class Received:
    """One POST as it arrived."""

    path: str
    webhook_id: str | None
    timestamp: str | None
    signature: str | None
    body: bytes
    received_at: float  # epoch seconds
    verified: bool | None  # None: no secret known for the path
    headers: dict[str, str] = field(repr=False)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _PathState:
    behaviour: Behaviour = field(default_factory=Behaviour)
    webhook: Webhook | None = None
    body_bytes_sent: int = 0


class WebhookReceiver:
    """Records, verifies and answers webhooks on `port` (0: a free one, kept across
    restarts)."""

    def __init__(self, *, host: str = HOST, port: int = 0, latency: float = 0.0) -> None:
        self.host = host
        self.port = port
        self._default = Behaviour(latency=latency)
        self._paths: dict[str, _PathState] = {}
        self._received: list[Received] = []
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.app = Starlette(routes=[
            Route("/_receiver/behave", self._admin_behave, methods=["POST"]),
            Route("/_receiver/stats", self._admin_stats, methods=["GET"]),
            Route("/_receiver/received", self._admin_received, methods=["GET"]),
            Route("/{path:path}", self._receive, methods=["POST"]),
        ])

    # -- what a test sets and reads ------------------------------------------------------

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}/{path.lstrip('/')}"

    def behave(self, path: str, *, secret: str | None = None, **changes: Any) -> None:
        """Set how `path` answers (fields of `Behaviour`), and its secret to verify with."""
        with self._lock:
            state = self._state(path)
            state.behaviour = replace(state.behaviour, **changes)
            if secret is not None:
                state.webhook = Webhook(secret)

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self._received if path is None or r.path == _clean(path)]

    def ids(self, path: str | None = None) -> set[str]:
        """The distinct `webhook-id`s received (on `path`)."""
        return {r.webhook_id for r in self.received(path) if r.webhook_id is not None}

    def body_bytes_sent(self, path: str) -> int:
        with self._lock:
            return self._state(path).body_bytes_sent

    def _state(self, path: str) -> _PathState:
        path = _clean(path)
        state = self._paths.get(path)
        if state is None:
            state = self._paths[path] = _PathState(self._default)
        return state

    # -- serving -------------------------------------------------------------------------

    def start(self) -> str:
        """Serve (again) on the port, in a thread with its own loop; the base URL."""
        assert self._server is None, "already serving"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Without TCP_NODELAY on the listening socket (asyncio sets it only when the proto is
        # IPPROTO_TCP) every answer waits ~40 ms on Nagle and delayed ACKs.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", log_level="warning",
                                access_log=False, timeout_graceful_shutdown=1, backlog=4096)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: uvloop.run(server.serve(sockets=[sock])),
                                  name=f"webhook-receiver-{self.port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                sock.close()
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.005)
        self._server, self._thread, self._socket = server, thread, sock
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving: the port refuses connections until `start()`."""
        server, thread, sock = self._server, self._thread, self._socket
        self._server = self._thread = self._socket = None
        if server is None or thread is None or sock is None:
            return
        server.should_exit = True
        thread.join(10)
        sock.close()

    def __enter__(self) -> WebhookReceiver:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the HTTP side -------------------------------------------------------------------

    async def _receive(self, request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:  # the sender gave up before its body was in: nothing came
            return Response(status_code=499)
        path = _clean(request.path_params["path"])
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self._lock:
            state = self._state(path)
            behaviour, webhook = state.behaviour, state.webhook
        verified: bool | None = None
        if webhook is not None:
            try:
                webhook.verify(body, headers, json_parse=False)
                verified = True
            except WebhookVerificationError:
                verified = False
        record = Received(path, headers.get("webhook-id"), headers.get("webhook-timestamp"),
                          headers.get("webhook-signature"), body, time.time(), verified,
                          headers)
        with self._lock:
            self._received.append(record)
        if behaviour.hang:
            await _until_disconnected(request)
            return Response(status_code=504)
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        response_headers = {"location": behaviour.redirect_to} if behaviour.redirect_to else {}
        if behaviour.body_bytes:
            return StreamingResponse(self._body(path, behaviour.body_bytes),
                                     status_code=behaviour.status, headers=response_headers,
                                     media_type="application/octet-stream")
        return Response(status_code=behaviour.status, headers=response_headers)

    async def _body(self, path: str, size: int) -> AsyncIterator[bytes]:
        chunk = b"x" * _CHUNK
        left = size
        while size < 0 or left > 0:
            part = chunk if size < 0 or left >= _CHUNK else chunk[:left]
            yield part
            # Let the loop run: sending to a client that has gone does not suspend, and an
            # endless body would otherwise never let the disconnect be seen.
            await asyncio.sleep(0)
            left -= len(part)
            with self._lock:
                self._state(path).body_bytes_sent += len(part)

    async def _admin_behave(self, request: Request) -> Response:
        spec = await request.json()
        path = str(spec.pop("path", ""))
        secret = spec.pop("secret", None)
        known = set(Behaviour.__dataclass_fields__)
        if not set(spec) <= known:
            return JSONResponse({"error": f"unknown fields {sorted(set(spec) - known)}"}, 400)
        self.behave(path, secret=secret, **spec)
        return JSONResponse({"path": _clean(path)})

    async def _admin_stats(self, request: Request) -> Response:
        stats: dict[str, dict[str, int]] = {}
        with self._lock:
            for record in self._received:
                entry = stats.setdefault(record.path, {"received": 0, "unverified": 0})
                entry["received"] += 1
                entry["unverified"] += record.verified is False
            for path, entry in stats.items():
                entry["unique"] = len({r.webhook_id for r in self._received
                                       if r.path == path and r.webhook_id is not None})
                entry["body_bytes_sent"] = self._state(path).body_bytes_sent
        return JSONResponse(stats)

    async def _admin_received(self, request: Request) -> Response:
        path = request.query_params.get("path")
        return Response(orjson.dumps([
            {"path": r.path, "id": r.webhook_id, "timestamp": r.timestamp,
             "received_at": r.received_at, "verified": r.verified}
            for r in self.received(path)]), media_type="application/json")


def _clean(path: str) -> str:
    return path.strip("/")


async def _until_disconnected(request: Request) -> None:
    """Wait until the client hangs up (a hung request must not outlive its client)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calltrail_testkit.webhook_receiver",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds before every answer")
    args = parser.parse_args(argv)
    receiver = WebhookReceiver(host=args.host, port=args.port, latency=args.latency)
    print(f"webhook receiver at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(receiver.app, host=args.host, port=args.port, log_level="warning",
                access_log=False, backlog=4096, timeout_graceful_shutdown=1, loop="uvloop",
                http="httptools")


if __name__ == "__main__":
    main()
