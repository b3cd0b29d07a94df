"""People: users who sign in with email and password, their memberships (roles) of
organizations, and single-use links that invite them or reset their password.

Passwords are hashed with argon2id (`argon2-cffi`'s defaults, RFC 9106's second
recommendation). Links carry a random token; only its SHA-256 digest is stored, and a link
works once, until it expires. Who may do what is `calltrail_common.access`.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from calltrail_common.access import (
    Role,
    effective_role,
    leaves_no_owner,
    parse_role,
    why_not_change,
)

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024  # hashing is costly; a longer "password" is refused unhashed
MAX_EMAIL_LENGTH = 254
INVITE_LIFETIME = timedelta(days=7)
RESET_LIFETIME = timedelta(hours=1)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()
# Verified when no such user exists, so an unknown address costs the same as a wrong
# password (the answer's timing does not tell which addresses have accounts).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

LinkPurpose = Literal["invite", "reset"]


class PeopleError(Exception):
    """A request about people that cannot be met; the message says why (no secrets)."""


class NotPermitted(PeopleError):
    """The role of who asks does not allow the change (`access.why_not_change`)."""


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    email: str
    name: str | None
    has_password: bool


@dataclass(frozen=True)
class Link:
    """A link just made: the token goes into the URL and is never stored."""
    token: str
    user_id: uuid.UUID
    email: str
    purpose: LinkPurpose
    expires_at_seconds: float


@dataclass(frozen=True)
class Access:
    """An organization a user may open, and with which role."""
    org_id: uuid.UUID
    name: str
    kind: str
    agency_id: uuid.UUID | None
    role: Role


def normalize_email(value: str) -> str:
    email = value.strip().lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise PeopleError("that is not an email address")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PeopleError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PeopleError(f"a password has at most {MAX_PASSWORD_LENGTH} characters")


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    """Constant work whether or not there is a hash to check against."""
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and \
            password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def link_url(dashboard_base_url: str, link: Link) -> str:
    """Where the link opens: /invite/{token} or /reset/{token} on the dashboard."""
    return f"{dashboard_base_url}/{link.purpose}/{link.token}"


def link_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _user(row: asyncpg.Record) -> User:
    return User(row["id"], row["email"], row["name"], row["password_hash"] is not None)


async def find_user(db: asyncpg.Connection | asyncpg.Pool, email: str) -> User | None:
    row = await db.fetchrow("SELECT * FROM users WHERE email = $1", normalize_email(email))
    return None if row is None else _user(row)


async def user_by_id(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID
                     ) -> User | None:
    row = await db.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    return None if row is None else _user(row)


async def ensure_user(connection: asyncpg.Connection, email: str, name: str | None = None
                      ) -> uuid.UUID:
    """The user with this email, created (without a password) when there is none."""
    email = normalize_email(email)
    user_id: uuid.UUID = await connection.fetchval(
        """INSERT INTO users (id, email, name) VALUES ($1, $2, $3)
           ON CONFLICT (email) DO UPDATE SET name = coalesce(users.name, EXCLUDED.name)
           RETURNING id""", uuid.uuid4(), email, name)
    return user_id


async def set_password(connection: asyncpg.Connection, user_id: uuid.UUID, password: str
                       ) -> None:
    """Set the password and end every session the user had."""
    hashed = hash_password(password)
    async with connection.transaction():
        await connection.execute(
            "UPDATE users SET password_hash = $2, password_changed_at = now() WHERE id = $1",
            user_id, hashed)
        await connection.execute("DELETE FROM sessions WHERE user_id = $1", user_id)


async def authenticate(db: asyncpg.Connection | asyncpg.Pool, email: str, password: str
                       ) -> User | None:
    """The user whose email and password these are; None otherwise (same work either way).
    A hash made with older parameters is upgraded."""
    try:
        email = normalize_email(email)
    except PeopleError:
        password_matches(None, password)
        return None
    row = await db.fetchrow("SELECT * FROM users WHERE email = $1", email)
    stored = None if row is None else row["password_hash"]
    if not password_matches(stored, password) or row is None:
        return None
    if stored is not None and _hasher.check_needs_rehash(stored):
        await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", row["id"],
                         _hasher.hash(password))
    return _user(row)


async def add_member(connection: asyncpg.Connection, org_id: uuid.UUID, user_id: uuid.UUID,
                     role: Role) -> None:
    await connection.execute(
        """INSERT INTO memberships (user_id, org_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, org_id) DO UPDATE SET role = EXCLUDED.role""",
        user_id, org_id, role)


async def remove_member(connection: asyncpg.Connection, org_id: uuid.UUID,
                        user_id: uuid.UUID) -> bool:
    """Remove the membership and end the user's sessions looking at this organization."""
    async with connection.transaction():
        removed = await connection.fetchval(
            "DELETE FROM memberships WHERE org_id = $1 AND user_id = $2 RETURNING user_id",
            org_id, user_id)
        await connection.execute("DELETE FROM sessions WHERE user_id = $1", user_id)
    return removed is not None


