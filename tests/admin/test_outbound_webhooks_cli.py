"""`calltrail outbound-webhook ...`, run as an operator runs it: each command once, the
secret printed by `create` and `rotate-secret` only, refusals on one line. The rules
themselves are tested in tests/common/test_outbound_endpoints.py."""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

import orjson

from calltrail_common import audit, db
from calltrail_common.organizations import create_organization
from tests.admin.test_cli import calltrail
from tests.support.delivery_log import insert_delivery


def _json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def _fails(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("calltrail: ")
    assert words in result.stderr, result.stderr


async def test_an_operator_manages_an_endpoint_and_its_deliveries(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org_id = (await create_organization(connection, "Acme")).org_id
        url = database_url
        _fails(calltrail("outbound-webhook", "create", "--org", str(org_id), "--url",
                         "http://127.0.0.1:9000/hook", "--events", "call.ended",
                         database_url=url), "must start with https://")
        # Private targets when the operator allows them (a receiver on the same network).
        made = _json(calltrail("outbound-webhook", "create", "--org", str(org_id), "--url",
                               "http://127.0.0.1:9000/hook", "--events",
                               "lead.created,call.ended", "--description", "CRM",
                               database_url=url, WEBHOOKS_ALLOW_PRIVATE_TARGETS="true"))
        secret = made.pop("secret")
        assert secret.startswith("whsec_")
        assert (made["orgId"], made["url"], made["eventTypes"], made["enabled"]) == (
            str(org_id), "http://127.0.0.1:9000/hook", ["call.ended", "lead.created"], True)
        endpoint_id = made["endpointId"]
        listed = calltrail("outbound-webhook", "list", "--org", str(org_id), database_url=url)
        assert _json(listed) == [made] and secret not in listed.stdout + listed.stderr

        updated = _json(calltrail("outbound-webhook", "update", endpoint_id, "--events",
                                  "lead.updated", "--description", "CRM v2",
                                  database_url=url))
        assert (updated["eventTypes"], updated["description"], updated["url"]) == (
            ["lead.updated"], "CRM v2", made["url"])

        dead = await insert_delivery(connection, org_id, uuid.UUID(endpoint_id))
        await insert_delivery(connection, org_id, uuid.UUID(endpoint_id), state="succeeded")
        disabled = _json(calltrail("outbound-webhook", "disable", endpoint_id,
                                   database_url=url))
        assert (disabled["enabled"], disabled["disabledReason"]) == (False, "by_user")
        assert _json(calltrail("outbound-webhook", "enable", endpoint_id,
                               database_url=url))["enabled"] is True
        again = _json(calltrail("outbound-webhook", "send-again", str(dead),
                                database_url=url))
        assert (again["deliveryId"], again["state"], again["attempts"]) == (
            str(dead), "pending", 9)
        assert await connection.fetchval(
            "SELECT queued_at FROM outbound_deliveries WHERE id = $1", dead) is None
        log = _json(calltrail("outbound-webhook", "deliveries", endpoint_id, "--limit", "1",
                              database_url=url))
        assert [d["state"] for d in log] == ["succeeded"]  # the newest

        rotated = calltrail("outbound-webhook", "rotate-secret", endpoint_id,
                            database_url=url)
        new_secret = _json(rotated)["secret"]
        assert new_secret.startswith("whsec_") and new_secret != secret
        assert _json(calltrail("outbound-webhook", "delete", endpoint_id,
                               database_url=url)) == {"endpointId": endpoint_id,
                                                      "deleted": True}
        assert await connection.fetchval("SELECT count(*) FROM outbound_endpoints") == 0

        entries = [e for e in await audit.entries(connection, org_id)
                   if e.action.startswith("outbound_")]
        assert {e.actor for e in entries} == {"cli"}
        assert [e.action for e in reversed(entries)] == [
            "outbound_endpoint.created", "outbound_endpoint.updated",
            "outbound_endpoint.disabled", "outbound_endpoint.enabled",
            "outbound_delivery.sent_again", "outbound_endpoint.secret_rotated",
            "outbound_endpoint.deleted"]
        assert secret not in repr(entries) and new_secret not in repr(entries)
    finally:
        await connection.close()
