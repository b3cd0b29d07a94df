"""Organizations and their credentials: webhook endpoints and tenant API tokens.

Credentials are random and printed once; API tokens are stored only as SHA-256 digests,
beside their first characters (`prefix`, e.g. `ct_AbC1`) to recognise one by in a list or
the audit log. Tokens are machines' credentials, managed by people: the CLI and the
dashboard make and revoke them through the functions here, and each change is written to
the audit log in the same transaction.

Webhook secrets rotate with an overlap (decision 34): `rotate` issues a new secret for the
organization's endpoint and keeps the one it replaced accepted until the overlap ends (one
previous secret per endpoint: rotating again replaces it); `revoke_previous` ends the
previous secret now; `rotate` with a zero overlap ends the current one now (a leaked
secret). `secret_status` says when the current secret was issued and until when the
previous one is accepted, never a secret's value. Ingest reloads on every change (NOTIFY)
and keeps each previous secret's end in memory, so it refuses it on time even between
reloads.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg

from calltrail_common import audit

# How long a replaced webhook secret stays accepted unless the caller says otherwise.
DEFAULT_SECRET_OVERLAP = dt.timedelta(hours=24)

_CREATE_ORGANIZATION = "INSERT INTO organizations (id, name) VALUES ($1, $2)"
_CREATE_ENDPOINT = "INSERT INTO webhook_endpoints (id, org_id, secret) VALUES ($1, $2, $3)"
_CREATE_TOKEN = """
    INSERT INTO api_tokens (id, org_id, token_sha256, name, prefix, created_by, created_via)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""  # noqa: S105 - SQL, not a secret
# `$2` NULL: any organization's token (the CLI); else only that organization's (a dashboard).
_REVOKE_TOKEN = """
    UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now())
    WHERE id = $1 AND ($2::uuid IS NULL OR org_id = $2)
    RETURNING org_id, prefix, revoked_at = now() AS newly_revoked"""  # noqa: S105
_LIST_TOKENS = """
    SELECT t.id, t.name, t.prefix, coalesce(u.email, t.created_via) AS creator, t.created_at,
           t.last_used_at, t.revoked_at
    FROM api_tokens t LEFT JOIN users u ON u.id = t.created_by
    WHERE t.org_id = $1
    ORDER BY t.revoked_at IS NOT NULL, t.created_at DESC, t.id"""
# One round trip per request: the token's organization and the markup its agency bills it
# (0 unless it is a client), and `last_used_at` written only when it is older than `$2` (a
# read of the API is not a write every time).
AUTHENTICATE_TOKEN = """
    WITH found AS (
        SELECT id, org_id, prefix, last_used_at FROM api_tokens
        WHERE token_sha256 = $1 AND revoked_at IS NULL),
    touched AS (
        UPDATE api_tokens t SET last_used_at = now() FROM found
        WHERE t.id = found.id
          AND (found.last_used_at IS NULL OR found.last_used_at < now() - $2::interval)
        RETURNING t.id)
    SELECT found.id, found.org_id, found.prefix,
           CASE WHEN o.agency_id IS NULL THEN 0 ELSE o.markup_percent END AS markup_percent
    FROM found JOIN organizations o ON o.id = found.org_id"""  # noqa: S105 - SQL
_ORGANIZATION_EXISTS = "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1)"
# Every live secret of every active endpoint: the current ones (valid_until NULL) and the
# previous ones whose overlap has not ended.
_ACTIVE_ENDPOINTS = """
    SELECT id, org_id, secret, NULL::timestamptz AS valid_until
    FROM webhook_endpoints WHERE revoked_at IS NULL
    UNION ALL
    SELECT e.id, e.org_id, p.secret, p.valid_until
    FROM webhook_previous_secrets p JOIN webhook_endpoints e ON e.id = p.endpoint_id
    WHERE e.revoked_at IS NULL AND p.valid_until > now()"""
# The organization's endpoint, as the api shows it (api.repository.WEBHOOK_ENDPOINT).
_LOCK_ENDPOINT = """
    SELECT id, secret FROM webhook_endpoints
    WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT 1
    FOR UPDATE"""
_KEEP_PREVIOUS_SECRET = """
    INSERT INTO webhook_previous_secrets (endpoint_id, secret, valid_until)
    VALUES ($1, $2, now() + $3)
    ON CONFLICT (endpoint_id) DO UPDATE
    SET secret = EXCLUDED.secret, valid_until = EXCLUDED.valid_until
    RETURNING valid_until"""  # noqa: S105 - SQL, not a secret
_DROP_PREVIOUS_SECRET = """
    DELETE FROM webhook_previous_secrets WHERE endpoint_id = $1
    RETURNING valid_until > now() AS was_live"""  # noqa: S105