async def make_link(connection: asyncpg.Connection, purpose: LinkPurpose, user_id: uuid.UUID,
                    *, org_id: uuid.UUID | None = None, role: Role | None = None,
                    created_by: uuid.UUID | None = None) -> Link:
    lifetime = INVITE_LIFETIME if purpose == "invite" else RESET_LIFETIME
    token = secrets.token_urlsafe(32)
    row = await connection.fetchrow(
        """INSERT INTO user_links (token_sha256, purpose, user_id, org_id, role, created_by,
                                   expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, now() + $7::interval)
           RETURNING extract(epoch FROM expires_at)::float8 AS expires,
                     (SELECT email FROM users WHERE id = $3) AS email""",
        link_digest(token), purpose, user_id, org_id, role, created_by, lifetime)
    return Link(token, user_id, row["email"], purpose, row["expires"])


async def invite(connection: asyncpg.Connection, org_id: uuid.UUID, email: str, role: Role,
                 created_by: uuid.UUID | None) -> Link:
    """A user for `email` (made if new) and a link that, once followed, makes them a member
    of `org_id` with `role` (asking for a password when they have none)."""
    async with connection.transaction():
        user_id = await ensure_user(connection, email)
        return await make_link(connection, "invite", user_id, org_id=org_id, role=role,
                               created_by=created_by)


@dataclass(frozen=True)
class OpenLink:
    user: User
    purpose: LinkPurpose
    org_id: uuid.UUID | None
    role: Role | None


async def open_link(db: asyncpg.Connection | asyncpg.Pool, token: str,
                    purpose: LinkPurpose) -> OpenLink | None:
    """The link's user and what it grants, while it is unused and unexpired."""
    if not token or len(token) > 100:
        return None
    row = await db.fetchrow(
        """SELECT l.org_id, l.role, u.* FROM user_links l JOIN users u ON u.id = l.user_id
           WHERE l.token_sha256 = $1 AND l.purpose = $2 AND l.used_at IS NULL
             AND l.expires_at > now()""", link_digest(token), purpose)
    if row is None:
        return None
    return OpenLink(_user(row), purpose, row["org_id"],
                    None if row["role"] is None else parse_role(row["role"]))


async def use_link(connection: asyncpg.Connection, token: str, purpose: LinkPurpose,
                   password: str | None) -> OpenLink:
    """Follow a link once: an invitation adds the membership (and sets the password when
    given or needed), a reset sets the password. PeopleError when the link is not valid."""
    if password is not None:
        check_password(password)
    async with connection.transaction():
        row = await connection.fetchrow(
            """UPDATE user_links SET used_at = now()
               WHERE token_sha256 = $1 AND purpose = $2 AND used_at IS NULL
                 AND expires_at > now()
               RETURNING user_id, org_id, role""", link_digest(token), purpose)
        if row is None:
            raise PeopleError("this link is not valid: it was used, it expired, or it was "
                              "never made")
        user = await user_by_id(connection, row["user_id"])
        assert user is not None  # links are deleted with their user
        if password is None and (purpose == "reset" or not user.has_password):
            raise PeopleError("choose a password")
        if password is not None:
            await set_password(connection, user.id, password)
        if purpose == "invite":
            # An invitation never changes an existing membership: an old link followed
            # by someone made owner since would otherwise demote them (maybe the last
            # owner). A role is changed on the People page, under its rules.
            await connection.execute(
                """INSERT INTO memberships (user_id, org_id, role) VALUES ($1, $2, $3)
                   ON CONFLICT (user_id, org_id) DO NOTHING""",
                user.id, row["org_id"], row["role"])
    return OpenLink(user, purpose, row["org_id"],
                    None if row["role"] is None else parse_role(row["role"]))


async def request_reset(connection: asyncpg.Connection, email: str, *,
                        at_most_open: int | None = None) -> Link | None:
    """A reset link for the user with this email, None when there is no such user (the
    page says the same either way), or when they already have `at_most_open` reset links
    unused and unexpired (a stranger asking again and again fills no mailbox)."""
    try:
        user = await find_user(connection, email)
    except PeopleError:
        return None
    if user is None:
        return None
    async with connection.transaction():
        # The user's row is locked so two requests at once cannot both pass the count.
        await connection.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user.id)
        if at_most_open is not None and await connection.fetchval(
                """SELECT count(*) FROM user_links WHERE user_id = $1 AND purpose = 'reset'
                   AND used_at IS NULL AND expires_at > now()""", user.id) >= at_most_open:
            return None
        return await make_link(connection, "reset", user.id)


