"""Connecting a Vapi account claims only its own numbers (issue 17): an account that lists
another organization's number gets neither that organization's calls nor its held-back
events, and the conflict is recorded and listed, never settled silently. Against the fake
Vapi, real Postgres and RabbitMQ, and the real call processor."""

from __future__ import annotations

import random
import uuid
from typing import Any

import orjson

from calltrail_common import db, phone_numbers
from calltrail_common.topology import Topology
from calltrail_testkit.fake_vapi import FakeVapi, make_phone_number
from tests.admin.test_cli import calltrail
from tests.conftest import AMQP_URL
from tests.metrics_sync.conftest import connect, fetch, new_org, sync_settings, wait_until
from tests.support.processor import publish, running_processor

CONTESTED, FREE = "+14155550111", "+14155550122"


def _number(vapi_org_id: str, number: str, index: int) -> dict[str, Any]:
    item = make_phone_number(random.Random(index), org_id=vapi_org_id, assistant_id=None,
                             index=index)
    item.update(provider="twilio", number=number)
    item.pop("sipUri", None)
    return item


def _webhook(call_id: str, vapi_org_id: str, dialled: str) -> dict[str, Any]:
    return {"message": {"type": "status-update", "status": "in-progress",
                        "timestamp": 1_763_000_000_000,
                        "phoneNumber": {"number": dialled},
                        "call": {"id": call_id, "orgId": vapi_org_id,
                                 "type": "inboundPhoneCall",
                                 "createdAt": "2026-11-20T10:00:00.000Z",
                                 "customer": {"number": "+14155550199"}}}}


async def _org_of_call(database_url: str, call_id: str) -> uuid.UUID | None:
    rows = await fetch(database_url, "SELECT org_id FROM calls WHERE id = $1", call_id)
    return rows[0]["org_id"] if rows else None


async def test_an_account_listing_another_orgs_number_gets_neither_its_calls_nor_its_events(
        database_url: str, topology: Topology, fake_vapi: tuple[FakeVapi, str]) -> None:
    fake, url = fake_vapi
    settings = sync_settings(database_url, topology, url)
    org_a, org_b = await new_org(database_url, "A"), await new_org(database_url, "B")
    account_a = fake.add_account("key-a", seed=11, calls=0, phone_numbers=0)
    account_b = fake.add_account("key-b", seed=12, calls=0, phone_numbers=0)
    # A's Vapi account lists B's numbers too (imported into A's Vapi org), and one item
    # that says it is of B's Vapi org.
    account_a.phone_numbers = [_number(account_a.org_id, CONTESTED, 1),
                               _number(account_a.org_id, FREE, 2),
                               _number(account_b.org_id, "+14155550133", 3)]
    account_b.phone_numbers = [_number(account_b.org_id, CONTESTED, 4)]
    held_back = "7f1d2a3b-0000-4000-8000-0000000000b1"
    later = "7f1d2a3b-0000-4000-8000-0000000000b2"
    async with running_processor(database_url, AMQP_URL, topology):
        # B's call, before B connected: nobody matches it yet.
        await publish(AMQP_URL, topology, [_webhook(held_back, account_b.org_id, FREE)])

        async def set_aside() -> bool:
            return bool(await fetch(database_url, "SELECT 1 FROM unassigned_events"))
        await wait_until(set_aside, 20, "B's event set aside as unassigned")

        connected_a = await connect(settings, org_a, "key-a")
        assert connected_a.events_handed_back == 0  # B's event does not agree with A
        assert set(connected_a.phone_numbers) == {CONTESTED, FREE}

        connected_b = await connect(settings, org_b, "key-b")
        assert connected_b.phone_numbers == ()  # A had it: a conflict, not a silent loss
        assert connected_b.events_handed_back == 1  # its Vapi org id matches B's event

        async def b_has_it() -> bool:
            return await _org_of_call(database_url, held_back) == org_b
        await wait_until(b_has_it, 20, "B's held-back event assigned to B")

        # B's calls on the contested number go to B, whose account call.orgId names.
        await publish(AMQP_URL, topology, [_webhook(later, account_b.org_id, CONTESTED)])

        async def b_has_the_later_one() -> bool:
            return await _org_of_call(database_url, later) == org_b
        await wait_until(b_has_the_later_one, 20, "B's later call assigned to B")
    assert not await fetch(database_url, "SELECT 1 FROM calls WHERE org_id = $1", org_a)
    assert [r["vapi_phone_number_id"] for r in await fetch(
        database_url, "SELECT vapi_phone_number_id FROM phone_numbers "
        "WHERE number = '+14155550133'")] == []  # another Vapi org's item: not claimed

    connection = await db.connect(database_url)
    try:
        for org in (org_a, org_b):
            listed = await phone_numbers.conflicts(connection, org)
            assert [(c.org_id, c.number, c.held_by) for c in listed] == [
                (org_b, CONTESTED, org_a)]
    finally:
        await connection.close()
    shown = calltrail("phone-number", "conflicts", database_url=database_url)
    assert shown.returncode == 0, shown.stderr
    rows = orjson.loads(shown.stdout)
    assert [(r["orgId"], r["number"], r["heldBy"]) for r in rows] == [
        (str(org_b), CONTESTED, str(org_a))]
