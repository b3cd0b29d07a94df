"""Vapi's REST API as metrics-sync reads it: key check, assistants, phone numbers, calls;
a call's recording's short-lived URL, as the api asks for it; and the few writes that wire
an account to Calltrail (decision 47): a webhook credential, an assistant's or a phone
number's `server` and `serverMessages`.

The caller owns the `httpx.AsyncClient` (one shared by every account, with its timeouts);
each request carries its account's key in its own `Authorization` header. Transient
failures (429, 5xx, timeouts, connection errors) are retried with full-jitter back-off,
honouring `Retry-After` on 429; what is left is raised as one of:

    VapiError              base of everything this module raises
    ├── VapiUnauthorized   401 or 403: the key is not valid (disconnect the account)
    ├── VapiRateLimited    429 after every attempt, or a `Retry-After` above the cap at once;
    │                      `retry_after` says when to come back, when Vapi said so
    ├── VapiUnavailable    5xx, timeouts, connection errors after every attempt
    └── VapiBadResponse    another 4xx, or a body that is not what the API documents
        └── VapiNotFound   404 (e.g. `call(id)` of a call that is not in this account)

The key is never part of an exception message or a log line: those name the path and the
status only. A write is retried like a read when it is idempotent (PATCH); a POST is sent
once (a retried POST could make two credentials).

`GET /call` answers a plain array with no cursor and no documented order, at most `limit`
rows: `calls()` walks a time range in windows, splits a window that came back full into
halves until none is, and deduplicates by id.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from calltrail_common.logging import get_logger

log = get_logger(__name__)

VAPI_BASE_URL = "https://api.vapi.ai"
MAX_PAGE_LIMIT = 1000  # Vapi's maximum `limit` on its list endpoints
MILLISECOND = timedelta(milliseconds=1)

Row = dict[str, Any]


class VapiError(Exception):
    """Base of the errors of this module. `status` is the HTTP status, when there was one."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VapiUnauthorized(VapiError):
    """401 or 403: the key is not (or no longer) valid."""


class VapiRateLimited(VapiError):
    """429 after every attempt, or a `Retry-After` longer than the policy waits in place."""

    def __init__(self, message: str, *, retry_after: float | None,
                 status: int | None = 429) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class VapiUnavailable(VapiError):
    """5xx, a timeout or a connection error, after every attempt."""


class VapiBadResponse(VapiError):
    """A 4xx other than 401, 403 and 429, or a body that is not what the API documents."""


