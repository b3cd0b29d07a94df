"""Named cases of contract section 5, through the real handler into real Postgres."""

from __future__ import annotations

import copy
import itertools
import uuid
from decimal import Decimal

import orjson

from call_processor.deliveries import Delivery, join_prepared, prepare_batch
from call_processor.handlers import process_batch
from calltrail_testkit.state import assert_invariants
from tests.support.samples import sample

_tags = itertools.count(1)


def event(name: str, *, call_id: str | None = None, number: str | None = None,
          **message_changes) -> dict:
    body = copy.deepcopy(sample(name))
    message = body["message"]
    if call_id is not None:
        message["call"]["id"] = call_id
    if number is not None:
        message["call"]["customer"] = {"number": number}
        message["customer"] = {"number": number}
    message.update(message_changes)
    return body


async def apply(connection, org_id, *bodies: dict) -> None:
    deliveries = [Delivery.received(next(_tags), uuid.uuid4().hex, {"x-org-id": str(org_id)},
                           orjson.dumps(b)) for b in bodies]
    outcome = await process_batch(connection, deliveries)
    assert not outcome.dead
    await assert_invariants(connection)


async def test_two_spellings_of_one_number_are_one_lead(connection, org_id) -> None:
    await apply(connection, org_id,
                event("inbound-2-status-in-progress", call_id="a", number="+14155550123"),
                event("inbound-2-status-in-progress", call_id="b", number="+1 (415) 555-0123"))
    assert await connection.fetchval("SELECT count(*) FROM leads") == 1
    assert await connection.fetchval("SELECT call_count FROM leads") == 2
    assert await connection.fetchval(
        "SELECT count(DISTINCT lead_id) FROM calls WHERE lead_id IS NOT NULL") == 1


async def test_calls_stored_before_the_lead_existed_are_linked_to_it(connection,
                                                                     org_id) -> None:
    outbound = event("outbound-2-status-ringing", call_id="out-1", number="+14155550123")
    await apply(connection, org_id, outbound)
    assert await connection.fetchval("SELECT count(*) FROM leads") == 0  # outbound: no lead
    await apply(connection, org_id,
                event("inbound-1-status-ringing", call_id="in-1", number="+14155550123"))
    lead = await connection.fetchrow("SELECT id, call_count FROM leads")
    assert lead["call_count"] == 2
    assert await connection.fetchval("SELECT lead_id FROM calls WHERE id = 'out-1'") == lead["id"]


async def test_structured_data_fills_what_the_customer_object_lacks(connection,
                                                                    org_id) -> None:
    report = event("inbound-7-end-of-call-report", call_id="c1")
    report["message"]["call"]["customer"] = {"number": "+14155550123"}  # no name, no email
    report["message"]["analysis"]["structuredData"] = {"name": "From Form",
                                                       "email": "form@example.com"}
    await apply(connection, org_id, report)
    assert dict(await connection.fetchrow("SELECT name, email FROM leads")) == {
        "name": "From Form", "email": "form@example.com"}
    named = event("inbound-1-status-ringing", call_id="c2")  # customer name "Ana Ruiz"
    await apply(connection, org_id, named)
    assert dict(await connection.fetchrow("SELECT name, email FROM leads")) == {
        "name": "Ana Ruiz", "email": "form@example.com"}


async def test_web_calls_without_numbers_are_calls_but_never_leads(connection,
                                                                   org_id) -> None:
    await apply(connection, org_id, sample("webcall-end-of-call-report"))
    row = await connection.fetchrow("SELECT direction, status, customer_number, lead_id,"
                                    " duration_seconds FROM calls")
    assert dict(row) == {"direction": "webCall", "status": "ended", "customer_number": None,
                         "lead_id": None, "duration_seconds": Decimal("95.5")}
    assert await connection.fetchval("SELECT web FROM daily_stats") == 1
    assert await connection.fetchval("SELECT count(*) FROM leads") == 0


async def test_the_legacy_report_shape_fills_the_same_fields(connection, org_id) -> None:
    await apply(connection, org_id, sample("legacy-end-of-call-report"))
    row = await connection.fetchrow("SELECT transcript, summary, recording_url, cost,"
                                    " ended_reason, status FROM calls")
    assert row["transcript"].startswith("AI: schedule estimate")
    assert row["summary"].startswith("Caller asked")
    assert row["recording_url"].endswith("-mono.wav")
    assert (row["cost"], row["ended_reason"], row["status"]) == (
        Decimal("0.2134"), "customer-ended-call", "ended")


async def test_an_unknown_or_late_status_never_moves_a_call_back(connection, org_id) -> None:
    await apply(connection, org_id, event("inbound-6-status-ended", call_id="c1"))
    await apply(connection, org_id,
                event("inbound-2-status-in-progress", call_id="c1"),
                event("inbound-2-status-in-progress", call_id="c1", status="not-found"))
    assert await connection.fetchval("SELECT status FROM calls") == "ended"


