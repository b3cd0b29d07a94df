"""Outbound webhook endpoints and their delivery log (decision 40): an organization's
receivers, managed by its admins (the API, the dashboard's settings, the CLI).

An endpoint is a URL (checked by `outbound_targets.check_url`: public https only unless
the operator allows private targets), a description, the event types it wants
(`EVENT_TYPES`) and a signing secret: "whsec_" and the base64 of 24 random bytes, as
Standard Webhooks writes one. The secret is answered when it is issued (`create`,
`rotate_secret`) and never again: no listing, log line or audit entry carries it. A
rotation replaces it at once (an endpoint has one secret), so the receiver must take the
new one before the next delivery verifies.

The dispatcher writes each attempt's outcome to the deliveries and the endpoint's
`failing_since`, `last_success_at` and `disabled_*` ('failing'); here a person disables an
endpoint ('by_user'), enables one (which clears both reasons and the failing streak), and
sends a delivery again: it becomes pending and unqueued, so the dispatcher's relay
publishes it anew (not while its endpoint is disabled, and not while it is still pending).

Every change is written to the organization's audit log in its transaction, naming the
endpoint or delivery by id and the URL by its host only: a receiver's URL may carry a
token of its own in its path or query.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args
from urllib.parse import urlsplit

import asyncpg

from calltrail_common import audit
from calltrail_common.outbound_targets import TargetRefused, check_url

EventType = Literal["call.ended", "call.updated", "lead.created", "lead.updated",
                    "usage.day_closed"]
# The event types an endpoint may want, in the order they are shown (migration 0015 checks
# the same list).
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
DeliveryState = Literal["pending", "succeeded", "dead", "skipped"]

SECRET_PREFIX = "whsec_"  # noqa: S105 - Standard Webhooks' prefix, not a secret
SECRET_BYTES = 24
MAX_DESCRIPTION_LENGTH = 200
# Each endpoint adds a delivery to every event its organization has: bounded, so one
# organization cannot multiply the outbox.
MAX_ENDPOINTS_PER_ORGANIZATION = 20
MAX_LOG_PAGE = 100
LAST_ATTEMPT_WINDOW = 1000  # how many of an endpoint's newest deliveries say its last attempt


class EndpointError(ValueError):
    """A request about endpoints that cannot be met; the message says why (never a
    secret). `field` names the input at fault, when one is."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidEndpoint(EndpointError):
    """A URL, description or list of event types that is refused."""


class TooManyEndpoints(EndpointError):
    """The organization has MAX_ENDPOINTS_PER_ORGANIZATION endpoints already."""


class EndpointDisabled(EndpointError):
    """Send again while the delivery's endpoint is disabled: enable it first."""


class DeliveryPending(EndpointError):
    """Send again while the delivery is still pending: it is being sent, or retried."""


@dataclass(frozen=True)
class LastAttempt:
    """The endpoint's latest attempted delivery: when, the HTTP status (None: no answer)
    and the error ('timeout', 'connection refused', ...; None after a 2xx)."""
    at: datetime
    status: int | None
    error: str | None


@dataclass(frozen=True)
class Endpoint:
    """An endpoint as shown: never its secret."""
    id: uuid.UUID
    org_id: uuid.UUID
    url: str
    description: str
    event_types: tuple[str, ...]
    created_at: datetime
    failing_since: datetime | None
    last_success_at: datetime | None
    disabled_at: datetime | None
    disabled_reason: Literal["failing", "by_user"] | None
    last_attempt: LastAttempt | None

    @property
    def enabled(self) -> bool:
        return self.disabled_at is None

    @property
    def disabled_for_failing(self) -> bool:
        return self.disabled_reason == "failing"


@dataclass(frozen=True)
class IssuedSecret:
    """An endpoint with the secret just issued to it: shown once."""
    endpoint: Endpoint
    secret: str


@dataclass(frozen=True)
class Delivery:
    """One event to one endpoint, as the log shows it."""
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    state: DeliveryState
    attempts: int
    created_at: datetime
    queued_at: datetime | None
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    last_latency_ms: int | None
    delivered_at: datetime | None


# --- the rules (pure) -------------------------------------------------------------------


