"""Bad input (issue 6): arbitrary JSON where Vapi's fields should be, through the parser, the
merge rules, the real handler on Postgres and the real consumer on RabbitMQ.

The promise under test: the processor never crashes and never blocks the queue. A message it
can never use is dead-lettered at once with a reason; anything else is applied (or kept
unassigned), with what cannot be stored left out of the call and the raw event archived.
"""

from __future__ import annotations

import copy
import itertools
import random
import string
import time
import uuid
from decimal import Decimal
from typing import Any

import aio_pika
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from call_processor.calls import CallState, merge
from call_processor.deliveries import Delivery
from call_processor.events import CALL_EVENT_TYPES, PoisonMessage, WebhookEvent, parse_event
from call_processor.handlers import process_batch
from calltrail_common import db
from calltrail_common.envelope import HEADER_DEAD_LETTER_REASON
from calltrail_common.organizations import create_organization
from calltrail_common.topology import CALL_PROCESSOR, Topology
from calltrail_testkit.state import assert_invariants
from tests.conftest import AMQP_URL
from tests.support import bad_json
from tests.support.bad_json import (
    NUMBERS_AS_STRINGS,
    PARSER_PATHS,
    RAW_TOKENS,
    SAMPLES,
    TIMESTAMPS,
    bodies,
    encode,
    huge_text,
    odd_text,
    replace_at,
    vapi_documents,
)
from tests.support.processor import eventually, publish, queue_depth, running_processor
from tests.support.samples import sample

# What Postgres can hold: no NUL in text or jsonb, jsonb that orjson can write (255 levels),
# index entries under the 2704-byte b-tree limit, numerics summed exactly in 28 digits.
_BTREE_BYTES = 2704
_INCOMPRESSIBLE = "".join(random.Random(6).choices(string.printable, k=8000))  # not TOASTable
_EDGE_VALUES: list[Any] = [
    *TIMESTAMPS, *NUMBERS_AS_STRINGS,
    "a" * 100_000, _INCOMPRESSIBLE, "\x00" * 10, "x\x00y", "", " ", {}, [],
    {"\x00": "\x00"}, {"k": "\x00"},
    [None], True, False, None, 1.5, -1, 2**64 + 1, 10**30,
]
_EDGE_VALUES += [bad_json._MARKER.format(i) for i in range(len(RAW_TOKENS))]


def _assert_storable(event: WebhookEvent) -> None:
    """Everything the parser hands on fits the columns it is headed for."""
    texts: list[str] = [event.message_type]
    keys = [event.call_id, event.routing.phone_number_id, event.routing.dialled_number,
            event.routing.vapi_org_id, *event.routing.metadata_org_ids]
    for key in keys:
        assert key is None or (isinstance(key, str) and "\x00" not in key
                               and len(key.encode()) < _BTREE_BYTES), key[:80]
    if event.observation is not None:
        keys = [event.observation.call_id, event.observation.values.get(
            "customer_number", (None,))[0]]
        for key in keys:
            assert key is None or ("\x00" not in key and len(key.encode()) < _BTREE_BYTES)
        if event.observation.status is not None:
            texts.append(event.observation.status)
        for name, (value, _) in event.observation.values.items():
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, dict | list):
                encoded = orjson.dumps(value)  # raises past orjson's depth: jsonb can't have it
                assert b"\\u0000" not in encoded.replace(b"\\\\", b""), name
            elif isinstance(value, Decimal):
                assert value.is_finite(), name
                # Summed into daily_stats in Python's 28-digit context: it must stay exact.
                assert Decimal(0) + value * 1000 == value * 1000, (name, value)
    for text in texts:
        assert "\x00" not in text


def _parse(body: bytes, route: bool = True) -> WebhookEvent | None:
    try:
        event = parse_event(body, route=route)
    except PoisonMessage as poison:
        assert str(poison)  # a reason for the dead letters, never empty
        return None
    _assert_storable(event)
    return event


# -- a) the parser: PoisonMessage or a storable event, nothing else ----------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(bodies(), st.booleans())
def test_the_parser_refuses_only_with_poison_and_hands_on_only_storable_values(
        body: bytes, route: bool) -> None:
    _parse(body, route)


