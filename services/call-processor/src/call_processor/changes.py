"""What a batch changes, as values: each call's state before and after, the events to
archive or keep aside, the leads to create and refresh, and the one write that does it all
(`BatchWrite`, which `repository.CallRepository.write` sends as one statement). Pure: the
handler (`handlers.apply_batch`) reads the stored calls, these rules decide, the repository
writes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from call_processor.calls import CALL_FIELDS, CallState, combine, is_inbound, merge
from call_processor.deliveries import BatchOutcome, Parsed, PreparedBatch
from call_processor.figures import DailyFigures
from calltrail_common.attribution import NO_MATCH
from calltrail_common.erasure import ERASED_NUMBER_PREFIX

Caller = tuple[uuid.UUID, str]  # (organization, E.164 number)


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    message_id: str
    org_id: uuid.UUID | None
    received_at: dt.datetime
    message_type: str
    call_id: str | None
    dedupe_key: str | None
    endpoint_id: str | None
    body: bytes


@dataclass(frozen=True, slots=True)
class UnassignedEvent:
    message_id: str
    received_at: dt.datetime
    phone_number_id: str | None
    dialled_number: str | None
    vapi_org_id: str | None
    metadata_org_ids: tuple[str, ...]
    reason: str  # why it has no organization (calltrail_common.attribution)


@dataclass(frozen=True, slots=True)
class StoredCall:
    org_id: uuid.UUID
    state: CallState


@dataclass(frozen=True, slots=True)
class CallChange:
    """A call's state before and after this batch, and the organization that owns it."""

    org_id: uuid.UUID
    before: CallState | None  # None: not stored before this batch
    after: CallState


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """Everything `WRITE_BATCH` does for one batch."""

    new_calls: Sequence[CallChange]
    saved_calls: Sequence[CallChange]
    new_inbound_callers: Sequence[tuple[uuid.UUID, str]]  # leads to create
    lead_numbers: Sequence[tuple[uuid.UUID, str]]  # the numbers of the calls written
    archived: Sequence[ArchivedEvent]
    unassigned: Sequence[UnassignedEvent]
    assigned: Sequence[str]  # message ids no longer unassigned
    figures: DailyFigures
    shard: int
    orgs: Sequence[uuid.UUID] = ()  # the organizations of its calls (outbound.Subscriptions)
    # Calls deleted by this batch: their archived events and outbound events go.
    gone_calls: Sequence[tuple[uuid.UUID, str]] = ()


def caller_number(state: CallState | None) -> str | None:
    """The number of the call's caller (E.164), or the pseudonym of an erased caller's lead
    (`calltrail_common.erasure`), which keeps the call linked to that lead."""
    number = state.get("customer_number") if state is not None else None
    return number if isinstance(number, str) and number.startswith(("+", ERASED_NUMBER_PREFIX)) \
        else None


