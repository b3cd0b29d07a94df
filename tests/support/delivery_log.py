"""Rows of the outbound webhooks' outbox, written as the processor and the dispatcher would
leave them, so the management screens have a delivery log to show (decision 40). The
processor's and the dispatcher's own tests cover how they really get there."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg


async def insert_event(connection: asyncpg.Connection, org_id: uuid.UUID,
                       event_type: str = "call.ended", *,
                       occurred_at: datetime | None = None) -> uuid.UUID:
    event_id = uuid.uuid4()
    await connection.execute(
        """INSERT INTO outbound_events (id, org_id, type, occurred_at, data)
           VALUES ($1, $2, $3, coalesce($4, now()), '{}'::jsonb)""",
        event_id, org_id, event_type, occurred_at)
    return event_id


async def insert_delivery(connection: asyncpg.Connection, org_id: uuid.UUID,
                          endpoint_id: uuid.UUID, *, event_type: str = "call.ended",
                          state: str = "dead", created_at: datetime | None = None,
                          **fields: Any) -> uuid.UUID:
    """A delivery of a new event to the endpoint. By default one the dispatcher gave up
    on: dead after 9 attempts, the last a 503 in 812 ms; `fields` override any column."""
    created = created_at or datetime.now(UTC)
    event_id = await insert_event(connection, org_id, event_type, occurred_at=created)
    values: dict[str, Any] = {
        "id": uuid.uuid4(), "endpoint_id": endpoint_id, "event_id": event_id,
        "state": state, "created_at": created, "queued_at": created,
        "attempts": 9 if state == "dead" else (1 if state == "succeeded" else 0),
        "last_attempt_at": None if state in ("pending", "skipped")
        else created + timedelta(hours=20),
        "last_status": {"dead": 503, "succeeded": 200}.get(state),
        "last_error": "HTTP 503" if state == "dead" else None,
        "last_latency_ms": {"dead": 812, "succeeded": 95}.get(state),
        "delivered_at": created + timedelta(seconds=1) if state == "succeeded" else None,
    }
    values.update(fields)
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await connection.execute(
        f"INSERT INTO outbound_deliveries ({', '.join(columns)}) "  # noqa: S608 - test names
        f"VALUES ({placeholders})", *values.values())
    delivery_id: uuid.UUID = values["id"]
    return delivery_id
