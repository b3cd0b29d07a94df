"""`calltrail org time-zone`: the organization's IANA time zone, whose days its figures
count (decision 45), shown or set. The rule and the SQL are `calltrail_common.time_zones`;
a change is written to the audit log as `cli`, and the call processors rebuild the figures
for it in the background (`rebuilding` until done).
"""

from __future__ import annotations

import argparse
from typing import Any

from admin.output import CommandError, parse_id, print_json
from calltrail_common import audit, db, time_zones
from calltrail_common.organizations import organization_exists
from calltrail_common.settings import Settings


async def _time_zone(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        if not await organization_exists(connection, org_id):
            raise CommandError(f"no organization {org_id}")
        if args.zone is not None:
            try:
                await time_zones.choose(connection, org_id, args.zone, audit.CLI_ACTOR)
            except time_zones.InvalidTimeZone as problem:
                raise CommandError(str(problem)) from None
        zone = await time_zones.find(connection, org_id)
    finally:
        await connection.close()
    print_json({"orgId": str(org_id), "timeZone": zone.time_zone,
                "figuresTimeZone": zone.figures_time_zone,
                "usageTimeZone": zone.usage_time_zone, "rebuilding": zone.rebuilding})


def add_commands(org: Any) -> None:
    command = org.add_parser(
        "time-zone", help="the organization's IANA time zone, whose days the figures count "
                          "(shown without a zone)")
    command.add_argument("--org", required=True)
    command.add_argument("zone", nargs="?", help="e.g. Europe/Paris, America/Los_Angeles, UTC")
    command.set_defaults(run=_time_zone)
