"""The rules of an attempt (pure): what an answer means, what becomes of the delivery, and
what a batch of outcomes says about each delivery row and each endpoint.

- A 2xx answer is a success; any other status (a 3xx too: redirects are not followed), a
  timeout, a refused target or a connection error is a failed attempt.
- A failed attempt waits for the next retry delay; after the last one the delivery is dead.
- A delivery whose endpoint is disabled is skipped, not attempted.
- An endpoint is failing since its first failed attempt after its last success; a success
  clears that. (Disabling one failing for too long is a statement of the repository.)
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    """outbound_deliveries.state"""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Answer:
    """How one attempt ended."""

    status: int | None  # the HTTP status; None: no answer
    error: str | None  # why it failed, in a few words (never a body); None: it succeeded
    latency_ms: int

    @property
    def succeeded(self) -> bool:
        return self.error is None


def status_error(status: int) -> str | None:
    """Why an answer with this status is a failure; None for a 2xx."""
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"redirect not followed (HTTP {status})"
    return f"HTTP {status}"


def state_after(answer: Answer, retries: int, retry_delays: int) -> State:
    """The delivery's state after an attempt, `retries` retry delays already waited out of
    `retry_delays`."""
    if answer.succeeded:
        return State.SUCCEEDED
    return State.DEAD if retries >= retry_delays else State.PENDING


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one delivery message: an attempt (`answer` and when it started), or
    a skip (its endpoint disabled; no attempt)."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    state: State
    at: dt.datetime
    answer: Answer | None = None

    @property
    def attempted(self) -> bool:
        return self.answer is not None


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """What a batch writes to one delivery row: `attempts` more attempts, the last one's
    log fields (when there was one), and the state."""

    delivery_id: uuid.UUID
    attempts: int
    at: dt.datetime | None
    status: int | None
    error: str | None
    latency_ms: int | None
    state: State


def delivery_updates(outcomes: Iterable[Outcome]) -> list[DeliveryUpdate]:
    """One update per delivery (a message published twice can be attempted twice in one
    batch): the attempts counted, the latest attempt logged; succeeded if any attempt
    succeeded, else the state of the latest outcome."""
    grouped: dict[uuid.UUID, list[Outcome]] = {}
    for outcome in outcomes:
        grouped.setdefault(outcome.delivery_id, []).append(outcome)
    updates = []
    for delivery_id, group in grouped.items():
        group.sort(key=lambda o: o.at)
        attempts = [o for o in group if o.answer is not None]
        last = attempts[-1] if attempts else None
        answer = last.answer if last is not None else None
        state = (State.SUCCEEDED if any(o.state is State.SUCCEEDED for o in group)
                 else group[-1].state)
        updates.append(DeliveryUpdate(
            delivery_id=delivery_id, attempts=len(attempts),
            at=last.at if last is not None else None,
            status=answer.status if answer is not None else None,
            error=answer.error if answer is not None else None,
            latency_ms=answer.latency_ms if answer is not None else None,
            state=state))
    return updates


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """What a batch says of one endpoint: its latest success, and its first failure after
    that (None: none)."""

    endpoint_id: uuid.UUID
    last_success: dt.datetime | None
    failing_from: dt.datetime | None


def endpoint_health(outcomes: Iterable[Outcome]) -> list[EndpointHealth]:
    """One entry per endpoint that was attempted (skips say nothing of a receiver)."""
    grouped: dict[uuid.UUID, list[Outcome]] = {}
    for outcome in outcomes:
        if outcome.answer is not None:
            grouped.setdefault(outcome.endpoint_id, []).append(outcome)
    health = []
    for endpoint_id, group in grouped.items():
        successes = [o.at for o in group if o.answer is not None and o.answer.succeeded]
        last_success = max(successes) if successes else None
        failures = [o.at for o in group if o.answer is not None and not o.answer.succeeded
                    and (last_success is None or o.at > last_success)]
        health.append(EndpointHealth(endpoint_id, last_success,
                                     min(failures) if failures else None))
    return health
