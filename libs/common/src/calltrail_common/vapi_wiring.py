"""Set-up that wires itself (decision 47): the organization's Vapi assistants and phone
numbers, whether each sends its calls to the organization's ingest endpoint, and "Wire" /
"Unwire" through Vapi's API with the connected key. Owns `vapi_wiring` and
`vapi_wiring_credentials` (migration 0019).

- Calltrail reads `status-update`, `end-of-call-report` and `call.deleted`
  (`NEEDED_MESSAGES`): the processor builds calls from the first two, removes a call on the
  third (decision 44), and only archives the rest; the transcript, summary
  and recordings come in the report. Wiring adds them to what the assistant already sends
  (Vapi's defaults when it sets none) and removes nothing.
- The server carries a webhook credential Calltrail makes in Vapi for the organization: HMAC
  SHA-256 over `{timestamp}.{body}` with the timestamp header, keyed by the organization's
  webhook secret, as ingest verifies it (a captured request cannot be replayed after five
  minutes, and the secret never travels). It is made once per webhook secret and reused
  until the secret is rotated.
- Before its first wiring, an assistant's or number's `server` and `serverMessages` are kept,
  so Unwire puts them back (a field that was unset is cleared again: `null`).

The pure rules (`assess`, `wire_body`, `unwire_body`, `credential_body`) are plain
functions over Vapi's JSON; `survey`, `wire` and `unwire` do the I/O. Nothing here logs or
records a secret: the audit log names assistants, numbers and credentials by id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg
import orjson

from calltrail_common import audit
from calltrail_common.logging import get_logger
from calltrail_common.organizations import webhook_url
from calltrail_common.vapi import VapiClient, VapiNotFound

log = get_logger(__name__)

Kind = Literal["assistant", "phone-number"]
Points = Literal["here", "elsewhere", "nowhere"]
KINDS: tuple[Kind, ...] = ("assistant", "phone-number")

# What the processor reads (call_processor.events.CALL_EVENT_TYPES, without the snapshots
# metrics-sync makes itself).
NEEDED_MESSAGES: tuple[str, ...] = ("status-update", "end-of-call-report", "call.deleted")
# What an assistant sends when it sets no serverMessages (vapi.md, "Default serverMessages").
DEFAULT_SERVER_MESSAGES: tuple[str, ...] = (
    "conversation-update", "end-of-call-report", "function-call", "hang", "speech-update",
    "status-update", "tool-calls", "transfer-destination-request",
    "handoff-destination-request", "user-interrupted", "assistant.started")
# The parts of a server that wiring keeps: how long Vapi waits and whether it retries are
# the business's delivery choices. Headers are dropped: an Authorization header there would
# override the credential (Vapi's docs call that an anti-pattern).
KEPT_SERVER_FIELDS = ("timeoutSeconds", "backoffPlan")
CREDENTIAL_NAME = "Calltrail ingest"
SIGNATURE_HEADER = "x-signature"
TIMESTAMP_HEADER = "x-timestamp"


class WiringError(Exception):
    """Wiring cannot be done; the message says why and holds no secret."""


class NoEndpoint(WiringError):
    """The organization has no active ingest endpoint to point Vapi at."""


@dataclass(frozen=True)
class Target:
    """An assistant or a phone number as Vapi lists it."""

    kind: Kind
    vapi_id: str
    name: str | None
    server: Mapping[str, Any] | None
    server_messages: tuple[str, ...] | None  # None: not set (an assistant's defaults apply)
    provider: str | None = None  # a phone number's provider, which its PATCH names
    label: str | None = None  # a phone number's number (or SIP URI)


@dataclass(frozen=True)
class Wiring:
    """Where one target sends its calls, and what wiring would change."""

    target: Target
    points: Points
    server_url: str | None
    credential_id: str | None
    credential_current: bool  # the credential Calltrail made for the current secret
    missing_messages: tuple[str, ...]  # of NEEDED_MESSAGES; () for a phone number
    wired_by_calltrail: bool  # Calltrail keeps its previous set-up: Unwire can restore it

    @property
    def complete(self) -> bool:
        return self.points == "here" and self.credential_current and not self.missing_messages


# --- pure rules ---------------------------------------------------------------------------


def target_of(kind: Kind, item: Mapping[str, Any]) -> Target | None:
    """An item of `GET /assistant` or `GET /phone-number` as a Target; None without an id."""
    vapi_id = item.get("id")
    if not isinstance(vapi_id, str) or not vapi_id:
        return None
    server = item.get("server")
    messages = item.get("serverMessages") if kind == "assistant" else None
    name = item.get("name")
    label = item.get("number") or item.get("sipUri")
    provider = item.get("provider")
    return Target(
        kind=kind, vapi_id=vapi_id, name=name if isinstance(name, str) else None,
        server=server if isinstance(server, dict) else None,
        server_messages=tuple(m for m in messages if isinstance(m, str))
        if isinstance(messages, list) else None,
        provider=provider if isinstance(provider, str) else None,
        label=label if isinstance(label, str) else None)


def same_url(a: str | None, b: str) -> bool:
    """Whether a server URL is the endpoint's (a trailing slash and surrounding space aside)."""
    return a is not None and a.strip().rstrip("/") == b.strip().rstrip("/")