async def test_iso_timestamps_and_missing_ones_are_accepted(connection, org_id) -> None:
    iso = event("inbound-2-status-in-progress", call_id="c1",
                timestamp="2026-11-03T15:04:06.000Z")
    missing = event("inbound-6-status-ended", call_id="c1")
    del missing["message"]["timestamp"]
    await apply(connection, org_id, iso, missing)
    row = await connection.fetchrow("SELECT status, last_event_at FROM calls")
    assert row["status"] == "ended"
    assert row["last_event_at"].isoformat() == "2026-11-03T15:04:06+00:00"


async def test_every_event_is_archived_once_with_its_organization(connection,
                                                                  org_id) -> None:
    chatter = sample("inbound-4-conversation-update")
    body = orjson.dumps(chatter)
    delivery = Delivery.received(1, "m-1", {"x-org-id": str(org_id), "x-dedupe-key": "k"}, body)
    again = Delivery.received(2, "m-1", delivery.envelope.headers(), body)
    await process_batch(connection, [delivery, again])
    rows = await connection.fetch("SELECT message_id, org_id, message_type, dedupe_key, body"
                                  " FROM events")
    assert [(r["message_id"], r["org_id"], r["message_type"], r["dedupe_key"])
            for r in rows] == [("m-1", org_id, "conversation-update", "k")]
    assert bytes(rows[0]["body"]) == body  # the raw bytes, for audit and replay


async def test_retention_prunes_old_events_but_never_unassigned_ones(connection,
                                                                     org_id) -> None:
    from call_processor.repository import prune_events

    old = {"x-received-at": 1_600_000_000_000}  # 2020
    unmatched = event("inbound-1-status-ringing", call_id="lost")
    unmatched["message"]["phoneNumber"] = {"number": "+15550009999"}
    del unmatched["message"]["call"]["phoneNumberId"]
    unmatched["message"]["call"]["orgId"] = "nobody"
    await process_batch(connection, [
        Delivery.received(1, "old-assigned", {**old, "x-org-id": str(org_id)},
                 orjson.dumps(sample("inbound-3-speech-update"))),
        Delivery.received(2, "old-unassigned", old, orjson.dumps(unmatched)),
        Delivery.received(3, "recent", {"x-org-id": str(org_id)},
                 orjson.dumps(sample("inbound-3-speech-update")))])
    assert await prune_events(connection, retention_days=30) == 1
    assert [r["message_id"] for r in await connection.fetch(
        "SELECT message_id FROM events ORDER BY message_id")] == ["old-unassigned", "recent"]


async def test_chatter_from_an_organization_endpoint_is_archived_from_its_headers(
        connection, org_id) -> None:
    body = orjson.dumps(sample("inbound-3-speech-update"))
    headers = {"x-org-id": str(org_id), "x-message-type": "speech-update",
               "x-dedupe-key": "db5b5fab-8f4d-4e27-9da1-494c73cf256d:speech-update:started"}
    outcome = await process_batch(connection, [Delivery.received(1, "m-chat", headers, body)])
    assert outcome.applied == [1]
    row = await connection.fetchrow("SELECT org_id, message_type, call_id FROM events")
    assert dict(row) == {"org_id": org_id, "message_type": "speech-update",
                         "call_id": "db5b5fab-8f4d-4e27-9da1-494c73cf256d"}
    assert await connection.fetchval("SELECT count(*) FROM calls") == 0


async def test_a_lead_goes_when_its_only_inbound_call_changes_number(connection,
                                                                     org_id) -> None:
    await apply(connection, org_id,
                event("outbound-2-status-ringing", call_id="out", number="+14155550123"),
                event("inbound-1-status-ringing", call_id="in", number="+14155550123"))
    assert await connection.fetchval("SELECT call_count FROM leads") == 2
    # A later, more authoritative snapshot says the caller was someone else.
    corrected = event("inbound-7-end-of-call-report", call_id="in", number="+442071838750")
    corrected["message"]["timestamp"] += 60_000
    await apply(connection, org_id, corrected)  # invariants: stats follow, links follow
    assert [r["phone_number"] for r in await connection.fetch(
        "SELECT phone_number FROM leads")] == ["+442071838750"]
    assert await connection.fetchval("SELECT lead_id FROM calls WHERE id = 'out'") is None
    assert await connection.fetchval("SELECT sum(new_leads) FROM daily_stats") == 1


def test_a_batch_prepared_in_parts_is_the_batch_prepared_whole() -> None:
    org = uuid.uuid4()
    names = ["inbound-1-status-ringing", "inbound-2-status-in-progress",
             "inbound-3-speech-update", "inbound-6-status-ended", "inbound-7-end-of-call-report"]
    headers = {"x-org-id": str(org), "x-received-at": 1793718246000}
    deliveries = [Delivery.received(tag, uuid.uuid4().hex, headers,
                           orjson.dumps(event(name, call_id=call_id)))
                  for tag, (call_id, name) in enumerate(
                      itertools.product(("a", "b"), names), start=1)]
    deliveries.append(Delivery.received(99, "poison", headers, b"{not json"))
    whole = prepare_batch(deliveries)
    parts = join_prepared([prepare_batch(deliveries[i:i + 3])
                           for i in range(0, len(deliveries), 3)])
    assert parts == whole and set(whole.merged) == {("a", org), ("b", org)}