def new_secret() -> str:
    """A signing secret as Standard Webhooks writes one: its prefix, then base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def parse_url(raw: str, *, allow_private: bool) -> str:
    """The URL as stored (trimmed), or InvalidEndpoint saying why it may not be a target
    (`outbound_targets.check_url`; the dispatcher checks every address again when it
    sends)."""
    url = raw.strip()
    if not url:
        raise InvalidEndpoint("a URL is required", "url")
    if any(not c.isprintable() or c.isspace() for c in url):
        raise InvalidEndpoint("the URL may not hold spaces or control characters", "url")
    try:
        check_url(url, allow_private=allow_private)
    except TargetRefused as refused:
        raise InvalidEndpoint(str(refused), "url") from None
    return url


def parse_description(raw: str | None) -> str:
    description = (raw or "").strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidEndpoint(
            f"a description has at most {MAX_DESCRIPTION_LENGTH} characters", "description")
    if any(not c.isprintable() for c in description):
        raise InvalidEndpoint("a description is one line of printable characters",
                              "description")
    return description


def parse_event_types(values: Iterable[str]) -> tuple[EventType, ...]:
    """The event types wanted, each once, in EVENT_TYPES' order; at least one."""
    wanted = {value.strip() for value in values if value.strip()}
    unknown = sorted(wanted - set(EVENT_TYPES))
    if unknown:
        raise InvalidEndpoint(f"unknown event type {unknown[0][:40]!r}: the types are "
                              f"{', '.join(EVENT_TYPES)}", "eventTypes")
    if not wanted:
        raise InvalidEndpoint(f"choose at least one event type of {', '.join(EVENT_TYPES)}",
                              "eventTypes")
    return tuple(t for t in EVENT_TYPES if t in wanted)


def url_host(url: str) -> str:
    """What the audit log names of a URL: its host (the rest may hold a token)."""
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


# --- the SQL ----------------------------------------------------------------------------

# An endpoint with its latest attempt: among its newest LAST_ATTEMPT_WINDOW deliveries (by
# the log's index, so a long log costs no more), the one attempted last. A backlog of more
# never-attempted deliveries than that shows no last attempt.
_ENDPOINT_COLUMNS = """
    e.id, e.org_id, e.url, e.description, e.event_types, e.created_at, e.failing_since,
    e.last_success_at, e.disabled_at, e.disabled_reason,
    a.last_attempt_at, a.last_status, a.last_error"""
_LAST_ATTEMPT = f"""
    LEFT JOIN LATERAL (
        SELECT recent.last_attempt_at, recent.last_status, recent.last_error
        FROM (SELECT d.last_attempt_at, d.last_status, d.last_error
              FROM outbound_deliveries d WHERE d.endpoint_id = e.id
              ORDER BY d.created_at DESC LIMIT {LAST_ATTEMPT_WINDOW}) recent
        WHERE recent.last_attempt_at IS NOT NULL
        ORDER BY recent.last_attempt_at DESC LIMIT 1) a ON true"""  # noqa: S608 - a constant
_LIST_ENDPOINTS = f"""
    SELECT {_ENDPOINT_COLUMNS} FROM outbound_endpoints e {_LAST_ATTEMPT}
    WHERE e.org_id = $1 ORDER BY e.created_at, e.id"""  # noqa: S608 - constants only
_GET_ENDPOINT = f"""
    SELECT {_ENDPOINT_COLUMNS} FROM outbound_endpoints e {_LAST_ATTEMPT}
    WHERE e.id = $1 AND e.org_id = $2"""  # noqa: S608 - constants only
# Whose an endpoint or a delivery is: the CLI names them by id alone.
_ENDPOINT_ORGANIZATION = "SELECT org_id FROM outbound_endpoints WHERE id = $1"
_DELIVERY_ORGANIZATION = """
    SELECT e.org_id FROM outbound_deliveries d JOIN outbound_endpoints e ON e.id = d.endpoint_id
    WHERE d.id = $1"""
