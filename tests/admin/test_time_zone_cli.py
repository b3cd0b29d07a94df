"""`calltrail org time-zone`: show and set an organization's time zone (decision 45), with
the same rule and audit as the dashboard and the API; an unknown zone fails in one line."""

from __future__ import annotations

import orjson

from calltrail_common import db
from calltrail_common.organizations import create_organization
from tests.admin.test_cli import calltrail


async def test_show_and_set(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org_id = str((await create_organization(connection, "Acme")).org_id)
    finally:
        await connection.close()

    def run(*args: str) -> dict:
        result = calltrail("org", "time-zone", "--org", org_id, *args,
                           database_url=database_url)
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    assert run() == {"orgId": org_id, "timeZone": "UTC", "figuresTimeZone": "UTC",
                     "usageTimeZone": "UTC",
                     "rebuilding": False}
    assert run("Asia/Kolkata") == {"orgId": org_id, "timeZone": "Asia/Kolkata",
                                   "figuresTimeZone": "UTC", "usageTimeZone": "UTC",
                                   "rebuilding": True}
    refused = calltrail("org", "time-zone", "--org", org_id, "Mars/Olympus",
                        database_url=database_url)
    assert refused.returncode != 0
    assert "IANA time zone" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert run()["timeZone"] == "Asia/Kolkata"

    connection = await db.connect(database_url)
    try:
        audited = [r["target"] for r in await connection.fetch(
            "SELECT target FROM audit_log WHERE actor = 'cli' AND action = 'time_zone.set'")]
    finally:
        await connection.close()
    assert audited == ["Asia/Kolkata"]