@pytest.mark.parametrize("sample_name", ["inbound-1-status-ringing",
                                         "inbound-7-end-of-call-report",
                                         "legacy-end-of-call-report"])
def test_every_edge_value_in_every_field_the_parser_reads(sample_name: str) -> None:
    """Exhaustive where random search is thin: each field, each edge value, both encodings."""
    for path, value in itertools.product(PARSER_PATHS, _EDGE_VALUES):
        document = replace_at(copy.deepcopy(SAMPLES[sample_name]), path, value)
        for ascii_only in (True, False):
            body = encode(document, ascii_only=ascii_only)
            try:
                _parse(body)
            except Exception as error:
                raise AssertionError(f"{path} = {value!r:.80}") from error


def test_known_bad_bodies_are_poison_with_a_reason() -> None:
    report = sample("inbound-7-end-of-call-report")
    long_id = replace_at(copy.deepcopy(report), ("message", "call", "id"), "x" * 10_000)
    nul_id = replace_at(copy.deepcopy(report), ("message", "call", "id"), "abc\x00")
    cases = {
        b"[" * 1025 + b"]" * 1025: "not valid JSON",
        b'{"message": {"type": "status-update", "x": NaN}}': "not valid JSON",
        b'{"message": {"type": "\\ud800"}}': "not valid JSON",
        b'{"message": {"type": "status-update", "x": "\xff"}}': "not valid JSON",
        b'{"message": {"type": 7}}': "message.type",
        b'{"message": {"type": "\\u0000"}}': "message.type",
        encode(long_id): "call.id",
        encode(nul_id): "call.id",
    }
    for body, reason in cases.items():
        with pytest.raises(PoisonMessage, match=reason):
            parse_event(body)


def test_what_cannot_be_stored_is_left_out_and_the_rest_is_kept() -> None:
    report = copy.deepcopy(sample("inbound-7-end-of-call-report"))
    message = report["message"]
    message["artifact"]["transcript"] = "Hello\x00 there"
    message["costBreakdown"] = {"llm\x00": 0.1, "notes": ["a\x00b"]}
    message["analysis"]["structuredData"] = "@@raw-token-{}@@".format(
        RAW_TOKENS.index(b'{"a":' * 300 + b'"x"' + b"}" * 300))
    message["cost"] = "123456789012345678901234567890.123456789"
    message["call"]["createdAt"] = "0001-01-01T00:00:00+01:00"
    message["call"]["phoneNumberId"] = "p" * 5000
    message["call"]["customer"]["name"] = "Ana\x00"
    event = parse_event(encode(report))
    values = {name: value for name, (value, _) in event.observation.values.items()}
    assert values["transcript"] == "Hello there"
    assert values["cost_breakdown"] == {"llm": 0.1, "notes": ["ab"]}
    assert values["customer_name"] == "Ana"
    for gone in ("structured_data", "cost", "created_at", "phone_number_id"):
        assert gone not in values, gone
    assert event.routing.phone_number_id is None
    assert values["ended_reason"] == "customer-ended-call"  # the rest of the report stands


# -- b) the merge rules over observations parsed from arbitrary JSON ------------------------

@st.composite
def _observations(draw):
    """Observations of one call, parsed from Vapi-shaped documents with anything inside."""
    document = draw(vapi_documents(valid_only=True, max_changes=3))
    if not isinstance(document, dict) or not isinstance(document.get("message"), dict):
        document = {"message": {}}
    message = document["message"]
    if not isinstance(message.get("call"), dict):
        message["call"] = {}
    message["type"] = draw(st.sampled_from(sorted(CALL_EVENT_TYPES)))
    message["call"]["id"] = "c1"
    event = _parse(encode(document, ascii_only=draw(st.booleans())))
    assert event is not None and event.observation is not None  # a call event with its id
    return event.observation


def _fold(observations) -> CallState:
    state = CallState(call_id="c1")
    for observation in observations:
        state = merge(state, observation)
    return state


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.data_too_large])
@given(st.lists(_observations(), min_size=1, max_size=4), st.randoms(use_true_random=False),
       st.lists(st.integers(0, 3), max_size=3))
