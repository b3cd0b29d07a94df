"""`make demo`: simulated Vapi calls through the running stack; watch calls and leads appear.

Starts nothing: it needs `make up` first. It creates a demo organization, sends five call
lifecycles (three inbound from two callers, one outbound, one web call) to that
organization's webhook URL, signed with HMAC as a Vapi HMAC credential would, and prints
the calls, leads and today's statistics the call processor made of them.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import hmac
import json
import sys
import time
import uuid
from pathlib import Path

import httpx

from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.settings import load_settings

SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vapi"
INBOUND = ["inbound-1-status-ringing", "inbound-2-status-in-progress",
           "inbound-3-speech-update", "inbound-6-status-ended", "inbound-7-end-of-call-report"]
OUTBOUND = ["outbound-1-status-queued", "outbound-2-status-ringing",
            "outbound-3-status-in-progress", "outbound-4-status-ended",
            "outbound-5-end-of-call-report"]
WEB = ["webcall-end-of-call-report"]


def _lifecycle(names: list[str], *, number: str | None, name: str | None, minutes_ago: int,
               org_id: str) -> list[bytes]:
    call_id = str(uuid.uuid4())
    created = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=minutes_ago)
    bodies = []
    for step, sample in enumerate(names):
        body = json.loads((SAMPLES / f"{sample}.json").read_text())
        message = body["message"]
        call = message["call"]
        call["id"] = call_id
        call["createdAt"] = created.isoformat().replace("+00:00", "Z")
        metadata = call.get("assistantOverrides", {}).get("metadata")
        if metadata is not None:
            metadata["orgId"] = org_id
        if number is not None:
            customer = {"number": number, **({"name": name} if name else {})}
            call["customer"] = customer
            message["customer"] = copy.deepcopy(customer)
        at = created + dt.timedelta(seconds=5 + step * 20)
        message["timestamp"] = int(at.timestamp() * 1000)
        if message["type"] == "end-of-call-report":
            message["startedAt"] = (created + dt.timedelta(seconds=2)).isoformat()
            message["endedAt"] = (created + dt.timedelta(seconds=62 + step * 20)).isoformat()
        bodies.append(json.dumps(body).encode())
    return bodies


def _signed(body: bytes, secret: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    signature = hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                         hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-timestamp": timestamp,
            "x-signature": signature}


def _table(title: str, header: list[str], rows: list[list[object]]) -> None:
    print(f"\n{title}")
    cells = [header, *[["" if v is None else str(v) for v in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for index, row in enumerate(cells):
        print("  " + "  ".join(value.ljust(width) for value, width in zip(row, widths,
                                                                          strict=True)))
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))


async def main() -> int:
    settings = load_settings()
    ingest = f"http://127.0.0.1:{settings.ingest_port}"
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            (await client.get(f"{ingest}/healthz")).raise_for_status()
        except httpx.HTTPError:
            print(f"ingest does not answer on {ingest}: start the stack with `make up`.",
                  file=sys.stderr)
            return 1
        connection = await db.connect(settings.database_url)
        try:
            org = await create_organization(connection, f"Demo {dt.datetime.now():%H:%M:%S}")
        finally:
            await connection.close()
        url = f"{ingest}/webhooks/vapi/{org.endpoint_id}"
        print(f"organization {org.org_id}\nwebhook URL  {url}")
        calls = [
            _lifecycle(INBOUND, number="+14155550123", name="Ana Ruiz", minutes_ago=50,
                       org_id=str(org.org_id)),
            _lifecycle(INBOUND, number="+1 (415) 555-0123", name=None, minutes_ago=20,
                       org_id=str(org.org_id)),
            _lifecycle(INBOUND, number="+442071838750", name="Sam Patel", minutes_ago=10,
                       org_id=str(org.org_id)),
            _lifecycle(OUTBOUND, number="+14155550123", name=None, minutes_ago=5,
                       org_id=str(org.org_id)),
            _lifecycle(WEB, number=None, name=None, minutes_ago=2, org_id=str(org.org_id)),
        ]
        sent = 0
        for bodies in calls:
            for body in bodies:
                response = await client.post(url, content=body,
                                             headers=_signed(body, org.webhook_secret))
                response.raise_for_status()
                sent += 1
        print(f"sent {sent} webhooks for {len(calls)} calls; waiting for the processor...")

    connection = await db.connect(settings.database_url)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            done = await connection.fetchval(
                "SELECT count(*) FROM calls WHERE org_id = $1 AND report_received", org.org_id)
            if done == len(calls):
                break
            await asyncio.sleep(0.2)
        else:
            print("the calls have not all appeared: is the call processor running? "
                  "(`make up` starts it; its log is var/log/call-processor.log)",
                  file=sys.stderr)
        calls_rows = await connection.fetch(
            "SELECT c.direction, c.status, c.customer_number, c.duration_seconds, c.cost,"
            " c.ended_reason, l.phone_number AS lead FROM calls c"
            " LEFT JOIN leads l ON l.id = c.lead_id WHERE c.org_id = $1"
            " ORDER BY c.created_at", org.org_id)
        leads = await connection.fetch(
            "SELECT phone_number, name, email, call_count FROM leads WHERE org_id = $1"
            " ORDER BY first_call_at", org.org_id)
        stats = await connection.fetch(
            "SELECT day, calls, inbound, outbound, web, new_leads,"
            " round(duration_seconds / 60, 2) AS minutes, cost FROM daily_stats"
            " WHERE org_id = $1 ORDER BY day", org.org_id)
    finally:
        await connection.close()
    _table("calls", ["direction", "status", "customer", "seconds", "cost", "ended reason",
                     "lead"], [list(r.values()) for r in calls_rows])
    _table("leads", ["number", "name", "email", "calls"], [list(r.values()) for r in leads])
    _table("daily statistics", ["day", "calls", "inbound", "outbound", "web", "new leads",
                                "minutes", "cost"], [list(r.values()) for r in stats])
    return 0 if len(calls_rows) == len(calls) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