def effective_messages(target: Target) -> tuple[str, ...]:
    """What an assistant sends: its serverMessages, or Vapi's defaults when it sets none."""
    if target.server_messages is not None:
        return target.server_messages
    return DEFAULT_SERVER_MESSAGES


def missing_messages(target: Target) -> tuple[str, ...]:
    """The needed messages an assistant leaves out (a phone number sets none of its own)."""
    if target.kind != "assistant":
        return ()
    sent = set(effective_messages(target))
    return tuple(m for m in NEEDED_MESSAGES if m not in sent)


def assess(target: Target, endpoint_url: str, current_credential: str | None,
           wired: Collection[tuple[str, str]]) -> Wiring:
    """Where `target` sends its calls, compared with the organization's endpoint URL."""
    server = target.server or {}
    url = server.get("url") if isinstance(server.get("url"), str) else None
    credential = server.get("credentialId")
    credential_id = credential if isinstance(credential, str) and credential else None
    points: Points = ("nowhere" if not url
                      else "here" if same_url(url, endpoint_url) else "elsewhere")
    return Wiring(
        target=target, points=points, server_url=url, credential_id=credential_id,
        credential_current=credential_id is not None and credential_id == current_credential,
        missing_messages=missing_messages(target),
        wired_by_calltrail=(target.kind, target.vapi_id) in wired)


def wired_messages(target: Target) -> list[str]:
    """The assistant's messages with the needed ones added: a union, in their order."""
    sent = list(effective_messages(target))
    return sent + [m for m in NEEDED_MESSAGES if m not in sent]


def wire_body(target: Target, endpoint_url: str, credential_id: str) -> dict[str, Any]:
    """The PATCH that points `target` at the endpoint with the credential."""
    server: dict[str, Any] = {k: v for k, v in (target.server or {}).items()
                              if k in KEPT_SERVER_FIELDS}
    server.update(url=endpoint_url, credentialId=credential_id)
    if target.kind == "assistant":
        return {"server": server, "serverMessages": wired_messages(target)}
    return _with_provider(target.provider, {"server": server})


def unwire_body(kind: Kind, provider: str | None, previous_server: Any,
                previous_messages: Any) -> dict[str, Any]:
    """The PATCH that puts back what was there before the first wiring (null: unset)."""
    if kind == "assistant":
        return {"server": previous_server, "serverMessages": previous_messages}
    return _with_provider(provider, {"server": previous_server})


def _with_provider(provider: str | None, body: dict[str, Any]) -> dict[str, Any]:
    # Vapi's phone-number update is one body per provider, told apart by `provider`.
    return {"provider": provider, **body} if provider else body


def credential_body(secret: str) -> dict[str, Any]:
    """`POST /credential`: a webhook credential signing as ingest verifies (auth.py)."""
    return {"provider": "webhook", "name": CREDENTIAL_NAME, "authenticationPlan": {
        "type": "hmac", "secretKey": secret, "algorithm": "sha256",
        "signatureHeader": SIGNATURE_HEADER, "timestampHeader": TIMESTAMP_HEADER,
        "includeTimestamp": True, "payloadFormat": "{timestamp}.{body}",
        "signatureEncoding": "hex"}}


# --- the tables ---------------------------------------------------------------------------

ENDPOINT = """
    SELECT id, secret, secret_created_at FROM webhook_endpoints
    WHERE org_id = $1 AND revoked_at IS NULL ORDER BY created_at DESC, id LIMIT 1"""
CURRENT_CREDENTIAL = """
    SELECT credential_id FROM vapi_wiring_credentials
    WHERE org_id = $1 AND secret_issued_at = $2"""
STORE_CREDENTIAL = """
    INSERT INTO vapi_wiring_credentials (org_id, credential_id, secret_issued_at)
    VALUES ($1, $2, $3)
    ON CONFLICT (org_id) DO UPDATE SET credential_id = EXCLUDED.credential_id,
        secret_issued_at = EXCLUDED.secret_issued_at, created_at = now()"""