_ACCESS = """
    SELECT o.id, o.name, o.kind, o.agency_id, direct.role AS direct_role,
           via.role AS agency_role
    FROM organizations o
    LEFT JOIN memberships direct ON direct.org_id = o.id AND direct.user_id = $1
    LEFT JOIN memberships via ON via.org_id = o.agency_id AND via.user_id = $1
    WHERE (direct.role IS NOT NULL OR via.role IS NOT NULL) {extra}
    ORDER BY o.kind = 'agency' DESC, lower(o.name), o.id"""


def _access(row: asyncpg.Record) -> Access | None:
    role = effective_role(None if row["direct_role"] is None else parse_role(row["direct_role"]),
                          None if row["agency_role"] is None else parse_role(row["agency_role"]))
    if role is None:
        return None
    return Access(row["id"], row["name"], row["kind"], row["agency_id"], role)


async def accessible(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID
                     ) -> list[Access]:
    """Every organization the user may open: their memberships and their agencies' clients."""
    rows = await db.fetch(_ACCESS.format(extra=""), user_id)
    return [a for r in rows if (a := _access(r)) is not None]


async def access_to(db: asyncpg.Connection | asyncpg.Pool, user_id: uuid.UUID,
                    org_id: uuid.UUID) -> Access | None:
    """The user's access to one organization; None: none at all."""
    row = await db.fetchrow(_ACCESS.format(extra="AND o.id = $2"), user_id, org_id)
    return None if row is None else _access(row)


@dataclass(frozen=True)
class Member:
    user_id: uuid.UUID
    email: str
    name: str | None
    role: Role
    joined: bool  # False: invited, has not set a password yet
    since: datetime | None = None  # member since


async def members(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID) -> list[Member]:
    rows = await db.fetch(
        """SELECT u.id, u.email, u.name, u.password_hash IS NOT NULL AS joined, m.role,
                  m.created_at
           FROM memberships m JOIN users u ON u.id = m.user_id
           WHERE m.org_id = $1 ORDER BY u.email""", org_id)
    return [Member(r["id"], r["email"], r["name"], parse_role(r["role"]), r["joined"],
                   r["created_at"]) for r in rows]


async def change_member(connection: asyncpg.Connection, org_id: uuid.UUID,
                        user_id: uuid.UUID, wanted: Role | None, granter: Role | None
                        ) -> Member:
    """Give a member of `org_id` the role `wanted` or remove them (None), as someone of
    role `granter`; the member as they were. NotPermitted when the granter's role does not
    allow it (`access.why_not_change`), PeopleError when it would leave no owner or the
    person is no member. The organization's memberships are locked while the rule
    is checked, so two owners demoting each other at once cannot leave none."""
    async with connection.transaction():
        rows = await connection.fetch(
            "SELECT user_id, role FROM memberships WHERE org_id = $1 FOR UPDATE", org_id)
        held = next((parse_role(r["role"]) for r in rows if r["user_id"] == user_id), None)
        if held is None:
            raise PeopleError("that person is not a member of this organization")
        refused = why_not_change(granter, held, wanted)
        if refused is not None:
            raise NotPermitted(refused)
        if leaves_no_owner(held, wanted, sum(1 for r in rows if r["role"] == "owner")):
            raise PeopleError("an organization keeps at least one owner: make someone else "
                              "owner first")
        user = await user_by_id(connection, user_id)
        assert user is not None  # memberships are deleted with their user
        if wanted is None:
            await remove_member(connection, org_id, user_id)
        elif wanted != held:
            await connection.execute(
                "UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2",
                org_id, user_id, wanted)
    return Member(user.id, user.email, user.name, held, user.has_password)


async def is_member(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID, email: str
                    ) -> bool:
    return bool(await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
                          WHERE m.org_id = $1 AND u.email = $2)""",
        org_id, normalize_email(email)))


async def cancel_invitations(connection: asyncpg.Connection, org_id: uuid.UUID, email: str
                             ) -> list[Role]:
    """End every unused invitation of `email` to `org_id` now (its links open nothing
    after); the roles they offered, empty when there was none."""
    rows = await connection.fetch(
        """UPDATE user_links l SET expires_at = least(l.expires_at, now())
           FROM users u
           WHERE u.id = l.user_id AND u.email = $2 AND l.org_id = $1
             AND l.purpose = 'invite' AND l.used_at IS NULL AND l.expires_at > now()
           RETURNING l.role""", org_id, normalize_email(email))
    return [parse_role(r["role"]) for r in rows]


@dataclass(frozen=True)
class PendingInvite:
    email: str
    role: Role
    expires_at_seconds: float


async def pending_invites(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                          ) -> list[PendingInvite]:
    rows = await db.fetch(
        """SELECT u.email, l.role, extract(epoch FROM l.expires_at)::float8 AS expires
           FROM user_links l JOIN users u ON u.id = l.user_id
           WHERE l.org_id = $1 AND l.purpose = 'invite' AND l.used_at IS NULL
             AND l.expires_at > now()
           ORDER BY l.created_at DESC""", org_id)
    return [PendingInvite(r["email"], parse_role(r["role"]), r["expires"]) for r in rows]
