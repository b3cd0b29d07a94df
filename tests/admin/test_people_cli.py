"""An installation that signed in with tokens until now gets its first owners from the CLI:
`org list --without-owner`, `user invite --role owner`, the link followed, `user list`,
`user set-password` and `user remove`, each change in the organization's audit log."""

from __future__ import annotations

import uuid

import orjson

from calltrail_common import audit, db, people
from tests.admin.test_cli import calltrail


async def test_the_first_owner_of_an_organization_that_had_only_tokens(
        database_url: str) -> None:
    first = orjson.loads(calltrail("org", "create", "--name", "Acme",
                                   database_url=database_url).stdout)
    second = orjson.loads(calltrail("org", "create", "--name", "Bravo",
                                    database_url=database_url).stdout)
    unowned = orjson.loads(calltrail("org", "list", "--without-owner",
                                     database_url=database_url).stdout)
    assert {o["orgId"] for o in unowned} == {first["orgId"], second["orgId"]}

    invited = calltrail("user", "invite", "--org", first["orgId"], "--email",
                        "Owner@Acme.example", "--role", "owner", database_url=database_url,
                        DASHBOARD_BASE_URL="https://app.acme.example")
    assert invited.returncode == 0, invited.stderr
    link = orjson.loads(invited.stdout)
    assert link["email"] == "owner@acme.example" and link["role"] == "owner"
    assert link["inviteUrl"].startswith("https://app.acme.example/invite/")
    token = link["inviteUrl"].rsplit("/", 1)[1]
    connection = await db.connect(database_url)
    try:
        await people.use_link(connection, token, "invite", "a long enough password")
        entries = await audit.entries(connection, uuid.UUID(first["orgId"]))
    finally:
        await connection.close()
    assert [(e.actor, e.action, e.target) for e in entries if e.action.startswith("user.")] \
        == [("cli", "user.invited", "owner@acme.example")]
    assert token not in repr(entries)

    unowned = orjson.loads(calltrail("org", "list", "--without-owner",
                                     database_url=database_url).stdout)
    assert [o["orgId"] for o in unowned] == [second["orgId"]]
    listed = orjson.loads(calltrail("org", "list", database_url=database_url).stdout)
    assert {o["orgId"]: (o["owners"], o["members"]) for o in listed} == {
        first["orgId"]: (1, 1), second["orgId"]: (0, 0)}
    members = orjson.loads(calltrail("user", "list", "--org", first["orgId"],
                                     database_url=database_url).stdout)
    assert [(m["email"], m["role"], m["joined"]) for m in members] == [
        ("owner@acme.example", "owner", True)]

    changed = calltrail("user", "set-password", "--email", "owner@acme.example",
                        database_url=database_url, stdin="another long password\n")
    assert changed.returncode == 0, changed.stderr
    assert "another long password" not in changed.stdout + changed.stderr
    connection = await db.connect(database_url)
    try:
        assert await people.authenticate(connection, "owner@acme.example",
                                         "another long password") is not None
    finally:
        await connection.close()
    short = calltrail("user", "set-password", "--email", "owner@acme.example",
                      database_url=database_url, stdin="short\n")
    assert short.returncode != 0 and "at least 10" in short.stderr

    pending = orjson.loads(calltrail("user", "invite", "--org", second["orgId"], "--email",
                                     "late@bravo.example", database_url=database_url).stdout)
    cancelled = calltrail("user", "cancel-invite", "--org", second["orgId"], "--email",
                          "LATE@bravo.example", database_url=database_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert orjson.loads(cancelled.stdout)["cancelled"] == 1
    connection = await db.connect(database_url)
    try:
        assert await people.open_link(connection, pending["inviteUrl"].rsplit("/", 1)[1],
                                      "invite") is None
    finally:
        await connection.close()
    again = calltrail("user", "cancel-invite", "--org", second["orgId"], "--email",
                      "late@bravo.example", database_url=database_url)
    assert again.returncode != 0 and "no pending invitation" in again.stderr

    kept = calltrail("user", "remove", "--org", first["orgId"], "--email",
                     "owner@acme.example", database_url=database_url)
    assert kept.returncode != 0 and "keeps at least one owner" in kept.stderr
    removed = calltrail("user", "remove", "--org", first["orgId"], "--email",
                        "owner@acme.example", "--force", database_url=database_url)
    assert removed.returncode == 0, removed.stderr
    again = calltrail("user", "remove", "--org", first["orgId"], "--email",
                      "owner@acme.example", database_url=database_url)
    assert again.returncode != 0 and again.stderr.startswith("calltrail: ")
