"""`calltrail vapi wiring|wire|unwire`, run as an operator runs them against the fake Vapi
served for real: the same rules as the dashboard's, audited as `cli`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from calltrail_common import audit, db
from calltrail_common.crypto import KeyRing
from calltrail_common.organizations import create_organization
from calltrail_common.vapi import VapiClient
from calltrail_common.vapi_accounts import connect_account
from calltrail_testkit.fake_vapi import FakeVapi, serve
from tests.admin.test_cli import calltrail

ENCRYPTION_KEY = "wiring-cli-encryption-key-0123456789abcdef"


@pytest.fixture(scope="module")
def fake_vapi() -> Iterator[tuple[FakeVapi, str]]:
    fake = FakeVapi(seed=19)
    with serve(fake) as url:
        yield fake, url


async def test_wiring_wire_one_and_unwire(database_url: str,
                                         fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    key = f"cli-wiring-{uuid.uuid4().hex}"
    account = fake.add_account(key, phone_numbers=1, assistants=2)
    connection = await db.connect(database_url)
    pool = await db.create_pool(database_url, max_size=2)
    try:
        org = await create_organization(connection, "Wired by CLI")
        async with httpx.AsyncClient(timeout=10) as http:
            await connect_account(pool, KeyRing(ENCRYPTION_KEY),
                                  VapiClient(http, key, base_url=url), org.org_id, key)
        env = {"ENCRYPTION_KEY": ENCRYPTION_KEY, "VAPI_API_BASE_URL": url,
               "PUBLIC_BASE_URL": "https://hooks.example.com"}
        org_id = str(org.org_id)
        first = account.assistants[0]["id"]

        listed = calltrail("vapi", "wiring", "--org", org_id, database_url=database_url, **env)
        assert listed.returncode == 0, listed.stderr
        body = orjson.loads(listed.stdout)
        assert body["endpointUrl"] == f"https://hooks.example.com/webhooks/vapi/{org.endpoint_id}"
        assert len(body["items"]) == 3 and not any(i["complete"] for i in body["items"])

        wired = calltrail("vapi", "wire", "--org", org_id, "--id", first,
                          database_url=database_url, **env)
        assert wired.returncode == 0, wired.stderr
        assert [c["id"] for c in orjson.loads(wired.stdout)["changed"]] == [first]
        assert account.assistant(first)["server"]["url"] == body["endpointUrl"]
        assert "server" not in account.assistants[1]
        assert org.webhook_secret not in wired.stdout + wired.stderr

        unwired = calltrail("vapi", "unwire", "--org", org_id, database_url=database_url,
                            **env)
        assert unwired.returncode == 0, unwired.stderr
        assert "server" not in account.assistant(first)
        entries = await audit.entries(connection, org.org_id)
        assert {(e.actor, e.action) for e in entries} >= {
            ("cli", "vapi.wired"), ("cli", "vapi.unwired"), ("cli", "vapi.credential_created")}

        lonely = await create_organization(connection, "No account")
        refused = calltrail("vapi", "wire", "--org", str(lonely.org_id),
                            database_url=database_url, **env)
        assert refused.returncode != 0
        assert "no connected Vapi account" in refused.stderr
    finally:
        await pool.close()
        await connection.close()