def test_merge_of_arbitrary_observations_is_order_free_and_duplicate_free(
        observations, rng, duplicates) -> None:
    reference = _fold(observations)
    delivered = list(observations) + [observations[i % len(observations)] for i in duplicates]
    rng.shuffle(delivered)
    assert _fold(delivered) == reference
    assert _fold([*delivered, *delivered]) == reference


# -- c) the real handler on Postgres: bad messages beside good ones -------------------------

_header_values = st.one_of(st.none(), odd_text(), st.integers(-(2**63), 2**63 - 1),
                           st.floats(), st.binary(max_size=20), st.booleans(),
                           st.just("k\x00" * 3), huge_text)


@st.composite
def _bad_deliveries(draw, org_id: uuid.UUID) -> tuple[bytes, dict[str, Any], str]:
    body = draw(bodies())
    headers: dict[str, Any] = {}
    if draw(st.booleans()):
        headers["x-org-id"] = str(org_id)
    for name in ("x-dedupe-key", "x-endpoint-id", "x-message-type", "x-received-at"):
        if draw(st.booleans()):
            headers[name] = draw(_header_values)
    if draw(st.booleans()):
        headers["x-received-at"] = draw(st.sampled_from(TIMESTAMPS))
    message_id = draw(st.one_of(st.just(uuid.uuid4().hex), st.just(f"m\x00{uuid.uuid4()}"),
                                odd_text(30).filter(bool)))
    return body, headers, message_id


_tags = itertools.count(1)
_GOOD = ["inbound-1-status-ringing", "inbound-3-speech-update", "inbound-7-end-of-call-report"]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
async def test_a_batch_of_bad_messages_never_stalls_the_good_ones(connection, data) -> None:
    await connection.execute("TRUNCATE organizations, events CASCADE")
    org_id = (await create_organization(connection, "Acme")).org_id
    bad = data.draw(st.lists(_bad_deliveries(org_id), min_size=1, max_size=5), label="bad")
    good_call = uuid.uuid4().hex
    good = []
    for name in _GOOD:
        body = copy.deepcopy(sample(name))
        body["message"]["call"]["id"] = good_call
        good.append(Delivery.received(next(_tags), uuid.uuid4().hex, {"x-org-id": str(org_id)},
                             orjson.dumps(body)))
    deliveries = [Delivery.received(next(_tags), message_id, headers, body)
                  for body, headers, message_id in bad]
    deliveries = data.draw(st.permutations([*deliveries, *good]), label="order")

    outcome = await process_batch(connection, deliveries)

    tags = [d.tag for d in deliveries]
    decided = [*outcome.applied, *outcome.unassigned, *outcome.dead]
    assert sorted(decided) == sorted(tags)  # each delivery exactly once
    assert all(isinstance(r, str) and r for r in outcome.dead.values())
    assert {d.tag for d in good} <= set(outcome.applied)
    assert await connection.fetchval(
        "SELECT status = 'ended' AND report_received FROM calls WHERE id = $1", good_call)
    archived = {r["message_id"]: bytes(r["body"]) for r in await connection.fetch(
        "SELECT message_id, body FROM events")}
    deleted = {r["id"] for r in await connection.fetch("SELECT id FROM calls WHERE deleted")}
    for delivery in deliveries:
        if delivery.tag not in outcome.dead:  # never dropped: archived, raw
            # ... but a call Vapi deleted leaves the archive, and so do its later events
            # (decision 44).
            if deleted and _call_id(delivery.body) in deleted:
                assert delivery.message_id not in archived
                continue
            assert delivery.message_id in archived
    await assert_invariants(connection)


def _call_id(body: bytes) -> object:
    try:
        message = orjson.loads(body).get("message")
        return message["call"]["id"]
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return None


