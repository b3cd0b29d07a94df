"""A fake Vapi REST API, served for real over HTTP (Starlette + uvicorn), for tests, `make demo`,
`make bench` and the chaos suite.

It holds several accounts (one per private key), each with its calls, phone numbers and
assistants, and answers what metrics-sync asks (vapi.md, "REST API"):

    GET /assistant?limit=           GET /phone-number?limit=        GET /call/{id}
    GET /call?limit=&createdAtGt|Ge|Lt|Le=&updatedAtGt|Ge|Lt|Le=&id=&assistantId=&phoneNumberId=
    GET /call/{id}/mono-recording (also stereo-, customer-, assistant-recording)

and the writes that wire an account to a webhook receiver (decision 47), shaped as the
official SDK's models (`tests/test_fake_vapi.py` checks them):

    GET|PATCH /assistant/{id}       server, serverMessages, name, ...: a field set to null
    GET|PATCH /phone-number/{id}    is cleared; an unknown credentialId is a 400
    POST /credential                a webhook credential (hmac or bearer)
    GET /credential, GET /credential/{id}

`FakeAccount.deliver(message, assistant_id=..., phone_number_id=...)` then sends a webhook
as Vapi would with what the account holds: to the assistant's server (else the number's),
only a type its serverMessages (or Vapi's defaults) name, signed with its credential.

A recording answers, as Vapi does, a 302 to a short-lived URL: here
`/files/{token}.wav?expires=<epoch seconds>&signature=...` on the fake itself, signed and
valid for `FakeVapi.recording_ttl` seconds (then 403), serving a 1.5 s WAV tone with Range
support (206), as storage does for a browser's media element.

Like Vapi, `GET /call` answers a plain array with no cursor (`limit` <= 1000, default 100).
Its order is random and, when more calls match than `limit`, an arbitrary subset is
returned: a client that does not split full windows misses calls, as it would on Vapi.

Faults are set per account (`latency`, `unauthorized`, `rate_limit_next` with `retry_after`,
`fail_next`, `fail_status`, `hang_seconds`) or for all (`FakeVapi.latency`), from the test's
thread or through the admin routes under `/_fake/` from another process:

    POST /_fake/accounts                          {api_key, calls, days, seed, phone_numbers,
                                                   assistants} -> the account's summary
    GET  /_fake/accounts/{api_key}                the account's summary
    POST /_fake/accounts/{api_key}/faults         {latency, unauthorized, rate_limit_next,
                                                   retry_after, fail_next, fail_status,
                                                   hang_seconds}
    POST /_fake/accounts/{api_key}/calls          {calls, days | start+end, seed} -> ids
    POST /_fake/accounts/{api_key}/calls/{id}     {field: value, ...}: update, bump updatedAt
    GET  /_fake/accounts/{api_key}/usage          the daily usage truth (decimals as strings)
    GET  /_fake/accounts/{api_key}/stats          requests answered for that key
    POST /_fake/faults                            {latency}: for every account

`FakeAccount.daily_usage()` is the truth a sync is compared with.

Run it: `python -m calltrail_testkit.fake_vapi --port 8090 [--demo]` (`--demo` seeds one
account whose key is DEMO_API_KEY), or `with serve(fake) as base_url:` in a test (its own
thread and loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import inspect
import io
import math
import random
import secrets
import socket
import threading
import time
import uuid
import wave
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from calltrail_testkit.samples import format_instant, parse_instant

DEMO_API_KEY = "demo-vapi-private-key-0000000000000000"
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

UNAUTHORIZED_BODY = {
    "message": "Invalid Key. Hot tip, you may be using the private key instead of the public "
               "key, or vice versa.",
    "error": "Unauthorized",
    "statusCode": 401,
}

RECORDING_CHANNELS = ("mono", "stereo", "customer", "assistant")
RECORDING_SECONDS = 1.5
# What an assistant sends when it sets no serverMessages (vapi.md).
DEFAULT_SERVER_MESSAGES = (
    "conversation-update", "end-of-call-report", "function-call", "hang", "speech-update",
    "status-update", "tool-calls", "transfer-destination-request",
    "handoff-destination-request", "user-interrupted", "assistant.started")
TWILIO_ACCOUNT_SID = "AC00000000000000000000000000000000"

Call = dict[str, Any]
Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, "FakeAccount"], Response | Awaitable[Response]]


# --- data ---------------------------------------------------------------------------------

_WORDS = ("schedule", "estimate", "price", "tuesday", "address", "morning", "roof", "repair",
          "insurance", "quote", "window", "thanks", "appointment", "friday", "gutter", "invoice")
_NAMES = ("Ana Ruiz", "Ben Okafor", "Chloe Martin", "Dev Patel", "Eva Novak", "Femi Adeyemi",
          "Grace Liu", "Hugo Silva", "Ines Moreau", "Jon Berg")
_ENDED_REASONS = ("customer-ended-call", "assistant-ended-call", "silence-timed-out",
                  "customer-did-not-answer", "voicemail", "customer-busy")


def _phrases() -> tuple[str, ...]:
    """A fixed pool of ~85-character phrases; transcripts are drawn from it (fast, no I/O)."""
    pool = random.Random(7)
    return tuple(" ".join(pool.choice(_WORDS) for _ in range(12)) + "." for _ in range(64))


_PHRASES = _phrases()


def _transcript(rng: random.Random) -> str:
    """1-5 KB of "AI: ..." and "User: ..." lines, in turn."""
    phrases = rng.choices(_PHRASES, k=rng.randrange(12, 56))
    return "\n".join(f"{'User' if turn % 2 else 'AI'}: {phrase}"
                     for turn, phrase in enumerate(phrases))


def _ms(value: datetime) -> datetime:
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# The structured outputs and scorecard a fake account's assistants extract after a call
# (artifact.structuredOutputs, artifact.scorecards; vapi.md), with fixed ids as an account's
# saved ones have.
BOOKED_OUTPUT = "4d0c8f3a-6b1e-4c2d-9f7a-0e5b3c1d2a01"
DETAILS_OUTPUT = "4d0c8f3a-6b1e-4c2d-9f7a-0e5b3c1d2a02"
CSAT_OUTPUT = "4d0c8f3a-6b1e-4c2d-9f7a-0e5b3c1d2a03"
QUALITY_SCORECARD = "4d0c8f3a-6b1e-4c2d-9f7a-0e5b3c1d2a10"
EXTRACTED_SHARE = 0.6  # of ended calls; the others were made before the account set any up


def extracted(call_id: str, name: str) -> dict[str, Any]:
    """What Vapi extracted after an ended call, or {} for one without structured outputs.
    Drawn from the call's id alone, so adding it leaves every other draw of a seed as it
    was."""
    rng = random.Random(call_id)
    if rng.random() >= EXTRACTED_SHARE:
        return {}
    booked, csat = rng.random() < 0.55, rng.randrange(1, 11)
    points = {BOOKED_OUTPUT: 70 if booked else 0, CSAT_OUTPUT: 30 if csat >= 8 else 0}
    score = sum(points.values())
    email = f"{name.split()[0].lower()}.{call_id[:4]}@example.com"
    return {
        "structuredOutputs": {
            BOOKED_OUTPUT: {"name": "Appointment booked", "result": booked},
            DETAILS_OUTPUT: {"name": "Customer details",
                             "result": {"name": name, "email": email}},
            CSAT_OUTPUT: {"name": "CSAT", "result": csat},
        },
        "scorecards": {QUALITY_SCORECARD: {"name": "Call quality", "score": score,
                                           "scoreNormalized": score,
                                           "metricPoints": points}},
    }


def make_call(rng: random.Random, *, org_id: str, created_at: datetime,
              phone_number_id: str | None, assistant_id: str | None, customer_number: str,
              ended: bool = True) -> Call:
    """A Call as `GET /call/{id}` returns it (vapi-samples/api-get-call-item.json). An ended
    call has startedAt, endedAt, cost and analysis, and most have structured outputs and a
    scorecard (`extracted`); one that is not ended is in progress
    (startedAt, no endedAt, cost 0) or still queued or ringing (neither)."""
    call_id = _uuid(rng)
    created = _ms(created_at.astimezone(UTC))
    name = rng.choice(_NAMES)
    call: Call = {
        "id": call_id,
        "orgId": org_id,
        "type": rng.choice(("inboundPhoneCall", "outboundPhoneCall")),
        "createdAt": format_instant(created),
        "updatedAt": format_instant(created),
        "phoneCallProvider": "twilio",
        "phoneCallTransport": "pstn",
        "customer": {"number": customer_number, "name": name},
    }
    if assistant_id is not None:
        call["assistantId"] = assistant_id
    if phone_number_id is not None:
        call["phoneNumberId"] = phone_number_id
    if not ended:
        status = rng.choice(("queued", "ringing", "in-progress"))
        call["status"] = status
        if status == "in-progress":
            started = created + timedelta(milliseconds=rng.randrange(500, 3000))
            call["startedAt"] = call["updatedAt"] = format_instant(started)
            call["cost"] = 0
        call["artifact"] = {"messages": []}
        return call

    started = created + timedelta(milliseconds=rng.randrange(500, 3000))
    duration_ms = rng.randrange(5_000, 15 * 60_000)
    ended_at = started + timedelta(milliseconds=duration_ms)
    minutes = round(duration_ms / 60_000, 4)
    parts = {key: round(minutes * rng.uniform(0.005, 0.03), 4)
             for key in ("transport", "stt", "llm", "tts")}
    parts["vapi"] = round(minutes * 0.05, 4)
    total = max(round(sum(parts.values()), 4), 0.02)
    epoch_ms = int(started.timestamp() * 1000)
    call.update({
        "status": "ended",
        "endedReason": rng.choice(_ENDED_REASONS),
        "startedAt": format_instant(started),
        "endedAt": format_instant(ended_at),
        "updatedAt": format_instant(ended_at + timedelta(milliseconds=rng.randrange(500, 5000))),
        "cost": total,
        "costs": [
            {"type": "vapi", "subType": "normal", "minutes": minutes, "cost": parts["vapi"]},
            {"type": "transport", "provider": "twilio", "minutes": minutes,
             "cost": parts["transport"]},
        ],
        "costBreakdown": {**parts, "total": total},
        "artifact": {
            "transcript": _transcript(rng),
            "messages": [
                {"role": "bot", "message": "Hi, thanks for calling.", "time": epoch_ms + 400,
                 "endTime": epoch_ms + 1900, "secondsFromStart": 0.4},
                {"role": "user", "message": f"Hi, this is {name}.", "time": epoch_ms + 2500,
                 "endTime": epoch_ms + 3800, "secondsFromStart": 2.5},
            ],
            "recordingUrl": f"https://storage.vapi.ai/{call_id}-mono.wav",
            "stereoRecordingUrl": f"https://storage.vapi.ai/{call_id}-stereo.wav",
            **extracted(call_id, name),
        },
        "analysis": {
            "summary": f"Caller asked about a repair estimate ({call_id[:8]}).",
            "structuredData": {"name": name},
            "successEvaluation": rng.choice(("true", "false")),
        },
    })
    return call


def make_phone_number(rng: random.Random, *, org_id: str, assistant_id: str | None,
                      index: int = 0, sip: bool = False) -> dict[str, Any]:
    """An item of `GET /phone-number`; a SIP number has no `number` (vapi.md)."""
    now = format_instant(datetime.now(UTC))
    phone: dict[str, Any] = {
        "id": _uuid(rng), "orgId": org_id, "name": f"Line {index + 1}", "status": "active",
        "assistantId": assistant_id, "createdAt": now, "updatedAt": now,
    }
    if sip:
        phone.update(provider="vapi", sipUri=f"sip:line{index + 1}-{phone['id'][:8]}@sip.vapi.ai")
    else:
        # Ten million numbers: a thousand generated accounts do not share one by chance.
        phone.update(provider="twilio", number=f"+1650{rng.randrange(2_000_000, 10_000_000)}",
                     twilioAccountSid=TWILIO_ACCOUNT_SID)
    return phone


def make_assistant(rng: random.Random, *, org_id: str, index: int = 0) -> dict[str, Any]:
    now = format_instant(datetime.now(UTC))
    return {"id": _uuid(rng), "orgId": org_id, "name": f"Receptionist {index + 1}",
            "createdAt": now, "updatedAt": now}


def tone_wav(seconds: float = RECORDING_SECONDS, *, rate: int = 8000,
             frequency: float = 440.0) -> bytes:
    """A WAV file (mono, 16-bit PCM, `rate` Hz) holding a sine tone of `seconds`."""
    frames = bytearray()
    for i in range(int(seconds * rate)):
        sample = int(12_000 * math.sin(2 * math.pi * frequency * i / rate))
        frames += sample.to_bytes(2, "little", signed=True)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))
    return buffer.getvalue()


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) of a single `Range: bytes=...` header, clamped to `size`;
    None when absent or not a single byte range (the whole file is answered). ValueError when
    it cannot be satisfied (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header[len("bytes="):].strip().partition("-")
    try:
        if first_text == "":
            suffix = int(last_text)
            if suffix <= 0:
                raise ValueError("empty suffix range")
            return max(0, size - suffix), size - 1
        first = int(first_text)
        last = int(last_text) if last_text else size - 1
    except ValueError:
        raise ValueError("unreadable range") from None
    if first >= size or last < first:
        raise ValueError("unsatisfiable range")
    return first, min(last, size - 1)


# --- accounts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    calls: int
    minutes: Decimal
    cost: Decimal


@dataclass
class FakeAccount:
    api_key: str
    org_id: str
    calls: dict[str, Call] = field(default_factory=dict)
    phone_numbers: list[dict[str, Any]] = field(default_factory=list)
    assistants: list[dict[str, Any]] = field(default_factory=list)
    credentials: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    # Faults, settable from any thread.
    latency: float = 0.0  # seconds added to every request
    unauthorized: bool = False  # every request answers 401
    rate_limit_next: int = 0  # the next N requests answer 429
    retry_after: float | None = None  # sent as Retry-After with those 429s
    fail_next: int = 0  # the next N requests answer 503
    fail_status: int = 0  # every request answers this 5xx status (an outage) until 0 again
    hang_seconds: float = 0.0  # every request waits this long (or until the client leaves)
    # What was asked, readable from any thread.
    requests: int = field(default=0, init=False)
    request_log: list[tuple[str, str, dict[str, str]]] = field(default_factory=list, init=False,
                                                               repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    def add_calls(self, n: int, *, rng: random.Random, start: datetime, end: datetime,
                  ended: bool = True) -> list[Call]:
        """`n` calls created at random instants of [start, end), on this account's numbers
        and assistants."""
        first = _ms(start.astimezone(UTC))
        if first < start:
            first += timedelta(milliseconds=1)
        span_ms = int((end - first) / timedelta(milliseconds=1))
        if span_ms <= 0:
            raise ValueError("empty range")
        added = []
        for _ in range(n):
            phone = rng.choice(self.phone_numbers) if self.phone_numbers else None
            assistant = rng.choice(self.assistants) if self.assistants else None
            call = make_call(
                rng, org_id=self.org_id,
                created_at=first + timedelta(milliseconds=rng.randrange(span_ms)),
                phone_number_id=phone["id"] if phone else None,
                assistant_id=assistant["id"] if assistant else None,
                customer_number=f"+1415555{rng.randrange(100, 200):04d}", ended=ended)
            added.append(call)
        with self._lock:
            self.calls.update((call["id"], call) for call in added)
        return added

    def update_call(self, call_id: str, **changes: Any) -> Call:
        """Apply `changes` to the call and bump its updatedAt to now (at least 1 ms later
        than before), unless `changes` sets updatedAt itself."""
        with self._lock:
            call = self.calls[call_id]
            updated = dict(call, **changes)
            if "updatedAt" not in changes:
                before = parse_instant(call["updatedAt"])
                updated["updatedAt"] = format_instant(
                    max(datetime.now(UTC), before + timedelta(milliseconds=1)))
            self.calls[call_id] = updated
            return updated

    def rename(self, vapi_id: str, name: str | None) -> dict[str, Any]:
        """Rename (None: unname) one of the account's assistants or phone numbers, as a
        person does in Vapi's dashboard; bumps its updatedAt."""
        with self._lock:
            for item in (*self.assistants, *self.phone_numbers):
                if item["id"] == vapi_id:
                    item["name"] = name
                    item["updatedAt"] = format_instant(datetime.now(UTC))
                    return item
        raise KeyError(vapi_id)
    def assistant(self, assistant_id: str) -> dict[str, Any] | None:
        return next((a for a in self.assistants if a["id"] == assistant_id), None)

    def phone_number(self, phone_number_id: str) -> dict[str, Any] | None:
        return next((p for p in self.phone_numbers if p["id"] == phone_number_id), None)

    def server_for(self, *, assistant_id: str | None, phone_number_id: str | None
                   ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """Where Vapi sends a call's messages, and which types: the assistant's server, else
        the phone number's; the assistant's serverMessages, else Vapi's defaults."""
        assistant = self.assistant(assistant_id) if assistant_id else None
        phone = self.phone_number(phone_number_id) if phone_number_id else None
        server = (assistant or {}).get("server") or (phone or {}).get("server")
        messages = (assistant or {}).get("serverMessages")
        return (server if isinstance(server, dict) and server.get("url") else None,
                tuple(messages) if isinstance(messages, list) else DEFAULT_SERVER_MESSAGES)

    def signed_headers(self, server: dict[str, Any], body: bytes, *,
                       now: float | None = None) -> dict[str, str]:
        """The headers Vapi adds for the server's credential (none without one)."""
        headers = {"Content-Type": "application/json"}
        credential = self.credentials.get(server.get("credentialId") or "")
        if credential is None:
            return headers
        plan = credential["authenticationPlan"]
        if plan["type"] == "bearer":
            prefix = "Bearer " if plan.get("bearerPrefixEnabled", True) else ""
            headers[plan.get("headerName") or "Authorization"] = prefix + plan["token"]
        elif plan["type"] == "hmac":
            timestamp = str(int(now if now is not None else time.time()))
            include = plan.get("includeTimestamp", True)
            template = plan.get("payloadFormat") or ("{timestamp}.{body}" if include
                                                     else "{body}")
            signed = template.replace("{timestamp}", timestamp).encode().replace(
                b"{body}", body)
            algorithm = {"sha256": hashlib.sha256, "sha512": hashlib.sha512,
                         "sha1": hashlib.sha1}[plan.get("algorithm", "sha256")]
            digest = hmac.new(plan["secretKey"].encode(), signed, algorithm).hexdigest()
            headers[plan.get("signatureHeader") or "x-signature"] = (
                (plan.get("signaturePrefix") or "") + digest)
            if include:
                headers[plan.get("timestampHeader") or "x-timestamp"] = timestamp
        return headers

    async def deliver(self, message: dict[str, Any], *, assistant_id: str | None = None,
                      phone_number_id: str | None = None,
                      http: httpx.AsyncClient | None = None) -> httpx.Response | None:
        """Send `{"message": message}` as Vapi would for a call of this assistant and
        number; None when Vapi would not (no server URL, or a type it is not set to send)."""
        server, types = self.server_for(assistant_id=assistant_id,
                                        phone_number_id=phone_number_id)
        if server is None or message.get("type") not in types:
            return None
        body = orjson.dumps({"message": message})
        headers = self.signed_headers(server, body)
        if http is not None:
            return await http.post(server["url"], content=body, headers=headers)
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(server["url"], content=body, headers=headers)

    def daily_usage(self) -> dict[date, Usage]:
        """Per UTC day of createdAt: calls, minutes (endedAt - startedAt, exact: summed in
        microseconds, divided once by 60,000,000) and cost (sum of Decimal(str(cost))), over
        every call, ended or not (a call without startedAt or endedAt is 0 minutes)."""
        with self._lock:
            calls = list(self.calls.values())
        counts: dict[date, int] = {}
        micros: dict[date, int] = {}
        costs: dict[date, Decimal] = {}
        for call in calls:
            day = parse_instant(call["createdAt"]).date()
            counts[day] = counts.get(day, 0) + 1
            if call.get("startedAt") and call.get("endedAt"):
                took = parse_instant(call["endedAt"]) - parse_instant(call["startedAt"])
                micros[day] = micros.get(day, 0) + took // timedelta(microseconds=1)
            if call.get("cost") is not None:
                costs[day] = costs.get(day, Decimal(0)) + Decimal(str(call["cost"]))
        return {day: Usage(calls=counts[day],
                           minutes=Decimal(micros.get(day, 0)) / Decimal(60_000_000),
                           cost=costs.get(day, Decimal(0)))
                for day in sorted(counts)}

    def summary(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "org_id": self.org_id, "calls": len(self.calls),
                "phone_numbers": self.phone_numbers, "assistants": self.assistants}

    def _record(self, method: str, path: str, query: dict[str, str]) -> None:
        with self._lock:
            self.requests += 1
            self.request_log.append((method, path, query))

    def _take_fault(self) -> tuple[int, float | None] | None:
        """The status this request must answer instead of its data, if any."""
        with self._lock:
            if self.unauthorized:
                return 401, None
            if self.rate_limit_next > 0:
                self.rate_limit_next -= 1
                return 429, self.retry_after
            if self.fail_status:
                return self.fail_status, None
            if self.fail_next > 0:
                self.fail_next -= 1
                return 503, None
        return None


def usage_json(usage: dict[date, Usage]) -> dict[str, dict[str, Any]]:
    return {day.isoformat(): {"calls": u.calls, "minutes": str(u.minutes), "cost": str(u.cost)}
            for day, u in usage.items()}


# --- the server ---------------------------------------------------------------------------


def _error(status: int, error: str, message: Any) -> JSONResponse:
    return JSONResponse({"message": message, "error": error, "statusCode": status}, status)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        raise HTTPException(400, "limit must be an integer number") from None
    if not 0 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"limit must not be greater than {MAX_LIMIT}")
    return limit


