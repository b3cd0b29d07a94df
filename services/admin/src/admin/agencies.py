"""`calltrail org create --agency | --client-of`, `org markup`, `org brand`, `org clients`:
agencies and their client organizations (docs/operations.md, "Agencies: onboarding a
client"). The rules and the SQL are `calltrail_common.agencies`; every change is written
to the audit log as `cli` (a client's markup in the client's log and the agency's).
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import asyncpg

from admin.output import print_json
from calltrail_common import agencies, audit, db
from calltrail_common.agencies import AgencyError
from calltrail_common.organizations import NewOrganization, create_organization
from calltrail_common.settings import Settings


def _id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise AgencyError(f"{what} is not a valid id: {value!r}") from None


async def create(connection: asyncpg.Connection, name: str, *, agency: bool,
                 client_of: str | None) -> tuple[NewOrganization, dict[str, Any]]:
    """`org create`: a business, an agency (`--agency`) or a client (`--client-of`); the
    organization and what the JSON says beyond its credentials."""
    if agency and client_of:
        raise AgencyError("an organization is an agency or a client of one, not both")
    if client_of:
        agency_id = _id(client_of, "--client-of")
        async with connection.transaction():
            org = await agencies.create_client(connection, agency_id, name)
            await audit.record(connection, org.org_id, audit.CLI_ACTOR, "org.created",
                               str(org.org_id), {"clientOf": str(agency_id)})
            await audit.record(connection, agency_id, audit.CLI_ACTOR, "client.added",
                               str(org.org_id), {"name": name})
        return org, {"kind": "business", "agencyId": str(agency_id)}
    if agency:
        async with connection.transaction():
            org = await agencies.create_agency(connection, name)
            await audit.record(connection, org.org_id, audit.CLI_ACTOR, "org.created",
                               str(org.org_id), {"kind": "agency"})
        return org, {"kind": "agency"}
    return await create_organization(connection, name), {}


async def _markup(settings: Settings, args: argparse.Namespace) -> None:
    client_id = _id(args.org, "--org")
    percent = agencies.parse_markup(args.percent)
    connection = await db.connect(settings.database_url)
    try:
        async with connection.transaction():
            before = await agencies.set_markup(connection, client_id, percent)
            agency_id = await connection.fetchval(
                "SELECT agency_id FROM organizations WHERE id = $1", client_id)
            detail = {"from": str(before), "to": str(percent)}
            for org_id in (client_id, agency_id):
                await audit.record(connection, org_id, audit.CLI_ACTOR, "client.markup_set",
                                   str(client_id), detail)
    finally:
        await connection.close()
    print_json({"orgId": str(client_id), "markupPercent": str(percent)})


async def _brand(settings: Settings, args: argparse.Namespace) -> None:
    agency_id = _id(args.org, "--org")
    if args.logo_url is None and args.accent is None and args.host_name is None:
        raise AgencyError("give --logo-url, --accent or --host-name (an empty value clears it)")
    logo = None if args.logo_url is None else (
        agencies.parse_logo_url(args.logo_url) if args.logo_url else "")
    accent = None if args.accent is None else (
        agencies.parse_accent(args.accent) if args.accent else "")
    host = None if args.host_name is None else (
        agencies.parse_host_name(args.host_name) if args.host_name else "")
    connection = await db.connect(settings.database_url)
    try:
        async with connection.transaction():
            brand = await agencies.set_brand(connection, agency_id, logo_url=logo,
                                             accent=accent, host_name=host)
            host_name = await connection.fetchval(
                "SELECT host_name FROM organizations WHERE id = $1", agency_id)
            changed = {k: v for k, v in (("logoUrl", logo), ("accent", accent),
                                         ("hostName", host)) if v is not None}
            await audit.record(connection, agency_id, audit.CLI_ACTOR, "agency.brand_set",
                               str(agency_id), changed)
    finally:
        await connection.close()
    print_json({"orgId": str(agency_id), "name": brand.name, "logoUrl": brand.logo_url,
                 "accent": brand.accent, "hostName": host_name})


async def _clients(settings: Settings, args: argparse.Namespace) -> None:
    agency_id = _id(args.org, "--org")
    connection = await db.connect(settings.database_url)
    try:
        kind = await connection.fetchval("SELECT kind FROM organizations WHERE id = $1",
                                         agency_id)
        if kind != "agency":
            raise AgencyError(f"{agency_id} is not an agency")
        found = await agencies.clients(connection, agency_id)
    finally:
        await connection.close()
    print_json([{"orgId": str(c.org_id), "name": c.name,
                  "markupPercent": str(c.markup_percent)} for c in found])


def add_create_options(org_create: argparse.ArgumentParser) -> None:
    kind = org_create.add_mutually_exclusive_group()
    kind.add_argument("--agency", action="store_true",
                      help="an agency, which serves client organizations")
    kind.add_argument("--client-of", metavar="AGENCY_ID",
                      help="a client organization of this agency")


def add_commands(org: Any) -> None:
    """Add `markup`, `brand` and `clients` to `calltrail org`."""
    markup = org.add_parser("markup", help="set the markup an agency's client pays on cost")
    markup.add_argument("--org", required=True, metavar="CLIENT_ID")
    markup.add_argument("--percent", required=True, help="0 to 1000, e.g. 25 or 12.5")
    markup.set_defaults(run=_markup)
    brand = org.add_parser("brand", help="an agency's logo, accent colour and host name, "
                           "shown to its clients' people")
    brand.add_argument("--org", required=True, metavar="AGENCY_ID")
    brand.add_argument("--logo-url", help="an https:// image; empty clears it")
    brand.add_argument("--accent", help="#rrggbb; empty clears it")
    brand.add_argument("--host-name", help="the host name its sign-in page answers on, "
                       "e.g. dashboard.acme-agency.com; empty clears it")
    brand.set_defaults(run=_brand)
    listing = org.add_parser("clients", help="an agency's client organizations")
    listing.add_argument("--org", required=True, metavar="AGENCY_ID")
    listing.set_defaults(run=_clients)