async def test_every_edge_value_in_every_field_is_stored_or_left_out(connection) -> None:
    """Exhaustive where random search is thin: one batch per field the parser reads, one
    call per edge value, every other delivery on the shared endpoint (routing lookups)."""
    org_id = (await create_organization(connection, "Acme")).org_id
    for number, path in enumerate(PARSER_PATHS):
        deliveries = []
        for index, value in enumerate(_EDGE_VALUES):
            document = replace_at(copy.deepcopy(SAMPLES["inbound-7-end-of-call-report"]),
                                  path, value)
            call = document.get("message", {}).get("call") if isinstance(
                document, dict) and isinstance(document.get("message"), dict) else None
            if isinstance(call, dict) and path != ("message", "call", "id"):
                call["id"] = f"call-{number}-{index}"
            headers = {"x-org-id": str(org_id)} if index % 2 else {}
            deliveries.append(Delivery.received(next(_tags), uuid.uuid4().hex, headers,
                                       encode(document, ascii_only=bool(index % 3))))
        try:
            outcome = await process_batch(connection, deliveries)
        except Exception as error:
            raise AssertionError(f"a batch with every edge value at {path}") from error
        assert len(outcome.applied) + len(outcome.unassigned) + len(outcome.dead) == len(
            deliveries), path
    await assert_invariants(connection)


# -- d) the real consumer on RabbitMQ ------------------------------------------------------

async def _take_all(queue_name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(queue_name, ensure=False)
        taken = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            taken.append(message)
        return taken
    finally:
        await connection.close()


async def _fetchval(database_url: str, query: str, *args):
    connection = await db.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()


async def test_the_consumer_dead_letters_the_unusable_at_once_and_applies_the_rest(
        database_url: str, topology: Topology) -> None:
    connection = await db.connect(database_url)
    org_id = (await create_organization(connection, "Acme")).org_id
    await connection.close()

    def report(call_id: str, **changes: Any) -> dict:
        body = copy.deepcopy(sample("inbound-7-end-of-call-report"))
        body["message"]["call"]["id"] = call_id
        for path, value in changes.items():
            body = replace_at(body, tuple(path.split(".")), value)
        return body

    no_type = report("c-no-type")
    del no_type["message"]["type"]
    no_call_id = copy.deepcopy(sample("inbound-1-status-ringing"))
    del no_call_id["message"]["call"]["id"]
    deep = "@@raw-token-{}@@".format(RAW_TOKENS.index(b'{"a":' * 300 + b'"x"' + b"}" * 300))
    poison = {  # body -> the reason it is refused with
        b"{not json": "body is not valid JSON",
        b"[" * 5000 + b"]" * 5000: "body is not valid JSON",
        encode(no_type): "message.type is missing",
        encode(no_call_id): "status-update without call.id",
        encode(report("c-\x00")): "end-of-call-report with an unusable call.id",
        encode(report("c" * 10_000)): "end-of-call-report with an unusable call.id",
    }
    usable = {  # body -> call id; applied, with what cannot be stored left out
        encode(report("c-nul", **{"message.artifact.transcript": "hi\x00 there",
                                  "message.costBreakdown": {"llm": "\x00", "\x00": 1}})):
            "c-nul",
        encode(report("c-1mb", **{"message.artifact.transcript": "word " * 200_000})): "c-1mb",
        encode(report("c-deep", **{"message.analysis.structuredData": deep})): "c-deep",
        encode(report("c-numbers", **{"message.cost": "1e999999",
                                      "message.call.createdAt": "0001-01-01T00:00:00+01:00"})):
            "c-numbers",
    }
    good_call = uuid.uuid4().hex
    good = [copy.deepcopy(sample(n)) for n in ("inbound-1-status-ringing",
                                               "inbound-2-status-in-progress",
                                               "inbound-7-end-of-call-report")]
    for body in good:
        body["message"]["call"]["id"] = good_call

    started = time.monotonic()
    async with running_processor(database_url, AMQP_URL, topology, batch_size=5):
        await publish(AMQP_URL, topology, list(poison), org_id, message_type="status-update")
        await publish(AMQP_URL, topology, list(usable), org_id)
        # Chatter whose headers carry what Postgres cannot store.
        await publish(AMQP_URL, topology, [sample("inbound-3-speech-update")], org_id)
        odd_headers = await _publish_with_headers(topology, org_id, {
            "x-dedupe-key": "k\x00ey", "x-endpoint-id": "ep\x00", "x-message-type": "s\x00u"})
        await publish(AMQP_URL, topology, good, org_id)
        await eventually(lambda: _fetchval(
            database_url, "SELECT report_received FROM calls WHERE id = $1", good_call), 20)
        await eventually(lambda: _fetchval(
            database_url, "SELECT count(*) = $1 FROM calls", len(usable) + 1), 20)
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology, dead=True),
                                         len(poison)), 20)
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology), 0), 20)
    # Nothing waits in a retry queue: what is refused is refused at once, not in minutes.
    for delay in CALL_PROCESSOR.retry_delays_ms:
        assert await _take_all(topology.retry_queue(CALL_PROCESSOR, delay)) == []
    assert time.monotonic() - started < 30
    dead = await _take_all(topology.dead_letter_queue(CALL_PROCESSOR))
    assert sorted((m.body, m.headers[HEADER_DEAD_LETTER_REASON]) for m in dead) == sorted(
        poison.items())  # each with its own body, unchanged, and its reason

    connection = await db.connect(database_url)
    try:
        calls = {r["id"]: r for r in await connection.fetch("SELECT * FROM calls")}
        assert set(calls) == {*usable.values(), good_call}
        assert calls["c-nul"]["transcript"] == "hi there"
        assert calls["c-nul"]["cost_breakdown"] == {"llm": "", "": 1}
        assert len(calls["c-1mb"]["transcript"]) == len("word " * 200_000) - 1  # stripped
        assert calls["c-deep"]["structured_data"] is None
        assert calls["c-deep"]["ended_reason"] == "customer-ended-call"
        assert calls["c-numbers"]["cost"] is None and calls["c-numbers"]["created_at"] is None
        # Every event that was not refused is archived raw, the unusable fields included.
        archived = {bytes(r["body"]) for r in await connection.fetch("SELECT body FROM events")}
        assert set(usable) <= archived
        odd = await connection.fetchrow(
            "SELECT message_type, dedupe_key, endpoint_id FROM events WHERE message_id = $1",
            odd_headers)
        assert dict(odd) == {"message_type": "su", "dedupe_key": "key", "endpoint_id": "ep"}
        await assert_invariants(connection)
    finally:
        await connection.close()


