"""Ingest's endpoint directory: live secrets with their end times, in memory and in the
snapshot an ingest restarted while Postgres is down starts from."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from calltrail_common import db
from calltrail_common.organizations import create_organization, rotate
from ingest.endpoints import EndpointDirectory

UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:9/nowhere"


async def test_a_previous_secret_survives_a_restart_with_its_end(
        database_url: str, tmp_path: Path) -> None:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme")
        rotated = await rotate(connection, org.org_id, dt.timedelta(hours=1))
    finally:
        await connection.close()
    assert rotated.previous_valid_until is not None
    ends = rotated.previous_valid_until.timestamp()
    snapshot = tmp_path / "endpoints.json"
    loaded = EndpointDirectory(database_url, snapshot, 3600)
    await loaded.refresh_now()
    assert org.webhook_secret.encode() not in loaded.lookup(org.endpoint_id).secrets

    restarted = EndpointDirectory(UNREACHABLE_DATABASE, snapshot, 3600)
    restarted.start()
    try:
        for directory in (loaded, restarted):
            endpoint = directory.lookup(org.endpoint_id)
            assert endpoint.org_id == str(org.org_id)
            assert set(endpoint.live_secrets(ends - 1)) == {
                org.webhook_secret.encode(), rotated.webhook_secret.encode()}
            assert endpoint.live_secrets(ends) == (rotated.webhook_secret.encode(),)
    finally:
        await restarted.close()


async def test_a_snapshot_from_before_rotation_still_loads(tmp_path: Path) -> None:
    snapshot = tmp_path / "endpoints.json"
    snapshot.write_bytes(orjson.dumps({"ep_old": {"org_id": "o1", "secrets": ["whsec_a"]}}))
    directory = EndpointDirectory(UNREACHABLE_DATABASE, snapshot, 3600)
    directory.start()
    try:
        assert directory.lookup("ep_old").live_secrets(0) == (b"whsec_a",)
    finally:
        await directory.close()
