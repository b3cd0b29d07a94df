"""Vapi call lifecycles: every webhook Vapi sends for a call, in the order it sends them.

Two generators, for two kinds of callers, from the same samples (`calltrail_testkit.samples`):

- Seeded traffic (`CallFactory`, `interleave`): reproducible for a seed, realistic in size
  and mix, as bytes ready to send; for the benchmarks, the fault suite and the tests that
  run the services as processes.
- Hypothesis strategies (`lifecycle`, `traffic`): small calls whose awkward cases come
  first (status paths that skip or repeat a status, reports that correct the caller, a
  legacy report, chatter around the end, calls near midnight so days differ, callers
  written in several ways), as dicts; for the property tests of the call processor.

Seeded traffic. A call here is every webhook Vapi sends for it with its default
`serverMessages` (`shared/vapi.md`): the status-updates (outbound: queued, ringing,
in-progress, ended; inbound: ringing, in-progress, ended; web: in-progress, ended), the
chatter of each turn of the conversation (a speech-update when the speaker starts and
stops, a conversation-update with the conversation so far, now and then a
user-interrupted), and the end-of-call-report. Most of the traffic is therefore chatter,
and calls are built from the status-updates and the report.

What varies, reproducibly for a seed: the call id, the direction (about 55 % inbound, 35 %
outbound, 10 % web), the customer's number (drawn from a small pool per organization, so
leads repeat across calls), the length of the conversation (so bodies span 1-20 KB as in
`bench.payloads`: short speech-updates, growing conversation-updates, reports with the
whole transcript), outbound calls nobody answers (no conversation), and, in about one call
in ten, the `ended` status-update arriving after the report (Vapi promises no order).
Bodies are built from the shared samples and serialized compactly, as Vapi sends them.

Each call goes either to its organization's own endpoint (ingest sets `x-org-id`) or, for
a share of calls, to the shared endpoint with `call.assistantOverrides.metadata.orgId` set
to the organization's id, which the processor resolves.

Two mixes (`MIXES`): `default`, the above; `call-only`, what an assistant whose
`serverMessages` is just `status-update` and `end-of-call-report` sends: the same
status-updates and a report whose transcript is 1-10 KB (answered calls; the report then
carries the whole conversation, up to about 35 KB), and no chatter, so nearly every event
changes a call.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from calltrail_testkit.samples import format_instant, sample

MAX_BODY_BYTES = 20 * 1024
DEFAULT_MIX, CALL_ONLY_MIX = "default", "call-only"
MIXES = (DEFAULT_MIX, CALL_ONLY_MIX)
CALL_EVENT_TYPES = ("status-update", "end-of-call-report")
CALL_ONLY_TRANSCRIPT_BYTES = (1024, 10 * 1024)
CALL_ONLY_MAX_BODY_BYTES = 64 * 1024  # never reached: the report keeps its whole transcript
_WORDS = ("roof", "repair", "estimate", "quote", "tuesday", "morning", "address", "window",
          "insurance", "schedule", "price", "thanks", "gutter", "leak", "afternoon", "crew",
          "shingle", "warranty", "inspection", "deposit", "friday", "siding", "attic")
_NAMES = ("Ana Ruiz", "Ben Okafor", "Chloe Martin", "Dev Patel", "Emma Novak", "Farid Haddad",
          "Grace Lee", "Hugo Silva", "Ines Moreau", "Jonas Berg", None, None)
_ANSWERED_REASONS = ("customer-ended-call", "assistant-ended-call", "silence-timed-out",
                     "customer-ended-call", "assistant-said-end-call-phrase")
_UNANSWERED_REASONS = ("customer-busy", "customer-did-not-answer", "voicemail")
_SAMPLES = {
    "inbound-status": "inbound-1-status-ringing.json",
    "outbound-status": "outbound-1-status-queued.json",
    "speech": "inbound-3-speech-update.json",
    "conversation": "inbound-4-conversation-update.json",
    "interrupted": "inbound-5-user-interrupted.json",
    "inbound-report": "inbound-7-end-of-call-report.json",
    "outbound-report": "outbound-5-end-of-call-report.json",
    "web-report": "webcall-end-of-call-report.json",
}
INBOUND, OUTBOUND, WEB = "inboundPhoneCall", "outboundPhoneCall", "webCall"


@dataclass(frozen=True)
class Organization:
    """A Calltrail organization as the seeded traffic addresses it."""

    org_id: str  # Calltrail's organization id
    endpoint_id: str  # its webhook endpoint, `POST /webhooks/vapi/{endpoint_id}`
    webhook_secret: str
    vapi_org_id: str  # the organization's Vapi account, as `call.orgId`
    phone_number: str  # its Vapi number (E.164), what inbound customers dial
    phone_number_id: str  # that number's Vapi id


@dataclass(frozen=True)
class Event:
    call_id: str
    message_type: str
    body: bytes
    org: Organization
    shared: bool  # sent to the shared endpoint (organization in the metadata), not the org's
    first: bool  # the call's first event: the one that creates its row


@dataclass(frozen=True)
class Call:
    call_id: str
    org: Organization
    direction: str
    shared: bool
    events: tuple[Event, ...]


def load_templates(samples_dir: Path) -> dict[str, dict[str, Any]]:
    return {kind: json.loads((samples_dir / name).read_text())["message"]
            for kind, name in _SAMPLES.items()}


def _iso(ms: int) -> str:
    return format_instant(dt.datetime.fromtimestamp(ms / 1000, dt.UTC))


def _sentence(rng: random.Random) -> str:
    return " ".join(rng.choices(_WORDS, k=rng.randint(5, 22))).capitalize() + "."


def _customer_pool(rng: random.Random, size: int) -> list[tuple[str, str | None]]:
    """(E.164 number, name or None); a few UK numbers among US ones."""
    pool = []
    for _ in range(size):
        if rng.random() < 0.2:
            number = f"+4420{rng.randint(10_000_000, 99_999_999)}"
        else:
            area = rng.choice(('415', '628', '510', '650'))
            number = f"+1{area}{rng.randint(2_000_000, 9_999_999)}"
        pool.append((number, rng.choice(_NAMES)))
    return pool


class _CallBuilder:
    """The bodies of one call, from the templates and the call's own snapshot."""

    def __init__(self, templates: dict[str, dict[str, Any]], rng: random.Random, *,
                 org: Organization, assistant: dict[str, Any], direction: str, shared: bool,
                 customer: tuple[str, str | None], created_ms: int) -> None:
        self.templates = templates
        self.assistant = assistant
        self.rng = rng
        self.org = org
        self.direction = direction
        self.shared = shared
        self.call_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.number, self.name = customer
        self.created_ms = created_ms
        self.email = (f"{self.name.split()[0].lower()}@example.com"
                      if self.name and rng.random() < 0.5 else None)
        self.messages: list[dict[str, Any]] = []
        self.max_body_bytes = MAX_BODY_BYTES

    def snapshot(self, status: str | None, at_ms: int) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": self.call_id,
            "orgId": self.org.vapi_org_id,
            "type": self.direction,
            "createdAt": _iso(self.created_ms),
            "updatedAt": _iso(at_ms),
            "assistantId": "57740511-ea3d-4be7-b6a0-0758cb138653",
        }
        if self.direction != WEB:
            call.update({"phoneNumberId": self.org.phone_number_id, "phoneCallProvider": "twilio",
                         "phoneCallTransport": "pstn",
                         "customer": {"number": self.number,
                                      **({"name": self.name} if self.name else {})}})
        metadata: dict[str, Any] = {"campaign": "spring"} if self.direction == OUTBOUND else {}
        if self.shared:
            metadata["orgId"] = self.org.org_id
        if metadata:
            call["assistantOverrides"] = {"metadata": metadata}
        if status is not None:
            call["status"] = status
        return call

    def message(self, kind: str, at_ms: int, status: str | None = None) -> dict[str, Any]:
        message = copy.deepcopy(self.templates[kind])
        message["call"] = self.snapshot(status, at_ms)
        message["timestamp"] = at_ms
        message["assistant"] = self.assistant
        if self.direction == WEB:
            message.pop("phoneNumber", None)
            message.pop("customer", None)
        else:
            message["phoneNumber"] = {"provider": "twilio", "number": self.org.phone_number,
                                      "name": "Main line"}
            message["customer"] = {"number": self.number}
        return message

    def body(self, message: dict[str, Any]) -> bytes:
        return orjson.dumps({"message": message})

    def status_update(self, status: str, at_ms: int, ended_reason: str | None = None) -> bytes:
        kind = "outbound-status" if self.direction == OUTBOUND else "inbound-status"
        message = self.message(kind, at_ms, status)
        message["status"] = status
        message.pop("endedReason", None)
        if ended_reason is not None:
            message["endedReason"] = ended_reason
            message["call"]["endedReason"] = ended_reason
        return self.body(message)

    def _openai(self, messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
        return [{"role": "assistant" if m["role"] == "bot" else "user",
                 "content": m["message"]} for m in messages]

    def say(self, role: str, at_ms: int) -> int:
        """Append one turn; when it ends."""
        duration = self.rng.randint(800, 7000)
        started = self.messages[0]["time"] if self.messages else at_ms
        self.messages.append({"role": role, "message": _sentence(self.rng), "time": at_ms,
                              "endTime": at_ms + duration,
                              "secondsFromStart": round((at_ms - started) / 1000, 2),
                              "duration": duration})
        return at_ms + duration

    def speech_update(self, role: str, state: str, at_ms: int) -> bytes:
        message = self.message("speech", at_ms)
        message.update({"status": state, "role": "assistant" if role == "bot" else "user",
                        "turn": len(self.messages)})
        recent = self.messages[-4:]
        message["artifact"] = {"messages": recent, "messagesOpenAIFormatted": self._openai(recent)}
        return self.body(message)

    def user_interrupted(self, at_ms: int) -> bytes:
        message = self.message("interrupted", at_ms)
        recent = self.messages[-4:]
        message["artifact"] = {"messages": recent, "messagesOpenAIFormatted": self._openai(recent)}
        return self.body(message)

    def conversation_update(self, at_ms: int) -> bytes:
        message = self.message("conversation", at_ms)
        # The whole conversation so far; the oldest turns give way past 20 KB.
        for start in range(len(self.messages)):
            kept = self.messages[start:]
            message["messages"] = kept
            message["messagesOpenAIFormatted"] = self._openai(kept)
            body = self.body(message)
            if len(body) <= self.max_body_bytes:
                return body
        return body

    def report(self, at_ms: int, started_ms: int | None, ended_ms: int, reason: str) -> bytes:
        kind = {INBOUND: "inbound-report", OUTBOUND: "outbound-report"}.get(
            self.direction, "web-report")
        message = self.message(kind, at_ms)
        seconds = max(ended_ms - (started_ms or ended_ms), 0) / 1000
        minutes = round(seconds / 60, 4)
        cost = round(0.02 + minutes * self.rng.uniform(0.09, 0.15), 4)
        transcript_lines = [f"{'AI' if m['role'] == 'bot' else 'User'}: {m['message']}"
                            for m in self.messages]
        recording = f"https://storage.vapi.ai/{self.call_id}"
        message.update({
            "endedReason": reason,
            "startedAt": _iso(started_ms) if started_ms else None,
            "endedAt": _iso(ended_ms),
            "cost": cost,
            "costs": [{"type": "vapi", "subType": "normal", "minutes": minutes,
                       "cost": round(cost * 0.6, 4)},
                      {"type": "transport", "provider": "twilio", "minutes": minutes,
                       "cost": round(cost * 0.1, 4)}],
            "analysis": {
                "summary": f"Caller asked about a repair estimate ({self.call_id[:8]}).",
                "structuredData": {k: v for k, v in (("name", self.name),
                                                     ("email", self.email)) if v},
                "successEvaluation": "true" if self.messages else "false",
            },
        })
        if message["startedAt"] is None:
            del message["startedAt"]
        for start in range(max(len(self.messages), 1)):
            kept = self.messages[start:]
            message["artifact"] = {
                "transcript": "\n".join(transcript_lines[start:]),
                "messages": kept,
                "recordingUrl": f"{recording}-mono.wav",
                "stereoRecordingUrl": f"{recording}-stereo.wav",
                "recording": {"mono": {"combinedUrl": f"{recording}-mono.wav"},
                              "stereoUrl": f"{recording}-stereo.wav"},
            }
            body = self.body(message)
            if len(body) <= self.max_body_bytes:
                break
        return body

    def transcript_bytes(self) -> int:
        """About the length of the report's transcript so far ("AI: ..." lines)."""
        return sum(len(m["message"]) + 6 for m in self.messages)


def assistant_config(rng: random.Random, name: str) -> dict[str, Any]:
    """An assistant as Vapi includes it in server messages: its prompt sets the base size."""
    prompt = " ".join(_sentence(rng) for _ in range(rng.randint(3, 14)))
    return {
        "name": name,
        "firstMessage": "Hi, thanks for calling. How can I help?",
        "model": {"provider": "openai", "model": "gpt-4o", "temperature": 0.4,
                  "messages": [{"role": "system", "content": prompt}]},
        "voice": {"provider": "11labs", "voiceId": "burt"},
        "transcriber": {"provider": "deepgram", "model": "nova-2", "language": "en"},
        "endCallPhrases": ["goodbye", "talk soon"],
        "serverMessages": ["conversation-update", "end-of-call-report", "function-call",
                           "hang", "speech-update", "status-update", "tool-calls",
                           "transfer-destination-request", "handoff-destination-request",
                           "user-interrupted", "assistant.started"],
    }


def build_call(templates: dict[str, dict[str, Any]], rng: random.Random, *,
               org: Organization, assistant: dict[str, Any], customer: tuple[str, str | None],
               shared: bool, created_ms: int, mix: str = DEFAULT_MIX,
               direction: str | None = None) -> Call:
    """One call's webhooks of `mix`, in the order Vapi sends them (`direction`: drawn when
    not given)."""
    call_only = mix == CALL_ONLY_MIX
    roll = rng.random()
    if direction is None:
        direction = INBOUND if roll < 0.55 else OUTBOUND if roll < 0.9 else WEB
    b = _CallBuilder(templates, rng, org=org, assistant=assistant, direction=direction,
                     shared=shared, customer=customer, created_ms=created_ms)
    if call_only:
        b.max_body_bytes = CALL_ONLY_MAX_BODY_BYTES
    events: list[tuple[str, bytes]] = []
    at = created_ms + rng.randint(50, 400)
    if direction == OUTBOUND:
        events.append(("status-update", b.status_update("queued", at)))
        at += rng.randint(300, 2000)
    if direction != WEB:
        events.append(("status-update", b.status_update("ringing", at)))
        at += rng.randint(2000, 15_000)
    answered = direction != OUTBOUND or rng.random() > 0.12
    started_ms: int | None = None
    if answered:
        started_ms = at
        events.append(("status-update", b.status_update("in-progress", at)))
        if call_only:  # no chatter is sent: the conversation only fills the report
            target = rng.randint(*CALL_ONLY_TRANSCRIPT_BYTES)
            while b.transcript_bytes() < target:
                at = b.say("bot" if len(b.messages) % 2 == 0 else "user",
                           at + rng.randint(200, 1500))
            turns = 0
        else:  # most calls are short; one in seven runs long (its bodies reach 20 KB)
            turns = rng.randint(3, 20) if rng.random() < 0.85 else rng.randint(21, 45)
        for turn in range(turns):
            role = "bot" if turn % 2 == 0 else "user"
            at += rng.randint(200, 1500)
            events.append(("speech-update", b.speech_update(role, "started", at)))
            if role == "user" and rng.random() < 0.15:
                events.append(("user-interrupted", b.user_interrupted(at + 300)))
            at = b.say(role, at)
            events.append(("speech-update", b.speech_update(role, "stopped", at)))
            events.append(("conversation-update", b.conversation_update(at + 50)))
        reason = rng.choice(_ANSWERED_REASONS)
    else:
        reason = rng.choice(_UNANSWERED_REASONS)
    at += rng.randint(200, 1500)
    ended = ("status-update", b.status_update("ended", at, reason))
    report = ("end-of-call-report", b.report(at + rng.randint(2000, 9000), started_ms, at,
                                             reason))
    # Vapi promises no order: now and then the ended status arrives after the report.
    events.extend([report, ended] if rng.random() < 0.1 else [ended, report])
    if call_only:
        events = [(kind, body) for kind, body in events if kind in CALL_EVENT_TYPES]
    return Call(b.call_id, org, direction, shared, tuple(
        Event(b.call_id, kind, body, org, shared, index == 0)
        for index, (kind, body) in enumerate(events)))


class CallFactory:
    """Calls across organizations, with customers that come back (leads repeat)."""

    def __init__(self, samples_dir: Path, organizations: Sequence[Organization], *,
                 seed: int, now_ms: int, shared_share: float = 0.2,
                 customers_per_org: int = 150, mix: str = DEFAULT_MIX,
                 direction: str | None = None) -> None:
        self.templates = load_templates(samples_dir)
        self.mix = mix
        self.direction = direction  # every call's, or None: drawn per call
        self.rng = random.Random(seed)
        self.organizations = list(organizations)
        self.now_ms = now_ms
        self.shared_share = shared_share
        self.customers = {org.org_id: _customer_pool(self.rng, customers_per_org)
                          for org in self.organizations}
        self.assistants = {org.org_id: assistant_config(self.rng, f"Front desk {index + 1}")
                           for index, org in enumerate(self.organizations)}

    def call(self, *, created_ms: int | None = None) -> Call:
        org = self.rng.choice(self.organizations)
        return build_call(
            self.templates, self.rng, org=org, assistant=self.assistants[org.org_id],
            customer=self.rng.choice(self.customers[org.org_id]),
            shared=self.rng.random() < self.shared_share,
            created_ms=created_ms if created_ms is not None
            else self.now_ms - self.rng.randint(60_000, 6 * 3_600_000), mix=self.mix,
            direction=self.direction)

    def calls(self, count: int) -> list[Call]:
        return [self.call() for _ in range(count)]


def interleave(calls: Iterable[Call], rng: random.Random, concurrency: int) -> Iterator[Event]:
    """Every event of `calls`, each call in its own order, with `concurrency` calls under way
    at once (as many calls overlap in time on a busy account)."""
    pending = iter(calls)
    active: list[Iterator[Event]] = []
    while True:
        while len(active) < concurrency:
            call = next(pending, None)
            if call is None:
                break
            active.append(iter(call.events))
        if not active:
            return
        index = rng.randrange(len(active))
        event = next(active[index], None)
        if event is None:
            active[index] = active[-1]
            active.pop()
            continue
        yield event


def fake_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# --- hypothesis strategies, for property tests ------------------------------------------

T0 = dt.datetime(2026, 11, 3, 23, 50, tzinfo=dt.UTC)  # near midnight: days differ
CALLERS = ["+14155550123", "+1 (415) 555-0123", "+442071838750", "+14155550999"]
NAMES = [None, "Ana Ruiz", "Dana Whitfield"]
# What Vapi extracts after a call (artifact.structuredOutputs and .scorecards): often absent
# from the report, filled in on the call later (vapi.md). Ids as in the samples.
BOOKED, DETAILS, QA = ("5b8f9c1e-2d3a-4e6f-9a0b-1c2d3e4f5a61",
                       "7c9d0e2f-3b4a-4f5e-8a1b-2c3d4e5f6a72",
                       "c5bd0d4e-0c7f-4b0a-82e9-5d0baf6e4a01")
EXTRACTED: list[dict[str, Any]] = [
    {},
    {"structuredOutputs": {BOOKED: {"name": "Appointment booked", "result": True}}},
    {"structuredOutputs": {
        BOOKED: {"name": "Appointment booked", "result": False},
        DETAILS: {"name": "Customer details",
                  "result": {"name": "From Outputs", "email": "outputs@example.com"}}},
     "scorecards": {QA: {"name": "Support QA", "score": 30, "scoreNormalized": 30,
                         "metricPoints": {BOOKED: 0}}}},
    {"scorecards": {QA: {"name": "Support QA", "score": 100, "scoreNormalized": 100,
                         "metricPoints": {BOOKED: 100}}}},
]
STATUS_PATHS = [["ringing", "in-progress", "ended"], ["queued", "ringing", "in-progress",
                "ended"], ["in-progress", "in-progress", "ended"], ["ended"], ["ringing"]]


@st.composite
def lifecycle(draw: st.DrawFn, call_id: str) -> list[dict[str, Any]]:
    """The webhook bodies Vapi sends for one call, in the order it sends them."""
    call_type = draw(st.sampled_from([INBOUND, OUTBOUND, WEB]))
    created = T0 + dt.timedelta(minutes=draw(st.integers(0, 20)))
    call: dict[str, Any] = {
        "id": call_id, "orgId": "7d3e2a10-6c1b-4f0e-9a55-2f4be1c0a001", "type": call_type,
        "createdAt": format_instant(created), "updatedAt": format_instant(created),
        "assistantId": draw(st.sampled_from(["a1", "a2"]))}
    customer: dict[str, Any] = {}
    if call_type != WEB:
        customer["number"] = draw(st.sampled_from(CALLERS))
        if (name := draw(st.sampled_from(NAMES))) is not None:
            customer["name"] = name
        call["customer"] = customer
        call["phoneNumberId"] = "pn-1"
    events = []
    at = created
    for status in draw(st.sampled_from(STATUS_PATHS)):
        at += dt.timedelta(seconds=draw(st.integers(1, 30)))
        body = sample("inbound-2-status-in-progress")
        message = body["message"]
        message.update({"status": status, "timestamp": int(at.timestamp() * 1000),
                        "call": {**call, "status": status}, "customer": customer})
        if status == "ended":
            message["endedReason"] = draw(st.sampled_from(["customer-ended-call",
                                                           "silence-timed-out"]))
        events.append(body)
    if draw(st.booleans()):
        report = sample(draw(st.sampled_from(
            ["inbound-7-end-of-call-report", "legacy-end-of-call-report"])))
        message = report["message"]
        started = created + dt.timedelta(seconds=2)
        ended = started + dt.timedelta(seconds=draw(st.integers(1, 900)),
                                       milliseconds=draw(st.integers(0, 999)))
        report_call, report_customer = call, customer
        if customer and draw(st.integers(0, 2)) == 0:
            # Now and then the report corrects who the caller was: leads must follow.
            report_customer = {**customer, "number": draw(st.sampled_from(CALLERS))}
            report_call = {**call, "customer": report_customer}
        message.update({"call": report_call, "customer": report_customer,
                        "startedAt": format_instant(started), "endedAt": format_instant(ended),
                        "cost": draw(st.sampled_from([0.2134, 0.05, 1.1, 0])),
                        "timestamp": int((ended.timestamp() + 5) * 1000)})
        if "analysis" in message:
            message["analysis"]["structuredData"] = draw(st.sampled_from([
                {}, {"name": "From Analysis", "email": "lead@example.com"}]))
        if "artifact" in message:
            message["artifact"].update(draw(st.sampled_from(EXTRACTED)))
        # Chatter around the end: archived, never applied to the call.
        chatter = sample("inbound-3-speech-update")
        chatter["message"]["call"] = call
        events += [chatter, report]
    return events


@st.composite
def traffic(draw: st.DrawFn, organizations: int = 2, most_calls: int = 6,
            deletions: bool = False) -> list[tuple[int, list[dict[str, Any]]]]:
    """(organization index, lifecycle) for several calls; with `deletions`, some calls are
    deleted in Vapi (`with_deletion`)."""
    calls = draw(st.integers(1, most_calls))
    out = []
    for _ in range(calls):
        events = draw(lifecycle(str(uuid.uuid4())))
        if deletions and draw(st.booleans()):
            events = draw(with_deletion(events))
        out.append((draw(st.integers(0, organizations - 1)), events))
    return out


@st.composite
def with_deletion(draw: st.DrawFn, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`events` with Vapi's `call.deleted` for the call somewhere among them: anywhere, since
    Vapi promises no order, so that later events must not bring the call back."""
    call = events[0]["message"]["call"]
    deleted = {"message": {"type": "call.deleted", "timestamp": int(
        (T0 + dt.timedelta(hours=draw(st.integers(0, 2)))).timestamp() * 1000),
        "call": call, "customer": call.get("customer", {})}}
    at = draw(st.integers(0, len(events)))
    return [*events[:at], deleted, *events[at:]]
