"""Apply a batch of webhook events to calls, leads and statistics, in one transaction.

`process_batch` decides, per delivery, one of: applied (commit, then ack), dead letter
(a reason it can never be processed), or, by raising, that the whole batch is retried. It is
`prepare_batch` (parsing, no I/O) then `apply_batch` (the transaction), which a consumer may
call apart: one batch is parsed while another is applied.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from call_processor.calls import CallState, combine, contribution, is_inbound, merge
from call_processor.events import (
    CALL_EVENT_TYPES,
    PoisonMessage,
    WebhookEvent,
    archived_chatter,
    header_text,
    parse_event,
)
from call_processor.repository import (
    ORGANIZATIONS_BY_NUMBER,
    ORGANIZATIONS_BY_PHONE_NUMBER_ID,
    ORGANIZATIONS_BY_VAPI_ORG,
    ArchivedEvent,
    BreakdownDeltas,
    CallChange,
    CallRepository,
    StatsDelta,
)
from calltrail_common.topology import (
    HEADER_DEDUPE_KEY,
    HEADER_ENDPOINT_ID,
    HEADER_MESSAGE_TYPE,
    HEADER_ORG_ID,
    HEADER_RECEIVED_AT,
)

FOREIGN_CALL = "call id belongs to another organization"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One message as the consumer received it; `tag` tells deliveries apart (a redelivered
    message keeps its message id)."""

    tag: int
    message_id: str
    headers: Mapping[str, Any]
    body: bytes


@dataclass
class BatchOutcome:
    applied: list[int] = field(default_factory=list)  # delivery tags: committed, ack them
    dead: dict[int, str] = field(default_factory=dict)  # delivery tag -> reason
    unassigned: list[int] = field(default_factory=list)  # kept until a mapping matches


@dataclass(frozen=True, slots=True)
class _Parsed:
    delivery: Delivery
    event: WebhookEvent
    received_at: dt.datetime
    header_org: uuid.UUID | None


def _as_uuid(value: Any) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _received_at(headers: Mapping[str, Any]) -> dt.datetime:
    value = headers.get(HEADER_RECEIVED_AT)
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError, ValueError, OSError):  # NaN, past year 9999
            return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    return dt.datetime.now(dt.UTC)


async def _resolve(repo: CallRepository, items: Sequence[_Parsed]
                   ) -> dict[str, uuid.UUID | None]:
    """The organization of each event (contract section 5), by message id."""
    shared = [p for p in items if p.header_org is None]
    metadata_ids = {u for p in shared for i in p.event.routing.metadata_org_ids
                    if (u := _as_uuid(i)) is not None}
    known_orgs = await repo.existing_organizations(sorted(metadata_ids))
    by_phone_id = await repo.organizations_by(
        ORGANIZATIONS_BY_PHONE_NUMBER_ID,
        (p.event.routing.phone_number_id for p in shared if p.event.routing.phone_number_id))
    by_number = await repo.organizations_by(
        ORGANIZATIONS_BY_NUMBER,
        (p.event.routing.dialled_number for p in shared if p.event.routing.dialled_number))
    by_vapi_org = await repo.organizations_by(
        ORGANIZATIONS_BY_VAPI_ORG,
        (p.event.routing.vapi_org_id for p in shared if p.event.routing.vapi_org_id))
    resolved: dict[str, uuid.UUID | None] = {}
    for p in items:
        if p.header_org is not None:
            resolved[p.delivery.message_id] = p.header_org
            continue
        routing = p.event.routing
        candidates: list[uuid.UUID | None] = [
            u for i in routing.metadata_org_ids
            if (u := _as_uuid(i)) is not None and u in known_orgs]
        candidates += [by_phone_id.get(routing.phone_number_id or ""),
                       by_number.get(routing.dialled_number or ""),
                       by_vapi_org.get(routing.vapi_org_id or "")]
        resolved[p.delivery.message_id] = next((c for c in candidates if c is not None), None)
    return resolved


