"""The tenant API's outbound webhook routes (decision 40): the organization's endpoints,
each one's delivery log, and "send again". A token acts as an admin of its organization,
so it manages them all; the dashboard calls these handlers with the person as caller.

The rules and the SQL are `calltrail_common.outbound_endpoints`; its refusals become
`api.errors` here. Another organization's endpoint or delivery answers 404, as an unknown
or malformed id does. A secret is answered when it is issued (creation, rotation), never
again.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Response

from api import cursors, params, shapes
from api.errors import (
    DeliveryPending,
    EndpointDisabled,
    InvalidParameter,
    NotFound,
    TooManyEndpoints,
)
from api.routes import ApiState, Caller, Cursor, Limit, Org, State, Who
from calltrail_common import outbound_endpoints as endpoints
from calltrail_common.logging import get_logger

log = get_logger("api")

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": shapes.ErrorBody} for code in (400, 401, 404, 413)}
_CONFLICT: dict[int | str, dict[str, Any]] = {409: {"model": shapes.ErrorBody}}
NO_ENDPOINT = "no such outbound webhook endpoint"

router = APIRouter(prefix="/api/outbound-webhooks", responses=_ERRORS,
                   tags=["outbound webhooks"])


def refused(error: endpoints.EndpointError) -> Exception:
    """The api's answer to a refusal of `outbound_endpoints`."""
    if isinstance(error, endpoints.TooManyEndpoints):
        return TooManyEndpoints(str(error))
    if isinstance(error, endpoints.EndpointDisabled):
        return EndpointDisabled(str(error))
    if isinstance(error, endpoints.DeliveryPending):
        return DeliveryPending(str(error))
    return InvalidParameter(error.field or "body", str(error))


async def _found(state: ApiState, org_id: uuid.UUID, endpoint_id: str) -> endpoints.Endpoint:
    endpoint = await endpoints.get_endpoint(state.pool, org_id, params.path_uuid(endpoint_id))
    if endpoint is None:
        raise NotFound(NO_ENDPOINT)
    return endpoint


@router.get("", response_model=shapes.OutboundEndpointList)
async def list_endpoints(state: State, org_id: Org) -> shapes.OutboundEndpointList:
    """The organization's endpoints, oldest first; never a secret."""
    found = await endpoints.list_endpoints(state.pool, org_id)
    return shapes.OutboundEndpointList(endpoints=[shapes.outbound_endpoint(e) for e in found])


@router.post("", status_code=201, response_model=shapes.OutboundEndpointIssued,
             responses=_CONFLICT)
async def create_endpoint(state: State, who: Who, body: shapes.OutboundEndpointRequest
                          ) -> shapes.OutboundEndpointIssued:
    """A new endpoint and its signing secret, answered this once. Written to the audit
    log (the URL by its host)."""
    async with state.pool.acquire() as connection:
        try:
            issued = await endpoints.create(
                connection, who.org_id, url=body.url, description=body.description,
                event_types=body.event_types, actor=who.actor,
                allow_private=state.settings.webhooks_allow_private_targets)
        except endpoints.EndpointError as error:
            raise refused(error) from None
    log.info("outbound_endpoint_created", org_id=str(who.org_id),
             endpoint_id=str(issued.endpoint.id))
    return shapes.outbound_issued(issued)


@router.get("/{endpoint_id}", response_model=shapes.OutboundEndpoint)
async def get_endpoint(state: State, org_id: Org, endpoint_id: str
                       ) -> shapes.OutboundEndpoint:
    return shapes.outbound_endpoint(await _found(state, org_id, endpoint_id))


async def change_endpoint(state: ApiState, who: Caller, endpoint_id: str,
                          body: shapes.OutboundEndpointChange) -> shapes.OutboundEndpoint:
    """Apply `body` in one transaction (the dashboard's edit, disable and enable too).
    Another organization's id is a 404 before anything about the body."""
    wanted = (await _found(state, who.org_id, endpoint_id)).id
    edits = body.url is not None or body.description is not None \
        or body.event_types is not None
    if not edits and body.enabled is None:
        raise InvalidParameter("body", "nothing to change: give url, description, "
                               "eventTypes or enabled")
    found: endpoints.Endpoint | None = None
    async with state.pool.acquire() as connection, connection.transaction():
        if edits:
            try:
                found = await endpoints.update(
                    connection, who.org_id, wanted, url=body.url,
                    description=body.description, event_types=body.event_types,
                    actor=who.actor,
                    allow_private=state.settings.webhooks_allow_private_targets)
            except endpoints.EndpointError as error:
                raise refused(error) from None
        if body.enabled is not None:
            change = endpoints.enable if body.enabled else endpoints.disable
            found = await change(connection, who.org_id, wanted, actor=who.actor)
    if found is None:  # deleted meanwhile
        raise NotFound(NO_ENDPOINT)
    return shapes.outbound_endpoint(found)