_TIME_FILTERS = {f"{name}{op}": (name, op) for name in ("createdAt", "updatedAt")
                 for op in ("Gt", "Ge", "Lt", "Le")}
_EQUAL_FILTERS = ("id", "assistantId", "phoneNumberId")


def _call_filter(request: Request) -> Callable[[Call], bool]:
    bounds = []
    for key, (name, op) in _TIME_FILTERS.items():
        raw = request.query_params.get(key)
        if raw is None:
            continue
        try:
            bounds.append((name, op, parse_instant(raw)))
        except ValueError:
            raise HTTPException(400, f"{key} must be a valid ISO 8601 date string") from None
    equal = [(key, request.query_params[key]) for key in _EQUAL_FILTERS
             if key in request.query_params]

    def keep(call: Call) -> bool:
        if any(call.get(key) != value for key, value in equal):
            return False
        for name, op, bound in bounds:
            value = parse_instant(call[name])
            if not ((op == "Gt" and value > bound) or (op == "Ge" and value >= bound)
                    or (op == "Lt" and value < bound) or (op == "Le" and value <= bound)):
                return False
        return True

    return keep


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be an object")
    return body


def _update_problems(body: dict[str, Any], item: dict[str, Any], fields: tuple[str, ...],
                     credentials: dict[str, dict[str, Any]]) -> list[str]:
    """What Vapi would refuse in a PATCH of `item` (a list of messages, as Vapi's 400s)."""
    problems = [f"property {key} should not exist" for key in body if key not in fields]
    server = body.get("server")
    if server is not None:
        if not isinstance(server, dict):
            problems.append("server must be an object")
        elif "url" in server and not isinstance(server["url"], str):
            problems.append("server.url must be a string")
        elif server.get("credentialId") is not None \
                and server["credentialId"] not in credentials:
            problems.append("server.credentialId: Credential not found")
    messages = body.get("serverMessages")
    if messages is not None and not (isinstance(messages, list)
                                     and all(isinstance(m, str) for m in messages)):
        problems.append("serverMessages must be an array of strings")
    if "provider" in body and body["provider"] != item.get("provider"):
        problems.append("provider must be the phone number's own")
    return problems


