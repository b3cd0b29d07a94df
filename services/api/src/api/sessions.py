"""Dashboard sessions, kept server-side (table `sessions`). The cookie holds a random id;
only its SHA-256 digest is stored, so a leaked table opens no browser. A session ends when
signed out, after `dashboard_session_idle_minutes` unused, or `dashboard_session_max_hours`
after sign-in; a changed password or a removed membership ends it too. Each lookup also
re-reads the person's role in the organization being looked at, so a role taken away
applies at the next request.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import asyncpg

from calltrail_common.access import Role, effective_role, parse_role
from calltrail_common.agencies import Brand, CostView, RoleSource, cost_view

# Ids are 43 url-safe characters; anything far longer is refused before it is hashed.
MAX_SESSION_ID_LENGTH = 100
# last_seen_at is written at most this often (a read of every page is not a write).
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class SessionView:
    """Who is signed in, and the organization they are looking at with their role in it."""
    session_id: str
    user_id: uuid.UUID
    email: str
    org_id: uuid.UUID
    org_name: str
    org_kind: str
    agency_id: uuid.UUID | None
    role: Role
    # "agency": the person is a member of the client's agency (so sees cost and billed
    # cost); "organization": their access is their membership of this organization only.
    role_source: RoleSource = "organization"
    markup_percent: Decimal = Decimal(0)
    brand: Brand | None = None  # the agency's branding, for an agency and its clients

    @property
    def costs(self) -> CostView:
        return cost_view(self.role_source, self.markup_percent)

    @property
    def agency_in_view(self) -> uuid.UUID | None:
        """The agency whose clients this person may roll up: the one looked at, or the
        agency of the client looked at when they are its member."""
        if self.org_kind == "agency":
            return self.org_id
        return self.agency_id if self.role_source == "agency" else None


def session_digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


_FIND = """
    SELECT s.user_id, s.org_id, u.email, o.name AS org_name, o.kind, o.agency_id,
           o.markup_percent, direct.role AS direct_role, via.role AS agency_role,
           a.id AS brand_id, a.name AS brand_name, a.brand_logo_url, a.brand_accent,
           s.last_seen_at < now() - $3::interval AS stale
    FROM sessions s
    JOIN users u ON u.id = s.user_id
    JOIN organizations o ON o.id = s.org_id
    LEFT JOIN organizations a ON a.id = coalesce(o.agency_id, o.id) AND a.kind = 'agency'
    LEFT JOIN memberships direct ON direct.org_id = o.id AND direct.user_id = s.user_id
    LEFT JOIN memberships via ON via.org_id = o.agency_id AND via.user_id = s.user_id
    WHERE s.id_sha256 = $1 AND s.expires_at > now() AND s.last_seen_at > now() - $2::interval
"""


class Sessions:
    def __init__(self, pool: asyncpg.Pool, *, idle: timedelta, absolute: timedelta) -> None:
        self._pool = pool
        self._idle = idle
        self._absolute = absolute

    async def start(self, user_id: uuid.UUID, org_id: uuid.UUID,
                    replacing: str | None = None) -> str:
        """A new session id (rotated at every sign-in: an id known before it is dropped)."""
        session_id = secrets.token_urlsafe(32)
        async with self._pool.acquire() as connection, connection.transaction():
            if replacing:
                await connection.execute("DELETE FROM sessions WHERE id_sha256 = $1",
                                         session_digest(replacing))
            await connection.execute(
                "DELETE FROM sessions WHERE user_id = $1 AND expires_at <= now()", user_id)
            await connection.execute(
                """INSERT INTO sessions (id_sha256, user_id, org_id, expires_at)
                   VALUES ($1, $2, $3, now() + $4::interval)""",
                session_digest(session_id), user_id, org_id, self._absolute)
        return session_id

    async def find(self, session_id: str | None) -> SessionView | None:
        if not session_id or len(session_id) > MAX_SESSION_ID_LENGTH:
            return None
        digest = session_digest(session_id)
        row = await self._pool.fetchrow(_FIND, digest, self._idle, TOUCH_EVERY)
        if row is None:
            return None
        role = effective_role(
            None if row["direct_role"] is None else parse_role(row["direct_role"]),
            None if row["agency_role"] is None else parse_role(row["agency_role"]))
        if role is None:  # no longer a member of what it looks at
            return None
        if row["stale"]:
            await self._pool.execute(
                "UPDATE sessions SET last_seen_at = now() WHERE id_sha256 = $1", digest)
        brand = None if row["brand_id"] is None else Brand(
            row["brand_id"], row["brand_name"], row["brand_logo_url"], row["brand_accent"])
        return SessionView(session_id, row["user_id"], row["email"], row["org_id"],
                           row["org_name"], row["kind"], row["agency_id"], role,
                           role_source="agency" if row["agency_role"] is not None
                           else "organization",
                           markup_percent=row["markup_percent"], brand=brand)

    async def switch(self, session_id: str, org_id: uuid.UUID) -> None:
        """Look at another organization (the caller checked the person may)."""
        await self._pool.execute("UPDATE sessions SET org_id = $2 WHERE id_sha256 = $1",
                                 session_digest(session_id), org_id)

    async def end(self, session_id: str | None) -> None:
        if session_id and len(session_id) <= MAX_SESSION_ID_LENGTH:
            await self._pool.execute("DELETE FROM sessions WHERE id_sha256 = $1",
                                     session_digest(session_id))
