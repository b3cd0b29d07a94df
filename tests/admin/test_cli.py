"""The `calltrail` admin command, run as an operator runs it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import uuid

import orjson

from calltrail_common import audit, db, people
from calltrail_common.organizations import token_digest
from tests.mailbox import link_in, receiving_mail


def calltrail(*args: str, database_url: str, stdin: str = "",
              **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "admin", *args], input=stdin, capture_output=True, text=True,
        env={**os.environ, "DATABASE_URL": database_url, **env}, timeout=60, check=False)


async def test_org_create_prints_credentials_and_stores_only_a_token_digest(
        database_url: str) -> None:
    result = calltrail("org", "create", "--name", "Acme Roofing", database_url=database_url,
                       PUBLIC_BASE_URL="https://hooks.example.com/")
    assert result.returncode == 0, result.stderr
    created = orjson.loads(result.stdout)
    assert set(created) == {"orgId", "tokenId", "apiToken", "webhookUrl", "webhookSecret"}
    assert created["webhookUrl"].startswith("https://hooks.example.com/webhooks/vapi/ep_")
    connection = await db.connect(database_url)
    try:
        assert await connection.fetchval("SELECT name FROM organizations WHERE id = $1",
                                         created["orgId"]) == "Acme Roofing"
        stored = await connection.fetchval("SELECT token_sha256 FROM api_tokens")
        assert stored == token_digest(created["apiToken"])
        endpoint_id = created["webhookUrl"].rsplit("/", 1)[1]
        assert await connection.fetchval(
            "SELECT secret FROM webhook_endpoints WHERE id = $1", endpoint_id
        ) == created["webhookSecret"]
    finally:
        await connection.close()


async def test_token_create_and_revoke(database_url: str) -> None:
    org = orjson.loads(calltrail("org", "create", "--name", "T", database_url=database_url)
                       .stdout)
    created = calltrail("token", "create", "--org", org["orgId"], database_url=database_url)
    assert created.returncode == 0, created.stderr
    token_id = orjson.loads(created.stdout)["tokenId"]
    assert calltrail("token", "revoke", token_id, database_url=database_url).returncode == 0
    connection = await db.connect(database_url)
    try:
        assert await connection.fetchval(
            "SELECT revoked_at IS NOT NULL FROM api_tokens WHERE id = $1", token_id)
    finally:
        await connection.close()


async def test_webhook_secret_rotate_and_revoke(database_url: str) -> None:
    org = orjson.loads(calltrail("org", "create", "--name", "T", database_url=database_url,
                                 PUBLIC_BASE_URL="https://hooks.example.com").stdout)
    endpoint_id = org["webhookUrl"].rsplit("/", 1)[1]
    result = calltrail("webhook-secret", "rotate", "--org", org["orgId"], "--overlap-hours",
                       "2", database_url=database_url,
                       PUBLIC_BASE_URL="https://hooks.example.com")
    assert result.returncode == 0, result.stderr
    rotated = orjson.loads(result.stdout)
    assert set(rotated) == {"endpointId", "webhookUrl", "webhookSecret", "previousValidUntil"}
    assert rotated["endpointId"] == endpoint_id
    assert rotated["webhookUrl"] == org["webhookUrl"]  # Vapi's server URL does not change
    assert rotated["webhookSecret"] != org["webhookSecret"]
    until = dt.datetime.fromisoformat(rotated["previousValidUntil"])
    assert abs(until - dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)) < dt.timedelta(
        minutes=1)
    connection = await db.connect(database_url)
    try:
        assert await connection.fetchval(
            "SELECT secret FROM webhook_endpoints WHERE id = $1", endpoint_id
        ) == rotated["webhookSecret"]
        assert await connection.fetchval(
            "SELECT secret FROM webhook_previous_secrets WHERE endpoint_id = $1", endpoint_id
        ) == org["webhookSecret"]
        revoked = calltrail("webhook-secret", "revoke", "--org", org["orgId"],
                            database_url=database_url)
        assert revoked.returncode == 0, revoked.stderr
        assert orjson.loads(revoked.stdout) == {"orgId": org["orgId"], "previousRevoked": True}
        assert await connection.fetchval("SELECT count(*) FROM webhook_previous_secrets") == 0
        again = calltrail("webhook-secret", "revoke", "--org", org["orgId"],
                          database_url=database_url)
        assert orjson.loads(again.stdout)["previousRevoked"] is False
        # The default overlap is a day; zero refuses the replaced secret at once.
        default = orjson.loads(calltrail("webhook-secret", "rotate", "--org", org["orgId"],
                                         database_url=database_url).stdout)
        until = dt.datetime.fromisoformat(default["previousValidUntil"])
        assert abs(until - dt.datetime.now(dt.UTC) - dt.timedelta(hours=24)) < dt.timedelta(
            minutes=1)
        now = orjson.loads(calltrail("webhook-secret", "rotate", "--org", org["orgId"],
                                     "--overlap-hours", "0", database_url=database_url).stdout)
        assert now["previousValidUntil"] is None
        assert await connection.fetchval("SELECT count(*) FROM webhook_previous_secrets") == 0
        # Each change is in the organization's audit log, as the CLI's, without a secret.
        logged = await connection.fetch(
            "SELECT actor, action, target, detail::text FROM audit_log WHERE org_id = $1 "
            "AND action LIKE 'webhook_secret.%' ORDER BY id", uuid.UUID(org["orgId"]))
        assert [(r["actor"], r["action"]) for r in logged] == [
            ("cli", "webhook_secret.rotated"), ("cli", "webhook_secret.previous_revoked"),
            ("cli", "webhook_secret.rotated"), ("cli", "webhook_secret.rotated")]
        assert {r["target"] for r in logged} == {endpoint_id, None}
        for secret in (org["webhookSecret"], rotated["webhookSecret"], now["webhookSecret"]):
            assert all(secret not in (r["detail"] or "") for r in logged)
    finally:
        await connection.close()


async def test_token_list_names_prefix_and_creator_and_never_a_token(database_url: str
                                                                     ) -> None:
    org = orjson.loads(calltrail("org", "create", "--name", "T", database_url=database_url)
                       .stdout)
    created = calltrail("token", "create", "--org", org["orgId"], "--name", "CRM sync",
                        database_url=database_url)
    assert created.returncode == 0, created.stderr
    made = orjson.loads(created.stdout)
    assert set(made) == {"tokenId", "apiToken", "prefix", "name"}
    assert made["apiToken"].startswith(made["prefix"]) and len(made["prefix"]) == 7
    # The first token, revoked without SQL: `org create` printed its id.
    assert calltrail("token", "revoke", org["tokenId"], database_url=database_url
                     ).returncode == 0
    listed = calltrail("token", "list", "--org", org["orgId"], database_url=database_url)
    assert listed.returncode == 0, listed.stderr
    tokens = orjson.loads(listed.stdout)
    assert [(t["tokenId"], t["name"], t["prefix"], t["creator"], t["revokedAt"] is None)
            for t in tokens] == [
        (made["tokenId"], "CRM sync", made["prefix"], "cli", True),
        (org["tokenId"], None, org["apiToken"][:7], "cli", False)]
    assert made["apiToken"] not in listed.stdout and org["apiToken"] not in listed.stdout
    connection = await db.connect(database_url)
    try:
        logged = await audit.entries(connection, uuid.UUID(org["orgId"]))
    finally:
        await connection.close()
    assert [(e.actor, e.action, e.target) for e in logged] == [
        ("cli", "token.revoked", org["apiToken"][:7]),
        ("cli", "token.created", made["prefix"]),
        ("cli", "token.created", org["apiToken"][:7])]
    assert org["apiToken"] not in repr(logged) and made["apiToken"] not in repr(logged)


def test_bad_input_exits_non_zero_with_one_line(database_url: str) -> None:
    nobody = "00000000-0000-0000-0000-000000000000"
    for args in (["token", "revoke", "not-an-id"],
                 ["token", "create", "--org", nobody],
                 ["org", "create", "--name", "  "],
                 ["token", "list", "--org", nobody],
                 ["token", "create", "--org", nobody, "--name", "x" * 81],
                 ["webhook-secret", "rotate", "--org", nobody],
                 ["webhook-secret", "rotate", "--org", nobody, "--overlap-hours", "-1"],
                 ["webhook-secret", "revoke", "--org", nobody],
                 ["webhook-secret", "revoke", "--org", "not-an-id"]):
        result = calltrail(*args, database_url=database_url)
        assert result.returncode != 0
        assert result.stderr.startswith("calltrail: ")
        assert result.stderr.count("\n") == 1


async def test_migrate_twice_and_concurrently_applies_each_migration_once(
        template_database: str) -> None:
    from tests.conftest import POSTGRES_ADMIN_URL

    name = "calltrail_test_migrate_" + os.urandom(4).hex()
    url = f"{POSTGRES_ADMIN_URL}/{name}"
    try:
        runs = await asyncio.gather(*(asyncio.to_thread(calltrail, "migrate", database_url=url)
                                      for _ in range(3)))
        assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
        # Concurrent runs queue on each migration's lock: between them, each file once.
        applied = [name for r in runs for name in orjson.loads(r.stdout)["applied"]]
        assert sorted(applied) == [m.name for m in db.bundled_migrations()]
        again = calltrail("migrate", database_url=url)
        assert orjson.loads(again.stdout) == {"databaseCreated": False, "applied": []}
    finally:
        connection = await db.connect(f"{POSTGRES_ADMIN_URL}/postgres")
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def test_migrate_check_fails_while_migrations_are_pending(
        template_database: str) -> None:
    from tests.conftest import POSTGRES_ADMIN_URL

    name = "calltrail_test_check_" + os.urandom(4).hex()
    url = f"{POSTGRES_ADMIN_URL}/{name}"
    every = [m.name for m in db.bundled_migrations()]
    try:
        await db.create_database_if_missing(url)
        before = calltrail("migrate", "--check", database_url=url)
        assert before.returncode != 0
        assert orjson.loads(before.stdout) == {"pending": every}
        await db.migrate(url, db.bundled_migrations()[:2])
        partly = calltrail("migrate", "--check", database_url=url)
        assert partly.returncode != 0
        assert orjson.loads(partly.stdout) == {"pending": every[2:]}
        assert calltrail("migrate", database_url=url).returncode == 0
        after = calltrail("migrate", "--check", database_url=url)
        assert after.returncode == 0, after.stderr
        assert orjson.loads(after.stdout) == {"pending": []}
    finally:
        connection = await db.connect(f"{POSTGRES_ADMIN_URL}/postgres")
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.close()


async def test_user_reset_prints_a_working_link_and_invite_mails_when_smtp_is_set_up(
        database_url: str) -> None:
    org = orjson.loads(calltrail("org", "create", "--name", "Acme", database_url=database_url)
                       .stdout)
    with receiving_mail() as mailbox:
        invited = calltrail("user", "invite", "--org", org["orgId"], "--email",
                            "Owner@Example.com", "--role", "owner", database_url=database_url,
                            SMTP_URL=mailbox.url, DASHBOARD_BASE_URL="https://dash.example")
        assert invited.returncode == 0, invited.stderr
        printed = orjson.loads(invited.stdout)
        assert printed["mailed"] is True and printed["email"] == "owner@example.com"
        [mail] = await mailbox.wait_for(1)
        assert link_in(mail) == printed["inviteUrl"]
        assert printed["inviteUrl"].startswith("https://dash.example/invite/")
    unmailed = calltrail("user", "invite", "--org", org["orgId"], "--email", "v@example.com",
                         database_url=database_url, SMTP_URL="")
    assert orjson.loads(unmailed.stdout)["mailed"] is False

    reset = calltrail("user", "reset", "--email", "OWNER@example.com",
                      database_url=database_url, DASHBOARD_BASE_URL="https://dash.example")
    assert reset.returncode == 0, reset.stderr
    url = orjson.loads(reset.stdout)["resetUrl"]
    assert url.startswith("https://dash.example/reset/")
    connection = await db.connect(database_url)
    try:
        link = await people.open_link(connection, url.rsplit("/", 1)[1], "reset")
        assert link is not None and link.user.email == "owner@example.com"
    finally:
        await connection.close()
    missing = calltrail("user", "reset", "--email", "nobody@example.com",
                        database_url=database_url)
    assert missing.returncode != 0 and "no user" in missing.stderr
    assert url not in missing.stderr
