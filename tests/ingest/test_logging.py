"""Logs carry ids, never secrets or callers' personal data (captured from a real process)."""

from __future__ import annotations

import hashlib
import hmac
import signal
import time
from pathlib import Path

import httpx

from calltrail_common import db
from calltrail_common.organizations import create_organization
from calltrail_common.topology import Topology
from calltrail_testkit.tcp_proxy import TcpProxy
from tests.conftest import WEBHOOK_SECRET, proxied_amqp_url
from tests.support.samples import sample_bytes, webhook_samples

PERSONAL_DATA = ["+14155550123", "Ana Ruiz", "dana@example.com", "+442071838750",
                 "schedule estimate price", "storage.vapi.ai"]


async def test_no_secret_or_payload_text_reaches_the_logs(
        topology: Topology, tmp_path: Path, database_url: str, broker_proxy: TcpProxy,
        ingest_process_factory) -> None:
    connection = await db.connect(database_url)
    org = await create_organization(connection, "Private Co")
    await connection.close()
    ingest = ingest_process_factory(
        AMQP_URL=proxied_amqp_url(broker_proxy), AMQP_PREFIX=topology.prefix,
        SPOOL_DIR=str(tmp_path / "spool"), DATABASE_URL=database_url, LOG_LEVEL="debug")
    await ingest.start()
    bodies = [sample_bytes(name) for name in webhook_samples()]
    timestamp = str(int(time.time()))
    signature = hmac.new(WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + bodies[0],
                         hashlib.sha256).hexdigest()
    async with httpx.AsyncClient(base_url=ingest.url, timeout=10) as client:
        for i, body in enumerate(bodies):
            headers = [{"x-vapi-secret": WEBHOOK_SECRET},
                       {"authorization": f"Bearer {WEBHOOK_SECRET}"}][i % 2]
            assert (await client.post("/webhooks/vapi", content=body,
                                      headers=headers)).status_code == 200
        await client.post("/webhooks/vapi", content=bodies[0],
                          headers={"x-vapi-signature": signature, "x-timestamp": timestamp})
        # Refusals, including wrong secrets that look like real ones.
        await client.post("/webhooks/vapi", content=bodies[1],
                          headers={"x-vapi-secret": WEBHOOK_SECRET + "x"})
        await client.post("/webhooks/vapi", content=b'{"message": {"customer": '
                          b'{"number": "+14155550123"}}}', headers={"x-vapi-secret":
                                                                  WEBHOOK_SECRET})
        await client.post(f"/webhooks/vapi/{org.endpoint_id}", content=bodies[2],
                          headers={"x-vapi-secret": org.webhook_secret})
        # And the spool path, with the broker cut off.
        await broker_proxy.cut()
        for body in bodies[:3]:
            assert (await client.post("/webhooks/vapi", content=body, headers={
                "x-vapi-secret": WEBHOOK_SECRET})).status_code == 200
    ingest.kill(signal.SIGTERM)
    ingest.wait()
    logs = ingest.logs()
    assert "webhook_accepted" in logs and "webhook_refused" in logs  # logging did happen
    assert "publish_failed_spooling" in logs or "kept\": \"spooled" in logs
    for secret in (WEBHOOK_SECRET, org.webhook_secret, signature, "guest:guest"):
        assert secret not in logs
    for text in PERSONAL_DATA:
        assert text not in logs
