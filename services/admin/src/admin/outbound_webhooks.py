"""`calltrail outbound-webhook create|list|update|disable|enable|delete|rotate-secret|
deliveries|send-again`: an organization's outbound webhook endpoints and their delivery
log (decision 40), for operators.

`create` and `rotate-secret` print the endpoint's signing secret, this once; nothing else
prints it. Endpoints and deliveries are named by id alone (their organization is looked
up). URLs are checked as the API checks them (`WEBHOOKS_ALLOW_PRIVATE_TARGETS` lets
private targets through). Every change is written to the organization's audit log as
`cli`. The rules and the SQL are `calltrail_common.outbound_endpoints`.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from admin.output import CommandError, parse_id, print_json
from calltrail_common import db
from calltrail_common import outbound_endpoints as endpoints
from calltrail_common.settings import Settings

DEFAULT_LOG_LIMIT = 50


def _moment(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _endpoint(endpoint: endpoints.Endpoint) -> dict[str, Any]:
    attempt = endpoint.last_attempt
    return {
        "endpointId": str(endpoint.id), "orgId": str(endpoint.org_id), "url": endpoint.url,
        "description": endpoint.description, "eventTypes": list(endpoint.event_types),
        "enabled": endpoint.enabled, "disabledAt": _moment(endpoint.disabled_at),
        "disabledReason": endpoint.disabled_reason,
        "failingSince": _moment(endpoint.failing_since),
        "lastSuccessAt": _moment(endpoint.last_success_at),
        "lastAttempt": None if attempt is None else {
            "at": attempt.at.isoformat(), "status": attempt.status, "error": attempt.error},
        "createdAt": endpoint.created_at.isoformat(),
    }


def _issued(issued: endpoints.IssuedSecret) -> dict[str, Any]:
    return {**_endpoint(issued.endpoint), "secret": issued.secret}


def _delivery(delivery: endpoints.Delivery) -> dict[str, Any]:
    return {
        "deliveryId": str(delivery.id), "endpointId": str(delivery.endpoint_id),
        "eventId": str(delivery.event_id), "eventType": delivery.event_type,
        "state": delivery.state, "attempts": delivery.attempts,
        "lastStatus": delivery.last_status, "lastLatencyMs": delivery.last_latency_ms,
        "lastError": delivery.last_error, "createdAt": delivery.created_at.isoformat(),
        "lastAttemptAt": _moment(delivery.last_attempt_at),
        "deliveredAt": _moment(delivery.delivered_at),
    }


def _event_types(raw: str | None) -> list[str] | None:
    """`--events call.ended,lead.created` as a list (None: not given)."""
    return None if raw is None else raw.split(",")


@asynccontextmanager
async def _connected(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    connection = await db.connect(settings.database_url)
    try:
        yield connection
    except endpoints.EndpointError as error:
        raise CommandError(str(error)) from None
    finally:
        await connection.close()


async def _endpoint_org(connection: asyncpg.Connection, endpoint_id: uuid.UUID
                        ) -> uuid.UUID:
    org_id = await endpoints.endpoint_organization(connection, endpoint_id)
    if org_id is None:
        raise CommandError(f"no outbound webhook endpoint {endpoint_id}")
    return org_id


def _endpoint_id(args: argparse.Namespace) -> uuid.UUID:
    return parse_id(args.endpoint_id, "ENDPOINT_ID")


async def _create(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    async with _connected(settings) as connection:
        try:
            issued = await endpoints.create(
                connection, org_id, url=args.url, description=args.description,
                event_types=_event_types(args.events) or [],
                allow_private=settings.webhooks_allow_private_targets)
        except asyncpg.ForeignKeyViolationError:
            raise CommandError(f"no organization {org_id}") from None
    print_json(_issued(issued))


async def _list(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    async with _connected(settings) as connection:
        found = await endpoints.list_endpoints(connection, org_id)
    print_json([_endpoint(e) for e in found])


async def _update(settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _endpoint_id(args)
    async with _connected(settings) as connection:
        org_id = await _endpoint_org(connection, endpoint_id)
        changed = await endpoints.update(
            connection, org_id, endpoint_id, url=args.url, description=args.description,
            event_types=_event_types(args.events),
            allow_private=settings.webhooks_allow_private_targets)
    if changed is None:
        raise CommandError(f"no outbound webhook endpoint {endpoint_id}")
    print_json(_endpoint(changed))


async def _switch(settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _endpoint_id(args)
    change = endpoints.enable if args.outbound_command == "enable" else endpoints.disable
    async with _connected(settings) as connection:
        found = await change(connection, await _endpoint_org(connection, endpoint_id),
                             endpoint_id)
    if found is None:
        raise CommandError(f"no outbound webhook endpoint {endpoint_id}")
    print_json(_endpoint(found))


async def _delete(settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _endpoint_id(args)
    async with _connected(settings) as connection:
        org_id = await _endpoint_org(connection, endpoint_id)
        if not await endpoints.delete(connection, org_id, endpoint_id):
            raise CommandError(f"no outbound webhook endpoint {endpoint_id}")
    print_json({"endpointId": str(endpoint_id), "deleted": True})


async def _rotate(settings: Settings, args: argparse.Namespace) -> None:
    endpoint_id = _endpoint_id(args)
    async with _connected(settings) as connection:
        issued = await endpoints.rotate_secret(
            connection, await _endpoint_org(connection, endpoint_id), endpoint_id)
    if issued is None:
        raise CommandError(f"no outbound webhook endpoint {endpoint_id}")
    print_json(_issued(issued))


async def _deliveries(settings: Settings, args: argparse.Namespace) -> None:
    """The newest `--limit` deliveries, read a page of the log at a time."""
    endpoint_id = _endpoint_id(args)
    if args.limit < 1:
        raise CommandError("--limit must be at least 1")
    listed: list[endpoints.Delivery] = []
    async with _connected(settings) as connection:
        org_id = await _endpoint_org(connection, endpoint_id)
        after = None
        while len(listed) < args.limit:
            wanted = min(endpoints.MAX_LOG_PAGE, args.limit - len(listed))
            page = await endpoints.deliveries(connection, org_id, endpoint_id, after=after,
                                              limit=wanted) or []
            listed += page
            if len(page) < wanted:
                break
            after = (page[-1].created_at, page[-1].id)
    print_json([_delivery(d) for d in listed])


async def _send_again(settings: Settings, args: argparse.Namespace) -> None:
    delivery_id = parse_id(args.delivery_id, "DELIVERY_ID")
    async with _connected(settings) as connection:
        org_id = await endpoints.delivery_organization(connection, delivery_id)
        again = None if org_id is None else await endpoints.send_again(
            connection, org_id, delivery_id)
    if again is None:
        raise CommandError(f"no delivery {delivery_id}")
    print_json(_delivery(again))


def add_commands(commands: Any) -> None:
    """Add `outbound-webhook ...` to the CLI's subcommands."""
    outbound = commands.add_parser(
        "outbound-webhook", help="an organization's outbound webhook endpoints and their "
        "delivery log").add_subparsers(dest="outbound_command", required=True)
    events = f"comma-separated, of {', '.join(endpoints.EVENT_TYPES)}"

    create = outbound.add_parser("create", help="add an endpoint; prints its signing "
                                 "secret, this once")
    create.add_argument("--org", required=True)
    create.add_argument("--url", required=True, help="https, on a public address")
    create.add_argument("--events", required=True, help=events)
    create.add_argument("--description", default="")
    create.set_defaults(run=_create)

    listing = outbound.add_parser("list", help="an organization's endpoints (never a "
                                  "secret)")
    listing.add_argument("--org", required=True)
    listing.set_defaults(run=_list)

    update = outbound.add_parser("update", help="change an endpoint's URL, description or "
                                 "event types")
    update.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    update.add_argument("--url")
    update.add_argument("--description")
    update.add_argument("--events", help=events)
    update.set_defaults(run=_update)

    for name, text in (("disable", "stop sending to an endpoint"),
                       ("enable", "send to an endpoint again (also one disabled for "
                                  "failing: its failing streak starts afresh)"),
                       ("delete", "delete an endpoint and its delivery log"),
                       ("rotate-secret", "issue a new signing secret, in force at once; "
                                         "prints it, this once")):
        command = outbound.add_parser(name, help=text)
        command.add_argument("endpoint_id", metavar="ENDPOINT_ID")
        command.set_defaults(run={"disable": _switch, "enable": _switch, "delete": _delete,
                                  "rotate-secret": _rotate}[name])

    log = outbound.add_parser("deliveries", help="an endpoint's delivery log, newest first")
    log.add_argument("endpoint_id", metavar="ENDPOINT_ID")
    log.add_argument("--limit", type=int, default=DEFAULT_LOG_LIMIT)
    log.set_defaults(run=_deliveries)

    again = outbound.add_parser("send-again", help="send a delivery again (pending and "
                                "unqueued: the dispatcher sends it, same webhook-id)")
    again.add_argument("delivery_id", metavar="DELIVERY_ID")
    again.set_defaults(run=_send_again)