async def _equals(depth, expected: int) -> bool:
    return await depth == expected


async def _publish_with_headers(topology: Topology, org_id: uuid.UUID,
                                headers: dict[str, Any]) -> str:
    """Chatter from an organization's endpoint with `headers` as a producer set them."""
    from calltrail_common.topology import declare_topology, event_routing_key

    message_id = uuid.uuid4().hex
    connection = await aio_pika.connect(AMQP_URL)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_topology(channel, topology)
        await exchange.publish(
            aio_pika.Message(orjson.dumps(sample("inbound-3-speech-update")),
                             headers={"x-received-at": int(time.time() * 1000),
                                      "x-org-id": str(org_id), **headers},
                             message_id=message_id),
            routing_key=event_routing_key("speech-update"))
    finally:
        await connection.close()
    return message_id


async def test_a_value_the_database_refuses_is_dead_lettered_at_once_not_retried(
        database_url: str, topology: Topology, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defence in depth: should a value the edge does not clean reach Postgres (here the
    header cleaning is switched off), that one message is poison, not minutes of retries."""
    from calltrail_common import envelope

    monkeypatch.setattr(envelope, "_text", lambda value: value)
    connection = await db.connect(database_url)
    org_id = (await create_organization(connection, "Acme")).org_id
    await connection.close()
    good_call = uuid.uuid4().hex
    good = copy.deepcopy(sample("inbound-7-end-of-call-report"))
    good["message"]["call"]["id"] = good_call
    async with running_processor(database_url, AMQP_URL, topology):
        refused = await _publish_with_headers(topology, org_id, {"x-dedupe-key": "k\x00ey"})
        await publish(AMQP_URL, topology, [good], org_id)
        await eventually(lambda: _equals(queue_depth(AMQP_URL, topology, dead=True), 1), 10)
        await eventually(lambda: _fetchval(
            database_url, "SELECT report_received FROM calls WHERE id = $1", good_call), 10)
    for delay in CALL_PROCESSOR.retry_delays_ms:
        assert await _take_all(topology.retry_queue(CALL_PROCESSOR, delay)) == []
    [dead] = await _take_all(topology.dead_letter_queue(CALL_PROCESSOR))
    assert dead.message_id == refused
    assert dead.headers[HEADER_DEAD_LETTER_REASON] == (
        "database refused a value: CharacterNotInRepertoireError")
