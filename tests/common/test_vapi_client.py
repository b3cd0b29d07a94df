"""The Vapi REST client: its pure rules exhaustively, then against the fake Vapi served for
real over HTTP (calltrail_testkit.fake_vapi), faults included."""

from __future__ import annotations

import itertools
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from calltrail_common.vapi import (
    RetryPolicy,
    VapiBadResponse,
    VapiClient,
    VapiNotFound,
    VapiRateLimited,
    VapiUnauthorized,
    VapiUnavailable,
    backoff_delay,
    dedupe_calls,
    format_instant,
    parse_retry_after,
    split_window,
    to_millisecond,
    window_is_full,
)
from calltrail_testkit.fake_vapi import FakeAccount, FakeVapi, serve

KEY = "sk-live-0123456789abcdef-secret"
MS = timedelta(milliseconds=1)
DAY = datetime(2026, 11, 3, tzinfo=UTC)
FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)

# --- pure rules ---------------------------------------------------------------------------

instants = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1),
                        timezones=st.just(UTC)).map(to_millisecond)


@given(instants, st.integers(min_value=2, max_value=10**11))
def test_split_window_halves_tile_the_window(start: datetime, width_ms: int) -> None:
    end = start + width_ms * MS
    (a_start, a_end), (b_start, b_end) = split_window(start, end)
    assert (a_start, a_end, b_end) == (start, b_start, end)
    assert start < a_end < end
    assert a_end.microsecond % 1000 == 0
    assert abs((a_end - start) - (end - b_start)) <= MS  # halves, to the millisecond


@given(instants, st.integers(min_value=1, max_value=10**9), st.randoms(use_true_random=False))
def test_repeated_splits_cover_the_range_without_gaps_or_overlaps(
        start: datetime, width_ms: int, rng: random.Random) -> None:
    end = start + width_ms * MS
    leaves, pending = [], [(start, end)]
    while pending:  # split any window at random, as full windows would be, down to 1 ms
        low, high = pending.pop()
        if high - low > MS and rng.random() < 0.7 and len(leaves) + len(pending) < 64:
            pending.extend(split_window(low, high))
        else:
            leaves.append((low, high))
    leaves.sort()
    assert leaves[0][0] == start and leaves[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(leaves))
    assert all(low < high for low, high in leaves)


def test_a_single_millisecond_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="millisecond"):
        split_window(DAY, DAY + MS)
    assert window_is_full(1000, 1000) and window_is_full(1001, 1000)
    assert not window_is_full(999, 1000)


def test_instants_are_utc_milliseconds_with_z() -> None:
    paris = datetime(2026, 11, 3, 16, 4, 5, 678_901, tzinfo=UTC).astimezone(
        datetime.now().astimezone().tzinfo)
    assert format_instant(paris) == "2026-11-03T16:04:05.678Z"
    assert format_instant(DAY) == "2026-11-03T00:00:00.000Z"
    with pytest.raises(ValueError):
        format_instant(datetime(2026, 11, 3))  # naive: refused


versions = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d"]),
                              st.integers(min_value=0, max_value=10**6)), max_size=30)


@given(versions, st.randoms(use_true_random=False))
def test_dedupe_keeps_the_latest_version_of_each_call_in_any_order(
        rows: list[tuple[str, int]], rng: random.Random) -> None:
    calls = [{"id": call_id, "updatedAt": format_instant(DAY + ms * MS), "v": ms}
             for call_id, ms in rows]
    calls += [{"updatedAt": format_instant(DAY)}, {"id": None}, {"id": ""}]  # no id: skipped
    rng.shuffle(calls)
    kept = dedupe_calls(calls)
    latest: dict[str, int] = {}
    for call_id, ms in rows:
        latest[call_id] = max(ms, latest.get(call_id, ms))
    assert sorted(c["id"] for c in kept) == sorted(latest)
    assert {c["id"]: c["v"] for c in kept} == latest


def test_dedupe_prefers_a_readable_updated_at() -> None:
    good = {"id": "x", "updatedAt": "2026-11-03T00:00:00.000Z"}
    for bad in ({"id": "x"}, {"id": "x", "updatedAt": "soon"}):
        assert dedupe_calls([bad, good]) == [good]
        assert dedupe_calls([good, bad]) == [good]


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 11, 3, 12, 0, tzinfo=UTC)
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 0.2 ", now) == 0.2
    assert parse_retry_after("-4", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True),
                             now) == 90.0
    assert parse_retry_after("Tue, 03 Nov 2026 11:00:00 GMT", now) == 0.0  # past
    for unreadable in (None, "", "soon", "nan", "inf"):
        assert parse_retry_after(unreadable, now) is None


@given(st.integers(min_value=0, max_value=200), st.floats(min_value=0, max_value=0.999999))
def test_backoff_is_full_jitter_below_a_capped_exponential(retry: int, rand: float) -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=30.0)
    delay = backoff_delay(retry, policy, rand)
    assert 0 <= delay <= min(30.0, 0.5 * 2 ** min(retry, 62))
    assert backoff_delay(retry, policy, 0.0) == 0.0