def _merged(state: CallState | None, call_id: str, org: uuid.UUID,
            observed: Sequence[tuple[uuid.UUID, CallState]]) -> CallState:
    """`state` with what this batch says for `org` (an event for another is dead-lettered)."""
    merged = state or CallState(call_id=call_id)
    for observed_org, observed_state in observed:
        if observed_org == org:
            merged = combine(merged, observed_state)
    return merged


async def _apply_to_calls(repo: CallRepository,
                          observed: Mapping[str, Sequence[tuple[uuid.UUID, CallState]]]
                          ) -> dict[str, CallChange]:
    """Lock the stored calls and merge into them; insert the others, merged, for the
    organization of their first event."""
    changes: dict[str, CallChange] = {}
    pending = list(observed)
    while pending:
        for call_id, row in (await repo.lock_calls(pending)).items():
            changes[call_id] = CallChange(row.org_id, row.state, _merged(
                row.state, call_id, row.org_id, observed[call_id]))
        new = {call_id: (observed[call_id][0][0], _merged(
                   None, call_id, observed[call_id][0][0], observed[call_id]))
               for call_id in pending if call_id not in changes}
        if not new:
            break
        for call_id in await repo.insert_calls(new):
            org, state = new[call_id]
            changes[call_id] = CallChange(org, None, state)
        pending = [call_id for call_id in new if call_id not in changes]  # inserted meanwhile
    return changes


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


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """Deliveries parsed at the edge: the poison among them, the events of the others, and
    what the events whose organization the endpoint decided say about each call, merged."""

    poison: Mapping[int, str]  # delivery tag -> reason
    parsed: Sequence[_Parsed]
    merged: Mapping[tuple[str, uuid.UUID], CallState]  # (call id, organization) -> state


def join_prepared(parts: Sequence[PreparedBatch]) -> PreparedBatch:
    """One batch of parts prepared one after the other."""
    merged: dict[tuple[str, uuid.UUID], CallState] = {}
    for part in parts:
        for key, state in part.merged.items():
            merged[key] = combine(merged[key], state) if key in merged else state
    return PreparedBatch({tag: reason for part in parts for tag, reason in part.poison.items()},
                         [parsed for part in parts for parsed in part.parsed], merged)


async def process_batch(connection: asyncpg.Connection, deliveries: Sequence[Delivery]
                        ) -> BatchOutcome:
    """Apply `deliveries` in one transaction; raise to have the whole batch retried."""
    return await apply_batch(connection, prepare_batch(deliveries))


def prepare_batch(deliveries: Sequence[Delivery]) -> PreparedBatch:
    poison: dict[int, str] = {}
    parsed: list[_Parsed] = []
    merged: dict[tuple[str, uuid.UUID], CallState] = {}
    for delivery in deliveries:
        header_org = _as_uuid(delivery.headers.get(HEADER_ORG_ID))
        header_type = header_text(delivery.headers.get(HEADER_MESSAGE_TYPE))
        try:
            if "\x00" in delivery.message_id:  # the archive's key: Postgres text refuses NUL
                raise PoisonMessage("message id holds NUL")
            if header_org is not None and header_type is not None \
                    and header_type not in CALL_EVENT_TYPES:
                event = archived_chatter(header_type,
                                         header_text(delivery.headers.get(HEADER_DEDUPE_KEY)))
            else:
                event = parse_event(delivery.body, route=header_org is None)
        except PoisonMessage as reason:
            poison[delivery.tag] = str(reason)
            continue
        parsed.append(_Parsed(delivery, event, _received_at(delivery.headers), header_org))
        if header_org is not None and event.observation is not None:
            key = (event.observation.call_id, header_org)
            merged[key] = merge(merged.get(key) or CallState(call_id=key[0]), event.observation)
    return PreparedBatch(poison, parsed, merged)


