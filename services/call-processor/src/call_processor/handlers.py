"""Apply a batch of webhook events to calls, leads and statistics, in one transaction.

`process_batch` decides, per delivery, one of: applied (commit, then ack), dead letter
(a reason it can never be processed), or, by raising, that the whole batch is retried.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from call_processor.calls import CallState, contribution, is_inbound, merge, stats_day
from call_processor.events import (
    CALL_EVENT_TYPES,
    PoisonMessage,
    WebhookEvent,
    archived_chatter,
    parse_event,
)
from call_processor.repository import (
    ORGANIZATIONS_BY_NUMBER,
    ORGANIZATIONS_BY_PHONE_NUMBER_ID,
    ORGANIZATIONS_BY_VAPI_ORG,
    ArchivedEvent,
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


async def process_batch(connection: asyncpg.Connection, deliveries: Sequence[Delivery]
                        ) -> BatchOutcome:
    """Apply `deliveries` in one transaction; raise to have the whole batch retried."""
    outcome = BatchOutcome()
    parsed: list[_Parsed] = []
    for delivery in deliveries:
        header_org = _as_uuid(delivery.headers.get(HEADER_ORG_ID))
        header_type = delivery.headers.get(HEADER_MESSAGE_TYPE)
        try:
            if header_org is not None and isinstance(header_type, str) and header_type \
                    and header_type not in CALL_EVENT_TYPES:
                event = archived_chatter(header_type, delivery.headers.get(HEADER_DEDUPE_KEY))
            else:
                event = parse_event(delivery.body, route=header_org is None)
        except PoisonMessage as poison:
            outcome.dead[delivery.tag] = str(poison)
            continue
        parsed.append(_Parsed(delivery, event, _received_at(delivery.headers), header_org))
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

        # Calls: claim and lock every touched row, merge all of this batch's observations.
        claims: dict[str, uuid.UUID] = {}
        for p in parsed:
            org = orgs[p.delivery.message_id]
            if org is not None and p.event.observation is not None:
                claims.setdefault(p.event.observation.call_id, org)
        stored = await repo.lock_calls(claims) if claims else {}
        before: dict[str, CallState | None] = {}
        after: dict[str, CallState] = {}
        for p in parsed:
            org, observation = orgs[p.delivery.message_id], p.event.observation
            if org is None or observation is None:
                continue
            row = stored[observation.call_id]
            if row.org_id != org:
                outcome.dead[p.delivery.tag] = FOREIGN_CALL
                continue
            if observation.call_id not in after:
                before[observation.call_id] = row.state
                after[observation.call_id] = row.state or CallState(call_id=observation.call_id)
            after[observation.call_id] = merge(after[observation.call_id], observation)

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
                p.delivery.headers.get(HEADER_DEDUPE_KEY),
                p.delivery.headers.get(HEADER_ENDPOINT_ID), p.delivery.body)
            if org is None:
                routing = p.event.routing
                unassigned_rows.append((message_id, p.received_at, routing.phone_number_id,
                                        routing.dialled_number, routing.vapi_org_id,
                                        list(routing.metadata_org_ids)))
        await repo.archive(list(archived.values()))
        await repo.keep_unassigned(unassigned_rows)
        await repo.forget_unassigned([m for m, e in archived.items() if e.org_id is not None])

        days = {call_id: stats_day(state) for call_id, state in after.items()}
        await repo.save_calls(list(after.values()), days)

        deltas: dict[tuple[uuid.UUID, dt.date], StatsDelta] = defaultdict(StatsDelta)
        callers: set[tuple[uuid.UUID, str]] = set()
        inbound_callers: set[tuple[uuid.UUID, str]] = set()
        for call_id, state in after.items():
            org = stored[call_id].org_id
            for part, sign in ((contribution(before[call_id]), -1), (contribution(state), 1)):
                if part is not None:
                    deltas[(org, part.day)].add(part if sign > 0 else part.negated())
            number = state.get("customer_number")
            if number and number.startswith("+"):
                callers.add((org, number))
                if is_inbound(state):
                    inbound_callers.add((org, number))
            old = before[call_id]
            old_number = old.get("customer_number") if old is not None else None
            if old_number and old_number != number and old_number.startswith("+"):
                callers.add((org, old_number))  # its old lead loses this call
        for org, old_first, new_first in await repo.refresh_leads(inbound_callers, callers):
            if old_first is not None:
                deltas[(org, old_first.astimezone(dt.UTC).date())].new_leads -= 1
            if new_first is not None:
                deltas[(org, new_first.astimezone(dt.UTC).date())].new_leads += 1
        await repo.add_to_daily_stats(deltas)
    return outcome
