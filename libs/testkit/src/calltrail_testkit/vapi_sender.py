"""Vapi's side of a webhook, as the fault suite plays it: an open-loop sender that retries.

Each webhook is first sent at its slot of a fixed-rate schedule, whatever became of the
earlier ones (open loop: an outage does not slow the sender down, as it does not slow Vapi's
calls down). An answer other than 200, a connection error or no answer within the timeout
counts as a failed delivery; it is retried after the delay of a back-off plan like Vapi's
`server.backoffPlan` (exponential, a cap per delay, at most `max_retries` retries) and given
up after the last. Vapi's default is no retries at all (`NO_RETRIES`).

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

from bench.end_to_end import ConnectionPool, percentile, read_answer
from bench.lifecycles import Event

VAPI_TIMEOUT_SECONDS = 20.0  # Vapi's default `server.timeoutSeconds`


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
