"""Realistic Vapi webhook request bodies for the ingest benchmark, built from the samples.

Each body is one of the shared samples (`shared/vapi-samples`) with its identity varied
(call id, organization, customer number, timestamps), its status varied, and its
conversation grown to a target size, so that the set spans 1-20 KB the way real traffic
does: short status and speech updates, longer conversation updates, and end-of-call reports
whose transcript grows with the call. Bodies are serialized compactly, as an HTTP client
sends them.

Each call belongs to one of the given organizations, and its bodies say which the way a
shared endpoint learns it: `call.assistantOverrides.metadata.orgId` (about 60 % of calls,
and always for web calls, which dial no number), otherwise the organization's number as the
dialled `message.phoneNumber.number`. So the direct-write baseline resolves every body to a
real organization and really does its writes. Customer numbers come from a small pool per
organization, so callers come back.

Every body gets one credential, cycling through the three Vapi sends: `X-Vapi-Secret`,
`Authorization: Bearer` and `X-Vapi-Signature: sha256=<hmac>` over the raw body (no
timestamp, so it can be computed here once; the benchmark's ingest runs with
`INGEST_HMAC_REQUIRE_TIMESTAMP=false`).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_BODY_BYTES = 1024
MAX_BODY_BYTES = 20 * 1024

# message type -> (sample files used as templates, share of traffic, target size range).
# Most traffic is chatter; calls are built from status updates and end-of-call reports.
_KINDS: dict[str, tuple[tuple[str, ...], float, tuple[int, int]]] = {
    "status-update": (
        ("inbound-1-status-ringing.json", "inbound-2-status-in-progress.json",
         "inbound-6-status-ended.json", "outbound-1-status-queued.json",
         "outbound-2-status-ringing.json", "outbound-3-status-in-progress.json",
         "outbound-4-status-ended.json"),
        0.35, (MIN_BODY_BYTES, 4 * 1024)),
    "speech-update": (("inbound-3-speech-update.json",), 0.25, (MIN_BODY_BYTES, 3 * 1024)),
    "conversation-update": (
        ("inbound-4-conversation-update.json",), 0.25, (2 * 1024, MAX_BODY_BYTES)),
    "end-of-call-report": (
        ("inbound-7-end-of-call-report.json", "outbound-5-end-of-call-report.json",
         "webcall-end-of-call-report.json", "legacy-end-of-call-report.json"),
        0.15, (4 * 1024, MAX_BODY_BYTES)),
}
_CALL_STATUSES = ("queued", "ringing", "in-progress", "in-progress", "ended")
_ENDED_REASONS = ("customer-ended-call", "assistant-ended-call", "customer-busy",
                  "customer-did-not-answer", "voicemail", "silence-timed-out")
_WORDS = ("roof", "repair", "estimate", "quote", "tuesday", "morning", "address", "window",
          "insurance", "schedule", "price", "thanks", "gutter", "leak", "afternoon", "crew")
AUTH_MODES = ("x-vapi-secret", "bearer", "signature")


@dataclass(frozen=True)
class _Identity:
    """Who a call is: the same in every body of the call."""

    call_id: str
    org_id: str  # the organization's id, as the metadata names it
    vapi_org_id: str  # its Vapi account, as `call.orgId`
    dialled_number: str  # its number, what inbound customers dial
    customer_number: str
    by_metadata: bool  # the organization is named in the metadata, not by the number


@dataclass(frozen=True)
class WebhookRequest:
    message_type: str
    body: bytes
    header_name: str
    header_value: str


def _sentence(rng: random.Random) -> str:
    words = rng.choices(_WORDS, k=rng.randint(6, 16))
    return " ".join(words).capitalize() + "."


def _conversation(rng: random.Random, turns: int, started_ms: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = []
    at_ms = started_ms + 400
    for turn in range(turns):
        duration_ms = rng.randint(800, 6000)
        messages.append({
            "role": "bot" if turn % 2 == 0 else "user",
            "message": _sentence(rng),
            "time": at_ms,
            "endTime": at_ms + duration_ms,
            "secondsFromStart": round((at_ms - started_ms) / 1000, 2),
            "duration": duration_ms,
        })
        at_ms += duration_ms + rng.randint(200, 1500)
    return messages


def _openai_format(messages: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{"role": "assistant" if m["role"] == "bot" else "user", "content": m["message"]}
            for m in messages]


def _transcript(messages: list[dict[str, object]]) -> str:
    return "\n".join(f"{'AI' if m['role'] == 'bot' else 'User'}: {m['message']}"
                     for m in messages)


def _with_turns(template: dict, rng_seed: int, turns: int) -> dict:
    """`template` (already varied) with a conversation of `turns` turns in it."""
    document = copy.deepcopy(template)
    message = document["message"]
    rng = random.Random(rng_seed)
    started_ms = int(message.get("timestamp") or 0) - 60_000
    conversation = _conversation(rng, turns, started_ms)
    kind = message["type"]
    if kind == "conversation-update":
        message["messages"] = conversation
        message["messagesOpenAIFormatted"] = _openai_format(conversation)
    elif kind == "end-of-call-report":
        artifact = message.setdefault("artifact", {})
        artifact["messages"] = conversation
        artifact["transcript"] = _transcript(conversation)
        if "transcript" in message:  # legacy flat shape
            message["transcript"] = artifact["transcript"]
    else:
        message["artifact"] = {"messages": conversation,
                               "messagesOpenAIFormatted": _openai_format(conversation)}
    return document


def _encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _fit(template: dict, rng_seed: int, target: int) -> bytes:
    """The body with the fewest turns that reaches `target` bytes, within MAX_BODY_BYTES."""
    body = _encode(_with_turns(template, rng_seed, 1))
    for turns in range(2, 400):
        if len(body) >= target:
            break
        longer = _encode(_with_turns(template, rng_seed, turns))
        if len(longer) > MAX_BODY_BYTES:
            break
        body = longer
    return body


def _vary(sample: dict, rng: random.Random, who: _Identity, now_ms: int) -> dict:
    document = copy.deepcopy(sample)
    message = document["message"]
    call = message.setdefault("call", {})
    old_id = call.get("id", "")
    call_id = who.call_id
    call["id"] = call_id
    call["orgId"] = who.vapi_org_id
    metadata = call.setdefault("assistantOverrides", {}).setdefault("metadata", {})
    if who.by_metadata or "phoneNumber" not in message:
        metadata["orgId"] = who.org_id
    else:
        metadata.pop("orgId", None)
        message["phoneNumber"]["number"] = who.dialled_number
    if not metadata:
        del call["assistantOverrides"]
    for holder in (call, message):
        if isinstance(holder.get("customer"), dict):
            holder["customer"]["number"] = who.customer_number
    message["timestamp"] = now_ms - rng.randint(0, 3_600_000)
    if message["type"] == "status-update":
        status = rng.choice(_CALL_STATUSES)
        message["status"] = status
        call["status"] = status
        if status == "ended":
            message["endedReason"] = rng.choice(_ENDED_REASONS)
        else:
            message.pop("endedReason", None)
    elif message["type"] == "speech-update":
        message["status"] = rng.choice(("started", "stopped"))
        message["role"] = rng.choice(("assistant", "user"))
        message["turn"] = rng.randint(0, 40)
    elif message["type"] == "end-of-call-report":
        message["endedReason"] = rng.choice(_ENDED_REASONS)
        message["cost"] = round(rng.uniform(0.01, 1.5), 4)
    # Recording URLs and summaries name the call: keep them consistent with the new id.
    return json.loads(json.dumps(document).replace(old_id, call_id)) if old_id else document


def _credential(mode: str, body: bytes, secret: str) -> tuple[str, str]:
    if mode == "x-vapi-secret":
        return "X-Vapi-Secret", secret
    if mode == "bearer":
        return "Authorization", f"Bearer {secret}"
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return "X-Vapi-Signature", f"sha256={digest}"


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def build_requests(
    samples_dir: Path, secret: str, *, count: int, seed: int, now_ms: int,
    organizations: Sequence[tuple[str, str]], calls: int = 120, customers_per_org: int = 20,
) -> list[WebhookRequest]:
    """`count` webhook requests, reproducible for a given `seed` (and `now_ms`), for calls
    of `organizations`: (organization id, its dialled number) pairs."""
    rng = random.Random(seed)
    vapi_org_ids = [_uuid(rng) for _ in organizations]
    customers = [[f"+1628555{rng.randint(0, 9999):04d}" for _ in range(customers_per_org)]
                 for _ in organizations]
    identities = []
    for _ in range(calls):
        org = rng.randrange(len(organizations))
        org_id, number = organizations[org]
        identities.append(_Identity(_uuid(rng), org_id, vapi_org_ids[org], number,
                                    rng.choice(customers[org]), rng.random() < 0.6))
    samples = {name: json.loads((samples_dir / name).read_text())
               for files, _, _ in _KINDS.values() for name in files}
    kinds = list(_KINDS)
    weights = [_KINDS[kind][1] for kind in kinds]
    requests = []
    for index in range(count):
        kind = rng.choices(kinds, weights)[0]
        files, _, (low, high) = _KINDS[kind]
        varied = _vary(samples[rng.choice(files)], rng, rng.choice(identities), now_ms)
        body = _fit(varied, rng.getrandbits(32), rng.randint(low, high))
        header_name, header_value = _credential(AUTH_MODES[index % len(AUTH_MODES)],
                                                body, secret)
        requests.append(WebhookRequest(kind, body, header_name, header_value))
    return requests


def write_requests(requests: list[WebhookRequest], directory: Path) -> Path:
    """One file per body plus a tab-separated manifest (file, header, value) for wrk's Lua."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, request in enumerate(requests):
        name = f"{index:04d}.json"
        (directory / name).write_bytes(request.body)
        lines.append(f"{name}\t{request.header_name}\t{request.header_value}\n")
    manifest = directory / "manifest.tsv"
    manifest.write_text("".join(lines))
    return manifest