async def _sleep_or_disconnect(request: Request, seconds: float) -> None:
    """Sleep, but stop when the client hangs up (a hung request must not outlive it)."""
    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait((sleeper, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, watcher):
            task.cancel()
        await asyncio.gather(sleeper, watcher, return_exceptions=True)


class FakeVapi:
    """Several fake Vapi accounts behind one ASGI app (`fake.app`)."""

    def __init__(self, *, seed: int = 0, latency: float = 0.0,
                 recording_ttl: float = 600.0) -> None:
        self.accounts: dict[str, FakeAccount] = {}
        self.latency = latency  # seconds added to every request of every account
        self.recording_ttl = recording_ttl  # how long a recording's signed URL is valid
        self.file_requests = 0  # requests of /files/ (signed recording URLs), any answer
        self._signing_key = secrets.token_bytes(32)
        self._audio = tone_wav()
        self.unknown_key_requests = 0
        self._rng = random.Random(seed)  # the server's shuffles
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/assistant", self._vapi(self._assistants)),
                Route("/assistant/{item_id}", self._vapi(self._assistant),
                      methods=["GET", "PATCH"]),
                Route("/phone-number", self._vapi(self._phone_numbers)),
                Route("/phone-number/{item_id}", self._vapi(self._phone_number),
                      methods=["GET", "PATCH"]),
                Route("/credential", self._vapi(self._credentials), methods=["GET", "POST"]),
                Route("/credential/{credential_id}", self._vapi(self._credential)),
                Route("/call", self._vapi(self._calls)),
                Route("/call/{call_id}", self._vapi(self._call)),
                Route("/call/{call_id}/{recording}", self._vapi(self._recording)),
                Route("/files/{token}.wav", self._file),
                Route("/_fake/accounts", self._admin_add_account, methods=["POST"]),
                Route("/_fake/accounts/{api_key}", self._admin_account),
                Route("/_fake/accounts/{api_key}/faults", self._admin_faults, methods=["POST"]),
                Route("/_fake/accounts/{api_key}/calls", self._admin_add_calls,
                      methods=["POST"]),
                Route("/_fake/accounts/{api_key}/calls/{call_id}", self._admin_update_call,
                      methods=["POST"]),
                Route("/_fake/accounts/{api_key}/usage", self._admin_usage),
                Route("/_fake/accounts/{api_key}/stats", self._admin_stats),
                Route("/_fake/faults", self._admin_global_faults, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_error},
        )

    # accounts

    def add(self, account: FakeAccount) -> FakeAccount:
        with self._lock:
            if account.api_key in self.accounts:
                raise ValueError("an account with this key already exists")
            self.accounts[account.api_key] = account
        return account

    def add_account(self, api_key: str | None = None, *, seed: int | None = None,
                    calls: int = 0, days: float = 14.0, phone_numbers: int = 3,
                    assistants: int = 2, now: datetime | None = None) -> FakeAccount:
        """A new account with generated numbers, assistants and `calls` calls spread over
        the `days` before `now`; everything drawn from `seed` (deterministic)."""
        rng = random.Random(seed if seed is not None else self._rng.getrandbits(64))
        org_id = _uuid(rng)
        account = FakeAccount(api_key=api_key or f"fake-{_uuid(rng)}", org_id=org_id)
        account.assistants = [make_assistant(rng, org_id=org_id, index=i)
                              for i in range(assistants)]
        account.phone_numbers = [
            make_phone_number(rng, org_id=org_id, index=i,
                              assistant_id=account.assistants[i % assistants]["id"]
                              if assistants else None)
            for i in range(phone_numbers)]
        if calls:
            end = now or datetime.now(UTC)
            account.add_calls(calls, rng=rng, start=end - timedelta(days=days), end=end)
        return self.add(account)

    def account(self, api_key: str) -> FakeAccount:
        return self.accounts[api_key]

    # Vapi's routes

    def _vapi(self, handler: Handler) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            key = _bearer(request)
            account = self.accounts.get(key) if key else None
            if account is None:
                with self._lock:
                    self.unknown_key_requests += 1
                return JSONResponse(UNAUTHORIZED_BODY, 401)
            account._record(request.method, request.url.path, dict(request.query_params))
            delay = self.latency + account.latency
            if delay > 0:
                await asyncio.sleep(delay)
            if account.hang_seconds > 0:
                await _sleep_or_disconnect(request, account.hang_seconds)
            fault = account._take_fault()
            if fault is not None:
                status, retry_after = fault
                if status == 401:
                    return JSONResponse(UNAUTHORIZED_BODY, 401)
                if status == 429:
                    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
                    return JSONResponse({"message": "Too Many Requests",
                                         "error": "Too Many Requests", "statusCode": 429},
                                        429, headers=headers)
                phrase = HTTPStatus(status).phrase
                return _error(status, phrase, phrase)
            answer = handler(request, account)
            return await answer if inspect.isawaitable(answer) else answer

        return endpoint

    def _assistants(self, request: Request, account: FakeAccount) -> Response:
        return JSONResponse(account.assistants[:_limit(request)])

    def _phone_numbers(self, request: Request, account: FakeAccount) -> Response:
        return JSONResponse(account.phone_numbers[:_limit(request)])

    async def _assistant(self, request: Request, account: FakeAccount) -> Response:
        return await self._item(request, account, account.assistant, "Assistant",
                                ("server", "serverMessages", "name", "metadata",
                                 "firstMessage", "clientMessages"))

    async def _phone_number(self, request: Request, account: FakeAccount) -> Response:
        return await self._item(request, account, account.phone_number, "Phone Number",
                                ("server", "name", "assistantId", "provider"))

    async def _item(self, request: Request, account: FakeAccount,
                    find: Callable[[str], dict[str, Any] | None], what: str,
                    fields: tuple[str, ...]) -> Response:
        """GET or PATCH an assistant or a phone number: the fields given are set, a null
        one is cleared; the item as it now is."""
        with account._lock:
            item = find(request.path_params["item_id"])
        if item is None:
            return _error(404, "Not Found", f"{what} not found")
        if request.method == "GET":
            return JSONResponse(item)
        body = await _json_object(request)
        problems = _update_problems(body, item, fields, account.credentials)
        if problems:
            return _error(400, "Bad Request", problems)
        with account._lock:
            for key, value in body.items():
                if key == "provider":
                    continue
                if value is None:
                    item.pop(key, None)
                else:
                    item[key] = value
            item["updatedAt"] = format_instant(datetime.now(UTC))
            return JSONResponse(item)

    async def _credentials(self, request: Request, account: FakeAccount) -> Response:
        if request.method == "GET":
            with account._lock:
                return JSONResponse(list(account.credentials.values()))
        body = await _json_object(request)
        plan = body.get("authenticationPlan")
        problems = []
        if body.get("provider") != "webhook":
            problems.append("provider must be webhook (the only one this fake makes)")
        if not isinstance(plan, dict) or plan.get("type") not in ("hmac", "bearer"):
            problems.append("authenticationPlan.type must be hmac or bearer")
        elif plan["type"] == "hmac" and not (isinstance(plan.get("secretKey"), str)
                                             and plan.get("algorithm") in ("sha256", "sha512",
                                                                           "sha1")):
            problems.append("an hmac plan needs secretKey and algorithm")
        elif plan["type"] == "bearer" and not isinstance(plan.get("token"), str):
            problems.append("a bearer plan needs token")
        if problems:
            return _error(400, "Bad Request", problems)
        now = format_instant(datetime.now(UTC))
        credential = {**body, "id": str(uuid.uuid4()), "orgId": account.org_id,
                      "createdAt": now, "updatedAt": now, "authenticationSession": {}}
        with account._lock:
            account.credentials[credential["id"]] = credential
        return JSONResponse(credential, 201)

    def _credential(self, request: Request, account: FakeAccount) -> Response:
        credential = account.credentials.get(request.path_params["credential_id"])
        if credential is None:
            return _error(404, "Not Found", "Credential not found")
        return JSONResponse(credential)

    def _calls(self, request: Request, account: FakeAccount) -> Response:
        limit = _limit(request)
        keep = _call_filter(request)
        with account._lock:
            calls = list(account.calls.values())
        matching = [call for call in calls if keep(call)]
        # An arbitrary subset in an arbitrary order, as no order is documented.
        return JSONResponse(self._rng.sample(matching, min(limit, len(matching))))

    def _call(self, request: Request, account: FakeAccount) -> Response:
        call = account.calls.get(request.path_params["call_id"])
        if call is None:
            return _error(404, "Not Found", "Call not found")
        return JSONResponse(call)

    def _signature(self, token: str, expires: int) -> str:
        return hmac.new(self._signing_key, f"{token}:{expires}".encode(),
                        hashlib.sha256).hexdigest()

    def _recording(self, request: Request, account: FakeAccount) -> Response:
        channel, _, suffix = request.path_params["recording"].partition("-")
        call = account.calls.get(request.path_params["call_id"])
        if suffix != "recording" or channel not in RECORDING_CHANNELS or call is None:
            return _error(404, "Not Found", "Recording not found")
        token = f"{call['id']}-{channel}"
        expires = math.ceil(time.time() + self.recording_ttl)  # valid at least the ttl
        location = (f"{str(request.base_url).rstrip('/')}/files/{token}.wav?expires={expires}"
                    f"&signature={self._signature(token, expires)}")
        return Response(status_code=302, headers={"Location": location})

    async def _file(self, request: Request) -> Response:
        """A signed recording URL: the WAV while it is valid, 403 once expired or forged."""
        with self._lock:
            self.file_requests += 1
        token = request.path_params["token"]
        try:
            expires = int(request.query_params.get("expires", ""))
        except ValueError:
            return Response(b"AccessDenied", 403, media_type="text/plain")
        signature = request.query_params.get("signature", "")
        if (not hmac.compare_digest(signature, self._signature(token, expires))
                or time.time() >= expires):
            return Response(b"AccessDenied", 403, media_type="text/plain")
        audio, size = self._audio, len(self._audio)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=60"}
        try:
            wanted = byte_range(request.headers.get("range"), size)
        except ValueError:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if wanted is None:
            return Response(audio, 200, headers=headers, media_type="audio/wav")
        first, last = wanted
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        return Response(audio[first:last + 1], 206, headers=headers, media_type="audio/wav")

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 400:
            return _error(400, "Bad Request", [exc.detail])
        return _error(exc.status_code, exc.detail, exc.detail)

    # admin routes

    def _admin_target(self, request: Request) -> FakeAccount:
        account = self.accounts.get(request.path_params["api_key"])
        if account is None:
            raise HTTPException(404, "Not Found")
        return account

    async def _admin_add_account(self, request: Request) -> Response:
        body = await request.json()
        if body.get("api_key") in self.accounts:
            return _error(409, "Conflict", "an account with this key already exists")
        try:
            account = self.add_account(
                body.get("api_key"), seed=body.get("seed"), calls=int(body.get("calls", 0)),
                days=float(body.get("days", 14)),
                phone_numbers=int(body.get("phone_numbers", 3)),
                assistants=int(body.get("assistants", 2)))
        except (TypeError, ValueError) as exc:
            return _error(400, "Bad Request", [str(exc)])
        return JSONResponse(account.summary(), 201)

    async def _admin_account(self, request: Request) -> Response:
        return JSONResponse(self._admin_target(request).summary())

    async def _admin_faults(self, request: Request) -> Response:
        account = self._admin_target(request)
        body = await request.json()
        with account._lock:
            for name in ("latency", "hang_seconds"):
                if name in body:
                    setattr(account, name, float(body[name]))
            for name in ("rate_limit_next", "fail_next"):
                if name in body:
                    setattr(account, name, int(body[name]))
            if "fail_status" in body:
                status = int(body["fail_status"] or 0)
                if status and not 500 <= status <= 599:
                    return _error(400, "Bad Request", ["fail_status must be a 5xx or 0"])
                account.fail_status = status
            if "unauthorized" in body:
                account.unauthorized = bool(body["unauthorized"])
            if "retry_after" in body:
                value = body["retry_after"]
                account.retry_after = None if value is None else float(value)
            faults = {name: getattr(account, name) for name in (
                "latency", "unauthorized", "rate_limit_next", "retry_after", "fail_next",
                "fail_status", "hang_seconds")}
        return JSONResponse(faults)

    async def _admin_add_calls(self, request: Request) -> Response:
        account = self._admin_target(request)
        body = await request.json()
        rng = random.Random(body.get("seed"))
        if "start" in body:
            start, end = parse_instant(body["start"]), parse_instant(body["end"])
        else:
            end = datetime.now(UTC)
            start = end - timedelta(days=float(body.get("days", 1)))
        added = account.add_calls(int(body.get("calls", 1)), rng=rng, start=start, end=end,
                                  ended=bool(body.get("ended", True)))
        return JSONResponse({"ids": [call["id"] for call in added]}, 201)

    async def _admin_update_call(self, request: Request) -> Response:
        account = self._admin_target(request)
        body = await request.json()
        try:
            call = account.update_call(request.path_params["call_id"], **body)
        except KeyError:
            raise HTTPException(404, "Not Found") from None
        return JSONResponse(call)

    async def _admin_usage(self, request: Request) -> Response:
        return JSONResponse(usage_json(self._admin_target(request).daily_usage()))

    async def _admin_stats(self, request: Request) -> Response:
        account = self._admin_target(request)
        return JSONResponse({"requests": account.requests, "calls": len(account.calls)})

    async def _admin_global_faults(self, request: Request) -> Response:
        body = await request.json()
        if "latency" in body:
            self.latency = float(body["latency"])
        return JSONResponse({"latency": self.latency})


