"""Organizations and their credentials: webhook endpoints and tenant API tokens.

Credentials are random and printed once; API tokens are stored only as SHA-256 digests.

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

import asyncpg

# How long a replaced webhook secret stays accepted unless the caller says otherwise.
DEFAULT_SECRET_OVERLAP = dt.timedelta(hours=24)

_CREATE_ORGANIZATION = "INSERT INTO organizations (id, name) VALUES ($1, $2)"
_CREATE_ENDPOINT = "INSERT INTO webhook_endpoints (id, org_id, secret) VALUES ($1, $2, $3)"
_CREATE_TOKEN = "INSERT INTO api_tokens (id, org_id, token_sha256) VALUES ($1, $2, $3)"  # noqa: S105 - SQL, not a secret
_REVOKE_TOKEN = (
    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id"  # noqa: S105
)
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
                                 token_digest(org.api_token))
    return org


async def create_token(connection: asyncpg.Connection, org_id: uuid.UUID) -> tuple[uuid.UUID, str]:
    token_id, token = uuid.uuid4(), new_api_token()
    await connection.execute(_CREATE_TOKEN, token_id, org_id, token_digest(token))
    return token_id, token


async def revoke_token(connection: asyncpg.Connection, token_id: uuid.UUID) -> bool:
    return await connection.fetchval(_REVOKE_TOKEN, token_id) is not None


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
