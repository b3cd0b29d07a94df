"""`make demo`: simulated Vapi calls through the running stack; watch calls and leads appear.

It needs `make up` first. It creates a demo organization, sends five call lifecycles
(three inbound from two callers, one outbound, one web call) to that organization's webhook
URL, signed with HMAC as a Vapi HMAC credential would, and prints the calls, leads and
today's statistics the call processor made of them.

Then the Vapi account side: it starts the fake Vapi API (`calltrail_testkit.fake_vapi
--demo`, on 127.0.0.1:8090, left running for metrics-sync's next rounds; `make down` stops
it), connects its demo account to an organization "Demo Vapi account" (created once) the way
`calltrail vapi connect --api-base-url` does, waits for metrics-sync's first run and prints
the account's daily usage and how many calls the sync brought in without a webhook.
Last, it prints the dashboard's address and that organization's owner with a new password
to sign in with: every page then has data.

And an agency (issue 17): "Demo Agency" with two clients, Bright Dental (25% markup) and
Harbor Plumbing, branded with an accent colour; a few calls sent to each client's own
webhook URL; an agency owner and a Bright Dental user, each with a new password printed
once, to sign in with and see the Clients page, the switcher and the markup.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import hashlib
import hmac
import json
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import asyncpg
import httpx

from calltrail_common import agencies, audit, db, people, success_measures
from calltrail_common.crypto import KeyRing
from calltrail_common.logging import configure_logging
from calltrail_common.organizations import create_organization
from calltrail_common.settings import Settings, SettingsError, load_settings
from calltrail_common.topology import Topology, declare_topology
from calltrail_common.vapi import VapiClient
from calltrail_common.vapi_accounts import connect_account
from calltrail_testkit.fake_vapi import BOOKED_OUTPUT, DEMO_API_KEY
from calltrail_testkit.samples import sample

REPO = Path(__file__).resolve().parent.parent
FAKE_VAPI = "http://127.0.0.1:8090"
VAPI_DEMO_ORG = "Demo Vapi account"
AGENCY_OWNER = "owner@demo-agency.example"
CLIENT_USER = "office@bright-dental.example"
VAPI_DEMO_OWNER = "owner@demo-vapi.example"

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
    for step, sample_name in enumerate(names):
        body = sample(sample_name)
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
    configure_logging(settings.model_copy(update={"log_level": "warning"}))
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
        sent = await _send(client, url, org.webhook_secret, calls)
        print(f"sent {sent} webhooks for {len(calls)} calls; waiting for the processor...")
        agency_ok = await _agency(settings, client, ingest)

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
    webhooks_ok = len(calls_rows) == len(calls)
    vapi_ok = await _vapi_account(settings)
    return 0 if webhooks_ok and vapi_ok and agency_ok else 1


async def _send(client: httpx.AsyncClient, url: str, secret: str,
                calls: list[list[bytes]]) -> int:
    sent = 0
    for bodies in calls:
        for body in bodies:
            response = await client.post(url, content=body, headers=_signed(body, secret))
            response.raise_for_status()
            sent += 1
    return sent


async def _person(connection: asyncpg.Connection, org_id: uuid.UUID, email: str) -> str:
    """A member (owner) of `org_id` with a new password, returned to be printed once."""
    password = secrets.token_urlsafe(12)
    user_id = await people.ensure_user(connection, email)
    await people.set_password(connection, user_id, password)
    await people.add_member(connection, org_id, user_id, "owner")
    return password


async def _agency(settings: Settings, client: httpx.AsyncClient, ingest: str) -> bool:
    """An agency with two clients, calls sent to each client's own webhook URL, and the
    people to sign in as."""
    connection = await db.connect(settings.database_url)
    try:
        agency = await agencies.create_agency(connection,
                                              f"Demo Agency {dt.datetime.now():%H:%M:%S}")
        await agencies.set_brand(connection, agency.org_id, accent="#aa3366")
        dental = await agencies.create_client(connection, agency.org_id, "Bright Dental",
                                              agencies.parse_markup("25"))
        plumbing = await agencies.create_client(connection, agency.org_id, "Harbor Plumbing")
        owner_password = await _person(connection, agency.org_id, AGENCY_OWNER)
        client_password = await _person(connection, dental.org_id, CLIENT_USER)
    finally:
        await connection.close()
    sent = 0
    for org, callers in ((dental, [("+14155550150", "Lena Park"), ("+14155550151", None)]),
                         (plumbing, [("+14155550160", "Omar Haddad")])):
        calls = [_lifecycle(INBOUND, number=number, name=name, minutes_ago=30 - 5 * i,
                            org_id=str(org.org_id))
                 for i, (number, name) in enumerate(callers)]
        sent += await _send(client, f"{ingest}/webhooks/vapi/{org.endpoint_id}",
                            org.webhook_secret, calls)
    connection = await db.connect(settings.database_url)
    try:
        deadline = time.monotonic() + 20
        stored = 0
        while time.monotonic() < deadline:
            stored = await connection.fetchval(
                "SELECT count(*) FROM calls WHERE org_id = ANY($1::uuid[]) AND report_received",
                [dental.org_id, plumbing.org_id])
            if stored == 3:
                break
            await asyncio.sleep(0.2)
    finally:
        await connection.close()
    print(f"\nagency {agency.org_id} (\"{agency.name}\"): clients Bright Dental "
          f"({dental.org_id}, 25% markup) and Harbor Plumbing ({plumbing.org_id}); "
          f"{sent} webhooks to their own URLs, {stored} of 3 calls stored\n"
          f"  agency owner   {AGENCY_OWNER}  password {owner_password}\n"
          f"  client user    {CLIENT_USER}  password {client_password}\n"
          f"  (sign in at http://localhost:{settings.api_port}/login; the owner sees Clients "
          "and switches in the header; passwords are new at every run)")
    return stored == 3


async def _fake_vapi_running(client: httpx.AsyncClient) -> bool:
    try:
        answer = await client.get(f"{FAKE_VAPI}/assistant",
                                  headers={"authorization": f"Bearer {DEMO_API_KEY}"})
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


async def _start_fake_vapi(client: httpx.AsyncClient) -> bool:
    if await _fake_vapi_running(client):
        return True
    (REPO / "var/run").mkdir(parents=True, exist_ok=True)
    (REPO / "var/log").mkdir(parents=True, exist_ok=True)
    with (REPO / "var/log/fake-vapi.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - it outlives this script, by design
            [sys.executable, "-m", "calltrail_testkit.fake_vapi", "--demo", "--port", "8090"],
            stdout=log, stderr=log, cwd=REPO, start_new_session=True)
    (REPO / "var/run/fake-vapi.pid").write_text(f"{process.pid}\n")
    for _ in range(100):
        if await _fake_vapi_running(client):
            return True
        await asyncio.sleep(0.1)
    return False


async def _demo_org(settings: Settings) -> uuid.UUID:
    connection = await db.connect(settings.database_url)
    try:
        org_id = await connection.fetchval(
            "SELECT id FROM organizations WHERE name = $1 ORDER BY created_at LIMIT 1",
            VAPI_DEMO_ORG)
        return org_id or (await create_organization(connection, VAPI_DEMO_ORG)).org_id
    finally:
        await connection.close()


async def _vapi_account(settings: Settings) -> bool:
    try:
        keyring = KeyRing.from_settings(settings)
    except SettingsError as error:
        print(f"\nVapi account: skipped ({error}; `make up` puts one in .env)", file=sys.stderr)
        return False
    async with httpx.AsyncClient(timeout=10) as client:
        if not await _start_fake_vapi(client):
            print("\nthe fake Vapi API did not start: see var/log/fake-vapi.log",
                  file=sys.stderr)
            return False
        org_id = await _demo_org(settings)
        topology = Topology(settings.amqp_prefix)
        pool = await db.create_pool(settings.database_url, max_size=2)
        broker = await aio_pika.connect(settings.amqp_url.get_secret_value())
        try:
            channel = await broker.channel(publisher_confirms=True)
            await declare_topology(channel, topology)
            account = await connect_account(
                pool, keyring, VapiClient(client, DEMO_API_KEY, base_url=FAKE_VAPI), org_id,
                DEMO_API_KEY, api_base_url=FAKE_VAPI, channel=channel, topology=topology)
            print(f"\nVapi account (fake, {FAKE_VAPI}) connected to organization {org_id}; "
                  f"sync {account.sync_id} queued, waiting for metrics-sync...")
            run = None
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                run = await pool.fetchrow("SELECT status, reason, calls_seen FROM sync_runs "
                                          "WHERE id = $1", account.sync_id)
                if run is not None and run["status"] in ("succeeded", "failed"):
                    break
                await asyncio.sleep(0.3)
            if run is None or run["status"] != "succeeded":
                print(f"the sync did not succeed ({run and run['status']}: "
                      f"{run and run['reason']}); is metrics-sync running? "
                      "(var/log/metrics-sync.log)", file=sys.stderr)
                return False
            await asyncio.sleep(2)  # the processor turns the snapshots into calls
            usage = await pool.fetch(
                "SELECT day, calls, round(minutes, 1) AS minutes, cost FROM vapi_usage_daily "
                "WHERE org_id = $1 ORDER BY day", org_id)
            stored = await pool.fetchval("SELECT count(*) FROM calls WHERE org_id = $1",
                                         org_id)
            extracted = await pool.fetchval(
                "SELECT count(*) FROM calls WHERE org_id = $1"
                " AND structured_outputs IS NOT NULL", org_id)
            async with pool.acquire() as connection:
                if await success_measures.find(connection, org_id) is None:
                    # The fake account's boolean output: the overview's success rate by it.
                    await success_measures.choose(
                        connection, org_id, success_measures.measure_of(
                            "output", BOOKED_OUTPUT), audit.CLI_ACTOR)
        finally:
            await broker.close()
            await pool.close()
    _table("Vapi usage (synced from the account's call list)", ["day", "calls", "minutes",
                                                                 "cost"],
           [list(r.values()) for r in usage])
    print(f"\n{run['calls_seen']} calls in the account's list; {stored} stored as calls of "
          "the organization, none of them sent as a webhook (the sync repairs lost calls)")
    print(f"{extracted} of them with structured outputs and a scorecard (Vapi extracts them "
          "after the call): open one on the dashboard; its success rate counts the output "
          "\"Appointment booked\" (Settings, Call success)")
    await _dashboard_sign_in(settings, org_id)
    return True


async def _dashboard_sign_in(settings: Settings, org_id: uuid.UUID) -> None:
    """The Vapi demo organization's owner, with a new password (only its hash is stored, so
    an earlier run's cannot be shown again), printed once for the newcomer to sign in."""
    connection = await db.connect(settings.database_url)
    try:
        password = await _person(connection, org_id, VAPI_DEMO_OWNER)
    finally:
        await connection.close()
    print(f"\ndashboard    http://localhost:{settings.api_port}/\n"
          f"sign in as   {VAPI_DEMO_OWNER}  password {password}\n"
          f"(organization \"{VAPI_DEMO_ORG}\": its calls, leads and usage from the fake Vapi "
          "account)")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