# --- running it ---------------------------------------------------------------------------


@contextlib.contextmanager
def serve(fake: FakeVapi, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve `fake` with uvicorn in a background thread with its own event loop (so the
    caller's loop is free to block on it) and yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and this one's is
    # 0: without it, Nagle and delayed ACKs add ~40 ms to every answer. Accepted sockets
    # inherit it from the listening one.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app, lifespan="off", log_level="warning", access_log=False,
                            timeout_graceful_shutdown=2, backlog=4096)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                              name="fake-vapi", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError("the fake Vapi server did not start")
        time.sleep(0.005)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def seed_demo(fake: FakeVapi, *, now: datetime | None = None) -> FakeAccount:
    """The demo account: 3 phone numbers, 2 assistants, ~200 calls over the last 14 days,
    two of them still in progress."""
    end = now or datetime.now(UTC)
    account = fake.add_account(DEMO_API_KEY, seed=2026, calls=198, days=14, phone_numbers=3,
                               assistants=2, now=end)
    account.add_calls(2, rng=random.Random(2027), start=end - timedelta(minutes=5), end=end,
                      ended=False)
    return account


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m calltrail_testkit.fake_vapi",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--demo", action="store_true",
                        help=f"seed one account with the key {DEMO_API_KEY}")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every request")
    args = parser.parse_args(argv)
    fake = FakeVapi(latency=args.latency)
    if args.demo:
        account = seed_demo(fake)
        print(f"demo account: key {DEMO_API_KEY}, org {account.org_id}, "
              f"{len(account.calls)} calls", flush=True)
    print(f"fake Vapi at http://{args.host}:{args.port}", flush=True)
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning",
                access_log=False, backlog=4096, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
