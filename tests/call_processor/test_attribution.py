"""Which organization an event on the shared endpoint belongs to (contract section 5, issue
17: call.orgId of a connected account decides and the other keys must agree with it;
without one, in order: metadata's organization id, Vapi's phone number id, the dialled
number), through the real handler into real Postgres, without a broker; and the second look
under the assignment lock. The rule's cases one by one: tests/common/test_attribution.py."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import orjson
import pytest

from call_processor.deliveries import Delivery, prepare_batch
from call_processor.handlers import _organizations, process_batch
from calltrail_common import db
from calltrail_common.attribution import Attribution, Known, Registration, Routing
from calltrail_common.organizations import create_organization
from tests.support.samples import sample

_tags = itertools.count(1)

DISAGREES_METADATA = "disagrees: metadata names another organization than call.orgId's account"
DISAGREES_PHONE_ID = ("disagrees: call.phoneNumberId is registered to another organization "
                      "than call.orgId's account")
NO_MATCH = "no organization matches"


def shared_event(call_id: str, *, metadata: dict[str, str] | None = None,
                 phone_id: str | None = None, number: str | None = None,
                 vapi_org: str = "none") -> dict[str, Any]:
    body = copy.deepcopy(sample("inbound-1-status-ringing"))
    message = body["message"]
    message["call"]["id"] = call_id
    message["call"].pop("phoneNumberId", None)
    message["call"]["orgId"] = vapi_org
    message["phoneNumber"] = {"number": number} if number else {}
    if metadata is not None:
        message["call"]["assistantOverrides"] = {"metadata": metadata}
    if phone_id is not None:
        message["call"]["phoneNumberId"] = phone_id
    return body


def delivery(body: dict[str, Any], headers: dict[str, str] | None = None) -> Delivery:
    return Delivery.received(next(_tags), uuid.uuid4().hex, headers or {}, orjson.dumps(body))


@pytest.fixture
async def connection(database_url: str) -> Any:
    connection = await db.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_each_rule_in_its_order(connection: asyncpg.Connection) -> None:
    named, by_phone_id, by_number, by_account, learnt = [
        (await create_organization(connection, n)).org_id
        for n in ("named", "pid", "num", "acct", "learnt")]
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, vapi_phone_number_id) VALUES ($1, $2, 'pn-x')",
        uuid.uuid4(), by_phone_id)
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, number) VALUES ($1, $2, '+15550001111')",
        uuid.uuid4(), by_number)
    # Learnt from a Vapi account (of Vapi org vapi-org-7, not connected now): it counts only
    # for events of that Vapi org.
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, number, vapi_phone_number_id, vapi_org_id) "
        "VALUES ($1, $2, '+15550007777', 'pn-l', 'vapi-org-7')", uuid.uuid4(), learnt)
    await connection.execute(
        "INSERT INTO vapi_accounts (org_id, vapi_org_id) VALUES ($1, 'vapi-org-9')", by_account)
    expected = {
        # call.orgId of a connected account decides; what agrees with it is fine.
        "c-account": (shared_event("c-account", vapi_org="vapi-org-9"), by_account),
        "c-account-agrees": (shared_event("c-account-agrees", vapi_org="vapi-org-9",
                                          metadata={"orgId": str(by_account)}), by_account),
        "c-account-unknown-keys": (shared_event(
            "c-account-unknown-keys", vapi_org="vapi-org-9", phone_id="pn-other",
            number="+15559999999", metadata={"orgId": str(uuid.uuid4())}), by_account),
        # Without one, in order: metadata, phone number id, dialled number.
        "c-meta": (shared_event("c-meta", metadata={"orgId": str(named)}, phone_id="pn-x",
                                number="+15550001111"), named),
        "c-meta-organizationId": (shared_event(
            "c-meta-organizationId", metadata={"organizationId": str(named)}), named),
        # An id that names no organization, or is no id, falls through to the next rule.
        "c-meta-unknown": (shared_event("c-meta-unknown", metadata={"orgId": str(uuid.uuid4())},
                                        phone_id="pn-x"), by_phone_id),
        "c-meta-not-a-uuid": (shared_event("c-meta-not-a-uuid", metadata={"orgId": "acme"},
                                           number="+1 555 000 1111"), by_number),
        "c-phone-id": (shared_event("c-phone-id", phone_id="pn-x", number="+15550001111"),
                       by_phone_id),
        "c-unknown-phone-id": (shared_event("c-unknown-phone-id", phone_id="pn-other",
                                            number="+15550001111"), by_number),
        "c-number": (shared_event("c-number", number="+15550001111"), by_number),
        "c-learnt-id": (shared_event("c-learnt-id", phone_id="pn-l", vapi_org="vapi-org-7"),
                        learnt),
        "c-learnt-number": (shared_event("c-learnt-number", number="+15550007777",
                                         vapi_org="vapi-org-7"), learnt),
    }
    kept_aside = {
        "c-meta-disagrees": (shared_event(
            "c-meta-disagrees", metadata={"orgId": str(named)}, vapi_org="vapi-org-9"),
            DISAGREES_METADATA),
        "c-phone-id-disagrees": (shared_event(
            "c-phone-id-disagrees", phone_id="pn-x", vapi_org="vapi-org-9"),
            DISAGREES_PHONE_ID),
        "c-number-disagrees": (shared_event(
            "c-number-disagrees", number="+15550001111", vapi_org="vapi-org-9"),
            "disagrees: the dialled number is registered to another organization than "
            "call.orgId's account"),
        # Learnt numbers of another Vapi org neither route nor disagree.
        "c-learnt-elsewhere": (shared_event("c-learnt-elsewhere", phone_id="pn-l",
                                            number="+15550007777"), NO_MATCH),
        "c-nobody": (shared_event("c-nobody", number="+15559999999", phone_id="pn-none"),
                     NO_MATCH),
    }
    # One batch (one lookup for every event) and one batch per event: the same answer.
    outcome = await process_batch(connection, [delivery(body) for body, _ in expected.values()]
                                  + [delivery(body) for body, _ in kept_aside.values()])
    assert not outcome.dead and len(outcome.unassigned) == len(kept_aside)
    assert await _organizations_of_calls(connection) == {
        call_id: org for call_id, (_, org) in expected.items()}
    assert await _unassigned(connection) == {
        call_id: reason for call_id, (_, reason) in kept_aside.items()}

    await connection.execute("TRUNCATE calls, leads, events, unassigned_events")
    for body, _ in [*expected.values(), *kept_aside.values()]:
        assert not (await process_batch(connection, [delivery(body)])).dead
    assert await _organizations_of_calls(connection) == {
        call_id: org for call_id, (_, org) in expected.items()}
    assert await _unassigned(connection) == {
        call_id: reason for call_id, (_, reason) in kept_aside.items()}


async def test_the_endpoints_organization_is_taken_as_it_is(
        connection: asyncpg.Connection) -> None:
    org, other = [(await create_organization(connection, n)).org_id for n in ("a", "b")]
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, number) VALUES ($1, $2, '+15550001111')",
        uuid.uuid4(), other)
    body = shared_event("c-endpoint", number="+15550001111", metadata={"orgId": str(other)})
    outcome = await process_batch(connection, [delivery(body, {"x-org-id": str(org)})])
    assert not outcome.dead and not outcome.unassigned
    assert await _organizations_of_calls(connection) == {"c-endpoint": org}


async def _organizations_of_calls(connection: asyncpg.Connection) -> dict[str, uuid.UUID]:
    return {r["id"]: r["org_id"] for r in await connection.fetch("SELECT id, org_id FROM calls")}


class NumberAddedMeanwhile:
    """A repository whose number mapping appears once the assignment lock is held, as when
    `phone-number add` commits between the two looks."""

    def __init__(self, org: uuid.UUID) -> None:
        self.org = org
        self.locked = False
        self.looked_for: list[list[str]] = []

    async def hold_assignment_lock(self) -> None:
        self.locked = True

    async def known(self, routings: Sequence[Routing]) -> Known:
        numbers = sorted(r.dialled_number for r in routings if r.dialled_number)
        self.looked_for.append(numbers)
        return Known(by_number={n: [Registration(self.org, None)] for n in numbers}
                     if self.locked else {})


async def test_unmatched_events_are_looked_up_again_under_the_lock_and_only_they() -> None:
    org, endpoint_org = uuid.uuid4(), uuid.uuid4()
    repo = NumberAddedMeanwhile(org)
    shared = delivery(shared_event("c-1", number="+15550001111"))
    decided = delivery(shared_event("c-2", number="+15550002222"),
                       {"x-org-id": str(endpoint_org)})
    found = await _organizations(repo, prepare_batch([shared, decided]).parsed)  # type: ignore[arg-type]
    assert found == {shared.message_id: Attribution(org),
                     decided.message_id: Attribution(endpoint_org)}
    assert repo.locked and repo.looked_for == [["+15550001111"], ["+15550001111"]]


async def test_a_batch_matched_at_the_first_look_takes_no_lock() -> None:
    repo = NumberAddedMeanwhile(uuid.uuid4())
    decided = delivery(shared_event("c-3", number="+15550001111"),
                       {"x-org-id": str(uuid.uuid4())})
    await _organizations(repo, prepare_batch([decided]).parsed)  # type: ignore[arg-type]
    assert not repo.locked and repo.looked_for == []


# --- issue 17: on the shared endpoint, call.orgId of a connected account decides ---------



async def _two_orgs_b_connected(connection: asyncpg.Connection
                                ) -> tuple[uuid.UUID, uuid.UUID]:
    """Organizations A and B; B has connected the Vapi account whose org id is 'vapi-b'."""
    a, b = [(await create_organization(connection, n)).org_id for n in ("A", "B")]
    await connection.execute(
        "INSERT INTO vapi_accounts (org_id, vapi_org_id) VALUES ($1, 'vapi-b')", b)
    return a, b


async def _unassigned(connection: asyncpg.Connection) -> dict[str, str]:
    """Call id -> the reason its event was kept aside."""
    return {r["call_id"]: r["reason"] for r in await connection.fetch(
        "SELECT e.call_id, u.reason FROM unassigned_events u JOIN events e USING (message_id)")}


async def test_metadata_naming_another_org_than_the_accounts_is_kept_aside_with_a_reason(
        connection: asyncpg.Connection) -> None:
    a, _ = await _two_orgs_b_connected(connection)
    body = shared_event("c-forged", metadata={"orgId": str(a)}, vapi_org="vapi-b")
    outcome = await process_batch(connection, [delivery(body)])
    assert not outcome.dead and len(outcome.unassigned) == 1
    assert await _organizations_of_calls(connection) == {}  # neither in A nor in B
    assert await _unassigned(connection) == {"c-forged": DISAGREES_METADATA}
    assert await connection.fetchval("SELECT org_id FROM events") is None


async def test_the_accounts_org_decides_and_agreeing_metadata_is_fine(
        connection: asyncpg.Connection) -> None:
    _, b = await _two_orgs_b_connected(connection)
    outcome = await process_batch(connection, [
        delivery(shared_event("c-agrees", metadata={"orgId": str(b)}, vapi_org="vapi-b")),
        delivery(shared_event("c-account-only", vapi_org="vapi-b")),
        # An id that names no organization is no disagreement.
        delivery(shared_event("c-unknown-meta", metadata={"orgId": str(uuid.uuid4())},
                              vapi_org="vapi-b"))])
    assert not outcome.dead and not outcome.unassigned
    assert await _organizations_of_calls(connection) == {
        "c-agrees": b, "c-account-only": b, "c-unknown-meta": b}


async def test_another_orgs_phone_number_id_under_the_accounts_org_is_kept_aside(
        connection: asyncpg.Connection) -> None:
    a, _ = await _two_orgs_b_connected(connection)
    # A registered its number by hand (`calltrail phone-number add --vapi-id pn-a`).
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, number, vapi_phone_number_id) "
        "VALUES ($1, $2, '+15550001111', 'pn-a')", uuid.uuid4(), a)
    body = shared_event("c-pn-forged", phone_id="pn-a", vapi_org="vapi-b")
    outcome = await process_batch(connection, [delivery(body)])
    assert not outcome.dead and len(outcome.unassigned) == 1
    assert await _organizations_of_calls(connection) == {}
    assert await _unassigned(connection) == {"c-pn-forged": DISAGREES_PHONE_ID}


async def test_without_a_connected_account_the_fallback_order_still_routes(
        connection: asyncpg.Connection) -> None:
    a, b = [(await create_organization(connection, n)).org_id for n in ("A", "B")]
    await connection.execute(
        "INSERT INTO phone_numbers (id, org_id, vapi_phone_number_id) VALUES ($1, $2, 'pn-b')",
        uuid.uuid4(), b)
    outcome = await process_batch(connection, [
        delivery(shared_event("c-meta", metadata={"orgId": str(a)}, phone_id="pn-b",
                              vapi_org="vapi-nobody")),
        delivery(shared_event("c-pn", phone_id="pn-b", vapi_org="vapi-nobody")),
        delivery(shared_event("c-none", phone_id="pn-none", vapi_org="vapi-nobody"))])
    assert not outcome.dead and len(outcome.unassigned) == 1
    assert await _organizations_of_calls(connection) == {"c-meta": a, "c-pn": b}
    assert await _unassigned(connection) == {"c-none": NO_MATCH}
