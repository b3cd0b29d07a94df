"""The audit log: who connected or disconnected a Vapi key, made or revoked a token,
rotated a webhook secret, invited or removed a person, exported data, per organization.

An entry names its actor (`user:<email>`, `token:<prefix>`, `cli`) and its target by id or
prefix: never a secret, never a caller's personal data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

CLI = "cli"


@dataclass(frozen=True)
class Actor:
    label: str                      # what the log shows
    user_id: uuid.UUID | None = None


CLI_ACTOR = Actor(CLI)


def user_actor(user_id: uuid.UUID, email: str) -> Actor:
    return Actor(f"user:{email}", user_id)


def token_actor(prefix: str) -> Actor:
    return Actor(f"token:{prefix}")


@dataclass(frozen=True)
class Entry:
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


async def record(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID, actor: Actor,
                 action: str, target: str | None = None,
                 detail: dict[str, Any] | None = None) -> None:
    # Sent as text and parsed by Postgres: through the connections' jsonb codec the JSON
    # would be stored as one JSON string.
    await db.execute(
        """INSERT INTO audit_log (org_id, actor, actor_user_id, action, target, detail)
           VALUES ($1, $2, $3, $4, $5, $6::text::jsonb)""",
        org_id, actor.label, actor.user_id, action, target,
        orjson.dumps(detail or {}).decode())


async def entries(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID, limit: int = 50
                  ) -> list[Entry]:
    rows = await db.fetch(
        """SELECT at, actor, action, target, detail::text AS detail FROM audit_log
           WHERE org_id = $1 ORDER BY at DESC, id DESC LIMIT $2""", org_id, limit)
    return [Entry(r["at"], r["actor"], r["action"], r["target"], _detail(r["detail"]))
            for r in rows]


def _detail(text: str) -> dict[str, Any]:
    """An entry's detail; one written before `record` sent it as text is a JSON string
    holding the object."""
    detail = orjson.loads(text)
    return orjson.loads(detail) if isinstance(detail, str) else detail
