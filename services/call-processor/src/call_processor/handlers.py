"""Apply a batch of webhook events to calls, leads and daily figures, in one transaction.

`prepare_batch` parses the deliveries (no I/O) and `apply_batch` applies them; a consumer
calls them apart, so one batch is parsed while others are applied. `apply_batch` decides,
per delivery, one of: applied (commit, then ack), kept aside as unassigned (commit, then
ack), dead letter (a reason it can never be processed), or, by raising, that the whole
batch is retried. `process_batch` is both, for tests and tools.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from call_processor.calls import CallState, combine, is_inbound, merge
from call_processor.events import (
    CALL_EVENT_TYPES,
    NO_ROUTING,
    PoisonMessage,
    WebhookEvent,
    archived_chatter,
    parse_event,
    parse_snapshot_bundle,
)
from call_processor.figures import DailyFigures
from call_processor.repository import (
    ArchivedEvent,
    BatchWrite,
    CallChange,
    CallRepository,
    CallsInsertedMeanwhile,
    NumbersBusy,
    StoredCall,
    UnassignedEvent,
)
from calltrail_common.envelope import CALL_SNAPSHOTS, EventEnvelope
from calltrail_common.logging import get_logger

log = get_logger("call_processor")

FOREIGN_CALL = "call id belongs to another organization"
# A batch starts over when another transaction got in its way (NumbersBusy,
# CallsInsertedMeanwhile); that takes a replica and a batch in flight racing on one caller,
# which partitions make rare. Past this many, it is left to the consumer's retries.
_ATTEMPTS = 20


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
    applied: list[int] = field(default_factory=list)  # delivery tags: committed, ack them
    dead: dict[int, str] = field(default_factory=dict)  # delivery tag -> reason
    unassigned: list[int] = field(default_factory=list)  # kept until a mapping matches


@dataclass(frozen=True, slots=True)
class _Parsed:
    delivery: Delivery
    event: WebhookEvent
    header_org: uuid.UUID | None  # the organization the endpoint decided
    # One call snapshot of a bundle: applied, but archived and settled with its bundle (a
    # `_Parsed` of its own, without an observation).
    in_bundle: bool = False


def _as_uuid(value: object) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Deliveries parsed at the edge: the poison among them, the events of the others, what
    the events whose organization the endpoint decided say about each call (merged), and
    the callers' numbers the batch names."""

    poison: Mapping[int, str]  # delivery tag -> reason
    parsed: Sequence[_Parsed]
    merged: Mapping[tuple[str, uuid.UUID], CallState]  # (call id, organization) -> state
    numbers: frozenset[str]  # E.164 numbers the events name


def _caller_number(state: CallState | None) -> str | None:
    number = state.get("customer_number") if state is not None else None
    return number if isinstance(number, str) and number.startswith("+") else None