class VapiNotFound(VapiBadResponse):
    """404: the thing asked for is not in this account."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # in all, the first included
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0  # a longer Retry-After is the caller's to schedule


# --- pure rules ---------------------------------------------------------------------------


def backoff_delay(retry: int, policy: RetryPolicy, rand: float) -> float:
    """Seconds to wait before retry number `retry` (0 for the first), full jitter:
    uniform in [0, min(max_delay, base_delay * 2**retry)), `rand` being uniform in [0, 1)."""
    ceiling = min(policy.max_delay, policy.base_delay * 2.0 ** min(retry, 62))
    return rand * ceiling


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` in seconds from `now`: delta-seconds (integer, as Vapi sends, or
    fractional) or an HTTP date. None when absent or unreadable; a past date is 0."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, infinities
        return None
    return max(0.0, seconds)


def to_millisecond(value: datetime) -> datetime:
    """`value` in UTC, truncated to the millisecond (Vapi's precision). Naive datetimes are
    refused: a wrong time zone would silently shift every window."""
    if value.tzinfo is None:
        raise ValueError("a timezone-aware datetime is required")
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


def format_instant(value: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and Z, as Vapi writes its timestamps."""
    utc = to_millisecond(value)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"


def window_is_full(rows: int, page_limit: int) -> bool:
    """A window that returned `page_limit` rows may hold more: it must be split."""
    return rows >= page_limit


def split_window(start: datetime, end: datetime
                 ) -> tuple[tuple[datetime, datetime], tuple[datetime, datetime]]:
    """[start, end) as [start, mid) and [mid, end), both non-empty, on whole milliseconds.
    ValueError when the window is a single millisecond (or empty) and cannot be split."""
    start, end = to_millisecond(start), to_millisecond(end)
    if end - start < 2 * MILLISECOND:
        raise ValueError("a window of one millisecond cannot be split")
    mid = to_millisecond(start + (end - start) / 2)
    return (start, mid), (mid, end)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def dedupe_calls(rows: Iterable[Row]) -> list[Row]:
    """One row per call id, the one with the latest `updatedAt` (an unreadable or missing
    `updatedAt` loses; on a tie the first seen stays). Rows without a string id are skipped."""
    kept: dict[str, tuple[datetime | None, Row]] = {}
    for row in rows:
        call_id = row.get("id")
        if not isinstance(call_id, str) or not call_id:
            continue
        updated = _instant(row.get("updatedAt"))
        seen = kept.get(call_id)
        if seen is None or (updated is not None and (seen[0] is None or updated > seen[0])):
            kept[call_id] = (updated, row)
    return [row for _, row in kept.values()]


RECORDING_CHANNELS = ("mono", "stereo", "customer", "assistant")


def _route(path: str) -> str:
    """The path as logs name it: a call id is no secret, but logs keep to the route's shape."""
    if not path.startswith("/call/"):
        return path
    _, _, rest = path[len("/call/"):].partition("/")
    return "/call/{id}" + (f"/{rest}" if rest else "")


# --- the client ---------------------------------------------------------------------------


class VapiClient:
    """One Vapi account's view of the API, through the caller's shared AsyncClient."""

    def __init__(self, http: httpx.AsyncClient, api_key: str, *, base_url: str,
                 retry: RetryPolicy = RetryPolicy(), page_limit: int = MAX_PAGE_LIMIT,
                 rng: random.Random | None = None) -> None:
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be in 1..{MAX_PAGE_LIMIT}")
        if retry.attempts < 1:
            raise ValueError("retry.attempts must be at least 1")
        self._http = http
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._base_url = base_url.rstrip("/")
        self._retry = retry
        self._page_limit = page_limit
        self._rng = rng or random.Random()
        self.requests = 0  # HTTP requests sent, retries included

    def __repr__(self) -> str:  # never the key
        return f"VapiClient(base_url={self._base_url!r}, requests={self.requests})"

    async def verify(self) -> None:
        """The key is valid (the cheapest authenticated request); VapiUnauthorized if not."""
        await self._get_list("/assistant", {"limit": "1"})

    async def assistants(self) -> list[Row]:
        return await self._get_list("/assistant", {"limit": str(MAX_PAGE_LIMIT)})

    async def phone_numbers(self) -> list[Row]:
        return await self._get_list("/phone-number", {"limit": str(MAX_PAGE_LIMIT)})

    async def call(self, call_id: str) -> Row:
        body = await self._get(f"/call/{quote(call_id, safe='')}", {})
        if not isinstance(body, dict):
            raise VapiBadResponse(f"GET /call/{{id}}: expected an object, got "
                                  f"{type(body).__name__}", status=200)
        return body

    async def recording_location(self, call_id: str, channel: str) -> str:
        """The short-lived URL of a call's recording: Vapi answers `GET
        /call/{id}/<channel>-recording` with a redirect, which is not followed (the URL is
        handed to whoever plays it). VapiNotFound when the call or its recording is not
        there. The URL is a credential while it lasts: never logged."""
        if channel not in RECORDING_CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(RECORDING_CHANNELS)}")
        response = await self._send(
            f"/call/{quote(call_id, safe='')}/{channel}-recording", {}, redirect=True)
        location = response.headers.get("location")
        if not 300 <= response.status_code < 400 or not location:
            raise VapiBadResponse(f"GET /call/{{id}}/{channel}-recording: HTTP "
                                  f"{response.status_code} without a redirect",
                                  status=response.status_code)
        return str(response.url.join(location))

    async def create_credential(self, body: Row) -> Row:
        """`POST /credential` (a webhook credential, say); the created credential. Sent once.
        The body holds a secret: it is never logged."""
        return await self._write("POST", "/credential", body)

    async def update_assistant(self, assistant_id: str, body: Row) -> Row:
        """`PATCH /assistant/{id}` with the fields to change; the assistant as it now is."""
        return await self._write("PATCH", f"/assistant/{quote(assistant_id, safe='')}", body)

    async def update_phone_number(self, phone_number_id: str, body: Row) -> Row:
        """`PATCH /phone-number/{id}` with the fields to change; the number as it now is."""
        return await self._write("PATCH", f"/phone-number/{quote(phone_number_id, safe='')}",
                                 body)

    async def calls(self, *, field: Literal["createdAt", "updatedAt"], start: datetime,
                    end: datetime) -> list[Row]:
        """Every call with `field` in [start, end), once each (latest `updatedAt`), in no
        particular order. Windows are on whole milliseconds."""
        if field not in ("createdAt", "updatedAt"):
            raise ValueError(f"field must be createdAt or updatedAt, not {field!r}")
        start, end = to_millisecond(start), to_millisecond(end)
        found: list[Row] = []
        pending = [(start, end)] if start < end else []
        while pending:
            low, high = pending.pop()
            rows = await self._get_list("/call", {
                f"{field}Ge": format_instant(low),
                f"{field}Lt": format_instant(high),
                "limit": str(self._page_limit),
            })
            if not window_is_full(len(rows), self._page_limit):
                found.extend(rows)
                continue
            if high - low <= MILLISECOND:
                raise VapiBadResponse(
                    f"GET /call: {len(rows)} calls with {field} in the single millisecond "
                    f"{format_instant(low)}, the page limit is {self._page_limit}: the list "
                    "cannot be paged further", status=200)
            pending.extend(split_window(low, high))
        calls = dedupe_calls(found)
        log.debug("vapi_calls_listed", field=field, start=format_instant(start),
                  end=format_instant(end), calls=len(calls), requests=self.requests)
        return calls

    async def _get_list(self, path: str, params: dict[str, str]) -> list[Row]:
        body = await self._get(path, params)
        if not isinstance(body, list):
            raise VapiBadResponse(f"GET {path}: expected an array, got {type(body).__name__}",
                                  status=200)
        if not all(isinstance(item, dict) for item in body):
            raise VapiBadResponse(f"GET {path}: an array item is not an object", status=200)
        return body

    async def _get(self, path: str, params: dict[str, str]) -> Any:
        """The decoded JSON body of a 2xx answer, after retrying what is transient."""
        response = await self._send(path, params)
        try:
            # orjson: a backfill decodes every call's transcript and messages.
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise VapiBadResponse(f"GET {_route(path)}: the body is not JSON",
                                  status=response.status_code) from None

    async def _write(self, method: Literal["POST", "PATCH"], path: str, body: Row) -> Row:
        response = await self._send(path, {}, method=method, body=body)
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise VapiBadResponse(f"{method} {_route(path)}: the body is not JSON",
                                  status=response.status_code) from None
        if not isinstance(answer, dict):
            raise VapiBadResponse(f"{method} {_route(path)}: expected an object, got "
                                  f"{type(answer).__name__}", status=response.status_code)
        return answer

    async def _send(self, path: str, params: dict[str, str], *,
                    redirect: bool = False, method: str = "GET",
                    body: Row | None = None) -> httpx.Response:
        """A 2xx answer (or a 3xx one, with `redirect`), after retrying what is transient
        (a POST is sent once); redirects are never followed."""
        route = f"{method} {_route(path)}"
        logged = _route(path) if method == "GET" else route
        url = self._base_url + path
        policy = self._retry
        attempts = 1 if method == "POST" else policy.attempts
        content = None if body is None else orjson.dumps(body)
        headers = self._headers if body is None else {
            **self._headers, "Content-Type": "application/json"}
        for attempt in range(attempts):
            last = attempt == attempts - 1
            self.requests += 1
            try:
                response = await self._http.request(method, url, params=params or None,
                                                    content=content, headers=headers,
                                                    follow_redirects=False)
            except httpx.TransportError as exc:  # timeouts included
                if last:
                    raise VapiUnavailable(f"{route}: {type(exc).__name__} after "
                                          f"{attempts} attempts") from None
                await self._pause(logged, attempt, None, type(exc).__name__)
                continue
            status = response.status_code
            if 200 <= status < 300 or (redirect and 300 <= status < 400):
                return response
            if status in (401, 403):
                raise VapiUnauthorized(f"{route}: HTTP {status}, the API key was refused",
                                       status=status)
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("retry-after"),
                                                datetime.now(UTC))
                if retry_after is not None and retry_after > policy.max_retry_after:
                    raise VapiRateLimited(
                        f"{route}: HTTP 429, Retry-After {retry_after:g} s is above "
                        f"{policy.max_retry_after:g} s", retry_after=retry_after)
                if last:
                    raise VapiRateLimited(f"{route}: HTTP 429 after {attempts} attempts",
                                          retry_after=retry_after)
                await self._pause(logged, attempt, retry_after, "HTTP 429")
                continue
            if status >= 500:
                if last:
                    raise VapiUnavailable(f"{route}: HTTP {status} after "
                                          f"{attempts} attempts", status=status)
                await self._pause(logged, attempt, None, f"HTTP {status}")
                continue
            kind = VapiNotFound if status == 404 else VapiBadResponse
            raise kind(f"{route}: HTTP {status}", status=status)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _pause(self, route: str, attempt: int, retry_after: float | None,
                     reason: str) -> None:
        delay = (retry_after if retry_after is not None
                 else backoff_delay(attempt, self._retry, self._rng.random()))
        log.info("vapi_retry", route=route, reason=reason, attempt=attempt + 1,
                 delay_seconds=round(delay, 3))
        await asyncio.sleep(delay)