# Creations of one organization queue behind its row, so the count stays within the bound.
_LOCK_ORGANIZATION = "SELECT id FROM organizations WHERE id = $1 FOR UPDATE"
_COUNT_ENDPOINTS = "SELECT count(*) FROM outbound_endpoints WHERE org_id = $1"
_CREATE_ENDPOINT = """
    INSERT INTO outbound_endpoints (id, org_id, url, description, event_types, secret,
                                    created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""
# `$3`..`$5` NULL: that field as it was.
_UPDATE_ENDPOINT = """
    UPDATE outbound_endpoints SET url = coalesce($3, url),
                                  description = coalesce($4, description),
                                  event_types = coalesce($5, event_types)
    WHERE id = $1 AND org_id = $2
    RETURNING id"""
_DISABLE_ENDPOINT = """
    UPDATE outbound_endpoints SET disabled_at = now(), disabled_reason = 'by_user'
    WHERE id = $1 AND org_id = $2 AND disabled_at IS NULL
    RETURNING id"""
# Enabling starts afresh: the failing streak the dispatcher measures starts at the next
# failure, so an endpoint is not disabled again for failures before it was enabled.
_ENABLE_ENDPOINT = """
    UPDATE outbound_endpoints
    SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
    WHERE id = $1 AND org_id = $2 AND disabled_at IS NOT NULL
    RETURNING id"""
_DELETE_ENDPOINT = """
    DELETE FROM outbound_endpoints WHERE id = $1 AND org_id = $2 RETURNING url"""
_REPLACE_SECRET = """
    UPDATE outbound_endpoints SET secret = $3 WHERE id = $1 AND org_id = $2
    RETURNING id"""  # noqa: S105 - SQL, not a secret
# The log, newest first (the index outbound_deliveries_log); a later page starts strictly
# after the keyset position ($3, $4), a statement of its own so the index seeks to it.
_DELIVERIES_PAGE = """
    SELECT d.id, d.endpoint_id, d.event_id, ev.type AS event_type, ev.occurred_at, d.state,
           d.attempts, d.created_at, d.queued_at, d.last_attempt_at, d.last_status,
           d.last_error, d.last_latency_ms, d.delivered_at
    FROM outbound_deliveries d JOIN outbound_events ev ON ev.id = d.event_id
    WHERE d.endpoint_id = $1 {after}
    ORDER BY d.created_at DESC, d.id DESC
    LIMIT $2"""
_DELIVERIES_FIRST_PAGE = _DELIVERIES_PAGE.format(after="")
_DELIVERIES_AFTER = _DELIVERIES_PAGE.format(
    after="AND d.created_at <= $3 AND (d.created_at, d.id) < ($3, $4::uuid)")
_DELIVERY = """
    SELECT d.id, d.endpoint_id, d.event_id, ev.type AS event_type, ev.occurred_at, d.state,
           d.attempts, d.created_at, d.queued_at, d.last_attempt_at, d.last_status,
           d.last_error, d.last_latency_ms, d.delivered_at,
           e.disabled_at IS NOT NULL AS endpoint_disabled
    FROM outbound_deliveries d
    JOIN outbound_endpoints e ON e.id = d.endpoint_id
    JOIN outbound_events ev ON ev.id = d.event_id
    WHERE d.id = $1 AND e.org_id = $2 AND ($3::uuid IS NULL OR e.id = $3)"""
# Send again: pending and unqueued, so the relay publishes it anew; only when its endpoint
# is enabled and it is not pending already (one send in flight per delivery).
_SEND_AGAIN = """
    UPDATE outbound_deliveries d SET state = 'pending', queued_at = NULL
    FROM outbound_endpoints e
    WHERE d.id = $1 AND e.id = d.endpoint_id AND e.org_id = $2
      AND e.disabled_at IS NULL AND d.state <> 'pending'
    RETURNING d.id"""


def _endpoint(row: asyncpg.Record) -> Endpoint:
    attempt = None if row["last_attempt_at"] is None else LastAttempt(
        row["last_attempt_at"], row["last_status"], row["last_error"])
    return Endpoint(row["id"], row["org_id"], row["url"], row["description"],
                    tuple(row["event_types"]), row["created_at"], row["failing_since"],
                    row["last_success_at"], row["disabled_at"], row["disabled_reason"],
                    attempt)


def _delivery(row: asyncpg.Record) -> Delivery:
    return Delivery(row["id"], row["endpoint_id"], row["event_id"], row["event_type"],
                    row["occurred_at"], row["state"], row["attempts"], row["created_at"],
                    row["queued_at"], row["last_attempt_at"], row["last_status"],
                    row["last_error"], row["last_latency_ms"], row["delivered_at"])


# --- reads ------------------------------------------------------------------------------


async def list_endpoints(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                         ) -> list[Endpoint]:
    """The organization's endpoints, oldest first (at most MAX_ENDPOINTS_PER_ORGANIZATION)."""
    return [_endpoint(r) for r in await db.fetch(_LIST_ENDPOINTS, org_id)]


async def get_endpoint(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID,
                       endpoint_id: uuid.UUID) -> Endpoint | None:
    """The endpoint; None when there is none of that id in the organization."""
    row = await db.fetchrow(_GET_ENDPOINT, endpoint_id, org_id)
    return None if row is None else _endpoint(row)


