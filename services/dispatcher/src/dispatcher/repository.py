"""The dispatcher's SQL, each statement named (decision 40).

It reads the outbox the processor writes (`outbound_events`, `outbound_deliveries`) and the
endpoints the management screens write (`outbound_endpoints`), and writes what is its own:
a delivery's `queued_at` (published) and its log (attempts, the last attempt's status,
error and latency, its state), and an endpoint's health (`last_success_at`,
`failing_since`, and `disabled_*` when it has been failing too long).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg

from dispatcher.attempts import DeliveryUpdate, EndpointHealth

# -- the relay ---------------------------------------------------------------------------

# The oldest deliveries nobody published yet (the partial index outbound_deliveries_unqueued),
# locked until the transaction ends; rows another replica holds are skipped, not waited for.
CLAIM_UNQUEUED = """
SELECT d.id, d.endpoint_id, d.event_id, d.created_at, e.type, e.occurred_at,
       e.data::text AS data
FROM outbound_deliveries AS d
JOIN outbound_events AS e ON e.id = d.event_id
WHERE d.queued_at IS NULL
ORDER BY d.created_at
LIMIT $1
FOR UPDATE OF d SKIP LOCKED
"""

MARK_QUEUED = """
UPDATE outbound_deliveries SET queued_at = now() WHERE id = ANY($1::uuid[])
"""


@dataclass(frozen=True, slots=True)
class Unqueued:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    created_at: dt.datetime
    event_type: str
    occurred_at: dt.datetime
    data_json: str


async def claim_unqueued(connection: asyncpg.Connection, limit: int) -> list[Unqueued]:
    """Inside a transaction: the rows stay locked until it ends."""
    rows = await connection.fetch(CLAIM_UNQUEUED, limit)
    return [Unqueued(r["id"], r["endpoint_id"], r["event_id"], r["created_at"], r["type"],
                     r["occurred_at"], r["data"]) for r in rows]


async def mark_queued(connection: asyncpg.Connection, ids: Sequence[uuid.UUID]) -> None:
    await connection.execute(MARK_QUEUED, list(ids))


# -- the endpoints -----------------------------------------------------------------------

ENDPOINT = """
SELECT id, url, secret, disabled_at IS NOT NULL AS disabled
FROM outbound_endpoints WHERE id = $1
"""


@dataclass(frozen=True, slots=True)
class EndpointRow:
    endpoint_id: uuid.UUID
    url: str
    secret: str
    disabled: bool


async def endpoint(connection: asyncpg.Connection, endpoint_id: uuid.UUID) -> EndpointRow | None:
    row = await connection.fetchrow(ENDPOINT, endpoint_id)
    if row is None:
        return None
    return EndpointRow(row["id"], row["url"], row["secret"], row["disabled"])


# -- what the attempts did ---------------------------------------------------------------

# The log of each delivery: attempts counted, the last attempt's fields (a skip leaves them),
# the state. A failure of a copy published twice never undoes a success: only "send again"
# makes a succeeded delivery pending, and that is the management screens' statement.
RECORD_DELIVERIES = """
UPDATE outbound_deliveries AS d SET
    attempts = d.attempts + o.attempts,
    last_attempt_at = CASE WHEN o.attempts > 0 THEN o.at ELSE d.last_attempt_at END,
    last_status = CASE WHEN o.attempts > 0 THEN o.status ELSE d.last_status END,
    last_error = CASE WHEN o.attempts > 0 THEN o.error ELSE d.last_error END,
    last_latency_ms = CASE WHEN o.attempts > 0 THEN o.latency_ms ELSE d.last_latency_ms END,
    state = CASE WHEN d.state = 'succeeded' THEN d.state ELSE o.state END,
    delivered_at = CASE WHEN o.state = 'succeeded' AND d.state <> 'succeeded' THEN o.at
                        ELSE d.delivered_at END
FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::int[], $5::text[], $6::int[],
            $7::text[]) AS o(id, attempts, at, status, error, latency_ms, state)
WHERE d.id = o.id
"""

# Two replicas' batches may name the same endpoints: each locks them in one order first.
LOCK_ENDPOINTS = """
SELECT id FROM outbound_endpoints WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
"""

# An endpoint is failing since the first failure after its last success: the earliest of
# the stored and the batch's first failures that came after the latest success either knows.
# Written against the row as it is when updated (another replica may have just written it).
RECORD_ENDPOINT_HEALTH = """
UPDATE outbound_endpoints AS e SET
    last_success_at = GREATEST(e.last_success_at, h.last_success),
    failing_since = LEAST(
        CASE WHEN e.failing_since > COALESCE(GREATEST(e.last_success_at, h.last_success),
                                             '-infinity') THEN e.failing_since END,
        CASE WHEN h.failing_from > COALESCE(GREATEST(e.last_success_at, h.last_success),
                                            '-infinity') THEN h.failing_from END)
FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[])
    AS h(id, last_success, failing_from)
WHERE e.id = h.id
"""

# Failing without a success for longer than WEBHOOKS_DISABLE_AFTER_HOURS: disabled, which
# the settings page shows as a notice; its deliveries are skipped from now on.
DISABLE_FAILING = """
UPDATE outbound_endpoints SET disabled_at = now(), disabled_reason = 'failing'
WHERE id = ANY($1::uuid[]) AND disabled_at IS NULL
  AND failing_since < now() - make_interval(secs => $2)
RETURNING id
"""


async def record(connection: asyncpg.Connection, deliveries: Sequence[DeliveryUpdate],
                 health: Sequence[EndpointHealth], disable_after_seconds: float
                 ) -> list[uuid.UUID]:
    """Write a batch's outcomes in one transaction; the endpoints it disabled."""
    async with connection.transaction():
        if deliveries:
            await connection.execute(
                RECORD_DELIVERIES, [u.delivery_id for u in deliveries],
                [u.attempts for u in deliveries], [u.at for u in deliveries],
                [u.status for u in deliveries], [u.error for u in deliveries],
                [u.latency_ms for u in deliveries], [str(u.state) for u in deliveries])
        if not health:
            return []
        ids = [h.endpoint_id for h in health]
        await connection.execute(LOCK_ENDPOINTS, ids)
        await connection.execute(RECORD_ENDPOINT_HEALTH, ids,
                                 [h.last_success for h in health],
                                 [h.failing_from for h in health])
        failing = [h.endpoint_id for h in health if h.failing_from is not None]
        if not failing:
            return []
        rows = await connection.fetch(DISABLE_FAILING, failing, disable_after_seconds)
        return [row["id"] for row in rows]
