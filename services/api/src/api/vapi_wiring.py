"""The tenant API's Vapi wiring routes (decision 47): where the connected account's
assistants and phone numbers send their calls, and "wire" / "unwire" them. A token acts as
an admin of its organization; the dashboard calls these handlers with the person as caller.

The rules and the SQL are `calltrail_common.vapi_wiring`; Vapi's refusals become
`api.errors` here. Every change is written to the audit log by ids, never a secret.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body

from api import shapes
from api.errors import NotConnected, NoWebhookEndpoint, VapiUnavailable
from api.routes import CONNECT_RETRY, ApiState, Caller, Org, State, Who
from calltrail_common import vapi_keys, vapi_wiring
from calltrail_common.crypto import CryptoError
from calltrail_common.logging import get_logger
from calltrail_common.vapi import VapiBadResponse, VapiClient, VapiError, VapiUnauthorized

log = get_logger("api")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": shapes.ErrorBody} for code in (400, 401, 409, 413, 502)}

router = APIRouter(prefix="/api/vapi/wiring", responses=_ERRORS, tags=["vapi"])


async def _client(state: ApiState, org_id: uuid.UUID) -> VapiClient:
    async with state.pool.acquire() as connection:
        try:
            api_key = await vapi_keys.load_key(connection, state.keyring, org_id)
        except CryptoError:
            log.warning("wiring_key_unreadable", org_id=str(org_id))
            api_key = None
    if api_key is None:
        raise NotConnected("connect a Vapi account first")
    return VapiClient(state.vapi_http, api_key, base_url=state.settings.vapi_api_base_url,
                      retry=CONNECT_RETRY)


def _refused(error: Exception, org_id: uuid.UUID) -> Exception:
    """The api's answer to what Vapi or the wiring rules refused."""
    if isinstance(error, vapi_wiring.NoEndpoint):
        return NoWebhookEndpoint(str(error))
    if isinstance(error, VapiUnauthorized):
        return NotConnected("Vapi refused the stored API key: connect the account again")
    log.warning("wiring_vapi_failed", org_id=str(org_id), error=type(error).__name__,
                status=getattr(error, "status", None))
    if isinstance(error, VapiBadResponse):
        return VapiUnavailable(f"Vapi refused the change (HTTP {error.status}); "
                               "what was changed before is listed by GET /api/vapi/wiring")
    return VapiUnavailable("Vapi could not be reached; try again")


def _item(wiring: vapi_wiring.Wiring) -> shapes.WiringItem:
    target = wiring.target
    return shapes.WiringItem(
        kind=target.kind, id=target.vapi_id, name=target.name, number=target.label,
        points=wiring.points, server_url=wiring.server_url,
        credential_id=wiring.credential_id, credential_current=wiring.credential_current,
        missing_messages=list(wiring.missing_messages),
        wired_by_calltrail=wiring.wired_by_calltrail, complete=wiring.complete)


def _changes(changes: list[vapi_wiring.Change]) -> shapes.WiringChanges:
    return shapes.WiringChanges(changed=[
        shapes.WiringChange(kind=c.kind, id=c.vapi_id, added_messages=list(c.added_messages))
        for c in changes])


@router.get("", response_model=shapes.VapiWiring)
async def get_wiring(state: State, org_id: Org) -> shapes.VapiWiring:
    """The account's assistants and phone numbers: whether each sends to this
    organization's ingest endpoint, with which credential, and which of the server
    messages Calltrail reads it leaves out. Read live from Vapi."""
    client = await _client(state, org_id)
    try:
        found = await vapi_wiring.survey(state.pool, client, org_id,
                                         public_base_url=state.settings.public_base_url)
    except VapiError as error:
        raise _refused(error, org_id) from None
    return shapes.VapiWiring(endpoint_url=found.endpoint_url,
                             needed_messages=list(vapi_wiring.NEEDED_MESSAGES),
                             items=[_item(w) for w in found.items])


async def wire(state: ApiState, who: Caller, ids: list[str] | None) -> shapes.WiringChanges:
    client = await _client(state, who.org_id)
    try:
        changes = await vapi_wiring.wire(state.pool, client, who.org_id,
                                         public_base_url=state.settings.public_base_url,
                                         actor=who.actor, only=ids)
    except (VapiError, vapi_wiring.WiringError) as error:
        raise _refused(error, who.org_id) from None
    return _changes(changes)


async def unwire(state: ApiState, who: Caller, ids: list[str] | None
                 ) -> shapes.WiringChanges:
    client = await _client(state, who.org_id)
    try:
        changes = await vapi_wiring.unwire(state.pool, client, who.org_id, actor=who.actor,
                                           only=ids)
    except (VapiError, vapi_wiring.WiringError) as error:
        raise _refused(error, who.org_id) from None
    return _changes(changes)


WiringBody = Annotated[shapes.WiringRequest | None, Body()]


@router.post("/wire", response_model=shapes.WiringChanges)
async def wire_route(state: State, who: Who, body: WiringBody = None) -> shapes.WiringChanges:
    """Point the assistants and phone numbers (`ids`, or all) at this organization's
    endpoint with a webhook credential Calltrail makes for it (HMAC of its webhook secret),
    adding the server messages Calltrail reads to those they send. What each had before is
    kept for unwire. Written to the audit log."""
    return await wire(state, who, None if body is None else body.ids)


@router.post("/unwire", response_model=shapes.WiringChanges)
async def unwire_route(state: State, who: Who, body: WiringBody = None
                       ) -> shapes.WiringChanges:
    """Put back what the wired assistants and phone numbers (`ids`, or all) had before
    Calltrail wired them. Written to the audit log."""
    return await unwire(state, who, None if body is None else body.ids)