@router.patch("/{endpoint_id}", response_model=shapes.OutboundEndpoint)
async def update_endpoint(state: State, who: Who, endpoint_id: str,
                          body: shapes.OutboundEndpointChange) -> shapes.OutboundEndpoint:
    """Change the URL, description or event types, or disable (`"enabled": false`) or
    enable it. Each change is written to the audit log."""
    return await change_endpoint(state, who, endpoint_id, body)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response,
               responses={204: {"description": "deleted, with its delivery log"}})
async def delete_endpoint(state: State, who: Who, endpoint_id: str) -> Response:
    """Delete the endpoint and its delivery log; nothing more is sent to it."""
    wanted = params.path_uuid(endpoint_id)
    async with state.pool.acquire() as connection:
        if not await endpoints.delete(connection, who.org_id, wanted, actor=who.actor):
            raise NotFound(NO_ENDPOINT)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=shapes.OutboundEndpointIssued)
async def rotate_secret(state: State, who: Who, endpoint_id: str
                        ) -> shapes.OutboundEndpointIssued:
    """A new signing secret, in force at once (the previous one signs nothing more),
    answered this once."""
    wanted = params.path_uuid(endpoint_id)
    async with state.pool.acquire() as connection:
        issued = await endpoints.rotate_secret(connection, who.org_id, wanted,
                                               actor=who.actor)
    if issued is None:
        raise NotFound(NO_ENDPOINT)
    return shapes.outbound_issued(issued)


def delivery_position(cursor: str | None) -> tuple[Any, uuid.UUID] | None:
    """The keyset position a deliveries cursor names (400 for anything else)."""
    if cursor is None:
        return None
    position = cursors.decode("d", cursor)
    delivery_id = params.filter_uuid("cursor", position.id)
    if position.created_at is None or delivery_id is None:
        raise InvalidParameter("cursor", "not a cursor of this list")
    return position.created_at, delivery_id


async def delivery_page(state: ApiState, org_id: uuid.UUID, endpoint_id: str, *,
                        limit: int, cursor: str | None) -> shapes.OutboundDeliveryPage:
    wanted = params.path_uuid(endpoint_id)
    after = delivery_position(cursor)
    rows = await endpoints.deliveries(state.pool, org_id, wanted, limit=limit + 1,
                                      after=after)
    if rows is None:
        raise NotFound(NO_ENDPOINT)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = (cursors.encode("d", cursors.Position(page[-1].created_at,
                                                        str(page[-1].id)))
                   if more else None)
    return shapes.OutboundDeliveryPage(
        deliveries=[shapes.outbound_delivery(d) for d in page], next_cursor=next_cursor)


@router.get("/{endpoint_id}/deliveries", response_model=shapes.OutboundDeliveryPage)
async def list_deliveries(state: State, org_id: Org, endpoint_id: str,
                          limit: Limit = params.DEFAULT_PAGE_LIMIT,
                          cursor: Cursor = None) -> shapes.OutboundDeliveryPage:
    """The endpoint's delivery log, newest first: each delivery's event, state, attempts,
    and its last attempt's status, latency and error. `nextCursor` as for calls."""
    return await delivery_page(state, org_id, endpoint_id, limit=limit, cursor=cursor)


async def send_again(state: ApiState, who: Caller, endpoint_id: str, delivery_id: str
                     ) -> shapes.OutboundDelivery:
    wanted = params.path_uuid(endpoint_id)
    delivery = params.path_uuid(delivery_id)
    async with state.pool.acquire() as connection:
        try:
            again = await endpoints.send_again(connection, who.org_id, delivery,
                                               endpoint_id=wanted, actor=who.actor)
        except endpoints.EndpointError as error:
            raise refused(error) from None
    if again is None:
        raise NotFound("no such delivery of this endpoint")
    log.info("outbound_delivery_sent_again", org_id=str(who.org_id),
             endpoint_id=str(wanted), delivery_id=str(delivery))
    return shapes.outbound_delivery(again)


@router.post("/{endpoint_id}/deliveries/{delivery_id}/send-again", status_code=202,
             response_model=shapes.OutboundDelivery, responses=_CONFLICT)
async def send_again_route(state: State, who: Who, endpoint_id: str, delivery_id: str
                           ) -> shapes.OutboundDelivery:
    """Send the delivery again, with the same `webhook-id`: it becomes pending and
    unqueued, and the dispatcher sends it. 409 while its endpoint is disabled or while it
    is pending already."""
    return await send_again(state, who, endpoint_id, delivery_id)
