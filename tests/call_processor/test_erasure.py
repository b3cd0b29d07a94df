"""Erasure, retention and deletion (issue 19, decision 44), proven on the database dump.

Calls go through the real handler into real Postgres; then a caller is erased, the
organization's retention purges, or Vapi deletes a call. The caller's number (as stored
and as Vapi wrote it), name, email and a phrase of the transcript must then appear nowhere
in `pg_dump` of the test database, as text or as the hex of a raw event's bytes, nor in the
logs; the figures stay as they were (erasure, retention) or lose the call (deletion); and
events that arrive later bring nothing back.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import subprocess
import uuid

import asyncpg
import orjson
import pytest

from call_processor.deliveries import Delivery
from call_processor.handlers import process_batch
from calltrail_common import audit, erasure, outbound_endpoints
from calltrail_common.organizations import create_organization
from calltrail_testkit.state import assert_invariants
from tests.support.samples import sample

NUMBER, DIGITS = "+14155550177", "4155550177"
NAME, EMAIL = "Quentin Marlowe", "quentin@marlowe.example"
PHRASE = "my grandmother's recipe uses saffron"
RECORDING = "https://storage.vapi.ai/quentin-secret-recording.wav"
OTHER = "+14155550188"  # another caller, whose data stays
OTHER_PERSON = ("Olga Other", "olga@other.example", "the blue door on the left",
                "https://storage.vapi.ai/olga-recording.wav")
PERSONAL = (NUMBER, DIGITS, NAME, EMAIL, PHRASE, RECORDING)

_tags = itertools.count(1)


def _report(call_id: str, number: str, *, outbound: bool = False, timestamp: int = 0
            ) -> dict:
    """A report of `call_id` whose caller, if `number` is NUMBER, is the one to erase."""
    name, email, phrase, recording = (NAME, EMAIL, PHRASE, RECORDING) if number == NUMBER \
        else OTHER_PERSON
    body = copy.deepcopy(sample("inbound-7-end-of-call-report"))
    message = body["message"]
    customer = {"number": number, "name": name, "email": email}
    message["call"].update({"id": call_id, "customer": customer,
                            "type": "outboundPhoneCall" if outbound else "inboundPhoneCall"})
    message["customer"] = customer
    message["artifact"].update({
        "transcript": f"AI: hello\nUser: {phrase}", "recordingUrl": recording,
        "messages": [{"role": "user", "message": phrase}],
        "structuredOutputs": {
            "so-booked": {"name": "booked", "result": True},
            "so-name": {"name": "customerName", "result": name}}})
    message["analysis"].update({"summary": f"{name} said {phrase}",
                                "structuredData": {"name": name, "email": email}})
    if timestamp:
        message["timestamp"] = timestamp
    return body


def _status(call_id: str, number: str, status: str) -> dict:
    body = copy.deepcopy(sample("inbound-2-status-in-progress"))
    message = body["message"]
    customer = {"number": number, "name": NAME if number == NUMBER else OTHER_PERSON[0]}
    message.update({"status": status, "customer": customer})
    message["call"].update({"id": call_id, "customer": customer, "status": status})
    return body


def _chatter(call_id: str, number: str) -> dict:
    body = copy.deepcopy(sample("inbound-3-speech-update"))
    body["message"]["call"].update({"id": call_id, "customer": {"number": number,
                                                                "name": NAME}})
    return body


def _deleted(call_id: str, number: str) -> dict:
    body = copy.deepcopy(sample("call-deleted"))
    message = body["message"]
    message["call"].update({"id": call_id, "customer": {"number": number, "name": NAME}})
    message["customer"] = {"number": number}
    return body


async def _apply(connection: asyncpg.Connection, org_id: uuid.UUID, *bodies: dict) -> None:
    # Received when Vapi sent them (2026-11-03): past a retention of a few days.
    headers = {"x-org-id": str(org_id), "x-received-at": 1793718246000}
    deliveries = [Delivery.received(next(_tags), uuid.uuid4().hex, headers, orjson.dumps(b))
                  for b in bodies]
    outcome = await process_batch(connection, deliveries)
    assert not outcome.dead
    await assert_invariants(connection)


async def _outbound_endpoint(connection: asyncpg.Connection, org_id: uuid.UUID) -> None:
    """An endpoint that wants every call and lead event: the outbox holds the caller too."""
    await outbound_endpoints.create(
        connection, org_id, url="https://crm.example.com/hook",
        event_types=["call.ended", "call.updated", "lead.created", "lead.updated"])


async def _dump(database_url: str) -> bytes:
    done = await asyncio.to_thread(
        subprocess.run, ["pg_dump", "--data-only", "--no-owner", database_url],
        capture_output=True, check=True, timeout=60)
    return done.stdout


def _found(dump: bytes, marks: tuple[str, ...]) -> list[str]:
    """The marks in the dump, as text or as hex (a raw event's body is bytea)."""
    lowered = dump.lower()
    return [m for m in marks if m.encode() in dump or m.encode().hex().encode() in lowered]


async def _figures(connection: asyncpg.Connection) -> dict[str, list[dict]]:
    return {view: [dict(r) for r in await connection.fetch(
        f"SELECT * FROM {view} ORDER BY 1, 2, 3")]  # noqa: S608 - view names are constants
        for view in ("daily_stats", "daily_call_outcomes", "daily_assistants",
                     "daily_success_signals")}


async def test_erasing_a_caller_leaves_nothing_personal_and_every_figure_as_it_was(
        database_url, connection, org_id, capfd: pytest.CaptureFixture[str]) -> None:
    await _outbound_endpoint(connection, org_id)
    await _apply(connection, org_id, _status("in-1", NUMBER, "in-progress"),
                 _report("in-1", NUMBER), _report("out-1", NUMBER, outbound=True),
                 _report("other-1", OTHER))
    lead_id = await connection.fetchval("SELECT id FROM leads WHERE phone_number = $1", NUMBER)
    assert await connection.fetchval(  # call.ended twice, lead.created once
        "SELECT count(*) FROM outbound_events WHERE data::text LIKE $1", f"%{NUMBER}%") == 3
    before = await _figures(connection)
    assert before["daily_success_signals"]  # the boolean output is counted
    assert sorted(_found(await _dump(database_url), PERSONAL)) == sorted(PERSONAL)

    done = await erasure.erase_caller(connection, org_id, audit.CLI_ACTOR, lead_id=lead_id)

    assert done == erasure.Erasure(lead_id, 2)
    dump = await _dump(database_url)
    assert _found(dump, PERSONAL) == []
    assert _found(dump, (OTHER, *OTHER_PERSON)) == [OTHER, *OTHER_PERSON]  # kept
    assert await _figures(connection) == before
    await assert_invariants(connection)
    lead = await connection.fetchrow("SELECT * FROM leads WHERE id = $1", lead_id)
    assert (lead["phone_number"], lead["name"], lead["email"], lead["call_count"]) == \
        (erasure.erased_number(lead_id), None, None, 2)
    entry = (await audit.entries(connection, org_id))[0]
    assert (entry.action, entry.target, entry.detail) == \
        ("lead.erase", str(lead_id), {"calls": 2})
    assert await connection.fetchval(
        "SELECT structured_outputs::text FROM calls WHERE id = 'in-1'") == \
        '{"so-booked": {"name": "booked", "result": true}}'

    # Vapi sends the calls again (a late report, a retry, a snapshot): nothing comes back.
    late = _report("in-1", NUMBER, timestamp=1893718350500)
    await _apply(connection, org_id, late, _status("out-1", NUMBER, "ended"))
    await _apply(connection, org_id, _chatter("in-1", NUMBER))  # names no call it changes
    assert _found(await _dump(database_url), PERSONAL) == []
    assert await _figures(connection) == before

    # A new call from the number: a new lead, the erased calls stay erased.
    await _apply(connection, org_id, _status("in-2", NUMBER, "in-progress"))
    new_lead = await connection.fetchrow("SELECT id, call_count FROM leads "
                                         "WHERE phone_number = $1", NUMBER)
    assert new_lead["id"] != lead_id and new_lead["call_count"] == 1
    assert await connection.fetchval(
        "SELECT count(*) FROM calls WHERE lead_id = $1", lead_id) == 2

    logs = "".join(capfd.readouterr())
    assert [m for m in PERSONAL if m in logs] == []


async def test_erasing_by_number_reaches_calls_without_a_lead(connection, org_id) -> None:
    await _apply(connection, org_id, _report("out-1", NUMBER, outbound=True))
    done = await erasure.erase_caller(connection, org_id, audit.CLI_ACTOR, number=NUMBER)
    assert done == erasure.Erasure(None, 1)
    row = await connection.fetchrow("SELECT customer_number, transcript, cost FROM calls")
    assert (row["customer_number"], row["transcript"]) == (None, None)
    assert row["cost"] is not None
    await _apply(connection, org_id, _report("out-1", NUMBER, outbound=True,
                                             timestamp=1893718350500))
    assert await connection.fetchval("SELECT customer_number FROM calls") is None
    other = await create_organization(connection, "Bravo")
    assert await erasure.erase_caller(connection, other.org_id, audit.CLI_ACTOR,
                                      number=NUMBER) is None


async def test_retention_purges_old_content_and_keeps_the_figures(
        database_url, connection, org_id) -> None:
    keeper = (await create_organization(connection, "Keeps everything")).org_id
    await _apply(connection, org_id, _report("in-1", NUMBER))
    await _apply(connection, keeper, _report("kept-1", OTHER))
    before = await _figures(connection)
    await erasure.set_content_retention(connection, org_id, 7, audit.CLI_ACTOR)

    purged = await erasure.purge_expired_content(connection, batch=1)

    assert purged == (1, 1)  # the call (created 2026-11-03) and its archived report
    dump = await _dump(database_url)
    assert _found(dump, (RECORDING, "User: " + PHRASE)) == []
    assert _found(dump, (NUMBER,)) == [NUMBER]  # retention is not erasure
    assert await connection.fetchval(
        "SELECT transcript FROM calls WHERE id = 'kept-1'") is not None  # keeps forever
    assert await _figures(connection) == before
    # A late report does not bring the transcript back; the next purge has nothing to do.
    await _apply(connection, org_id, _report("in-1", NUMBER, timestamp=1893718350500))
    assert await connection.fetchval(
        "SELECT transcript IS NULL AND recording_url IS NULL FROM calls WHERE id = 'in-1'")
    assert await erasure.purge_expired_content(connection) == (0, 1)  # the late report
    assert await _figures(connection) == before


async def test_a_call_deleted_in_vapi_leaves_its_figures_and_stays_deleted(
        database_url, connection, org_id) -> None:
    await _outbound_endpoint(connection, org_id)
    await _apply(connection, org_id, _report("other-1", OTHER))
    alone = await _figures(connection)
    await _apply(connection, org_id, _status("in-1", NUMBER, "in-progress"),
                 _report("in-1", NUMBER))
    assert await _figures(connection) != alone

    assert await connection.fetchval(
        "SELECT count(*) FROM outbound_events WHERE data ->> 'id' = 'in-1'") == 1

    await _apply(connection, org_id, _deleted("in-1", NUMBER))

    assert await connection.fetchval(
        "SELECT count(*) FROM outbound_events WHERE data ->> 'id' = 'in-1'") == 0
    assert await _figures(connection) == alone
    assert await connection.fetchval("SELECT count(*) FROM leads WHERE phone_number = $1",
                                      NUMBER) == 0
    assert _found(await _dump(database_url), PERSONAL) == []
    # Later events of the deleted call: it stays deleted, out of every figure.
    await _apply(connection, org_id, _status("in-1", NUMBER, "ended"),
                 _report("in-1", NUMBER, timestamp=1893718350500))
    await _apply(connection, org_id, _chatter("in-1", NUMBER))
    assert await _figures(connection) == alone
    assert _found(await _dump(database_url), PERSONAL) == []
    assert await connection.fetchval("SELECT deleted FROM calls WHERE id = 'in-1'")


async def test_a_deletion_before_any_other_event_keeps_the_call_out(connection, org_id
                                                                    ) -> None:
    await _apply(connection, org_id, _deleted("in-1", NUMBER))
    await _apply(connection, org_id, _report("in-1", NUMBER))
    assert await connection.fetchval("SELECT count(*) FROM daily_stats") == 0
    assert await connection.fetchval("SELECT count(*) FROM leads") == 0
