"""What an account calls its assistants and phone numbers (decision 43): the pure rule, and
metrics-sync keeping `vapi_names` fresh from the fake Vapi, round after round, with one
bounded list request per kind and no write when nothing changed."""

from __future__ import annotations

import uuid

from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi
from metrics_sync.names import (
    MAX_NAME_LENGTH,
    VapiName,
    assistant_names,
    phone_number_names,
)
from tests.metrics_sync.conftest import (
    connect,
    fetch,
    finished_run,
    new_org,
    running_sync,
    sync_now,
    sync_settings,
)


def test_an_assistant_is_named_by_its_name_and_a_number_by_its_name_number_or_sip_uri() -> None:
    assert assistant_names([
        {"id": "a1", "name": "  Front   desk "}, {"id": "a2"}, {"id": "a3", "name": ""},
        {"id": "a1", "name": "Second copy"}, {"name": "No id"}, {"id": 7, "name": "Bad id"},
        {"id": "a4", "name": "x" * 500},
    ]) == [VapiName("assistant", "a1", "Front desk"),
           VapiName("assistant", "a4", "x" * MAX_NAME_LENGTH)]
    assert phone_number_names([
        {"id": "p1", "name": "Sales line", "number": "+16505550100"},
        {"id": "p2", "name": None, "number": "+16505550101"},
        {"id": "p3", "sipUri": "sip:desk@sip.vapi.ai"},
        {"id": "p4", "name": " "},
    ]) == [VapiName("phone_number", "p1", "Sales line"),
           VapiName("phone_number", "p2", "+16505550101"),
           VapiName("phone_number", "p3", "sip:desk@sip.vapi.ai")]


async def _names(database_url: str, org_id: uuid.UUID) -> dict[tuple[str, str], tuple]:
    rows = await fetch(database_url, "SELECT kind, vapi_id, name, updated_at, xmin::text "
                       "AS version FROM vapi_names WHERE org_id = $1", org_id)
    return {(r["kind"], r["vapi_id"]): (r["name"], r["updated_at"], r["version"])
            for r in rows}


async def test_names_are_stored_renamed_on_the_next_round_and_kept_when_delisted(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    account = fake.add_account("key-names", seed=11, calls=20, days=3, assistants=3,
                               phone_numbers=2)
    settings = sync_settings(database_url, topology, url)
    org_id = await new_org(database_url)
    other_org = await new_org(database_url, "Other")
    async with running_sync(settings):
        first = await finished_run(database_url, (await connect(settings, org_id,
                                                                "key-names")).sync_id)
        assert first["status"] == "succeeded", first["reason"]
        stored = await _names(database_url, org_id)
        assert {k: v[0] for k, v in stored.items()} == {
            **{("assistant", a["id"]): a["name"] for a in account.assistants},
            **{("phone_number", p["id"]): p["name"] for p in account.phone_numbers}}
        assert await _names(database_url, other_org) == {}

        # A quiet round: one bounded request per list, and no row written.
        before = account.requests
        quiet = await finished_run(database_url, await sync_now(settings, org_id))
        assert quiet["status"] == "succeeded"
        asked = account.request_log[before:]
        assert [query for _, path, query in asked if path == "/assistant"] == [
            {"limit": "1000"}]
        assert len([path for _, path, _ in asked if path == "/phone-number"]) == 1
        assert await _names(database_url, org_id) == stored

        # Renamed in Vapi, one assistant deleted there, a number unnamed: the next round
        # shows the new names; the deleted assistant keeps its last one (calls cite it).
        renamed, deleted, kept = (a["id"] for a in account.assistants)
        account.rename(renamed, "Front desk (evenings)")
        account.rename(account.phone_numbers[0]["id"], None)
        account.assistants = [a for a in account.assistants if a["id"] != deleted]
        again = await finished_run(database_url, await sync_now(settings, org_id))
        assert again["status"] == "succeeded"
        after = await _names(database_url, org_id)
    assert after[("assistant", renamed)][0] == "Front desk (evenings)"
    assert after[("assistant", renamed)][1] > stored[("assistant", renamed)][1]
    assert after[("assistant", deleted)] == stored[("assistant", deleted)]
    assert after[("assistant", kept)] == stored[("assistant", kept)]
    number = account.phone_numbers[0]
    assert after[("phone_number", number["id"])][0] == number["number"]
