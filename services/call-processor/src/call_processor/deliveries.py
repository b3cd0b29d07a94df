"""Deliveries parsed at the edge into a prepared batch, and what becomes of each. Pure.

`prepare_batch` reads each delivery's envelope and body (`call_processor.events`) into a
typed event, keeps aside the poison (a reason it can never be processed), and merges what
the events whose organization the endpoint decided say about each call, so a batch is
parsed while others are applied (`handlers.apply_batch`). Prepared parts of one batch join
(`join_prepared`): the merge is a join, whatever the grouping.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from call_processor.calls import CallState, combine, merge
from call_processor.events import (
    CALL_EVENT_TYPES,
    NO_ROUTING,
    PoisonMessage,
    WebhookEvent,
    archived_chatter,
    parse_event,
    parse_snapshot_bundle,
)
from calltrail_common.attribution import as_uuid
from calltrail_common.envelope import CALL_SNAPSHOTS, EventEnvelope


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the consumer received it; `tag` tells deliveries apart (a redelivered
    message keeps its message id)."""

    tag: int
    envelope: EventEnvelope
    body: bytes

    @property
    def message_id(self) -> str:
        return self.envelope.message_id

    @classmethod
    def received(cls, tag: int, message_id: str | None, headers: Mapping[str, object] | None,
                 body: bytes) -> Delivery:
        """A delivery as the broker hands it over: its envelope read from its headers."""
        return cls(tag, EventEnvelope.read(message_id, headers), body)


@dataclass
class BatchOutcome:
    """What becomes of each delivery of a batch."""

    applied: list[int] = field(default_factory=list)  # delivery tags: committed, ack them
    dead: dict[int, str] = field(default_factory=dict)  # delivery tag -> reason
    unassigned: list[int] = field(default_factory=list)  # kept until a mapping matches
    # (organization, call id) of each call the batch changed: for the live boards.
    changed: list[tuple[uuid.UUID, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Parsed:
    delivery: Delivery
    event: WebhookEvent
    header_org: uuid.UUID | None  # the organization the endpoint decided
    # One call snapshot of a bundle: applied, but archived and settled with its bundle (a
    # `Parsed` of its own, without an observation).
    in_bundle: bool = False


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Deliveries parsed at the edge: the poison among them, the events of the others, what
    the events whose organization the endpoint decided say about each call (merged), and
    the callers' numbers the batch names."""

    poison: Mapping[int, str]  # delivery tag -> reason
    parsed: Sequence[Parsed]
    merged: Mapping[tuple[str, uuid.UUID], CallState]  # (call id, organization) -> state
    numbers: frozenset[str]  # E.164 numbers the events name


def prepare_batch(deliveries: Sequence[Delivery]) -> PreparedBatch:
    poison: dict[int, str] = {}
    parsed: list[Parsed] = []
    merged: dict[tuple[str, uuid.UUID], CallState] = {}
    numbers: set[str] = set()
    for delivery in deliveries:
        envelope = delivery.envelope
        header_org = as_uuid(envelope.org_id)
        bundled: list[WebhookEvent] = []
        try:
            if "\x00" in delivery.message_id:  # the archive's key: Postgres text refuses NUL
                raise PoisonMessage("message id holds NUL")
            if envelope.message_type == CALL_SNAPSHOTS:
                if header_org is None:
                    raise PoisonMessage("a bundle of call snapshots names no organization")
                bundled, _ = parse_snapshot_bundle(delivery.body)
                event = WebhookEvent(CALL_SNAPSHOTS, NO_ROUTING, None, None)
            elif header_org is not None and envelope.message_type \
                    and envelope.message_type not in CALL_EVENT_TYPES:
                event = archived_chatter(envelope.message_type, envelope.dedupe_key)
            else:
                event = parse_event(delivery.body, route=header_org is None)
        except PoisonMessage as reason:
            poison[delivery.tag] = str(reason)
            continue
        parsed.append(Parsed(delivery, event, header_org))
        parsed.extend(Parsed(delivery, snapshot, header_org, in_bundle=True)
                      for snapshot in bundled)
        for observed in (event, *bundled):
            observation = observed.observation
            if observation is None:
                continue
            number = observation.values.get("customer_number")
            if number is not None and isinstance(number[0], str) \
                    and number[0].startswith("+"):
                numbers.add(number[0])
            if header_org is not None:
                key = (observation.call_id, header_org)
                merged[key] = merge(merged.get(key) or CallState(call_id=key[0]), observation)
    return PreparedBatch(poison, parsed, merged, frozenset(numbers))


def join_prepared(parts: Sequence[PreparedBatch]) -> PreparedBatch:
    """One batch of parts prepared one after the other."""
    merged: dict[tuple[str, uuid.UUID], CallState] = {}
    for part in parts:
        for key, state in part.merged.items():
            merged[key] = combine(merged[key], state) if key in merged else state
    return PreparedBatch({tag: reason for part in parts for tag, reason in part.poison.items()},
                         [parsed for part in parts for parsed in part.parsed], merged,
                         frozenset().union(*(part.numbers for part in parts)))
