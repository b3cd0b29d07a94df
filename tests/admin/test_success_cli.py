"""`calltrail org success`: show, set and clear an organization's success measure, with
the same rules and audit as the dashboard and the API (decision 41)."""

from __future__ import annotations

import uuid

import orjson

from calltrail_common import db
from calltrail_common.organizations import create_organization
from tests.admin.test_cli import calltrail

SCORECARD = "c5bd0d4e-0c7f-4b0a-82e9-5d0baf6e4a01"


async def test_show_set_and_clear(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org = await create_organization(connection, "Acme")
    finally:
        await connection.close()
    org_id = str(org.org_id)

    def run(*args: str) -> dict:
        result = calltrail("org", "success", "--org", org_id, *args,
                           database_url=database_url)
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    assert run() == {"orgId": org_id, "measure": None,
                     "counts": "analysis.successEvaluation", "sources": []}
    assert run("--scorecard", SCORECARD, "--pass-mark", "72.5")["measure"] == {
        "kind": "scorecard", "sourceId": SCORECARD, "passMark": "72.50"}
    shown = run("--output", "so-booked")
    assert shown["measure"] == {"kind": "output", "sourceId": "so-booked", "passMark": None}
    assert shown["counts"] == "output so-booked is true"
    assert run("--clear")["measure"] is None

    connection = await db.connect(database_url)
    try:
        audited = [r["target"] for r in await connection.fetch(
            "SELECT target FROM audit_log WHERE org_id = $1 AND actor = 'cli'"
            " AND action = 'success_measure.set' ORDER BY at, id", org.org_id)]
    finally:
        await connection.close()
    assert audited == [f"scorecard {SCORECARD} scores at least 72.50",
                       "output so-booked is true", "analysis.successEvaluation"]


async def test_bad_options_fail_with_one_line(database_url: str) -> None:
    connection = await db.connect(database_url)
    try:
        org_id = str((await create_organization(connection, "Acme")).org_id)
    finally:
        await connection.close()
    for args, says in [
        (("--org", org_id, "--scorecard", SCORECARD, "--pass-mark", "120"),
         "the pass mark must be a number from 0 to 100"),
        (("--org", org_id, "--output", "so-1", "--pass-mark", "50"),
         "--pass-mark goes with --scorecard"),
        (("--org", org_id, "--output", "  "), "give the structured output's id"),
        (("--org", str(uuid.uuid4()), "--output", "so-1"), "no organization"),
        (("--org", "not-an-id"), "--org is not a valid id"),
    ]:
        result = calltrail("org", "success", *args, database_url=database_url)
        assert result.returncode != 0, args
        assert result.stderr.startswith("calltrail: ") and says in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    both = calltrail("org", "success", "--org", org_id, "--output", "a", "--clear",
                     database_url=database_url)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
