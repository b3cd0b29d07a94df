"""`calltrail org success`: which boolean structured output or scorecard counts as a call's
success for an organization (decision 41), shown, set or cleared. The rule and the SQL are
`calltrail_common.success_measures`; every change is written to the audit log as `cli`.
"""

from __future__ import annotations

import argparse
from typing import Any

from admin.output import CommandError, parse_id, print_json
from calltrail_common import audit, db, success_measures
from calltrail_common.organizations import organization_exists
from calltrail_common.settings import Settings


def _wanted(args: argparse.Namespace) -> success_measures.SuccessMeasure | None:
    """The measure the options ask for (None: --clear); CommandError when they do not fit."""
    try:
        if args.output is not None:
            return success_measures.measure_of("output", args.output, args.pass_mark)
        return success_measures.measure_of("scorecard", args.scorecard, args.pass_mark)
    except ValueError as problem:
        raise CommandError(str(problem)) from None


async def _success(settings: Settings, args: argparse.Namespace) -> None:
    org_id = parse_id(args.org, "--org")
    changing = args.clear or args.output is not None or args.scorecard is not None
    if args.pass_mark is not None and args.scorecard is None:
        raise CommandError("--pass-mark goes with --scorecard")
    connection = await db.connect(settings.database_url)
    try:
        if not await organization_exists(connection, org_id):
            raise CommandError(f"no organization {org_id}")
        if changing:
            measure = None if args.clear else _wanted(args)
            await success_measures.choose(connection, org_id, measure, audit.CLI_ACTOR)
        measure = await success_measures.find(connection, org_id)
        sources = await success_measures.recent_sources(connection, org_id)
    finally:
        await connection.close()
    print_json({
        "orgId": str(org_id),
        "measure": None if measure is None else {
            "kind": measure.kind, "sourceId": measure.source_id,
            "passMark": None if measure.pass_mark is None else str(measure.pass_mark)},
        "counts": success_measures.describe(measure),
        "sources": [{"kind": s.kind, "sourceId": s.source_id, "name": s.name}
                    for s in sources]})


def add_commands(org: Any) -> None:
    success = org.add_parser(
        "success", help="which structured output or scorecard counts as a call's success "
                        "(shown without options)")
    success.add_argument("--org", required=True)
    chosen = success.add_mutually_exclusive_group()
    chosen.add_argument("--output", metavar="ID",
                        help="a boolean structured output: success when true")
    chosen.add_argument("--scorecard", metavar="ID",
                        help="a scorecard: success at or above --pass-mark")
    chosen.add_argument("--clear", action="store_true",
                        help="count analysis.successEvaluation again")
    success.add_argument("--pass-mark", metavar="N",
                         help="0 to 100, the scorecard's normalized score (default 80)")
    success.set_defaults(run=_success)
