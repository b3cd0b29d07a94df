"""What the JSON API refuses before FastAPI reads a body: FastAPI parses a JSON body before
the bearer dependency runs, so a stranger could make every replica read and parse megabytes.

For `/api/` requests, in this order:
- no `Authorization: Bearer` header at all: 401, and no byte of the body is read (the
  token itself is checked later, by `routes.caller`); except on the routes a dashboard
  session may open too (`SESSION_OR_TOKEN`: the live board's stream, whose browser
  EventSource sends no header), which check the token or the session themselves;
- a `Content-Length` over `max_body_bytes`: 413, nothing read;
- a body without a length (chunked) is read up to the bound and cut when it passes it: 413.

A refused request's connection is closed, so the unread rest is never read. A body within
the bound is handed on as it was received.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/"
SESSION_OR_TOKEN = frozenset({"/api/live"})
UNAUTHORIZED = ("unauthorized", "an Authorization: Bearer <token> header with a valid token "
                "is required")


def has_bearer(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request says `Authorization: Bearer ...` (its value is not looked at)."""
    return any(name == b"authorization" and value[:7].lower() == b"bearer "
               for name, value in headers)


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The Content-Length (None: none declared; -1: not a number, which is refused)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value) if value.isdigit() else -1
    return None


class BodyBounds:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            await self._app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if not has_bearer(headers) and scope["path"] not in SESSION_OR_TOKEN:
            await _refuse(send, 401, *UNAUTHORIZED)
            return
        length = declared_length(headers)
        if length is not None and (length < 0 or length > self._max):
            await _refuse(send, 413, *self._too_large())
            return
        if length is not None:  # the server never hands on more than it declared
            await self._app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self._max:
                await _refuse(send, 413, *self._too_large())
                return
            if not message.get("more_body", False):
                break
        await self._app(scope, _replay(bytes(body), receive), send)

    def _too_large(self) -> tuple[str, str]:
        return "payload_too_large", f"the request body is over {self._max} bytes"


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then whatever the server says next (a disconnect)."""
    given = False

    async def replayed() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": code, "message": message})
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