def prepare_batch(deliveries: Sequence[Delivery]) -> PreparedBatch:
    poison: dict[int, str] = {}
    parsed: list[_Parsed] = []
    merged: dict[tuple[str, uuid.UUID], CallState] = {}
    numbers: set[str] = set()
    for delivery in deliveries:
        envelope = delivery.envelope
        header_org = _as_uuid(envelope.org_id)
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
        parsed.append(_Parsed(delivery, event, header_org))
        parsed.extend(_Parsed(delivery, snapshot, header_org, in_bundle=True)
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


async def process_batch(connection: asyncpg.Connection, deliveries: Sequence[Delivery],
                        shard: int = 0) -> BatchOutcome:
    """Apply `deliveries` in one transaction; raise to have the whole batch retried."""
    return await apply_batch(connection, prepare_batch(deliveries), shard)


async def apply_batch(connection: asyncpg.Connection, batch: PreparedBatch, shard: int
                      ) -> BatchOutcome:
    """Apply a prepared batch in one transaction that adds to `shard`'s daily-figure rows
    (again, if it raised the time before). Concurrent callers must use distinct shards to
    never wait on each other; sharing one is correct, only slower."""
    if not batch.parsed:
        return BatchOutcome(dead=dict(batch.poison))
    numbers = set(batch.numbers)
    for attempt in range(1, _ATTEMPTS + 1):
        repo = CallRepository(connection)
        try:
            async with repo.transaction(shard, numbers):
                return await _apply(repo, batch, shard, numbers)
        except NumbersBusy as busy:
            numbers |= busy.numbers  # wait for them first, next time
        except CallsInsertedMeanwhile:
            pass
        if attempt == _ATTEMPTS:
            raise asyncpg.SerializationError(
                "the batch kept racing another transaction on the same calls")
    raise AssertionError("unreachable")


async def _apply(repo: CallRepository, batch: PreparedBatch, shard: int,
                 numbers_locked: set[str]) -> BatchOutcome:
    outcome = BatchOutcome(dead=dict(batch.poison))
    parsed = batch.parsed
    orgs = await _organizations(repo, parsed)
    observed = _observed(batch, orgs)
    stored = await repo.lock_calls(observed)
    stored_numbers = {n for s in stored.values() if (n := _caller_number(s.state))}
    if stored_numbers - numbers_locked:
        await repo.try_lock_numbers(stored_numbers - numbers_locked)
    changes = _changes(observed, stored)
    for p in parsed:
        org, observation = orgs[p.delivery.message_id], p.event.observation
        if org is not None and observation is not None \
                and changes[observation.call_id].org_id != org:
            if p.in_bundle:  # its bundle's other calls are applied; this one is left out
                log.warning("snapshot_of_foreign_call", message_id=p.delivery.message_id)
            else:
                outcome.dead[p.delivery.tag] = FOREIGN_CALL

    archived, unassigned = _archive(parsed, orgs, outcome)
    figures = DailyFigures()
    for change in changes.values():
        figures.add_change(change.org_id, change.before, change.after)
    new_inbound, callers = _callers(changes.values())
    await repo.write(BatchWrite(
        new_calls=[c for c in changes.values() if c.before is None],
        saved_calls=[c for c in changes.values()
                     if c.before is not None and not _unchanged(c.before, c.after)],
        new_inbound_callers=sorted(new_inbound),
        lead_numbers=[(c.org_id, n) for c in changes.values()
                      if (n := _caller_number(c.after))],
        archived=list(archived.values()),
        unassigned=unassigned,
        assigned=[m for m, e in archived.items() if e.org_id is not None],
        figures=figures,
        shard=shard,
    ))
    if callers:
        await repo.refresh_leads(callers, shard)
    return outcome


async def _organizations(repo: CallRepository, parsed: Sequence[_Parsed]
                         ) -> dict[str, uuid.UUID | None]:
    """The organization of each event (contract section 5), by message id."""
    orgs = await _resolve(repo, parsed)
    if any(org is None for org in orgs.values()):
        # Unmatched: look again under the assignment lock before keeping them aside.
        await repo.hold_assignment_lock()
        orgs.update(await _resolve(repo, [p for p in parsed
                                          if orgs[p.delivery.message_id] is None]))
    return orgs


async def _resolve(repo: CallRepository, items: Sequence[_Parsed]
                   ) -> dict[str, uuid.UUID | None]:
    resolved: dict[str, uuid.UUID | None] = {
        p.delivery.message_id: p.header_org for p in items if p.header_org is not None}
    shared = [p for p in items if p.header_org is None]
    if not shared:
        return resolved
    routings = [p.event.routing for p in shared]
    found = await repo.resolve(
        [u for r in routings for i in r.metadata_org_ids if (u := _as_uuid(i)) is not None],
        [r.phone_number_id for r in routings if r.phone_number_id],
        [r.dialled_number for r in routings if r.dialled_number],
        [r.vapi_org_id for r in routings if r.vapi_org_id])
    for p in shared:
        routing = p.event.routing
        candidates = [found.get(("org", str(u))) for i in routing.metadata_org_ids
                      if (u := _as_uuid(i)) is not None]
        candidates += [found.get(("phone_number_id", routing.phone_number_id or "")),
                       found.get(("number", routing.dialled_number or "")),
                       found.get(("vapi_org", routing.vapi_org_id or ""))]
        resolved[p.delivery.message_id] = next((c for c in candidates if c is not None), None)
    return resolved


def _observed(batch: PreparedBatch, orgs: Mapping[str, uuid.UUID | None]
              ) -> dict[str, list[tuple[uuid.UUID, CallState]]]:
    """What the batch says about each call, for each organization that says it, in the
    order of each call's first event (the first one's organization claims a new call)."""
    observed: dict[str, list[tuple[uuid.UUID, CallState]]] = defaultdict(list)
    taken: set[tuple[str, uuid.UUID]] = set()
    for p in batch.parsed:
        org, observation = orgs[p.delivery.message_id], p.event.observation
        if org is None or observation is None:
            continue
        call_id = observation.call_id
        if p.header_org is None:
            observed[call_id].append((org, merge(CallState(call_id=call_id), observation)))
        elif (call_id, org) not in taken:
            taken.add((call_id, org))
            observed[call_id].append((org, batch.merged[(call_id, org)]))
    return observed


def _merged(state: CallState | None, call_id: str, org: uuid.UUID,
            observed: Sequence[tuple[uuid.UUID, CallState]]) -> CallState:
    """`state` with what this batch says for `org` (an event for another is dead-lettered)."""
    merged = state or CallState(call_id=call_id)
    for observed_org, observed_state in observed:
        if observed_org == org:
            merged = combine(merged, observed_state)
    return merged


def _changes(observed: Mapping[str, Sequence[tuple[uuid.UUID, CallState]]],
             stored: Mapping[str, StoredCall]) -> dict[str, CallChange]:
    """Each call's state before and after the batch; a new one belongs to the
    organization of its first event."""
    changes: dict[str, CallChange] = {}
    for call_id, says in observed.items():
        row = stored.get(call_id)
        if row is not None:
            changes[call_id] = CallChange(row.org_id, row.state,
                                          _merged(row.state, call_id, row.org_id, says))
        else:
            org = says[0][0]
            changes[call_id] = CallChange(org, None, _merged(None, call_id, org, says))
    return changes


def _archive(parsed: Sequence[_Parsed], orgs: Mapping[str, uuid.UUID | None],
             outcome: BatchOutcome) -> tuple[dict[str, ArchivedEvent], list[UnassignedEvent]]:
    """Every event not dead-lettered, once per message id (a redelivery is one event), and
    those no organization matched, to keep aside; the outcome of each delivery."""
    archived: dict[str, ArchivedEvent] = {}
    unassigned: list[UnassignedEvent] = []
    for p in parsed:
        message_id = p.delivery.message_id
        if p.delivery.tag in outcome.dead or p.in_bundle:
            continue
        org = orgs[message_id]
        (outcome.applied if org is not None else outcome.unassigned).append(p.delivery.tag)
        if message_id in archived:
            continue
        envelope = p.delivery.envelope
        archived[message_id] = ArchivedEvent(
            message_id, org, envelope.received_at, p.event.message_type, p.event.call_id,
            envelope.dedupe_key, envelope.endpoint_id, p.delivery.body)
        if org is None:
            routing = p.event.routing
            unassigned.append(UnassignedEvent(
                message_id, envelope.received_at, routing.phone_number_id,
                routing.dialled_number, routing.vapi_org_id, routing.metadata_org_ids))
    return archived, unassigned


# What a call's lead and its link to it are computed from (repository.REFRESH_LEADS).
_LEAD_FIELDS = ("direction", "created_at", "started_at", "customer_number", "customer_name",
                "customer_email", "structured_data")


def _changed(before: CallState, after: CallState, names: Iterable[str]) -> bool:
    """Whether `merge` replaced any of these fields (it keeps the very value otherwise)."""
    return any(after.values.get(name) is not before.values.get(name) for name in names)


def _unchanged(before: CallState, after: CallState) -> bool:
    return (before.status == after.status and before.report_received == after.report_received
            and before.last_event_ms == after.last_event_ms
            and before.versions == after.versions and not _changed(before, after, after.values))


def _callers(changes: Iterable[CallChange]
             ) -> tuple[set[tuple[uuid.UUID, str]], set[tuple[uuid.UUID, str]]]:
    """(inbound callers that may need a lead created, callers whose lead to recompute)."""
    new_inbound: set[tuple[uuid.UUID, str]] = set()
    callers: set[tuple[uuid.UUID, str]] = set()
    for change in changes:
        org, old, state = change.org_id, change.before, change.after
        if old is not None and not _changed(old, state, _LEAD_FIELDS):
            continue  # its lead and its link are as they were
        number = _caller_number(state)
        if number:
            callers.add((org, number))
            if is_inbound(state):
                new_inbound.add((org, number))
        old_number = _caller_number(old)
        if old_number and old_number != number:
            callers.add((org, old_number))  # its old lead loses this call
    return new_inbound, callers
