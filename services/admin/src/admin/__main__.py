"""`calltrail`: the admin command line (contract section 8).

Exit status 0 on success; otherwise non-zero with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import aio_pika
import asyncpg

from admin import accounts, agencies, erasure, outbound_webhooks, people, success, time_zone
from admin.broker import confirmed_channel, dead_letters
from admin.output import CommandError, parse_id, print_json
from calltrail_common import archive, audit, db, phone_numbers
from calltrail_common.agencies import AgencyError
from calltrail_common.crypto import CryptoError
from calltrail_common.e164 import to_e164
from calltrail_common.handback import releasable, republish
from calltrail_common.logging import configure_logging
from calltrail_common.organizations import (
    DEFAULT_SECRET_OVERLAP,
    InvalidTokenName,
    NoWebhookEndpoint,
    create_token,
    list_tokens,
    organization_exists,
    revoke_previous,
    revoke_token,
    rotate,
    token_name,
    webhook_url,
)
from calltrail_common.settings import Settings, SettingsError, load_settings
from calltrail_common.topology import Topology


async def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    if args.check:
        pending = await db.pending_migrations(settings.database_url)
        print_json({"pending": pending})
        if pending:
            raise CommandError(f"{len(pending)} migrations not applied yet")
        return
    created = await db.create_database_if_missing(settings.database_url)
    applied = await db.migrate(settings.database_url)
    print_json({"databaseCreated": created, "applied": applied})


async def _org_create(settings: Settings, args: argparse.Namespace) -> None:
    name = args.name.strip()
    if not name:
        raise CommandError("--name must not be empty")
    connection = await db.connect(settings.database_url)
    try:
        org, kind = await agencies.create(connection, name, agency=args.agency,
                                          client_of=args.client_of)
    finally:
        await connection.close()
    print_json({
        "orgId": str(org.org_id),
        "tokenId": str(org.token_id),
        "apiToken": org.api_token,
        "webhookUrl": webhook_url(settings.public_base_url, org.endpoint_id),
        "webhookSecret": org.webhook_secret,
        **kind,
    })


_ORGANIZATIONS = """
    SELECT o.id, o.name, o.kind, o.agency_id,
           count(m.user_id) FILTER (WHERE m.role = 'owner') AS owners,
           count(m.user_id) AS members
    FROM organizations o LEFT JOIN memberships m ON m.org_id = o.id
    GROUP BY o.id ORDER BY o.created_at, o.id"""


async def _org_list(settings: Settings, args: argparse.Namespace) -> None:
    """Every organization with how many owners and members it has: after an upgrade from
    token sign-in, the ones with no owner need `calltrail user invite --role owner`."""
    connection = await db.connect(settings.database_url)
    try:
        rows = await connection.fetch(_ORGANIZATIONS)
    finally:
        await connection.close()
    print_json([{"orgId": str(r["id"]), "name": r["name"], "kind": r["kind"],
                  "agencyId": None if r["agency_id"] is None else str(r["agency_id"]),
                  "owners": r["owners"], "members": r["members"]}
                 for r in rows if not args.without_owner or r["owners"] == 0])


async def _token_create(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    try:
        name = token_name(args.name)
    except InvalidTokenName as error:
        raise CommandError(f"--name: {error}") from None
    connection = await db.connect(settings.database_url)
    try:
        made = await create_token(connection, org_id, name=name)
    except asyncpg.ForeignKeyViolationError:
        raise CommandError(f"no organization {org_id}") from None
    finally:
        await connection.close()
    print_json({"tokenId": str(made.token_id), "apiToken": made.api_token,
                 "prefix": made.prefix, "name": name})


def _moment(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


async def _token_list(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        if not await organization_exists(connection, org_id):
            raise CommandError(f"no organization {org_id}")
        tokens = await list_tokens(connection, org_id)
    finally:
        await connection.close()
    print_json([{"tokenId": str(t.token_id), "name": t.name, "prefix": t.prefix,
                  "creator": t.creator, "createdAt": _moment(t.created_at),
                  "lastUsedAt": _moment(t.last_used_at), "revokedAt": _moment(t.revoked_at)}
                 for t in tokens])


async def _token_revoke(settings: Settings, args: argparse.Namespace) -> None:
    token_id = parse_id(args.token_id, "TOKEN_ID")
    connection = await db.connect(settings.database_url)
    try:
        if not await revoke_token(connection, token_id):
            raise CommandError(f"no token {token_id}")
    finally:
        await connection.close()
    print_json({"tokenId": str(token_id), "revoked": True})


async def _webhook_secret_rotate(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    if args.overlap_hours is None:
        overlap = DEFAULT_SECRET_OVERLAP
    elif args.overlap_hours >= 0:
        overlap = dt.timedelta(hours=args.overlap_hours)
    else:
        raise CommandError("--overlap-hours must not be negative")
    connection = await db.connect(settings.database_url)
    try:
        async with connection.transaction():
            rotated = await rotate(connection, org_id, overlap)
            await audit.record(connection, org_id, audit.CLI_ACTOR, "webhook_secret.rotated",
                               rotated.endpoint_id,
                               {"overlapSeconds": int(overlap.total_seconds())})
    except NoWebhookEndpoint:
        raise CommandError(f"no organization {org_id} with a webhook endpoint") from None
    finally:
        await connection.close()
    print_json({
        "endpointId": rotated.endpoint_id,
        "webhookUrl": webhook_url(settings.public_base_url, rotated.endpoint_id),
        "webhookSecret": rotated.webhook_secret,
        "previousValidUntil": rotated.previous_valid_until.isoformat()
        if rotated.previous_valid_until else None,
    })


async def _webhook_secret_revoke(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        async with connection.transaction():
            revoked = await revoke_previous(connection, org_id)
            if revoked:
                await audit.record(connection, org_id, audit.CLI_ACTOR,
                                   "webhook_secret.previous_revoked")
    except NoWebhookEndpoint:
        raise CommandError(f"no organization {org_id} with a webhook endpoint") from None
    finally:
        await connection.close()
    print_json({"orgId": str(org_id), "previousRevoked": revoked})


def _e164(raw: str) -> str:
    number = to_e164(raw)
    if number is None:
        raise CommandError(f"--number must be an E.164 number like +14155550123: {raw!r}")
    return number


async def _phone_number_add(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    number = _e164(args.number)
    connection = await db.connect(settings.database_url)
    try:
        try:
            created = await phone_numbers.register(connection, org_id, number, args.vapi_id)
        except asyncpg.ForeignKeyViolationError:
            raise CommandError(f"no organization {org_id}") from None
        except phone_numbers.NumberTaken as taken:
            raise CommandError(str(taken)) from None
        waiting = await releasable(
            connection, [number] if number else [], [args.vapi_id] if args.vapi_id else [],
            None)
    finally:
        await connection.close()
    # Hand the events this number now gives an organization back to the processor, which
    # assigns them.
    topology = Topology(settings.amqp_prefix)
    async with confirmed_channel(settings.amqp_url.get_secret_value(), topology) as channel:
        requeued = await republish(channel, topology, waiting)
    print_json({"orgId": str(org_id), "number": number, "vapiPhoneNumberId": args.vapi_id,
                 "created": created, "unassignedEventsRequeued": requeued})


async def _unassigned_list(settings: Settings, args: argparse.Namespace) -> None:
    connection = await db.connect(settings.database_url)
    try:
        rows = await archive.unassigned(connection, args.limit)
    finally:
        await connection.close()
    print_json([{
        "messageId": r["message_id"], "receivedAt": r["received_at"].isoformat(),
        "type": r["message_type"], "callId": r["call_id"],
        "phoneNumberId": r["phone_number_id"], "dialledNumber": r["dialled_number"],
        "vapiOrgId": r["vapi_org_id"], "metadataOrgIds": list(r["metadata_org_ids"]),
        "reason": r["reason"],
    } for r in rows])


async def _phone_number_conflicts(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org") if args.org else None
    connection = await db.connect(settings.database_url)
    try:
        listed = await phone_numbers.conflicts(connection, org_id, args.limit)
    finally:
        await connection.close()
    # orgId: the organization whose account lists the number; heldBy: the one that has it.
    print_json([{
        "orgId": str(c.org_id), "heldBy": str(c.held_by), "number": c.number,
        "vapiPhoneNumberId": c.vapi_phone_number_id, "vapiOrgId": c.vapi_org_id,
        "firstSeenAt": c.first_seen_at.isoformat(), "lastSeenAt": c.last_seen_at.isoformat(),
    } for c in listed])


async def _dlq(settings: Settings, args: argparse.Namespace) -> None:
    topology = Topology(settings.amqp_prefix)
    async with confirmed_channel(settings.amqp_url.get_secret_value(), topology) as channel:
        letters = await dead_letters(channel, topology, replay=args.dlq_command == "replay")
    listed = [{"messageId": d.message_id, "reason": d.reason, "type": d.message_type,
               "dedupeKey": d.dedupe_key} for d in letters]
    print_json({"replayed": len(listed)} if args.dlq_command == "replay" else listed)


async def _events_replay(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    try:
        since = dt.datetime.fromisoformat(args.since.replace("Z", "+00:00")) if args.since \
            else dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    except ValueError:
        raise CommandError(f"--since is not an ISO 8601 time: {args.since!r}") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    connection = await db.connect(settings.database_url)
    try:
        events = await archive.archived_for(connection, org_id, since)
    finally:
        await connection.close()
    topology = Topology(settings.amqp_prefix)
    async with confirmed_channel(settings.amqp_url.get_secret_value(), topology) as channel:
        replayed = await republish(channel, topology, events, org_id=str(org_id))
    print_json({"orgId": str(org_id), "replayed": replayed})


Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, None]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="calltrail", description="Calltrail administration.")
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.add_argument(
        "--check", action="store_true",
        help="apply nothing; exit non-zero while migrations are pending (a pod's init "
             "container waits on this for the migration Job)")
    migrate.set_defaults(run=_migrate)

    org = commands.add_parser("org", help="organizations").add_subparsers(
        dest="org_command", required=True)
    org_create = org.add_parser("create", help="create an organization")
    org_create.add_argument("--name", required=True)
    agencies.add_create_options(org_create)
    org_create.set_defaults(run=_org_create)
    org_list = org.add_parser("list", help="organizations, with their owners and members")
    org_list.add_argument("--without-owner", action="store_true",
                          help="only those nobody owns yet (to invite a first owner)")
    org_list.set_defaults(run=_org_list)
    agencies.add_commands(org)
    success.add_commands(org)
    time_zone.add_commands(org)

    token = commands.add_parser("token", help="tenant API tokens").add_subparsers(
        dest="token_command", required=True)
    token_create = token.add_parser("create", help="issue a new API token")
    token_create.add_argument("--org", required=True)
    token_create.add_argument("--name", help="what the token is for, e.g. the CRM sync")
    token_create.set_defaults(run=_token_create)
    token_list = token.add_parser("list", help="an organization's tokens, never the tokens")
    token_list.add_argument("--org", required=True)
    token_list.set_defaults(run=_token_list)
    token_revoke = token.add_parser("revoke", help="revoke an API token")
    token_revoke.add_argument("token_id", metavar="TOKEN_ID")
    token_revoke.set_defaults(run=_token_revoke)

    secret = commands.add_parser(
        "webhook-secret", help="an organization's webhook secret").add_subparsers(
        dest="webhook_secret_command", required=True)
    secret_rotate = secret.add_parser(
        "rotate", help="issue a new secret; the previous one is accepted for the overlap")
    secret_rotate.add_argument("--org", required=True)
    secret_rotate.add_argument(
        "--overlap-hours", type=float,
        help="how long the previous secret stays accepted (default 24; 0 refuses it now: "
             "how a leaked secret is revoked)")
    secret_rotate.set_defaults(run=_webhook_secret_rotate)
    secret_revoke = secret.add_parser("revoke", help="refuse the previous secret now")
    secret_revoke.add_argument("--org", required=True)
    secret_revoke.set_defaults(run=_webhook_secret_revoke)

    phone = commands.add_parser("phone-number", help="phone numbers").add_subparsers(
        dest="phone_command", required=True)
    phone_add = phone.add_parser(
        "add", help="register a number; events it matches are processed now")
    phone_add.add_argument("--org", required=True)
    phone_add.add_argument("--number", required=True, help="E.164, e.g. +14155550123")
    phone_add.add_argument("--vapi-id", help="Vapi's id of the phone number")
    phone_add.set_defaults(run=_phone_number_add)
    phone_conflicts = phone.add_parser(
        "conflicts", help="numbers an account lists that another organization has: not "
                          "claimed until an operator settles them")
    phone_conflicts.add_argument("--org", help="only those involving this organization")
    phone_conflicts.add_argument("--limit", type=int, default=1000)
    phone_conflicts.set_defaults(run=_phone_number_conflicts)

    unassigned = commands.add_parser(
        "unassigned", help="events no organization matched").add_subparsers(
        dest="unassigned_command", required=True)  # each with the reason
    unassigned_list = unassigned.add_parser("list")
    unassigned_list.add_argument("--limit", type=int, default=1000)
    unassigned_list.set_defaults(run=_unassigned_list)

    dlq = commands.add_parser("dlq", help="the dead-letter queue").add_subparsers(
        dest="dlq_command", required=True)
    dlq.add_parser("list", help="show dead letters and their reasons").set_defaults(run=_dlq)
    dlq.add_parser("replay", help="hand every dead letter back to the processor"
                   ).set_defaults(run=_dlq)

    events = commands.add_parser("events", help="archived events").add_subparsers(
        dest="events_command", required=True)
    events_replay = events.add_parser("replay", help="reprocess an organization's events")
    events_replay.add_argument("--org", required=True)
    events_replay.add_argument("--since", help="ISO 8601 time; default: all retained")
    events_replay.set_defaults(run=_events_replay)

    accounts.add_commands(commands)
    people.add_commands(commands)
    outbound_webhooks.add_commands(commands)
    erasure.add_commands(commands, org)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    run: Command = args.run
    try:
        settings = load_settings()
        # Logs go to stderr (stdout is the command's JSON); a command is quiet unless asked.
        configure_logging(settings if settings.log_level == "debug"
                          else settings.model_copy(update={"log_level": "warning"}))
        asyncio.run(run(settings, args))
    except (CommandError, SettingsError, AgencyError, CryptoError) as error:
        sys.exit(f"calltrail: {error}")
    except (OSError, asyncpg.PostgresError) as error:
        sys.exit(f"calltrail: database error: {type(error).__name__}: {error}")
    except aio_pika.exceptions.AMQPError as error:
        sys.exit(f"calltrail: broker error: {type(error).__name__}")


if __name__ == "__main__":
    main()
