"""Random but realistic Vapi call lifecycles, built from the sample payloads' shapes."""

from __future__ import annotations

import copy
import datetime as dt
import uuid

from hypothesis import strategies as st

from tests.support.samples import sample

T0 = dt.datetime(2026, 11, 3, 23, 50, tzinfo=dt.UTC)  # near midnight: days differ
CALLERS = ["+14155550123", "+1 (415) 555-0123", "+442071838750", "+14155550999"]
NAMES = [None, "Ana Ruiz", "Dana Whitfield"]
TYPES = ["inboundPhoneCall", "outboundPhoneCall", "webCall"]
STATUS_PATHS = [["ringing", "in-progress", "ended"], ["queued", "ringing", "in-progress",
                "ended"], ["in-progress", "in-progress", "ended"], ["ended"], ["ringing"]]


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@st.composite
def lifecycle(draw, call_id: str) -> list[dict]:
    """The webhook bodies Vapi sends for one call, in the order it sends them."""
    call_type = draw(st.sampled_from(TYPES))
    created = T0 + dt.timedelta(minutes=draw(st.integers(0, 20)))
    call = {"id": call_id, "orgId": "7d3e2a10-6c1b-4f0e-9a55-2f4be1c0a001",
            "type": call_type, "createdAt": _iso(created), "updatedAt": _iso(created),
            "assistantId": draw(st.sampled_from(["a1", "a2"]))}
    customer = {}
    if call_type != "webCall":
        customer["number"] = draw(st.sampled_from(CALLERS))
        if (name := draw(st.sampled_from(NAMES))) is not None:
            customer["name"] = name
        call["customer"] = customer
        call["phoneNumberId"] = "pn-1"
    events = []
    at = created
    for status in draw(st.sampled_from(STATUS_PATHS)):
        at += dt.timedelta(seconds=draw(st.integers(1, 30)))
        body = copy.deepcopy(sample("inbound-2-status-in-progress"))
        message = body["message"]
        message.update({"status": status, "timestamp": int(at.timestamp() * 1000),
                        "call": {**call, "status": status}, "customer": customer})
        if status == "ended":
            message["endedReason"] = draw(st.sampled_from(["customer-ended-call",
                                                           "silence-timed-out"]))
        events.append(body)
    if draw(st.booleans()):
        report = copy.deepcopy(sample(draw(st.sampled_from(
            ["inbound-7-end-of-call-report", "legacy-end-of-call-report"]))))
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
                        "startedAt": _iso(started), "endedAt": _iso(ended),
                        "cost": draw(st.sampled_from([0.2134, 0.05, 1.1, 0])),
                        "timestamp": int((ended.timestamp() + 5) * 1000)})
        if "analysis" in message:
            message["analysis"]["structuredData"] = draw(st.sampled_from([
                {}, {"name": "From Analysis", "email": "lead@example.com"}]))
        # Chatter around the end: archived, never applied to the call.
        chatter = copy.deepcopy(sample("inbound-3-speech-update"))
        chatter["message"]["call"] = call
        events += [chatter, report]
    return events


@st.composite
def traffic(draw, organizations: int = 2, most_calls: int = 6
            ) -> list[tuple[int, list[dict]]]:
    """(organization index, lifecycle) for several calls."""
    calls = draw(st.integers(1, most_calls))
    return [(draw(st.integers(0, organizations - 1)), draw(lifecycle(str(uuid.uuid4()))))
            for _ in range(calls)]