# --- against the fake, for real -----------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[FakeVapi, str]]:
    """One server per module; each test has its own account (its own key)."""
    fake = FakeVapi(seed=4)
    with serve(fake) as url:
        yield fake, url


@pytest.fixture
def base_url(served: tuple[FakeVapi, str]) -> str:
    return served[1]


@pytest.fixture
def key() -> str:
    return f"sk-live-{uuid.uuid4().hex}"


@pytest.fixture
def account(served: tuple[FakeVapi, str], key: str) -> FakeAccount:
    return served[0].add_account(key, seed=4, phone_numbers=3, assistants=2)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


def client(http: httpx.AsyncClient, base_url: str, key: str, **kwargs: Any) -> VapiClient:
    return VapiClient(http, key, base_url=base_url, **{"retry": FAST, **kwargs})


async def test_verify_a_valid_key(account: FakeAccount, key: str, base_url: str,
                                  http: httpx.AsyncClient) -> None:
    vapi = client(http, base_url, key)
    await vapi.verify()
    assert vapi.requests == 1
    assert account.request_log == [("GET", "/assistant", {"limit": "1"})]


async def test_a_refused_key_is_unauthorized_and_never_shown(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.unauthorized = True
    with capture_logs() as logs:
        for vapi in (client(http, base_url, key), client(http, base_url, key + "-unknown")):
            with pytest.raises(VapiUnauthorized) as caught:
                await vapi.verify()
            assert caught.value.status == 401
            assert vapi.requests == 1  # a 401 is not retried
            assert key not in str(caught.value) and key not in repr(caught.value)
            assert key not in repr(vapi)
    assert key not in repr(logs)


async def test_429_waits_for_retry_after_then_succeeds(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.rate_limit_next, account.retry_after = 2, 0.2
    vapi = client(http, base_url, key)
    started = time.monotonic()
    with capture_logs() as logs:
        assert len(await vapi.phone_numbers()) == 3
    assert time.monotonic() - started >= 0.4  # two waits of the header's 0.2 s
    assert vapi.requests == account.requests == 3
    assert [log["reason"] for log in logs if log["event"] == "vapi_retry"] == ["HTTP 429"] * 2
    assert key not in repr(logs)


async def test_429_with_a_long_retry_after_is_handed_back_at_once(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.rate_limit_next, account.retry_after = 5, 30
    vapi = client(http, base_url, key)
    with pytest.raises(VapiRateLimited) as caught:
        await vapi.assistants()
    assert caught.value.retry_after == 30.0
    assert vapi.requests == 1


async def test_429_without_retry_after_backs_off_then_gives_up(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.rate_limit_next = 10
    vapi = client(http, base_url, key)
    with pytest.raises(VapiRateLimited) as caught:
        await vapi.assistants()
    assert caught.value.retry_after is None
    assert vapi.requests == account.requests == FAST.attempts


async def test_5xx_is_retried_then_unavailable(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.fail_next = 2
    vapi = client(http, base_url, key)
    assert len(await vapi.assistants()) == 2  # the third attempt succeeds
    account.fail_next = 10
    with pytest.raises(VapiUnavailable) as caught:
        await vapi.assistants()
    assert caught.value.status == 503
    assert vapi.requests == 3 + FAST.attempts


async def test_a_hanging_request_times_out_as_unavailable(
        account: FakeAccount, key: str, base_url: str) -> None:
    account.hang_seconds = 30
    async with httpx.AsyncClient(timeout=0.2) as http:
        vapi = client(http, base_url, key, retry=RetryPolicy(attempts=2, base_delay=0.01))
        started = time.monotonic()
        with pytest.raises(VapiUnavailable, match="Timeout"):
            await vapi.verify()
    assert time.monotonic() - started < 2
    assert vapi.requests == 2


async def test_a_refused_connection_is_unavailable(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    vapi = client(http, f"http://127.0.0.1:{port}", KEY)
    with pytest.raises(VapiUnavailable, match="ConnectError"):
        await vapi.verify()
    assert vapi.requests == FAST.attempts


async def test_one_call_and_a_missing_one(account: FakeAccount, key: str, base_url: str,
                                          http: httpx.AsyncClient) -> None:
    (call,) = account.add_calls(1, rng=random.Random(1), start=DAY, end=DAY + MS * 10)
    vapi = client(http, base_url, key)
    assert await vapi.call(call["id"]) == call
    with pytest.raises(VapiNotFound):
        await vapi.call("00000000-0000-4000-8000-000000000000")
    with pytest.raises(VapiBadResponse):  # VapiNotFound is a VapiBadResponse
        await vapi.call("00000000-0000-4000-8000-000000000000")


@pytest.mark.parametrize("page_limit", [1000, 300])
async def test_calls_splits_full_windows_and_returns_each_call_once(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient,
        page_limit: int) -> None:
    rng = random.Random(page_limit)
    inside = account.add_calls(2500, rng=rng, start=DAY, end=DAY + timedelta(days=1))
    account.add_calls(30, rng=rng, start=DAY - timedelta(days=1), end=DAY)
    account.add_calls(30, rng=rng, start=DAY + timedelta(days=1), end=DAY + timedelta(days=2))
    vapi = client(http, base_url, key, page_limit=page_limit)
    calls = await vapi.calls(field="createdAt", start=DAY, end=DAY + timedelta(days=1))
    assert len(calls) == 2500
    assert {c["id"] for c in calls} == {c["id"] for c in inside}
    windows = [query for _, path, query in account.request_log if path == "/call"]
    assert all(query["limit"] == str(page_limit) for query in windows)
    assert vapi.requests == len(windows) < 4 * 2500 / page_limit + 4


async def test_calls_by_updated_at_returns_only_the_updated_calls(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    earlier = datetime.now(UTC) - timedelta(days=3)
    created = account.add_calls(200, rng=random.Random(8), start=earlier,
                                end=earlier + timedelta(hours=6))
    since = datetime.now(UTC)
    changed = {c["id"]: account.update_call(
                   c["id"], status="ended", updatedAt=format_instant(since + i * 7 * MS))
               for i, c in enumerate(created[:30])}
    vapi = client(http, base_url, key, page_limit=8)  # a few splits too
    calls = await vapi.calls(field="updatedAt", start=since, end=since + timedelta(seconds=1))
    assert {c["id"]: c for c in calls} == changed
    assert all("updatedAtGe" in q for _, p, q in account.request_log if p == "/call")


async def test_more_calls_in_one_millisecond_than_a_page_is_a_bad_response(
        account: FakeAccount, key: str, base_url: str, http: httpx.AsyncClient) -> None:
    account.add_calls(3, rng=random.Random(2), start=DAY, end=DAY + MS)
    vapi = client(http, base_url, key, page_limit=2)
    with pytest.raises(VapiBadResponse, match="single millisecond"):
        await vapi.calls(field="createdAt", start=DAY, end=DAY + timedelta(hours=1))


async def test_an_empty_range_asks_nothing(key: str, base_url: str, http: httpx.AsyncClient
                                          ) -> None:
    vapi = client(http, base_url, key)
    assert await vapi.calls(field="createdAt", start=DAY, end=DAY) == []
    assert vapi.requests == 0


@pytest.mark.parametrize(("status", "body", "error"), [
    (200, b"<html>", VapiBadResponse),
    (200, b'{"calls": []}', VapiBadResponse),
    (200, b"[1, 2]", VapiBadResponse),
    (400, b'{"message": ["limit must be a number"]}', VapiBadResponse),
    (403, b"{}", VapiUnauthorized),
    (502, b"bad gateway", VapiUnavailable),
])
async def test_answers_outside_the_documented_api(status: int, body: bytes,
                                                  error: type[Exception]) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == f"Bearer {KEY}"
        return httpx.Response(status, content=body)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        with pytest.raises(error) as caught:
            await client(http, "https://api.vapi.test", KEY).assistants()
    assert type(caught.value) is error and KEY not in str(caught.value)


def test_page_limit_is_vapis_range() -> None:
    http = httpx.AsyncClient()
    for bad in (0, 1001):
        with pytest.raises(ValueError):
            VapiClient(http, KEY, base_url="https://api.vapi.ai", page_limit=bad)


async def test_a_patch_is_retried_and_a_post_is_sent_once(
        http: httpx.AsyncClient, base_url: str, key: str, account: FakeAccount) -> None:
    vapi = client(http, base_url, key)
    assistant_id = account.assistants[0]["id"]
    account.fail_next = 2
    updated = await vapi.update_assistant(assistant_id, {"serverMessages": ["hang"]})
    assert updated["serverMessages"] == ["hang"] and account.fail_next == 0
    body = {"provider": "webhook", "authenticationPlan": {"type": "bearer", "token": "t0k"}}
    account.fail_next = 1
    before = len(account.request_log)
    with capture_logs() as logs, pytest.raises(VapiUnavailable) as failed:
        await vapi.create_credential(body)
    assert len(account.request_log) == before + 1  # a retried POST could make two
    assert account.credentials == {}
    assert "t0k" not in str(failed.value) and "t0k" not in str(logs)
    made = await vapi.create_credential(body)
    assert set(account.credentials) == {made["id"]}
    with pytest.raises(VapiNotFound):
        await vapi.update_phone_number("missing", {"name": "x"})
    with pytest.raises(VapiBadResponse):  # Vapi refuses what it does not know: a 400
        await vapi.update_assistant(assistant_id, {"server": {"url": "https://x.example",
                                                              "credentialId": "unknown"}})
    with pytest.raises(VapiUnauthorized):
        await client(http, base_url, "wrong").update_assistant(assistant_id, {})
