"""Organizations and their credentials: webhook endpoints and tenant API tokens.

Credentials are random and printed once; API tokens are stored only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass

import asyncpg

_CREATE_ORGANIZATION = "INSERT INTO organizations (id, name) VALUES ($1, $2)"
_CREATE_ENDPOINT = "INSERT INTO webhook_endpoints (id, org_id, secret) VALUES ($1, $2, $3)"
_CREATE_TOKEN = "INSERT INTO api_tokens (id, org_id, token_sha256) VALUES ($1, $2, $3)"  # noqa: S105 - SQL, not a secret
_REVOKE_TOKEN = (
    "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 RETURNING id"  # noqa: S105
)
_ACTIVE_ENDPOINTS = """
    SELECT id, org_id, secret FROM webhook_endpoints WHERE revoked_at IS NULL"""


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


def new_api_token() -> str:
    return "ct_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def webhook_url(public_base_url: str, endpoint_id: str) -> str:
    return f"{public_base_url}/webhooks/vapi/{endpoint_id}"


async def create_organization(connection: asyncpg.Connection, name: str) -> NewOrganization:
    org = NewOrganization(
        org_id=uuid.uuid4(),
        name=name,
        endpoint_id="ep_" + secrets.token_hex(12),
        webhook_secret="whsec_" + secrets.token_urlsafe(32),
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
    rows = await connection.fetch(_ACTIVE_ENDPOINTS)
    return [EndpointCredential(r["id"], str(r["org_id"]), r["secret"]) for r in rows]