WIRED = "SELECT kind, vapi_id FROM vapi_wiring WHERE org_id = $1"
# A target wired again keeps what was there first, unless it was pointed elsewhere since
# ($6): then that is what Unwire must put back.
STORE_PREVIOUS = """
    INSERT INTO vapi_wiring (org_id, kind, vapi_id, previous_server,
                             previous_server_messages, credential_id)
    VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb, $7)
    ON CONFLICT (org_id, kind, vapi_id) DO UPDATE SET
        previous_server = CASE WHEN $6 THEN EXCLUDED.previous_server
                               ELSE vapi_wiring.previous_server END,
        previous_server_messages = CASE WHEN $6 THEN EXCLUDED.previous_server_messages
                                        ELSE vapi_wiring.previous_server_messages END,
        credential_id = EXCLUDED.credential_id, wired_at = now()"""
PREVIOUS = """
    SELECT kind, vapi_id, previous_server::text AS server,
           previous_server_messages::text AS messages
    FROM vapi_wiring WHERE org_id = $1 ORDER BY kind, vapi_id"""
FORGET = "DELETE FROM vapi_wiring WHERE org_id = $1 AND kind = $2 AND vapi_id = $3"


@dataclass(frozen=True)
class Endpoint:
    endpoint_id: str
    url: str
    secret: str
    secret_issued_at: dt.datetime


@dataclass(frozen=True)
class Survey:
    endpoint_url: str | None  # None: no active endpoint
    items: tuple[Wiring, ...]


@dataclass(frozen=True)
class Change:
    kind: Kind
    vapi_id: str
    added_messages: tuple[str, ...] = ()


async def endpoint_of(db: asyncpg.Pool | asyncpg.Connection, org_id: uuid.UUID,
                      public_base_url: str) -> Endpoint | None:
    row = await db.fetchrow(ENDPOINT, org_id)
    if row is None:
        return None
    return Endpoint(row["id"], webhook_url(public_base_url, row["id"]), row["secret"],
                    row["secret_created_at"])


async def targets(client: VapiClient) -> list[Target]:
    """The account's assistants, then its phone numbers."""
    listed: list[tuple[Kind, list[dict[str, Any]]]] = [
        ("assistant", await client.assistants()),
        ("phone-number", await client.phone_numbers())]
    return [t for kind, items in listed for t in (target_of(kind, i) for i in items)
            if t is not None]


async def _current_credential(db: asyncpg.Pool | asyncpg.Connection, org_id: uuid.UUID,
                              endpoint: Endpoint | None) -> str | None:
    if endpoint is None:
        return None
    found: str | None = await db.fetchval(CURRENT_CREDENTIAL, org_id, endpoint.secret_issued_at)
    return found


async def _wired(db: asyncpg.Pool | asyncpg.Connection, org_id: uuid.UUID
                 ) -> set[tuple[str, str]]:
    return {(r["kind"], r["vapi_id"]) for r in await db.fetch(WIRED, org_id)}


async def survey(pool: asyncpg.Pool, client: VapiClient, org_id: uuid.UUID, *,
                 public_base_url: str) -> Survey:
    """Every assistant and phone number of the account, assessed. Raises the client's
    VapiError."""
    found = await targets(client)
    endpoint = await endpoint_of(pool, org_id, public_base_url)
    if endpoint is None:
        return Survey(None, ())
    credential = await _current_credential(pool, org_id, endpoint)
    wired = await _wired(pool, org_id)
    return Survey(endpoint.url, tuple(assess(t, endpoint.url, credential, wired)
                                      for t in found))


def _selected(items: Iterable[Any], only: Collection[str] | None, key: str) -> list[Any]:
    return [i for i in items if only is None or getattr(i, key) in only]


async def _credential_for(pool: asyncpg.Pool, client: VapiClient, org_id: uuid.UUID,
                          endpoint: Endpoint, actor: audit.Actor) -> str:
    """The organization's credential for its current secret, made in Vapi when missing."""
    existing = await _current_credential(pool, org_id, endpoint)
    if existing is not None:
        return existing
    made = await client.create_credential(credential_body(endpoint.secret))
    credential_id = made.get("id")
    if not isinstance(credential_id, str) or not credential_id:
        raise WiringError("Vapi answered the new credential without an id")
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute(STORE_CREDENTIAL, org_id, credential_id,
                                 endpoint.secret_issued_at)
        await audit.record(connection, org_id, actor, "vapi.credential_created", credential_id,
                           {"type": "hmac", "endpointId": endpoint.endpoint_id})
    log.info("vapi_credential_created", org_id=str(org_id), credential_id=credential_id)
    return credential_id


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