def observed_calls(batch: PreparedBatch, orgs: Mapping[str, uuid.UUID | None]
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


def call_changes(observed: Mapping[str, Sequence[tuple[uuid.UUID, CallState]]],
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


def foreign_calls(parsed: Sequence[Parsed], orgs: Mapping[str, uuid.UUID | None],
                  changes: Mapping[str, CallChange]) -> list[Parsed]:
    """The events about a call that another organization owns (contract section 5: never
    merged across organizations)."""
    foreign = []
    for p in parsed:
        org, observation = orgs[p.delivery.message_id], p.event.observation
        if org is not None and observation is not None \
                and changes[observation.call_id].org_id != org:
            foreign.append(p)
    return foreign


def unarchived_calls(changes: Mapping[str, CallChange]) -> frozenset[str]:
    """The calls whose events the archive no longer keeps: deleted ones, and those whose
    caller was erased (their raw events hold what was erased)."""
    return frozenset(call_id for call_id, change in changes.items()
                     if change.after.deleted or "customer_number" in change.after.withheld)


def archive_events(parsed: Sequence[Parsed], orgs: Mapping[str, uuid.UUID | None],
                   outcome: BatchOutcome, reasons: Mapping[str, str] | None = None,
                   unarchived: frozenset[str] = frozenset()
                   ) -> tuple[dict[str, ArchivedEvent], list[UnassignedEvent]]:
    """Every event not dead-lettered, once per message id (a redelivery is one event), and
    those without an organization, to keep aside with the reason (`reasons`, by message
    id); the outcome of each delivery. An event of one of the `unarchived` calls of its
    organization is applied and not archived."""
    archived: dict[str, ArchivedEvent] = {}
    unassigned: list[UnassignedEvent] = []
    for p in parsed:
        message_id = p.delivery.message_id
        if p.delivery.tag in outcome.dead or p.in_bundle:
            continue
        org = orgs[message_id]
        (outcome.applied if org is not None else outcome.unassigned).append(p.delivery.tag)
        if message_id in archived or (org is not None and p.event.call_id in unarchived):
            continue
        envelope = p.delivery.envelope
        archived[message_id] = ArchivedEvent(
            message_id, org, envelope.received_at, p.event.message_type, p.event.call_id,
            envelope.dedupe_key, envelope.endpoint_id, p.delivery.body)
        if org is None:
            routing = p.event.routing
            unassigned.append(UnassignedEvent(
                message_id, envelope.received_at, routing.phone_number_id,
                routing.dialled_number, routing.vapi_org_id, routing.metadata_org_ids,
                (reasons or {}).get(message_id, NO_MATCH)))
    return archived, unassigned


# What a call's lead and its link to it are computed from (repository.REFRESH_LEADS).
_LEAD_FIELDS = ("direction", "created_at", "started_at", "customer_number", "customer_name",
                "customer_email", "structured_data", "structured_outputs")


def _replaced(before: CallState, after: CallState, names: Iterable[str]) -> bool:
    """Whether `merge` replaced any of these fields (it keeps the very value otherwise)."""
    return any(after.values.get(name) is not before.values.get(name) for name in names)


def is_unchanged(before: CallState, after: CallState) -> bool:
    """Whether the batch left the call as it was stored (it is then not written)."""
    return (before.deleted == after.deleted and before.status == after.status
            and before.report_received == after.report_received
            and before.last_event_ms == after.last_event_ms
            and before.versions == after.versions and not _replaced(before, after, after.values))


def lead_callers(changes: Iterable[CallChange]) -> tuple[set[Caller], set[Caller]]:
    """(inbound callers that may need a lead created, callers whose lead to recompute)."""
    new_inbound: set[Caller] = set()
    callers: set[Caller] = set()
    for change in changes:
        org, old, state = change.org_id, change.before, change.after
        if old is not None and not _replaced(old, state, _LEAD_FIELDS):
            continue  # its lead and its link are as they were
        number = caller_number(state)
        if number:
            callers.add((org, number))
            if is_inbound(state):
                new_inbound.add((org, number))
        old_number = caller_number(old)
        if old_number and old_number != number:
            callers.add((org, old_number))  # its old lead loses this call
    return new_inbound, callers


def changed_mask(change: CallChange) -> int:
    """Bit i set when CALL_FIELDS[i] changed (`merge` keeps the very value otherwise)."""
    assert change.before is not None
    mask = 0
    for bit, name in enumerate(CALL_FIELDS):
        if change.after.values.get(name) is not change.before.values.get(name):
            mask |= 1 << bit
    return mask


def batch_write(changes: Mapping[str, CallChange], archived: Mapping[str, ArchivedEvent],
                unassigned: Sequence[UnassignedEvent], new_inbound: Iterable[Caller],
                shard: int, zones: Mapping[uuid.UUID, dt.tzinfo] | None = None) -> BatchWrite:
    """The one write of a batch: new calls inserted, changed ones saved, leads for new
    inbound callers, the events archived or kept aside, and the daily figures' deltas, on
    each organization's day (`zones`: the zone its figures count by; UTC when missing)."""
    figures = DailyFigures()
    for change in changes.values():
        figures.add_change(change.org_id, change.before, change.after,
                           (zones or {}).get(change.org_id, dt.UTC))
    return BatchWrite(
        new_calls=[c for c in changes.values() if c.before is None],
        saved_calls=[c for c in changes.values()
                     if c.before is not None and not is_unchanged(c.before, c.after)],
        new_inbound_callers=sorted(new_inbound),
        lead_numbers=[(c.org_id, n) for c in changes.values()
                      if (n := caller_number(c.after))],
        archived=list(archived.values()),
        unassigned=unassigned,
        assigned=[m for m, e in archived.items() if e.org_id is not None],
        figures=figures,
        shard=shard,
        orgs=sorted({c.org_id for c in changes.values()}),
        gone_calls=sorted((c.org_id, c.after.call_id) for c in changes.values()
                          if c.after.deleted and (c.before is None or not c.before.deleted)),
    )
