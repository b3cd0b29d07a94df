"""Apply a batch of webhook events to calls, leads and daily figures, in one transaction.

`deliveries.prepare_batch` parses the deliveries (no I/O) and `apply_batch` applies them;
a consumer calls them apart, so one batch is parsed while others are applied. `apply_batch`
decides, per delivery, one of: applied (commit, then ack), kept aside as unassigned
(commit, then ack), dead letter (a reason it can never be processed), or, by raising, that
the whole batch is retried. `process_batch` is both, for tests and tools.

A batch, in steps (`_apply`): find each event's organization (the endpoint's, or on the
shared endpoint by `calltrail_common.attribution`, else why it has none); lock the stored calls it
names and merge what it says into them; refuse events about another organization's call;
archive the events (or keep them aside); read the zones its organizations' figures count
by (locked against their rebuild, decision 45); write it all in one statement; refresh the leads
whose calls changed; record the outbound events that endpoints want (the outbox, decision
40). The rules of each step are pure (`call_processor.changes`, `call_processor.outbound`);
the SQL is `call_processor.repository`'s.

`record_closed_days` is the periodic job's: each organization's `usage.day_closed`.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import asyncpg

from call_processor.changes import (
    CallChange,
    archive_events,
    batch_write,
    call_changes,
    caller_number,
    foreign_calls,
    lead_callers,
    observed_calls,
    unarchived_calls,
)
from call_processor.deliveries import (
    BatchOutcome,
    Delivery,
    Parsed,
    PreparedBatch,
    prepare_batch,
)
from call_processor.outbound import (
    LEAD_CREATED,
    LEAD_UPDATED,
    call_events,
    candidate_days,
    day_closed_event,
    lead_events,
)
from call_processor.repository import (
    CallRepository,
    CallsInsertedMeanwhile,
    NumbersBusy,
    open_day_figures,
    open_days,
    record_outbound,
)
from calltrail_common.attribution import Attribution, attribute
from calltrail_common.logging import get_logger

log = get_logger("call_processor")

FOREIGN_CALL = "call id belongs to another organization"
# A batch starts over when another transaction got in its way (NumbersBusy,
# CallsInsertedMeanwhile); that takes a replica and a batch in flight racing on one caller,
# which partitions make rare. Past this many, it is left to the consumer's retries.
_ATTEMPTS = 20


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
    found = await _organizations(repo, batch.parsed)
    orgs = {message_id: a.org_id for message_id, a in found.items()}
    changes = await _lock_and_merge(repo, batch, orgs, numbers_locked)
    _refuse_foreign_calls(batch.parsed, orgs, changes, outcome)
    archived, unassigned = archive_events(
        batch.parsed, orgs, outcome,
        {message_id: a.reason for message_id, a in found.items() if a.reason is not None},
        unarchived_calls(changes))
    new_inbound, callers = lead_callers(changes.values())
    zones = await repo.figures_zones(c.org_id for c in changes.values())
    wanted = await repo.write(batch_write(changes, archived, unassigned, new_inbound, shard,
                                          zones))
    leads = await repo.refresh_leads(callers, shard, wanted.wanting(LEAD_CREATED, LEAD_UPDATED))
    # The outbox: a round trip only when an endpoint may want one of these.
    events = [*call_events(changes.values(), wanted), *lead_events(leads, wanted)]
    if events:
        await repo.record_outbound(events)
    outcome.changed = [(change.org_id, call_id) for call_id, change in changes.items()
                       if change.after != change.before]
    return outcome


async def _organizations(repo: CallRepository, parsed: Sequence[Parsed]
                         ) -> dict[str, Attribution]:
    """The organization of each event, or why it has none (contract section 5), by message
    id."""
    found = await _resolve(repo, parsed)
    if any(a.org_id is None for a in found.values()):
        # Unmatched: look again under the assignment lock before keeping them aside.
        await repo.hold_assignment_lock()
        found.update(await _resolve(repo, [p for p in parsed
                                           if found[p.delivery.message_id].org_id is None]))
    return found


async def _resolve(repo: CallRepository, items: Sequence[Parsed]) -> dict[str, Attribution]:
    """The endpoint's organization as it is; on the shared endpoint, the rule of
    `calltrail_common.attribution` over what the database holds about the events' keys."""
    resolved = {p.delivery.message_id: Attribution(p.header_org)
                for p in items if p.header_org is not None}
    shared = [p for p in items if p.header_org is None]
    if not shared:
        return resolved
    known = await repo.known([p.event.routing for p in shared])
    for p in shared:
        resolved[p.delivery.message_id] = attribute(p.event.routing, known)
    return resolved


async def _lock_and_merge(repo: CallRepository, batch: PreparedBatch,
                          orgs: dict[str, uuid.UUID | None], numbers_locked: set[str]
                          ) -> dict[str, CallChange]:
    """Lock the stored calls the batch names (and the numbers of their callers it did not
    lock yet: `NumbersBusy` if one is held), and each call's state before and after."""
    observed = observed_calls(batch, orgs)
    stored = await repo.lock_calls(observed)
    stored_numbers = {n for s in stored.values() if (n := caller_number(s.state))}
    if stored_numbers - numbers_locked:
        await repo.try_lock_numbers(stored_numbers - numbers_locked)
    return call_changes(observed, stored)


def _refuse_foreign_calls(parsed: Sequence[Parsed], orgs: dict[str, uuid.UUID | None],
                          changes: dict[str, CallChange], outcome: BatchOutcome) -> None:
    """Dead-letter each event about another organization's call; a snapshot of one is left
    out of its bundle, whose other calls are applied."""
    for p in foreign_calls(parsed, orgs, changes):
        if p.in_bundle:
            log.warning("snapshot_of_foreign_call", message_id=p.delivery.message_id)
        else:
            outcome.dead[p.delivery.tag] = FOREIGN_CALL


async def record_closed_days(connection: asyncpg.Connection) -> int:
    """Record `usage.day_closed` for every day an endpoint wants closed and that is not
    yet (`outbound.days_to_close`); replicas may race: the second records nothing. How
    many days were found open."""
    since, now, zones = await open_days(connection)
    days = candidate_days(since, now, zones)
    if not days:
        return 0
    figures = await open_day_figures(connection, days)
    await record_outbound(connection, [day_closed_event(org, day, day_figures, markup,
                                                        zones.get(org, dt.UTC))
                                       for org, day, day_figures, markup in figures])
    return len(figures)
