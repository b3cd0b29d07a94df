"""Vapi's side of a webhook: raw HTTP/1.1 requests on keep-alive connections, and an
open-loop sender that retries, as the fault suite plays Vapi.

The requests are pre-formatted bytes written with asyncio streams (uvloop), so a sender
costs little of the machine's cores: `org_request` to an organization's own endpoint with
its secret, `shared_request` to the shared endpoint with the shared secret as a Bearer
credential, `secret_request` to `POST /webhooks/vapi` with an `X-Vapi-Secret` (the
direct-write baseline); `ConnectionPool` keeps connections alive, `read_answer` reads one.

`Sender`: each webhook is first sent at its slot of a fixed-rate schedule, whatever became
of the earlier ones (open loop: an outage does not slow the sender down, as it does not
slow Vapi's calls down). An answer other than 200, a connection error or no answer within
the timeout counts as a failed delivery; it is retried after the delay of a back-off plan
like Vapi's `server.backoffPlan` (exponential, a cap per delay, at most `max_retries`
retries) and given up after the last. Vapi's default is no retries at all (`NO_RETRIES`).

Every attempt is recorded (when it was sent, its status or error, how long the answer took),
so a run can say what each server answered during a fault and with what latency, and which
webhooks were finally answered 200: those are the ones the receiver promised to keep.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from calltrail_testkit.lifecycles import Event, Organization
from calltrail_testkit.processes import HOST, WEBHOOK_PATH

VAPI_TIMEOUT_SECONDS = 20.0  # Vapi's default `server.timeoutSeconds`


# --- requests and connections -----------------------------------------------------------


def _request(event: Event, port: int, path: str, credential: str) -> bytes:
    head = (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"{credential}\r\n"
            f"Content-Length: {len(event.body)}\r\n\r\n")
    return head.encode() + event.body


def org_request(event: Event, org: Organization, port: int) -> bytes:
    """A webhook to the organization's own endpoint, with its secret."""
    return _request(event, port, f"{WEBHOOK_PATH}/{org.endpoint_id}",
                    f"X-Vapi-Secret: {org.webhook_secret}")


def shared_request(event: Event, port: int, secret: str) -> bytes:
    """A webhook to the shared endpoint, with the shared secret as a Bearer credential."""
    return _request(event, port, WEBHOOK_PATH, f"Authorization: Bearer {secret}")


def secret_request(event: Event, port: int, secret: str) -> bytes:
    """A webhook to `POST /webhooks/vapi` with `X-Vapi-Secret` (the direct-write baseline)."""
    return _request(event, port, WEBHOOK_PATH, f"X-Vapi-Secret: {secret}")


class ConnectionPool:
    """Keep-alive connections to one server; most recently used first."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def get(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer = self.idle.pop()
            if not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(HOST, self.port)

    def put(self, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        self.idle.append(connection)

    async def prefill(self, count: int) -> None:
        for _ in range(count):
            self.put(await self.get())

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def read_answer(reader: asyncio.StreamReader, seconds: float) -> int:
    """Read one HTTP/1.1 answer (head and Content-Length body); its status code."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), seconds)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await asyncio.wait_for(reader.readexactly(length), seconds)
    return int(head[9:12])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks; q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- the sender -------------------------------------------------------------------------


@dataclass(frozen=True)
class BackoffPlan:
    max_retries: int = 8
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 10.0

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (0 for the first retry)."""
        return min(self.base_delay_seconds * 2 ** retry, self.max_delay_seconds)


NO_RETRIES = BackoffPlan(max_retries=0)


@dataclass
class Attempt:
    sent: float  # time.monotonic()
    seconds: float | None  # until the answer; None when there was none
    status: int | None
    error: str | None = None


@dataclass
class Delivery:
    """One webhook and every attempt to deliver it."""

    event: Event
    raw: bytes  # the whole HTTP/1.1 request
    probe: bool = False  # sent after a fault's end to see processing resume
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return any(a.status == 200 for a in self.attempts)


class Sender:
    def __init__(self, port: int, build: Callable[[Event], bytes], plan: BackoffPlan, *,
                 timeout: float = VAPI_TIMEOUT_SECONDS) -> None:
        self.pool = ConnectionPool(port)
        self.build = build
        self.plan = plan
        self.timeout = timeout
        self.deliveries: list[Delivery] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, event: Event, *, probe: bool = False) -> Delivery:
        """Deliver `event` in the background (with retries); its record."""
        delivery = Delivery(event, self.build(event), probe)
        self.deliveries.append(delivery)
        task = asyncio.create_task(self._deliver(delivery))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def run_schedule(self, events: Sequence[Event], rate: float, t0: float) -> None:
        """Submit events[i] at t0 + i / rate (monotonic clock)."""
        for index, event in enumerate(events):
            delay = t0 + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.submit(event)

    async def join(self, seconds: float) -> bool:
        """Wait for every delivery to end (answered 200 or given up); False on timeout."""
        deadline = time.monotonic() + seconds
        while self._tasks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=remaining)
        return True

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pool.close()

    async def _deliver(self, delivery: Delivery) -> None:
        for retry in range(self.plan.max_retries + 1):
            if retry:
                await asyncio.sleep(self.plan.delay(retry - 1))
            attempt = await self._attempt(delivery.raw)
            delivery.attempts.append(attempt)
            if attempt.status == 200:
                return

    async def _attempt(self, raw: bytes) -> Attempt:
        sent = time.monotonic()
        try:
            connection = await asyncio.wait_for(self.pool.get(), self.timeout)
        except (OSError, TimeoutError) as error:
            return Attempt(sent, None, None, type(error).__name__)
        reader, writer = connection
        try:
            writer.write(raw)
            status = await read_answer(reader, self.timeout)
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as error:
            writer.close()
            return Attempt(sent, None, None, type(error).__name__)
        self.pool.put(connection)
        return Attempt(sent, time.monotonic() - sent, status)

    # -- what happened -----------------------------------------------------------------

    def answers(self, start: float = float("-inf"),
                end: float = float("inf")) -> dict[str, object]:
        """Attempts sent in [start, end): counts by status or error, and answer p50/p99."""
        counts: collections.Counter[str] = collections.Counter()
        seconds = []
        for delivery in self.deliveries:
            for attempt in delivery.attempts:
                if start <= attempt.sent < end:
                    counts[str(attempt.status) if attempt.status else attempt.error
                           or "error"] += 1
                    if attempt.seconds is not None:
                        seconds.append(attempt.seconds)
        p50, p99 = percentile(seconds, 50), percentile(seconds, 99)
        return {"attempts": sum(counts.values()), "by_answer": dict(sorted(counts.items())),
                "p50_ms": None if p50 is None else round(p50 * 1000, 1),
                "p99_ms": None if p99 is None else round(p99 * 1000, 1)}