_REPLACE_SECRET = """
    UPDATE webhook_endpoints SET secret = $2, secret_created_at = now() WHERE id = $1"""  # noqa: S105
_SECRET_STATUS = """
    SELECT e.id, e.secret_created_at, p.valid_until
    FROM webhook_endpoints e
    LEFT JOIN webhook_previous_secrets p ON p.endpoint_id = e.id AND p.valid_until > now()
    WHERE e.org_id = $1 AND e.revoked_at IS NULL ORDER BY e.created_at DESC, e.id LIMIT 1"""  # noqa: S105


@dataclass(frozen=True)
class NewOrganization:
    org_id: uuid.UUID
    name: str
    endpoint_id: str
    webhook_secret: str
    token_id: uuid.UUID
    api_token: str


@dataclass(frozen=True)
class NewToken:
    token_id: uuid.UUID
    api_token: str  # shown once, never stored
    prefix: str


@dataclass(frozen=True)
class TokenListing:
    token_id: uuid.UUID
    name: str | None
    prefix: str | None  # None: made before tokens had one (migration 0013)
    creator: str        # the person's email, or how it was made ("cli")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class TokenHolder:
    """The machine behind an API request: its token and the token's organization."""
    token_id: uuid.UUID
    org_id: uuid.UUID
    prefix: str | None
    markup_percent: Decimal = Decimal(0)  # what its agency adds to every cost (clients)

    @property
    def actor(self) -> audit.Actor:
        return audit.token_actor(self.prefix or f"id:{self.token_id}")


MAX_TOKEN_NAME_LENGTH = 80
TOKEN_PREFIX_LENGTH = 7  # "ct_" and 4 of the 43 random characters: 24 of its 256 bits
LAST_USED_EVERY = timedelta(minutes=1)


class InvalidTokenName(ValueError):
    """A token name that is too long or holds control characters."""


def token_name(raw: str | None) -> str | None:
    """A token's name as given (None or blank: no name), trimmed."""
    name = (raw or "").strip()
    if not name:
        return None
    if len(name) > MAX_TOKEN_NAME_LENGTH:
        raise InvalidTokenName(f"a token name has at most {MAX_TOKEN_NAME_LENGTH} characters")
    if any(not character.isprintable() for character in name):
        raise InvalidTokenName("a token name is one line of printable characters")
    return name


def token_prefix(token: str) -> str:
    return token[:TOKEN_PREFIX_LENGTH]


@dataclass(frozen=True)
class EndpointCredential:
    endpoint_id: str
    org_id: str
    secret: str
    valid_until: dt.datetime | None = None  # None: the current secret


@dataclass(frozen=True)
class RotatedSecret:
    endpoint_id: str
    webhook_secret: str  # the new secret, shown once
    previous_valid_until: dt.datetime | None  # None: the replaced secret is refused now


@dataclass(frozen=True)
class SecretStatus:
    endpoint_id: str
    current_created_at: dt.datetime
    previous_valid_until: dt.datetime | None  # None: no previous secret is accepted


class NoWebhookEndpoint(Exception):
    """The organization does not exist or has no active webhook endpoint."""


def new_api_token() -> str:
    return "ct_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def webhook_url(public_base_url: str, endpoint_id: str) -> str:
    return f"{public_base_url}/webhooks/vapi/{endpoint_id}"


async def create_organization(connection: asyncpg.Connection, name: str) -> NewOrganization:
    org = NewOrganization(
        org_id=uuid.uuid4(),
        name=name,
        endpoint_id="ep_" + secrets.token_hex(12),
        webhook_secret=new_webhook_secret(),
        token_id=uuid.uuid4(),
        api_token=new_api_token(),
    )
    async with connection.transaction():
        await connection.execute(_CREATE_ORGANIZATION, org.org_id, name)
        await connection.execute(_CREATE_ENDPOINT, org.endpoint_id, org.org_id,
                                 org.webhook_secret)
        await connection.execute(_CREATE_TOKEN, org.token_id, org.org_id,
                                 token_digest(org.api_token), None,
                                 token_prefix(org.api_token), None, "cli")
        await audit.record(connection, org.org_id, audit.CLI_ACTOR, "token.created",
                           token_prefix(org.api_token), {"tokenId": str(org.token_id)})
    return org


async def create_token(connection: asyncpg.Connection, org_id: uuid.UUID, *,
                       actor: audit.Actor = audit.CLI_ACTOR, name: str | None = None,
                       via: str = "cli") -> NewToken:
    """A new token of `org_id` made by `actor` (ForeignKeyViolationError: no such
    organization); written to the audit log with its prefix, never the token."""
    token_id, token = uuid.uuid4(), new_api_token()
    prefix = token_prefix(token)
    async with connection.transaction():
        await connection.execute(_CREATE_TOKEN, token_id, org_id, token_digest(token), name,
                                 prefix, actor.user_id, via)
        await audit.record(connection, org_id, actor, "token.created", prefix,
                           {"tokenId": str(token_id)})
    return NewToken(token_id, token, prefix)


