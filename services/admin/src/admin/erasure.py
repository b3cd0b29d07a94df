"""`calltrail lead erase` and `calltrail org retention` (decision 44): erase a caller, by
its lead's id or by number, and set how long an organization keeps call content. The
rules and the SQL are `calltrail_common.erasure`; each is written to the audit log as
`cli`, never with the number."""

from __future__ import annotations

import argparse
from typing import Any

from admin.output import CommandError, parse_id, print_json
from calltrail_common import audit, db, erasure
from calltrail_common.e164 import to_e164
from calltrail_common.organizations import organization_exists
from calltrail_common.settings import Settings


async def _lead_erase(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    lead_id = parse_id(args.lead, "--lead") if args.lead is not None else None
    number = None
    if args.number is not None:
        number = to_e164(args.number)
        if number is None:
            raise CommandError("--number must be an E.164 number like +14155550123")
    connection = await db.connect(settings.database_url)
    try:
        if not await organization_exists(connection, org_id):
            raise CommandError(f"no organization {org_id}")
        done = await erasure.erase_caller(connection, org_id, audit.CLI_ACTOR,
                                          lead_id=lead_id, number=number)
    finally:
        await connection.close()
    if done is None:
        # Never echo the number: this line may end in a terminal log.
        raise CommandError("no such lead" if lead_id is not None
                           else "no lead nor call of that number in the organization")
    print_json({"orgId": str(org_id),
                "leadId": None if done.lead_id is None else str(done.lead_id),
                "erasedCalls": done.calls})


async def _retention(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        if not await organization_exists(connection, org_id):
            raise CommandError(f"no organization {org_id}")
        if args.days is not None:
            try:
                days = erasure.parse_retention(args.days)
            except ValueError as problem:
                raise CommandError(str(problem)) from None
            await erasure.set_content_retention(connection, org_id, days, audit.CLI_ACTOR)
        days = await erasure.content_retention(connection, org_id)
    finally:
        await connection.close()
    print_json({"orgId": str(org_id), "contentRetentionDays": days})


def add_commands(commands: Any, org: Any) -> None:
    lead = commands.add_parser("lead", help="leads").add_subparsers(
        dest="lead_command", required=True)
    erase = lead.add_parser(
        "erase", help="erase a caller's personal data; counts, minutes and costs stay")
    erase.add_argument("--org", required=True)
    which = erase.add_mutually_exclusive_group(required=True)
    which.add_argument("--lead", metavar="LEAD_ID", help="the lead's id")
    which.add_argument("--number", metavar="E164",
                       help="the caller's number (also one with no lead: outbound only)")
    erase.set_defaults(run=_lead_erase)

    retention = org.add_parser(
        "retention", help="how long transcripts, recordings and archived raw events are "
                          "kept (shown without --days)")
    retention.add_argument("--org", required=True)
    retention.add_argument("--days", metavar="N|forever",
                           help="days to keep them, or 'forever' (the default)")
    retention.set_defaults(run=_retention)