async def deliveries(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID,
                     endpoint_id: uuid.UUID, *, limit: int,
                     after: tuple[datetime, uuid.UUID] | None = None
                     ) -> list[Delivery] | None:
    """The endpoint's delivery log, newest first, strictly after the keyset position
    `after` (the last row's created_at and id); None when the organization has no such
    endpoint."""
    if await get_endpoint(db, org_id, endpoint_id) is None:
        return None
    bounded = max(1, min(limit, MAX_LOG_PAGE + 1))
    rows = await (db.fetch(_DELIVERIES_FIRST_PAGE, endpoint_id, bounded) if after is None
                  else db.fetch(_DELIVERIES_AFTER, endpoint_id, bounded, *after))
    return [_delivery(r) for r in rows]


async def get_delivery(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID,
                       delivery_id: uuid.UUID, *, endpoint_id: uuid.UUID | None = None
                       ) -> Delivery | None:
    """The delivery, when it is to an endpoint of the organization (and `endpoint_id`'s,
    when given)."""
    row = await db.fetchrow(_DELIVERY, delivery_id, org_id, endpoint_id)
    return None if row is None else _delivery(row)


async def endpoint_organization(db: asyncpg.Connection | asyncpg.Pool,
                                endpoint_id: uuid.UUID) -> uuid.UUID | None:
    """The organization of the endpoint (None: no such endpoint), for the operator's CLI,
    which names endpoints by id alone."""
    org_id: uuid.UUID | None = await db.fetchval(_ENDPOINT_ORGANIZATION, endpoint_id)
    return org_id


async def delivery_organization(db: asyncpg.Connection | asyncpg.Pool,
                                delivery_id: uuid.UUID) -> uuid.UUID | None:
    """The organization of the delivery's endpoint (None: no such delivery)."""
    org_id: uuid.UUID | None = await db.fetchval(_DELIVERY_ORGANIZATION, delivery_id)
    return org_id


# --- changes, each audited --------------------------------------------------------------


async def create(connection: asyncpg.Connection, org_id: uuid.UUID, *, url: str,
                 event_types: Sequence[str], description: str | None = None,
                 actor: audit.Actor = audit.CLI_ACTOR, allow_private: bool = False
                 ) -> IssuedSecret:
    """A new endpoint with its secret (shown once). InvalidEndpoint for a refused URL,
    description or list of types; TooManyEndpoints past the bound;
    ForeignKeyViolationError when there is no such organization."""
    url = parse_url(url, allow_private=allow_private)
    description = parse_description(description)
    types = parse_event_types(event_types)
    endpoint_id, secret = uuid.uuid4(), new_secret()
    async with connection.transaction():
        await connection.execute(_LOCK_ORGANIZATION, org_id)
        if await connection.fetchval(_COUNT_ENDPOINTS, org_id) >= \
                MAX_ENDPOINTS_PER_ORGANIZATION:
            raise TooManyEndpoints(f"an organization has at most "
                                   f"{MAX_ENDPOINTS_PER_ORGANIZATION} endpoints")
        await connection.execute(_CREATE_ENDPOINT, endpoint_id, org_id, url, description,
                                 list(types), secret, actor.user_id)
        await audit.record(connection, org_id, actor, "outbound_endpoint.created",
                           str(endpoint_id), {"host": url_host(url),
                                              "eventTypes": list(types)})
        endpoint = await get_endpoint(connection, org_id, endpoint_id)
    assert endpoint is not None
    return IssuedSecret(endpoint, secret)


async def update(connection: asyncpg.Connection, org_id: uuid.UUID, endpoint_id: uuid.UUID,
                 *, url: str | None = None, description: str | None = None,
                 event_types: Sequence[str] | None = None,
                 actor: audit.Actor = audit.CLI_ACTOR, allow_private: bool = False
                 ) -> Endpoint | None:
    """Change what is given (None: as it was); None when the organization has no such
    endpoint. InvalidEndpoint as for `create`, or when nothing is given."""
    if url is None and description is None and event_types is None:
        raise InvalidEndpoint("nothing to change: give a URL, a description or event types")
    new_url = None if url is None else parse_url(url, allow_private=allow_private)
    new_description = None if description is None else parse_description(description)
    types = None if event_types is None else list(parse_event_types(event_types))
    async with connection.transaction():
        before = await get_endpoint(connection, org_id, endpoint_id)
        if before is None:
            return None
        await connection.execute(_UPDATE_ENDPOINT, endpoint_id, org_id, new_url,
                                 new_description, types)
        after = await get_endpoint(connection, org_id, endpoint_id)
        assert after is not None
        changed = [name for name, old, new in (
            ("url", before.url, after.url),
            ("description", before.description, after.description),
            ("eventTypes", before.event_types, after.event_types)) if old != new]
        if changed:
            await audit.record(connection, org_id, actor, "outbound_endpoint.updated",
                               str(endpoint_id), {"changed": changed,
                                                  "host": url_host(after.url),
                                                  "eventTypes": list(after.event_types)})
    return after