async def revoke_token(connection: asyncpg.Connection, token_id: uuid.UUID, *,
                       actor: audit.Actor = audit.CLI_ACTOR,
                       org_id: uuid.UUID | None = None) -> bool:
    """Revoke a token (again: no change); with `org_id`, only a token of that organization.
    False: no such token (or another organization's). It stops working at its next request:
    every request looks the token up."""
    async with connection.transaction():
        row = await connection.fetchrow(_REVOKE_TOKEN, token_id, org_id)
        if row is None:
            return False
        if row["newly_revoked"]:  # now() is the transaction's start: revoked just now
            await audit.record(connection, row["org_id"], actor, "token.revoked",
                               row["prefix"] or str(token_id), {"tokenId": str(token_id)})
    return True


async def organization_exists(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                              ) -> bool:
    return bool(await db.fetchval(_ORGANIZATION_EXISTS, org_id))


async def list_tokens(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                      ) -> list[TokenListing]:
    """The organization's tokens, active ones first, newest first."""
    rows = await db.fetch(_LIST_TOKENS, org_id)
    return [TokenListing(r["id"], r["name"], r["prefix"], r["creator"], r["created_at"],
                         r["last_used_at"], r["revoked_at"]) for r in rows]


async def authenticate_token(db: asyncpg.Connection | asyncpg.Pool, token: str
                             ) -> TokenHolder | None:
    """The holder of an active token (None: unknown or revoked), noting its use at most
    once per LAST_USED_EVERY."""
    row = await db.fetchrow(AUTHENTICATE_TOKEN, token_digest(token), LAST_USED_EVERY)
    return None if row is None else TokenHolder(row["id"], row["org_id"], row["prefix"],
                                                row["markup_percent"])


async def active_endpoints(connection: asyncpg.Connection) -> list[EndpointCredential]:
    """Every secret ingest accepts now: one row per live secret of each active endpoint."""
    rows = await connection.fetch(_ACTIVE_ENDPOINTS)
    return [EndpointCredential(r["id"], str(r["org_id"]), r["secret"], r["valid_until"])
            for r in rows]


async def rotate(connection: asyncpg.Connection, org_id: uuid.UUID,
                 overlap: dt.timedelta) -> RotatedSecret:
    """Issue a new webhook secret; the replaced one stays accepted for `overlap`.

    A zero overlap refuses the replaced secret at once (and any earlier previous one): that
    is how a leaked current secret is revoked. Raises `NoWebhookEndpoint`.
    """
    if overlap < dt.timedelta(0):
        raise ValueError("overlap must not be negative")
    new_secret = new_webhook_secret()
    async with connection.transaction():
        endpoint = await connection.fetchrow(_LOCK_ENDPOINT, org_id)
        if endpoint is None:
            raise NoWebhookEndpoint(f"no webhook endpoint for organization {org_id}")
        valid_until: dt.datetime | None = None
        if overlap > dt.timedelta(0):
            valid_until = await connection.fetchval(
                _KEEP_PREVIOUS_SECRET, endpoint["id"], endpoint["secret"], overlap)
        else:
            await connection.execute(_DROP_PREVIOUS_SECRET, endpoint["id"])
        await connection.execute(_REPLACE_SECRET, endpoint["id"], new_secret)
    return RotatedSecret(endpoint["id"], new_secret, valid_until)


async def revoke_previous(connection: asyncpg.Connection, org_id: uuid.UUID) -> bool:
    """End the previous webhook secret now; whether one was still accepted.

    Raises `NoWebhookEndpoint`.
    """
    async with connection.transaction():
        endpoint = await connection.fetchrow(_LOCK_ENDPOINT, org_id)
        if endpoint is None:
            raise NoWebhookEndpoint(f"no webhook endpoint for organization {org_id}")
        was_live = await connection.fetchval(_DROP_PREVIOUS_SECRET, endpoint["id"])
    return bool(was_live)


async def secret_status(connection: asyncpg.Connection, org_id: uuid.UUID) -> SecretStatus:
    """When the current secret was issued and until when the previous one is accepted.

    Never a secret's value. Raises `NoWebhookEndpoint`.
    """
    row = await connection.fetchrow(_SECRET_STATUS, org_id)
    if row is None:
        raise NoWebhookEndpoint(f"no webhook endpoint for organization {org_id}")
    return SecretStatus(row["id"], row["secret_created_at"], row["valid_until"])
