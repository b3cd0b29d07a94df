"""`calltrail lead erase` and `calltrail org retention` (decision 44)."""

from __future__ import annotations

import orjson

from calltrail_common import db
from calltrail_common.organizations import create_organization
from tests.admin.test_cli import calltrail
from tests.api.conftest import insert_call, insert_lead

NUMBER = "+14155550155"


async def test_erase_by_lead_and_by_number(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme")
        lead_id = await insert_lead(connection, org.org_id, NUMBER, name="Rex Secret")
        await insert_call(connection, org.org_id, lead_id=lead_id, customer_number=NUMBER)
        await insert_call(connection, org.org_id, customer_number="+14155550144",
                          direction="outboundPhoneCall")
    finally:
        await connection.close()
    org_id = str(org.org_id)

    by_lead = calltrail("lead", "erase", "--org", org_id, "--lead", str(lead_id),
                        database_url=database_url)
    assert by_lead.returncode == 0, by_lead.stderr
    assert orjson.loads(by_lead.stdout) == {"orgId": org_id, "leadId": str(lead_id),
                                            "erasedCalls": 1}
    by_number = calltrail("lead", "erase", "--org", org_id, "--number", "+1 415 555 0144",
                          database_url=database_url)
    assert by_number.returncode == 0, by_number.stderr
    assert orjson.loads(by_number.stdout)["erasedCalls"] == 1
    missing = calltrail("lead", "erase", "--org", org_id, "--number", NUMBER,
                        database_url=database_url)
    assert missing.returncode != 0
    assert NUMBER not in missing.stderr and "no lead nor call" in missing.stderr

    connection = await db.connect(database_url)
    try:
        assert await connection.fetchval(
            "SELECT count(*) FROM calls WHERE customer_number LIKE '+%'") == 0
        assert await connection.fetchval("SELECT name FROM leads") is None
    finally:
        await connection.close()


async def test_retention_shown_set_and_reset(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org_id = str((await create_organization(connection, "Acme")).org_id)
    finally:
        await connection.close()

    def run(*args: str) -> dict:
        result = calltrail("org", "retention", "--org", org_id, *args,
                           database_url=database_url)
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    assert run() == {"orgId": org_id, "contentRetentionDays": None}
    assert run("--days", "90")["contentRetentionDays"] == 90
    assert run("--days", "forever")["contentRetentionDays"] is None
    refused = calltrail("org", "retention", "--org", org_id, "--days", "0",
                        database_url=database_url)
    assert refused.returncode != 0 and "between 1 and 36500" in refused.stderr