async def wire(pool: asyncpg.Pool, client: VapiClient, org_id: uuid.UUID, *,
               public_base_url: str, actor: audit.Actor,
               only: Collection[str] | None = None) -> list[Change]:
    """Point every assistant and phone number (or those whose ids are in `only`) that is
    not completely wired at the organization's endpoint, with its credential and the
    needed messages added; what changed. Each change is written to the audit log, after
    its previous set-up was kept. Raises NoEndpoint or the client's VapiError (what was
    changed before it stays changed, and recorded)."""
    endpoint = await endpoint_of(pool, org_id, public_base_url)
    if endpoint is None:
        raise NoEndpoint("this organization has no active webhook endpoint")
    found = _selected(await targets(client), only, "vapi_id")
    wired = await _wired(pool, org_id)
    current = await _current_credential(pool, org_id, endpoint)
    pending = [state for state in (assess(t, endpoint.url, current, wired) for t in found)
               if not state.complete]
    if not pending:  # no credential is made for nothing to wire
        return []
    credential_id = await _credential_for(pool, client, org_id, endpoint, actor)
    changes: list[Change] = []
    for state in pending:
        target = state.target
        keep_first = state.points == "here" and state.wired_by_calltrail
        await pool.execute(STORE_PREVIOUS, org_id, target.kind, target.vapi_id,
                           _json(target.server), _json(target.server_messages),
                           not keep_first, credential_id)
        if target.kind == "assistant":
            await client.update_assistant(target.vapi_id,
                                          wire_body(target, endpoint.url, credential_id))
        else:
            await client.update_phone_number(target.vapi_id,
                                             wire_body(target, endpoint.url, credential_id))
        change = Change(target.kind, target.vapi_id, state.missing_messages)
        await audit.record(pool, org_id, actor, "vapi.wired", f"{target.kind}:{target.vapi_id}",
                           {"credentialId": credential_id, "endpointId": endpoint.endpoint_id,
                            "previousUrlHost": _host(state.server_url),
                            "addedMessages": list(change.added_messages)})
        changes.append(change)
    log.info("vapi_wired", org_id=str(org_id), changed=len(changes))
    return changes


async def unwire(pool: asyncpg.Pool, client: VapiClient, org_id: uuid.UUID, *,
                 actor: audit.Actor, only: Collection[str] | None = None) -> list[Change]:
    """Put back the set-up every wired assistant and number (or those in `only`) had before
    Calltrail wired it, and forget it; what changed. One Vapi deleted meanwhile is
    forgotten too. Raises the client's VapiError."""
    rows = _selected([_Previous(r["kind"], r["vapi_id"], r["server"], r["messages"])
                      for r in await pool.fetch(PREVIOUS, org_id)], only, "vapi_id")
    providers: dict[str, str | None] = {}
    if any(r.kind == "phone-number" for r in rows):
        providers = {t.vapi_id: t.provider for t in
                     (target_of("phone-number", n) for n in await client.phone_numbers())
                     if t is not None}
    changes: list[Change] = []
    for row in rows:
        server = None if row.server is None else orjson.loads(row.server)
        messages = None if row.messages is None else orjson.loads(row.messages)
        body = unwire_body(row.kind, providers.get(row.vapi_id), server, messages)
        gone = False
        try:
            if row.kind == "assistant":
                await client.update_assistant(row.vapi_id, body)
            else:
                await client.update_phone_number(row.vapi_id, body)
        except VapiNotFound:
            gone = True
        await pool.execute(FORGET, org_id, row.kind, row.vapi_id)
        await audit.record(pool, org_id, actor, "vapi.unwired", f"{row.kind}:{row.vapi_id}",
                           {"restoredUrlHost": _host(server.get("url")
                                                     if isinstance(server, dict) else None),
                            "goneFromVapi": gone})
        changes.append(Change(row.kind, row.vapi_id))
    log.info("vapi_unwired", org_id=str(org_id), changed=len(changes))
    return changes


@dataclass(frozen=True)
class _Previous:
    kind: Kind
    vapi_id: str
    server: str | None
    messages: str | None


def _host(url: Any) -> str | None:
    """A URL's host for the audit log: enough to say where, never a path's token."""
    if not isinstance(url, str) or "://" not in url:
        return None
    return url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1] or None