async def apply_batch(connection: asyncpg.Connection, batch: PreparedBatch) -> BatchOutcome:
    """Apply a prepared batch in one transaction (again, if it raised the time before)."""
    outcome = BatchOutcome(dead=dict(batch.poison))
    parsed = batch.parsed
    if not parsed:
        return outcome

    async with connection.transaction():
        repo = CallRepository(connection)
        orgs = await _resolve(repo, parsed)
        if any(org is None for org in orgs.values()):
            # Unmatched: look again under the assignment lock before keeping them aside.
            await repo.hold_assignment_lock()
            orgs.update(await _resolve(repo, [p for p in parsed
                                              if orgs[p.delivery.message_id] is None]))

        # Calls: lock or insert every touched row, merge all of this batch's observations.
        # (in the order of each call's first event: the first one's organization claims it)
        observed: dict[str, list[tuple[uuid.UUID, CallState]]] = defaultdict(list)
        taken: set[tuple[str, uuid.UUID]] = set()
        for p in parsed:
            org, observation = orgs[p.delivery.message_id], p.event.observation
            if org is None or observation is None:
                continue
            call_id = observation.call_id
            if p.header_org is None:
                observed[call_id].append((org, merge(CallState(call_id=call_id), observation)))
            elif (call_id, org) not in taken:
                taken.add((call_id, org))
                observed[call_id].append((org, batch.merged[(call_id, org)]))
        changes = await _apply_to_calls(repo, observed)
        for p in parsed:
            org, observation = orgs[p.delivery.message_id], p.event.observation
            if org is not None and observation is not None \
                    and changes[observation.call_id].org_id != org:
                outcome.dead[p.delivery.tag] = FOREIGN_CALL

        archived: dict[str, ArchivedEvent] = {}  # by message id: a redelivery is one event
        unassigned_rows = []
        for p in parsed:
            message_id = p.delivery.message_id
            if p.delivery.tag in outcome.dead:
                continue
            org = orgs[message_id]
            if org is None:
                outcome.unassigned.append(p.delivery.tag)
            else:
                outcome.applied.append(p.delivery.tag)
            if message_id in archived:
                continue
            archived[message_id] = ArchivedEvent(
                message_id, org, p.received_at, p.event.message_type, p.event.call_id,
                header_text(p.delivery.headers.get(HEADER_DEDUPE_KEY)),
                header_text(p.delivery.headers.get(HEADER_ENDPOINT_ID)), p.delivery.body)
            if org is None:
                routing = p.event.routing
                unassigned_rows.append((message_id, p.received_at, routing.phone_number_id,
                                        routing.dialled_number, routing.vapi_org_id,
                                        list(routing.metadata_org_ids)))
        await repo.archive(list(archived.values()))
        await repo.keep_unassigned(unassigned_rows)
        await repo.forget_unassigned([m for m, e in archived.items() if e.org_id is not None])

        await repo.save_calls([c for c in changes.values()
                               if c.before is not None and not _unchanged(c.before, c.after)])

        deltas: dict[tuple[uuid.UUID, dt.date], StatsDelta] = defaultdict(StatsDelta)
        breakdowns = BreakdownDeltas()
        callers: set[tuple[uuid.UUID, str]] = set()
        inbound_callers: set[tuple[uuid.UUID, str]] = set()
        relinked: list[str] = []
        for call_id, change in changes.items():
            org, old, state = change.org_id, change.before, change.after
            for part, sign in ((contribution(old), -1), (contribution(state), 1)):
                if part is not None:
                    deltas[(org, part.day)].add(part if sign > 0 else part.negated())
            breakdowns.add(org, old, -1)
            breakdowns.add(org, state, 1)
            if old is not None and not _changed(old, state, _LEAD_FIELDS):
                continue  # its lead and its link are as they were
            number = state.get("customer_number")
            if number and number.startswith("+"):
                callers.add((org, number))
                relinked.append(call_id)
                if is_inbound(state):
                    inbound_callers.add((org, number))
            old_number = old.get("customer_number") if old is not None else None
            if old_number and old_number != number and old_number.startswith("+"):
                callers.add((org, old_number))  # its old lead loses this call
        for org, old_first, new_first in await repo.refresh_leads(inbound_callers, callers,
                                                                  relinked):
            if old_first is not None:
                deltas[(org, old_first.astimezone(dt.UTC).date())].new_leads -= 1
            if new_first is not None:
                deltas[(org, new_first.astimezone(dt.UTC).date())].new_leads += 1
        await repo.add_to_daily_stats(deltas)
        await repo.add_to_breakdowns(breakdowns)
    return outcome
