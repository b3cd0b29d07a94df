"""Outbound webhook endpoints and their delivery log (decision 40): the rules over what a
person types, then the module against a real database, with deliveries written as the
processor and the dispatcher would leave them."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from calltrail_common import audit, db, people
from calltrail_common import outbound_endpoints as endpoints
from calltrail_common.organizations import create_organization
from tests.support.delivery_log import insert_delivery

URL = "https://hooks.example.com/calltrail?key=receiver-own-token"


# --- the rules --------------------------------------------------------------------------


def test_a_secret_is_standard_webhooks_whsec_base64_of_24_random_bytes() -> None:
    made = {endpoints.new_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 24


@pytest.mark.parametrize(("url", "words"), [
    ("", "a URL is required"),
    ("   ", "a URL is required"),
    ("http://hooks.example.com/in", "must start with https://"),
    ("https://127.0.0.1/in", "loopback"),
    ("https://localhost:8080/in", "loopback"),
    ("https://10.0.0.7/in", "private"),
    ("https://169.254.169.254/latest", "link-local"),
    ("https://[::1]/in", "loopback"),
    ("https://hooks.example.com/a b", "spaces or control characters"),
    ("https://hooks.example.com/\x00", "spaces or control characters"),
    ("https://hooks.example.com/in#part", "fragment"),
    ("https://" + "a" * 2050 + ".example.com/", "longer than"),
])
def test_refused_urls_say_why(url: str, words: str) -> None:
    with pytest.raises(endpoints.InvalidEndpoint, match=words) as refused:
        endpoints.parse_url(url, allow_private=False)
    assert refused.value.field == "url"


def test_private_targets_only_when_the_operator_allows_them() -> None:
    for url in ("http://127.0.0.1:8080/hook", "https://10.0.0.7/in", "http://localhost/x"):
        assert endpoints.parse_url(f"  {url} ", allow_private=True) == url
    assert endpoints.parse_url(f" {URL}\t", allow_private=False) == URL


def test_event_types_are_the_five_each_once_in_their_order() -> None:
    assert endpoints.EVENT_TYPES == ("call.ended", "call.updated", "lead.created",
                                     "lead.updated", "usage.day_closed")
    assert endpoints.parse_event_types(["lead.created", " call.ended", "lead.created"]) == (
        "call.ended", "lead.created")
    assert endpoints.parse_event_types(reversed(endpoints.EVENT_TYPES)) == \
        endpoints.EVENT_TYPES
    with pytest.raises(endpoints.InvalidEndpoint, match=r"unknown event type 'call\.started'"):
        endpoints.parse_event_types(["call.ended", "call.started"])
    with pytest.raises(endpoints.InvalidEndpoint, match="at least one"):
        endpoints.parse_event_types(["", " "])


def test_descriptions_are_one_bounded_line() -> None:
    assert endpoints.parse_description(None) == ""
    assert endpoints.parse_description("  CRM  ") == "CRM"
    assert endpoints.parse_description("x" * 200) == "x" * 200
    for bad in ("x" * 201, "two\nlines", "nul\x00"):
        with pytest.raises(endpoints.InvalidEndpoint):
            endpoints.parse_description(bad)


def test_the_audit_names_a_url_by_its_host() -> None:
    assert endpoints.url_host(URL) == "hooks.example.com"
    assert endpoints.url_host("https://[::1") == ""


# --- against the database ---------------------------------------------------------------


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def _two_orgs(connection: asyncpg.Connection) -> tuple[uuid.UUID, uuid.UUID]:
    return ((await create_organization(connection, "Acme")).org_id,
            (await create_organization(connection, "Bravo")).org_id)


@pytest.fixture
async def alice(connection: asyncpg.Connection) -> audit.Actor:
    """A person acting on the dashboard."""
    email = "alice@acme.example"
    return audit.user_actor(await people.ensure_user(connection, email), email)


async def test_create_list_update_rotate_delete_each_audited_never_with_the_secret(
        connection: asyncpg.Connection, alice: audit.Actor) -> None:
    org_id, stranger = await _two_orgs(connection)
    with pytest.raises(endpoints.InvalidEndpoint, match="loopback"):
        await endpoints.create(connection, org_id, url="https://127.0.0.1/in",
                               event_types=["call.ended"])
    made = await endpoints.create(connection, org_id, url=URL, description="CRM",
                                  event_types=["lead.created", "call.ended"], actor=alice)
    local = await endpoints.create(connection, org_id, url="http://127.0.0.1:9/in",
                                   event_types=["call.updated"], allow_private=True)
    endpoint = made.endpoint
    assert (endpoint.url, endpoint.description, endpoint.event_types, endpoint.enabled) == (
        URL, "CRM", ("call.ended", "lead.created"), True)
    assert await connection.fetchval(
        "SELECT secret FROM outbound_endpoints WHERE id = $1", endpoint.id) == made.secret
    assert await connection.fetchval(
        "SELECT created_by FROM outbound_endpoints WHERE id = $1", endpoint.id) == \
        alice.user_id
    listed = await endpoints.list_endpoints(connection, org_id)
    assert [e.id for e in listed] == [endpoint.id, local.endpoint.id]
    assert made.secret not in repr(listed)
    assert await endpoints.list_endpoints(connection, stranger) == []
    assert await endpoints.get_endpoint(connection, stranger, endpoint.id) is None

    with pytest.raises(endpoints.InvalidEndpoint, match="nothing to change"):
        await endpoints.update(connection, org_id, endpoint.id)
    with pytest.raises(endpoints.InvalidEndpoint, match="private"):
        await endpoints.update(connection, org_id, endpoint.id, url="https://192.168.1.2/")
    assert await endpoints.update(connection, stranger, endpoint.id,
                                  description="stolen") is None
    updated = await endpoints.update(connection, org_id, endpoint.id,
                                     url="https://other.example.net/in",
                                     event_types=["usage.day_closed"], actor=alice)
    assert updated is not None
    assert (updated.url, updated.description, updated.event_types) == (
        "https://other.example.net/in", "CRM", ("usage.day_closed",))
    # The same values again change nothing and write nothing.
    await endpoints.update(connection, org_id, endpoint.id, description="CRM")

    assert await endpoints.rotate_secret(connection, stranger, endpoint.id) is None
    rotated = await endpoints.rotate_secret(connection, org_id, endpoint.id, actor=alice)
    assert rotated is not None and rotated.secret != made.secret
    assert await connection.fetchval(
        "SELECT secret FROM outbound_endpoints WHERE id = $1", endpoint.id) == rotated.secret

    assert not await endpoints.delete(connection, stranger, endpoint.id)
    assert await endpoints.delete(connection, org_id, endpoint.id, actor=alice)
    assert not await endpoints.delete(connection, org_id, endpoint.id)
    assert [e.id for e in await endpoints.list_endpoints(connection, org_id)] == [
        local.endpoint.id]

    entries = [e for e in await audit.entries(connection, org_id)
               if e.action.startswith("outbound_")]
    assert [(e.action, e.actor, e.target) for e in reversed(entries)] == [
        ("outbound_endpoint.created", "user:alice@acme.example", str(endpoint.id)),
        ("outbound_endpoint.created", "cli", str(local.endpoint.id)),
        ("outbound_endpoint.updated", "user:alice@acme.example", str(endpoint.id)),
        ("outbound_endpoint.secret_rotated", "user:alice@acme.example", str(endpoint.id)),
        ("outbound_endpoint.deleted", "user:alice@acme.example", str(endpoint.id))]
    assert entries[2].detail == {"changed": ["url", "eventTypes"],
                                 "host": "other.example.net",
                                 "eventTypes": ["usage.day_closed"]}
    assert entries[4].detail == {"host": "hooks.example.com",
                                 "eventTypes": ["call.ended", "lead.created"]}
    # Stored as JSON objects, so they can be queried (`detail->>'host'`).
    assert await connection.fetchval(
        "SELECT array_agg(DISTINCT jsonb_typeof(detail)) FROM audit_log") == ["object"]
    text = repr(entries)
    assert made.secret not in text and rotated.secret not in text
    assert "receiver-own-token" not in text
    assert await audit.entries(connection, stranger) == [
        e for e in await audit.entries(connection, stranger) if e.action == "token.created"]


async def test_an_organization_has_a_bounded_number_of_endpoints(
        connection: asyncpg.Connection) -> None:
    org_id, _ = await _two_orgs(connection)
    for i in range(endpoints.MAX_ENDPOINTS_PER_ORGANIZATION):
        await endpoints.create(connection, org_id, url=f"https://h{i}.example.com/",
                               event_types=["call.ended"])
    with pytest.raises(endpoints.TooManyEndpoints, match="at most 20"):
        await endpoints.create(connection, org_id, url="https://one-more.example.com/",
                               event_types=["call.ended"])
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await endpoints.create(connection, uuid.uuid4(), url=URL, event_types=["call.ended"])


async def test_disable_and_enable_and_a_dispatcher_disabled_endpoint(
        connection: asyncpg.Connection, alice: audit.Actor) -> None:
    org_id, stranger = await _two_orgs(connection)
    endpoint = (await endpoints.create(connection, org_id, url=URL,
                                       event_types=["call.ended"])).endpoint
    assert await endpoints.disable(connection, stranger, endpoint.id) is None
    disabled = await endpoints.disable(connection, org_id, endpoint.id, actor=alice)
    assert disabled is not None
    assert (disabled.enabled, disabled.disabled_reason) == (False, "by_user")
    again = await endpoints.disable(connection, org_id, endpoint.id, actor=alice)
    assert again is not None and again.disabled_at == disabled.disabled_at

    # The dispatcher, after days of failures: disabled for failing, the last error logged.
    failing_since = datetime.now(UTC) - timedelta(days=3)
    await connection.execute(
        """UPDATE outbound_endpoints SET disabled_at = now(), disabled_reason = 'failing',
                  failing_since = $2 WHERE id = $1""", endpoint.id, failing_since)
    await insert_delivery(connection, org_id, endpoint.id,
                          created_at=datetime.now(UTC) - timedelta(days=2))
    await insert_delivery(connection, org_id, endpoint.id, state="dead",
                          last_status=None, last_error="timeout")
    await insert_delivery(connection, org_id, endpoint.id, state="skipped")
    failing = await endpoints.get_endpoint(connection, org_id, endpoint.id)
    assert failing is not None and failing.disabled_for_failing
    assert failing.failing_since == failing_since
    assert failing.last_attempt is not None
    assert (failing.last_attempt.status, failing.last_attempt.error) == (None, "timeout")

    assert await endpoints.enable(connection, stranger, endpoint.id) is None
    enabled = await endpoints.enable(connection, org_id, endpoint.id, actor=alice)
    assert enabled is not None
    assert (enabled.enabled, enabled.disabled_reason, enabled.failing_since) == (
        True, None, None)
    await endpoints.enable(connection, org_id, endpoint.id, actor=alice)  # nothing to do
    actions = [e.action for e in reversed(await audit.entries(connection, org_id))
               if e.action.startswith("outbound_endpoint.")]
    assert actions == ["outbound_endpoint.created", "outbound_endpoint.disabled",
                       "outbound_endpoint.enabled"]


async def test_the_delivery_log_pages_newest_first(connection: asyncpg.Connection) -> None:
    org_id, stranger = await _two_orgs(connection)
    endpoint = (await endpoints.create(connection, org_id, url=URL,
                                       event_types=["call.ended"])).endpoint
    other = (await endpoints.create(connection, org_id, url=URL,
                                    event_types=["call.ended"])).endpoint
    start = datetime.now(UTC) - timedelta(hours=1)
    # Two deliveries share a creation time: the id breaks the tie, none is lost.
    made = [await insert_delivery(connection, org_id, endpoint.id,
                                  created_at=start + timedelta(minutes=min(i, 5)),
                                  event_type="lead.created" if i % 2 else "call.ended",
                                  state=("dead", "succeeded", "pending")[i % 3])
            for i in range(7)]
    await insert_delivery(connection, org_id, other.id)
    seen: list[uuid.UUID] = []
    after = None
    while True:
        page = await endpoints.deliveries(connection, org_id, endpoint.id, limit=3,
                                          after=after)
        assert page is not None and len(page) <= 3
        seen += [d.id for d in page]
        if len(page) < 3:
            break
        after = (page[-1].created_at, page[-1].id)
    expected = sorted(made, key=lambda i: (made.index(i) if made.index(i) < 5 else 5, i),
                      reverse=True)
    assert seen == expected
    first = (await endpoints.deliveries(connection, org_id, endpoint.id, limit=10) or [])[-1]
    assert (first.event_type, first.state, first.attempts, first.last_status,
            first.last_latency_ms, first.last_error) == (
        "call.ended", "dead", 9, 503, 812, "HTTP 503")
    assert await endpoints.deliveries(connection, stranger, endpoint.id, limit=10) is None


async def test_send_again_makes_a_dead_delivery_pending_and_unqueued(
        connection: asyncpg.Connection, alice: audit.Actor) -> None:
    org_id, stranger = await _two_orgs(connection)
    endpoint = (await endpoints.create(connection, org_id, url=URL,
                                       event_types=["call.ended"])).endpoint
    other = (await endpoints.create(connection, org_id, url=URL,
                                    event_types=["call.ended"])).endpoint
    dead = await insert_delivery(connection, org_id, endpoint.id, state="dead")
    pending = await insert_delivery(connection, org_id, endpoint.id, state="pending")

    assert await endpoints.send_again(connection, stranger, dead) is None
    assert await endpoints.send_again(connection, org_id, dead, endpoint_id=other.id) is None
    assert await endpoints.send_again(connection, org_id, uuid.uuid4()) is None
    with pytest.raises(endpoints.DeliveryPending):
        await endpoints.send_again(connection, org_id, pending)

    again = await endpoints.send_again(connection, org_id, dead, endpoint_id=endpoint.id,
                                       actor=alice)
    assert again is not None
    row = await connection.fetchrow(
        "SELECT state, queued_at, attempts, last_status FROM outbound_deliveries "
        "WHERE id = $1", dead)
    # The log keeps what happened: the attempts so far and the last answer.
    assert dict(row) == {"state": "pending", "queued_at": None, "attempts": 9,
                         "last_status": 503}
    assert (again.state, again.queued_at) == ("pending", None)
    with pytest.raises(endpoints.DeliveryPending, match="pending already"):
        await endpoints.send_again(connection, org_id, dead)

    succeeded = await insert_delivery(connection, org_id, endpoint.id, state="succeeded")
    await endpoints.disable(connection, org_id, endpoint.id)
    with pytest.raises(endpoints.EndpointDisabled, match="enable it first"):
        await endpoints.send_again(connection, org_id, succeeded)
    assert await connection.fetchval(
        "SELECT state FROM outbound_deliveries WHERE id = $1", succeeded) == "succeeded"
    await endpoints.enable(connection, org_id, endpoint.id)
    assert await endpoints.send_again(connection, org_id, succeeded) is not None

    sent_again = [e for e in await audit.entries(connection, org_id)
                  if e.action == "outbound_delivery.sent_again"]
    assert [(e.target, e.detail["previousState"]) for e in reversed(sent_again)] == [
        (str(dead), "dead"), (str(succeeded), "succeeded")]
