"""`/healthz`, `/readyz` and `/metrics` for the services that serve no HTTP of their own.

A consumer is not ready while it cannot do its work (contract section 11): `/readyz` asks the
service (`ready()` returns the reasons it is not ready, empty when it is) and answers 503
with them, so an orchestrator can act. `/healthz` only says the event loop answers.

It runs in the service's own event loop (not a thread): a loop that is stuck stops
answering `/healthz` too, which is what a liveness probe is for. It speaks just enough
HTTP/1.1 for probes and Prometheus: one GET per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from calltrail_common.logging import get_logger

log = get_logger(__name__)

_READ_TIMEOUT_SECONDS = 5.0
_MAX_REQUEST_HEAD_BYTES = 8192


class ProbeServer:
    """`not_ready` None: only /metrics (a service that answers its probes on its own HTTP
    port, like the api, serves its metrics here, away from the public port)."""

    def __init__(self, registry: CollectorRegistry,
                 not_ready: Callable[[], Sequence[str]] | None) -> None:
        self._registry = registry
        self._not_ready = not_ready
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        """Listen on `port` (0: any free port); another process holding it is logged, not
        fatal (replicas on one host: one of them serves the probes)."""
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as error:
            log.warning("probe_port_unavailable", port=port, error=str(error))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def answer(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for GET `path`."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if self._not_ready is None:
            return 404, "application/json", b'{"error":"not_found"}'
        if path == "/healthz":
            return 200, "application/json", b'{"ok":true}'
        if path == "/readyz":
            reasons = list(self._not_ready())
            if reasons:
                return 503, "application/json", orjson.dumps({"ready": False,
                                                              "reasons": reasons})
            return 200, "application/json", b'{"ready":true}'
        return 404, "application/json", b'{"error":"not_found"}'

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_SECONDS)
            if len(head) > _MAX_REQUEST_HEAD_BYTES:
                return
            method, _, rest = head.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, "application/json", b'{"error":"method"}'
            else:
                status, content_type, body = self.answer(path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode("latin-1")
                + (b"" if method == "HEAD" else body))
            await asyncio.wait_for(writer.drain(), _READ_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
