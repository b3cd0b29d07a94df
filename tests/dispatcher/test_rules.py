"""The dispatcher's pure rules: what an answer means, what a batch writes, the message, the
body, the slots, the endpoint cache and how failures are named."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import uuid

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook

from calltrail_common.outbound_targets import TargetRefused
from dispatcher.attempts import (
    Answer,
    Outcome,
    State,
    delivery_updates,
    endpoint_health,
    state_after,
    status_error,
)
from dispatcher.consumer import EndpointSlots
from dispatcher.endpoints import EndpointCache
from dispatcher.messages import (
    HEADER_ENDPOINT_ID,
    HEADER_EVENT_ID,
    DeliveryMessage,
    NotADelivery,
    webhook_body,
)
from dispatcher.repository import EndpointRow
from dispatcher.sender import UnusableSecret, failure_text, signed_headers
from tests.support.dispatcher import new_secret

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
ENDPOINT = uuid.uuid4()


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


OK = Answer(200, None, 12)
FAILED = Answer(500, "HTTP 500", 30)


# -- answers and states ----------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error"), [
    (200, None), (204, None), (299, None),
    (199, "HTTP 199"), (301, "redirect not followed (HTTP 301)"),
    (308, "redirect not followed (HTTP 308)"), (400, "HTTP 400"), (500, "HTTP 500")])
def test_only_a_2xx_is_a_success(status: int, error: str | None) -> None:
    assert status_error(status) == error


def test_a_failure_waits_for_the_next_delay_until_the_last_then_is_dead() -> None:
    assert state_after(OK, 0, 3) is State.SUCCEEDED
    assert state_after(OK, 3, 3) is State.SUCCEEDED  # the last try may succeed
    assert [state_after(FAILED, retries, 3) for retries in range(5)] == [
        State.PENDING, State.PENDING, State.PENDING, State.DEAD, State.DEAD]


# -- what a batch writes ---------------------------------------------------------------------

def test_a_delivery_attempted_twice_in_a_batch_counts_both_and_logs_the_latest() -> None:
    delivery = uuid.uuid4()
    [update] = delivery_updates([
        Outcome(delivery, ENDPOINT, State.PENDING, at(2), Answer(503, "HTTP 503", 40)),
        Outcome(delivery, ENDPOINT, State.PENDING, at(1), Answer(None, "timeout", 900))])
    assert (update.attempts, update.at, update.status, update.error, update.latency_ms,
            update.state) == (2, at(2), 503, "HTTP 503", 40, State.PENDING)


def test_a_success_in_a_batch_is_never_undone_by_a_later_failure_of_a_copy() -> None:
    delivery = uuid.uuid4()
    [update] = delivery_updates([
        Outcome(delivery, ENDPOINT, State.SUCCEEDED, at(1), OK),
        Outcome(delivery, ENDPOINT, State.PENDING, at(2), FAILED)])
    assert update.state is State.SUCCEEDED and update.attempts == 2 and update.status == 500


def test_a_skip_counts_no_attempt_and_logs_nothing() -> None:
    delivery = uuid.uuid4()
    [update] = delivery_updates([Outcome(delivery, ENDPOINT, State.SKIPPED, at(1))])
    assert (update.attempts, update.at, update.status, update.state) == (
        0, None, None, State.SKIPPED)
    assert endpoint_health([Outcome(delivery, ENDPOINT, State.SKIPPED, at(1))]) == []


def test_an_endpoint_fails_from_its_first_failure_after_its_last_success() -> None:
    def health(*results: tuple[float, Answer]) -> tuple[object, object]:
        [found] = endpoint_health([Outcome(uuid.uuid4(), ENDPOINT, State.PENDING, at(t), a)
                                   for t, a in results])
        return found.last_success, found.failing_from

    assert health((1, FAILED), (2, FAILED)) == (None, at(1))
    assert health((1, FAILED), (2, OK)) == (at(2), None)
    assert health((1, OK), (2, FAILED), (3, FAILED)) == (at(1), at(2))
    assert health((3, FAILED), (1, FAILED), (2, OK)) == (at(2), at(3))  # any order


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=20))
def test_endpoint_health_in_any_order_agrees_with_the_definition(
        results: list[tuple[int, bool]]) -> None:
    outcomes = [Outcome(uuid.uuid4(), ENDPOINT, State.PENDING, at(t), OK if ok else FAILED)
                for t, ok in results]
    [found] = endpoint_health(outcomes)
    successes = [at(t) for t, ok in results if ok]
    last = max(successes, default=None)
    failures = [at(t) for t, ok in results if not ok and (last is None or at(t) > last)]
    assert found.last_success == last
    assert found.failing_from == min(failures, default=None)
    assert endpoint_health(list(reversed(outcomes))) == [found]


# -- the message and the body ----------------------------------------------------------------

def test_the_body_carries_type_utc_timestamp_and_the_data_as_stored() -> None:
    occurred = dt.datetime(2026, 12, 6, 13, 30, 5, 120999,
                           tzinfo=dt.timezone(dt.timedelta(hours=1)))
    body = webhook_body("call.ended", occurred, '{"callId": "c-1", "cost": 0.1234}')
    assert body == (b'{"type":"call.ended","timestamp":"2026-12-06T12:30:05.120Z",'
                    b'"data":{"callId": "c-1", "cost": 0.1234}}')
    assert orjson.loads(body)["data"] == {"callId": "c-1", "cost": 0.1234}
    with pytest.raises(ValueError, match="timezone"):
        webhook_body("call.ended", occurred.replace(tzinfo=None), "{}")


def test_a_delivery_message_reads_back_what_was_published() -> None:
    message = DeliveryMessage(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), b'{"type":"x"}')
    properties = message.properties()
    assert properties.message_id == str(message.delivery_id)
    assert properties.delivery_mode == 2  # persistent
    # AMQP may hand header values back as bytes.
    headers = {name: value.encode() for name, value in properties.headers.items()}
    assert DeliveryMessage.read(properties.message_id, headers, message.body) == message


A, B, C = (str(uuid.UUID(int=n)) for n in (1, 2, 3))  # fixed: test ids must not vary


@pytest.mark.parametrize(("message_id", "headers", "why"), [
    (None, {HEADER_ENDPOINT_ID: A, HEADER_EVENT_ID: B}, "no message_id"),
    (C, {HEADER_EVENT_ID: B}, f"no {HEADER_ENDPOINT_ID}"),
    (C, {HEADER_ENDPOINT_ID: "ep_1", HEADER_EVENT_ID: B}, f"{HEADER_ENDPOINT_ID} is not a UUID"),
    (C, {HEADER_ENDPOINT_ID: A, HEADER_EVENT_ID: 7}, f"no {HEADER_EVENT_ID}"),
])
def test_a_message_naming_no_delivery_says_what_is_missing(
        message_id: str | None, headers: dict[str, object], why: str) -> None:
    with pytest.raises(NotADelivery) as error:
        DeliveryMessage.read(message_id, headers, b"{}")
    assert str(error.value) == why


def test_headers_are_signed_per_standard_webhooks_with_the_event_id() -> None:
    secret = new_secret()
    message = DeliveryMessage(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), b'{"type":"x"}')
    headers = signed_headers(Webhook(secret), message)
    assert headers["webhook-id"] == str(message.event_id)
    assert Webhook(secret).verify(message.body, headers) == {"type": "x"}
    with pytest.raises(Exception, match="signature"):
        Webhook(new_secret()).verify(message.body, headers)


# -- failures, in a few words ------------------------------------------------------------------

def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(("error", "text"), [
    (TimeoutError(), "timeout"),
    (httpx.ReadTimeout("slow"), "timeout"),
    (TargetRefused("the host resolves to a private address"),
     "target refused: the host resolves to a private address"),
    (UnusableSecret(), "the endpoint's secret is unusable"),
    (_raised_from(httpx.ConnectError("x"), ConnectionRefusedError(111, "refused")),
     "connection refused"),
    (_raised_from(httpx.ConnectError("x"), ssl.SSLCertVerificationError("bad cert")),
     "TLS error"),
    (httpx.ConnectError("host not found"), "host not found"),
    (httpx.ConnectError("no route"), "connection failed"),
    (httpx.RemoteProtocolError("Server disconnected"), "connection closed without a valid answer"),
    (httpx.ReadError("reset"), "connection lost"),
])
def test_a_failure_is_named_in_a_few_words(error: BaseException, text: str) -> None:
    assert failure_text(error) == text


# -- slots and the endpoint cache --------------------------------------------------------------

async def test_an_endpoint_has_at_most_its_slots_and_a_late_one_gives_up() -> None:
    slots = EndpointSlots(2)
    other = uuid.uuid4()
    assert await slots.acquire(ENDPOINT, 0.01) and await slots.acquire(ENDPOINT, 0.01)
    assert not await slots.acquire(ENDPOINT, 0.01)  # full: given up after the wait
    assert await slots.acquire(other, 0.01)  # another endpoint is not held by it
    waiting = asyncio.ensure_future(slots.acquire(ENDPOINT, 5))
    await asyncio.sleep(0.01)
    slots.release(ENDPOINT)
    assert await waiting  # a slot freed while waiting is taken
    for endpoint in (ENDPOINT, ENDPOINT, other):
        slots.release(endpoint)
    assert slots._slots == {}  # nothing kept for endpoints with no attempts


async def test_no_more_wait_for_a_silent_endpoints_slots_than_it_has() -> None:
    now = [100.0]
    slots = EndpointSlots(2, clock=lambda: now[0])
    assert await slots.acquire(ENDPOINT, 0) and await slots.acquire(ENDPOINT, 0)
    waiting = [asyncio.ensure_future(slots.acquire(ENDPOINT, 5)) for _ in range(2)]
    await asyncio.sleep(0.01)
    now[0] += 1  # a second in and no slot came free: nothing to serve more waiters with
    assert not await slots.acquire(ENDPOINT, 5)  # a third waiter is turned away at once
    slots.release(ENDPOINT)
    slots.release(ENDPOINT)
    assert await asyncio.gather(*waiting) == [True, True]
    assert await slots.acquire(uuid.uuid4(), 0)


async def test_as_many_wait_as_the_endpoint_served_in_the_last_second() -> None:
    now = [100.0]
    slots = EndpointSlots(2, clock=lambda: now[0])
    assert await slots.acquire(ENDPOINT, 0) and await slots.acquire(ENDPOINT, 0)
    for _ in range(6):  # it answers: 6 slots came free (and were taken again) this second
        now[0] += 0.1
        slots.release(ENDPOINT)
        assert await slots.acquire(ENDPOINT, 0)
    now[0] += 0.5  # the next second: the last one's pace holds
    waiting = [asyncio.ensure_future(slots.acquire(ENDPOINT, 0.5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)  # three wait for two slots
    assert not await slots.acquire(ENDPOINT, 0.5)  # in half a second it serves only three
    waiting += [asyncio.ensure_future(slots.acquire(ENDPOINT, 1)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)  # in a second, six
    assert not await slots.acquire(ENDPOINT, 1)  # a seventh is more than that
    for _ in waiting:
        slots.release(ENDPOINT)
        await asyncio.sleep(0)
    assert await asyncio.gather(*waiting) == [True] * 6
    now[0] += 2.5  # two quiet seconds: its pace is forgotten, back to its slots
    third = [asyncio.ensure_future(slots.acquire(ENDPOINT, 5)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert [t.done() for t in third] == [False, False, True]
    slots.release(ENDPOINT)
    slots.release(ENDPOINT)
    assert await asyncio.gather(*third) == [True, True, False]
    slots.release(ENDPOINT)
    slots.release(ENDPOINT)
    assert slots._slots == {}


async def test_any_number_wait_in_an_endpoints_first_second() -> None:
    now = [100.0]
    slots = EndpointSlots(2, clock=lambda: now[0])
    assert await slots.acquire(ENDPOINT, 0) and await slots.acquire(ENDPOINT, 0)
    now[0] += 0.99  # a burst to a new endpoint: nothing known of its pace yet
    waiting = [asyncio.ensure_future(slots.acquire(ENDPOINT, 5)) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert not any(w.done() for w in waiting)
    for _ in range(7):
        slots.release(ENDPOINT)
        await asyncio.sleep(0)
    assert await asyncio.gather(*waiting) == [True] * 5
    assert slots._slots == {}


async def test_the_endpoint_cache_reads_once_per_ttl_and_shares_a_read() -> None:
    now = [0.0]
    reads: list[uuid.UUID] = []
    release = asyncio.Event()

    async def load(endpoint_id: uuid.UUID) -> EndpointRow | None:
        reads.append(endpoint_id)
        await release.wait()
        return EndpointRow(endpoint_id, "https://example.com/h", new_secret(), False)

    cache = EndpointCache(load, ttl_seconds=2.0, clock=lambda: now[0])
    first, second = (asyncio.ensure_future(cache.get(ENDPOINT)) for _ in range(2))
    await asyncio.sleep(0.01)
    release.set()
    assert (await first) == (await second) and len(reads) == 1  # one read for both
    now[0] = 1.9
    assert (await cache.get(ENDPOINT)) == (await first) and len(reads) == 1
    cache.mark_disabled(ENDPOINT)
    assert (await cache.get(ENDPOINT)).disabled  # type: ignore[union-attr]
    now[0] = 2.0  # expired: read again (a rotated secret, a re-enabled endpoint)
    refreshed = await cache.get(ENDPOINT)
    assert len(reads) == 2 and refreshed is not None and not refreshed.disabled


async def test_an_unusable_secret_gives_an_endpoint_that_cannot_sign() -> None:
    async def load(endpoint_id: uuid.UUID) -> EndpointRow | None:
        return EndpointRow(endpoint_id, "https://example.com/h", "whsec_", False)

    endpoint = await EndpointCache(load, ttl_seconds=1).get(ENDPOINT)
    assert endpoint is not None and endpoint.signer is None


# -- edges the mutation run found untested ---------------------------------------------------

@pytest.mark.parametrize(("status", "error"), [
    (300, "redirect not followed (HTTP 300)"), (399, "redirect not followed (HTTP 399)")])
def test_every_3xx_is_a_redirect_not_followed(status: int, error: str) -> None:
    assert status_error(status) == error


def test_each_delivery_of_a_batch_gets_its_own_update_logging_its_latest_attempt() -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    updates = delivery_updates([
        Outcome(first, ENDPOINT, State.PENDING, at(1), Answer(500, "HTTP 500", 10)),
        Outcome(second, ENDPOINT, State.SUCCEEDED, at(1), OK),
        Outcome(first, ENDPOINT, State.PENDING, at(2), Answer(502, "HTTP 502", 20)),
        Outcome(first, ENDPOINT, State.PENDING, at(3), Answer(503, "HTTP 503", 30))])
    assert [(u.delivery_id, u.attempts, u.status, u.state) for u in updates] == [
        (first, 3, 503, State.PENDING), (second, 1, 200, State.SUCCEEDED)]


def test_endpoint_health_is_per_endpoint() -> None:
    other = uuid.uuid4()
    health = endpoint_health([
        Outcome(uuid.uuid4(), ENDPOINT, State.SUCCEEDED, at(1), OK),
        Outcome(uuid.uuid4(), other, State.PENDING, at(2), FAILED)])
    assert sorted(((h.endpoint_id, h.last_success, h.failing_from) for h in health),
                  key=lambda h: h[0] == other) == [(ENDPOINT, at(1), None),
                                                    (other, None, at(2))]


def test_the_body_timestamp_is_utc_whatever_the_local_zone(local_time_not_utc: None) -> None:
    occurred = dt.datetime(2026, 7, 1, 9, 0, 0, 500000, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert orjson.loads(webhook_body("x", occurred, "{}"))["timestamp"] == (
        "2026-07-01T07:00:00.500Z")
    with pytest.raises(ValueError) as naive:
        webhook_body("x", occurred.replace(tzinfo=None), "{}")
    assert str(naive.value) == "occurred_at must be timezone-aware"


def test_a_delivery_message_is_json_and_undecodable_ids_name_no_delivery() -> None:
    message = DeliveryMessage(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), b"{}")
    assert message.properties().content_type == "application/json"
    with pytest.raises(NotADelivery) as error:
        DeliveryMessage.read(C, {HEADER_ENDPOINT_ID: b"\xff\xfe", HEADER_EVENT_ID: B}, b"{}")
    assert str(error.value) == f"{HEADER_ENDPOINT_ID} is not a UUID"
