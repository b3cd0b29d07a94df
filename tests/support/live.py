"""The live board in tests: webhook bodies of a call as it happens (stamped now), and a
Server-Sent Events reader over an httpx stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def now_ms() -> int:
    return int(time.time() * 1000)


def call_object(call_id: str, status: str, *, created_ms: int, started_ms: int | None = None,
                number: str = "+14155550123", name: str | None = None,
                assistant: str = "asst-live-1") -> dict[str, Any]:
    customer: dict[str, Any] = {"number": number}
    if name is not None:
        customer["name"] = name
    return {"id": call_id, "type": "inboundPhoneCall", "status": status,
            "assistantId": assistant, "customer": customer, "createdAt": _iso(created_ms),
            "startedAt": None if started_ms is None else _iso(started_ms)}


def status_update(call_id: str, status: str, *, created_ms: int,
                  started_ms: int | None = None, ended_reason: str | None = None,
                  **call: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "status-update", "status": status, "timestamp": now_ms(),
        "call": call_object(call_id, status, created_ms=created_ms, started_ms=started_ms,
                            **call)}
    if ended_reason is not None:
        message["endedReason"] = ended_reason
    return {"message": message}


def end_of_call_report(call_id: str, *, created_ms: int, started_ms: int, ended_ms: int,
                       ended_reason: str = "customer-ended-call", success: str = "true",
                       **call: Any) -> dict[str, Any]:
    return {"message": {
        "type": "end-of-call-report", "timestamp": now_ms(), "endedReason": ended_reason,
        "startedAt": _iso(started_ms), "endedAt": _iso(ended_ms),
        "analysis": {"successEvaluation": success},
        "call": call_object(call_id, "ended", created_ms=created_ms, started_ms=started_ms,
                            **call)}}


@dataclass
class SseEvent:
    event: str
    data: Any
    id: str | None


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    """The events of a text/event-stream answer, as they come (comments skipped)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if "data" in fields:
                yield SseEvent(fields.get("event", "message"), orjson.loads(fields["data"]),
                               fields.get("id"))
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


async def next_event(events: AsyncIterator[SseEvent], kind: str | None = None,
                     timeout: float = 10.0) -> SseEvent:
    """The next event (of `kind`, when given) within `timeout` seconds."""
    async def find() -> SseEvent:
        async for event in events:
            if kind is None or event.event == kind:
                return event
        raise AssertionError("the stream ended")
    return await asyncio.wait_for(find(), timeout)
