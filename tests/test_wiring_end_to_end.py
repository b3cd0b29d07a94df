"""Wiring end to end: Calltrail wires a Vapi account (the fake, served for real), then the
fake sends a call as Vapi would with what it now holds (the server URL, the message types,
the HMAC credential with a timestamp) through a real ingest and processor (the test kit's
Stack), and the call is stored; unwired, Vapi's set-up is back and nothing is sent."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from calltrail_common import audit, vapi_wiring
from calltrail_common.db import create_pool
from calltrail_common.vapi import VapiClient
from calltrail_testkit.fake_vapi import FakeVapi, serve
from calltrail_testkit.processes import HOST
from calltrail_testkit.stack import Stack
from tests.conftest import AMQP_URL
from tests.support.processor import eventually


def _messages(call: dict[str, Any]) -> list[dict[str, Any]]:
    """A status-update, a transcript and the end-of-call-report of an ended call."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    live = {key: call[key] for key in ("id", "orgId", "type", "createdAt", "updatedAt",
                                       "assistantId", "phoneNumberId", "customer")}
    return [
        {"type": "status-update", "status": "in-progress", "timestamp": now_ms,
         "call": {**live, "status": "in-progress", "startedAt": call["startedAt"]}},
        {"type": "transcript", "role": "user", "transcriptType": "final",
         "transcript": "Hello", "timestamp": now_ms, "call": live},
        {"type": "end-of-call-report", "timestamp": now_ms + 1, "call": live,
         "endedReason": call["endedReason"], "startedAt": call["startedAt"],
         "endedAt": call["endedAt"], "cost": call["cost"], "artifact": call["artifact"],
         "analysis": call["analysis"]},
    ]


async def _ready(http: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await http.get(url)).status_code == 200
    except httpx.TransportError:
        return False


async def test_a_wired_account_delivers_calls_that_are_stored_and_unwiring_restores_it(
        ) -> None:
    fake = FakeVapi(seed=47)
    account = fake.add_account(f"e2e-{uuid.uuid4().hex}", phone_numbers=1, assistants=1)
    assistant_id = account.assistants[0]["id"]
    # The business's own set-up: no server, and only transcripts (Calltrail's are left out).
    account.assistants[0]["serverMessages"] = ["transcript"]
    now = datetime.now(UTC)
    [call] = account.add_calls(1, rng=random.Random(4), start=now - timedelta(minutes=5),
                               end=now)
    messages = _messages(call)

    async with Stack(amqp_url=AMQP_URL) as stack, httpx.AsyncClient(timeout=10) as http:
        [org] = await stack.create_organizations(1)
        ingest = stack.ingest(shared_secret="e2e-shared-" + uuid.uuid4().hex)
        processor = stack.processor("processor", batch_size=20, batch_wait_ms=20)
        ingest.start()
        processor.start()
        public_base_url = f"http://{HOST}:{ingest.port}"
        await eventually(lambda: _ready(http, f"{public_base_url}/readyz"), 30)

        with serve(fake) as vapi_url:
            # Before: Vapi has nowhere to send these calls.
            for message in messages:
                assert await account.deliver(message, assistant_id=assistant_id) is None

            pool = await create_pool(stack.database_url, max_size=2)
            try:
                client = VapiClient(http, account.api_key, base_url=vapi_url)
                org_id = uuid.UUID(org.org_id)
                changes = await vapi_wiring.wire(pool, client, org_id,
                                                 public_base_url=public_base_url,
                                                 actor=audit.CLI_ACTOR, only=[assistant_id])
                assert [(c.vapi_id, c.added_messages) for c in changes] == [
                    (assistant_id, ("status-update", "end-of-call-report", "call.deleted"))]
                server = account.assistant(assistant_id)["server"]
                assert server["url"] == f"{public_base_url}/webhooks/vapi/{org.endpoint_id}"
                plan = account.credentials[server["credentialId"]]["authenticationPlan"]
                assert plan["type"] == "hmac" and plan["secretKey"] == org.webhook_secret

                for message in messages:
                    sent = await account.deliver(message, assistant_id=assistant_id,
                                                 http=http)
                    assert sent is not None and sent.status_code == 200, (
                        message["type"], sent and sent.text)
                # Signed by the fake as Vapi signs: a wrong secret would have been a 401.
                forged = dict(plan, secretKey="not-the-secret")
                account.credentials[server["credentialId"]]["authenticationPlan"] = forged
                refused = await account.deliver(messages[0], assistant_id=assistant_id,
                                                http=http)
                assert refused is not None and refused.status_code == 401
                account.credentials[server["credentialId"]]["authenticationPlan"] = plan

                row = await eventually(lambda: pool.fetchrow(
                    "SELECT org_id, status, ended_reason, transcript, cost FROM calls "
                    "WHERE id = $1 AND status = 'ended'", call["id"]), 30)
                assert row["org_id"] == org_id
                assert row["ended_reason"] == call["endedReason"]
                assert row["transcript"] == call["artifact"]["transcript"]
                assert await pool.fetchval(
                    "SELECT count(*) FROM events WHERE org_id = $1", org_id) >= 3

                await vapi_wiring.unwire(pool, client, org_id, actor=audit.CLI_ACTOR)
                assert account.assistant(assistant_id)["serverMessages"] == ["transcript"]
                assert "server" not in account.assistant(assistant_id)
                assert await account.deliver(messages[0], assistant_id=assistant_id) is None
                logged = [e.action for e in await audit.entries(pool, org_id)]
                assert logged.count("vapi.wired") == 1 and logged.count("vapi.unwired") == 1
            finally:
                await pool.close()