async def disable(connection: asyncpg.Connection, org_id: uuid.UUID, endpoint_id: uuid.UUID,
                  *, actor: audit.Actor = audit.CLI_ACTOR) -> Endpoint | None:
    """Stop sending to the endpoint (`by_user`); one disabled already stays as it is.
    None when the organization has no such endpoint."""
    async with connection.transaction():
        if await connection.fetchval(_DISABLE_ENDPOINT, endpoint_id, org_id) is not None:
            await audit.record(connection, org_id, actor, "outbound_endpoint.disabled",
                               str(endpoint_id))
        return await get_endpoint(connection, org_id, endpoint_id)


async def enable(connection: asyncpg.Connection, org_id: uuid.UUID, endpoint_id: uuid.UUID,
                 *, actor: audit.Actor = audit.CLI_ACTOR) -> Endpoint | None:
    """Send to the endpoint again, whoever disabled it and why, with its failing streak
    cleared. Deliveries skipped meanwhile stay skipped (send them again one by one).
    None when the organization has no such endpoint."""
    async with connection.transaction():
        if await connection.fetchval(_ENABLE_ENDPOINT, endpoint_id, org_id) is not None:
            await audit.record(connection, org_id, actor, "outbound_endpoint.enabled",
                               str(endpoint_id))
        return await get_endpoint(connection, org_id, endpoint_id)


async def delete(connection: asyncpg.Connection, org_id: uuid.UUID, endpoint_id: uuid.UUID,
                 *, actor: audit.Actor = audit.CLI_ACTOR) -> bool:
    """Delete the endpoint and its delivery log; False when the organization has no such
    endpoint."""
    async with connection.transaction():
        url = await connection.fetchval(_DELETE_ENDPOINT, endpoint_id, org_id)
        if url is None:
            return False
        await audit.record(connection, org_id, actor, "outbound_endpoint.deleted",
                           str(endpoint_id), {"host": url_host(url)})
    return True


async def rotate_secret(connection: asyncpg.Connection, org_id: uuid.UUID,
                        endpoint_id: uuid.UUID, *, actor: audit.Actor = audit.CLI_ACTOR
                        ) -> IssuedSecret | None:
    """A new secret for the endpoint, in force at once (shown once); None when the
    organization has no such endpoint."""
    secret = new_secret()
    async with connection.transaction():
        if await connection.fetchval(_REPLACE_SECRET, endpoint_id, org_id, secret) is None:
            return None
        await audit.record(connection, org_id, actor, "outbound_endpoint.secret_rotated",
                           str(endpoint_id))
        endpoint = await get_endpoint(connection, org_id, endpoint_id)
    assert endpoint is not None
    return IssuedSecret(endpoint, secret)


async def send_again(connection: asyncpg.Connection, org_id: uuid.UUID,
                     delivery_id: uuid.UUID, *, endpoint_id: uuid.UUID | None = None,
                     actor: audit.Actor = audit.CLI_ACTOR) -> Delivery | None:
    """Make the delivery pending and unqueued: the dispatcher sends it again, with the
    same `webhook-id`. None when it is no delivery of the organization (of `endpoint_id`,
    when given); EndpointDisabled while its endpoint is disabled; DeliveryPending while it
    is pending already."""
    async with connection.transaction():
        found = await connection.fetchrow(_DELIVERY, delivery_id, org_id, endpoint_id)
        if found is None:
            return None
        if await connection.fetchval(_SEND_AGAIN, delivery_id, org_id) is None:
            # Read again: the dispatcher or a person may have changed it meanwhile.
            now = await connection.fetchrow(_DELIVERY, delivery_id, org_id, endpoint_id)
            if now is None:
                return None
            if now["endpoint_disabled"]:
                raise EndpointDisabled("the endpoint is disabled: enable it first")
            raise DeliveryPending("the delivery is pending already: it is being sent")
        await audit.record(connection, org_id, actor, "outbound_delivery.sent_again",
                           str(delivery_id), {"endpointId": str(found["endpoint_id"]),
                                              "eventId": str(found["event_id"]),
                                              "previousState": found["state"]})
        row = await connection.fetchrow(_DELIVERY, delivery_id, org_id, endpoint_id)
    return _delivery(row)
