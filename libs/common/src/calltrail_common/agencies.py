"""Agencies and their client organizations: creating them, a client's markup, an agency's
branding, and the rules for both (issue 17; decision 38).

An agency builds Vapi agents for client organizations. A client belongs to one agency; an
agency is never a client (the schema's trigger says so too). The agency sets a markup per
client: the client's own people see every cost with it (what they pay), the agency's
people see both. The agency's name, logo and accent colour brand what its clients see.

Markup arithmetic is exact: Decimal throughout, and a billed amount is rounded once, to
the micro-dollar (6 places, half up), from the exact cost. A total is marked up from the
exact total, never summed from rounded parts, so a page's total is the API's total.

The rules (parsing, arithmetic, whose cost a viewer sees) are pure; the functions that
take a connection are the owner of the agency columns of `organizations`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Literal
from urllib.parse import urlsplit

import asyncpg

from calltrail_common.organizations import NewOrganization, create_organization

MAX_MARKUP_PERCENT = Decimal(1000)
MARKUP_PLACES = Decimal("0.001")       # the column is numeric(7, 3)
BILLED_PLACES = Decimal("0.000001")    # a micro-dollar
MAX_LOGO_URL_LENGTH = 2048
MAX_HOST_NAME_LENGTH = 253

_ACCENT = re.compile(r"^#[0-9a-f]{6}$")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class AgencyError(Exception):
    """An agency request that cannot be met; the message says why, on one line."""


# --- the rules (pure) -------------------------------------------------------------------


def parse_markup(value: str | Decimal | int) -> Decimal:
    """A markup in percent: 0 to 1000, at most three decimal places."""
    try:
        percent = Decimal(value)
    except (InvalidOperation, ValueError):
        raise AgencyError(f"the markup must be a number of percent: {value!r}") from None
    if not percent.is_finite() or percent < 0 or percent > MAX_MARKUP_PERCENT:
        raise AgencyError("the markup must be between 0 and 1000 percent")
    if percent != percent.quantize(MARKUP_PLACES):  # any rounding: equal only when exact
        raise AgencyError("the markup has at most three decimal places")
    return percent.quantize(MARKUP_PLACES)


def billed(cost: Decimal, markup_percent: Decimal) -> Decimal:
    """What a client pays for `cost` with the agency's markup, to the micro-dollar (half
    up). No markup: the cost itself, unrounded."""
    if markup_percent == 0:
        return cost
    return (cost * (100 + markup_percent) / 100).quantize(BILLED_PLACES,
                                                          rounding=ROUND_HALF_UP)


def billed_float(cost: float, markup_percent: Decimal) -> float:
    """`billed` for a figure already answered as a float: read back through its shortest
    decimal form (exact for the stored numerics, which have far fewer than 15 digits)."""
    return float(billed(Decimal(repr(cost)), markup_percent))


def parse_accent(value: str) -> str:
    """An accent colour as `#rrggbb`, lower case (upper case is accepted and lowered)."""
    accent = value.strip().lower()
    if not _ACCENT.match(accent):
        raise AgencyError(f"the accent colour must be written #rrggbb: {value!r}")
    return accent


def parse_logo_url(value: str) -> str:
    """A logo's address: https only (the dashboard's CSP allows no other images), a host,
    no spaces, quotes or angle brackets."""
    url = value.strip()
    if len(url) > MAX_LOGO_URL_LENGTH or any(c in url for c in " \t\r\n\"'<>\\"):
        raise AgencyError("the logo URL is too long or holds spaces, quotes or brackets")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise AgencyError(f"the logo URL is not a URL: {value!r}") from None
    if parts.scheme != "https" or not parts.hostname:
        raise AgencyError("the logo URL must be an https:// address")
    return url


def parse_host_name(value: str) -> str:
    """A host name the agency's sign-in page answers on, lower case, without a port."""
    host = value.strip().lower().rstrip(".")
    labels = host.split(".")
    if (len(host) > MAX_HOST_NAME_LENGTH or len(labels) < 2  # "" is one empty label
            or not all(_HOST_LABEL.match(label) for label in labels)):
        raise AgencyError(f"not a host name (like dashboard.acme-agency.com): {value!r}")
    return host


def host_of(header: str | None) -> str | None:
    """The host name of a request's Host header, lower case, without its port."""
    if not header:
        return None
    name = header.strip().lower().rsplit(":", 1)[0].rstrip(".")
    # A colon left over: not name[:port] but an IPv6 address ([::1]:8000), which names no
    # agency, or worse.
    return name if name and ":" not in name else None


RoleSource = Literal["organization", "agency"]


@dataclass(frozen=True)
class CostView:
    """How a viewer sees the costs of the organization they look at.

    `markup_percent` is the client's markup (0 for an organization that is no client);
    `both`: the cost before markup is shown too, beside what the client is billed."""
    markup_percent: Decimal
    both: bool

    @property
    def marked_up(self) -> bool:
        return self.markup_percent != 0

    def billed(self, cost: float) -> float:
        return billed_float(cost, self.markup_percent)

    def primary(self, cost: float) -> float:
        """The figure a page leads with: what the client pays, for the client's people;
        the cost itself for everyone else."""
        return cost if self.both else self.billed(cost)


AS_STORED = CostView(Decimal(0), both=False)


def cost_view(source: RoleSource, markup_percent: Decimal) -> CostView:
    """The one place that decides whose cost a viewer sees: the client's own people (their
    access comes from a membership of the client, or a token of it) see the marked-up cost
    only; the agency's people see the cost and the billed cost. Without a markup both are
    the same figure, shown once."""
    if markup_percent == 0:
        return AS_STORED
    return CostView(markup_percent, both=source == "agency")


@dataclass(frozen=True)
class Brand:
    """What brands a dashboard: the agency's id, name, logo and accent colour."""
    org_id: uuid.UUID
    name: str
    logo_url: str | None
    accent: str | None


# --- the owner of the agency columns ----------------------------------------------------


@dataclass(frozen=True)
class Client:
    org_id: uuid.UUID
    name: str
    markup_percent: Decimal


async def create_agency(connection: asyncpg.Connection, name: str) -> NewOrganization:
    async with connection.transaction():
        org = await create_organization(connection, name)
        await connection.execute("UPDATE organizations SET kind = 'agency' WHERE id = $1",
                                 org.org_id)
    return org


async def _kind(connection: asyncpg.Connection, org_id: uuid.UUID
                ) -> asyncpg.Record | None:
    return await connection.fetchrow(
        "SELECT kind, agency_id FROM organizations WHERE id = $1", org_id)


async def create_client(connection: asyncpg.Connection, agency_id: uuid.UUID, name: str,
                        markup_percent: Decimal = Decimal(0)) -> NewOrganization:
    """A new client organization of `agency_id`; AgencyError when that is no agency."""
    async with connection.transaction():
        agency = await _kind(connection, agency_id)
        if agency is None or agency["kind"] != "agency":
            raise AgencyError(f"{agency_id} is not an agency")
        org = await create_organization(connection, name)
        await connection.execute(
            "UPDATE organizations SET agency_id = $2, markup_percent = $3 WHERE id = $1",
            org.org_id, agency_id, markup_percent)
    return org


async def set_markup(connection: asyncpg.Connection, client_id: uuid.UUID,
                     markup_percent: Decimal) -> Decimal:
    """Set a client's markup; AgencyError when the organization is no client. Returns the
    markup it had."""
    async with connection.transaction():
        before = await connection.fetchrow(
            "SELECT agency_id, markup_percent FROM organizations WHERE id = $1 FOR UPDATE",
            client_id)
        if before is None or before["agency_id"] is None:
            raise AgencyError(f"{client_id} is not a client of an agency")
        await connection.execute("UPDATE organizations SET markup_percent = $2 WHERE id = $1",
                                 client_id, markup_percent)
    previous: Decimal = before["markup_percent"]
    return previous


async def set_brand(connection: asyncpg.Connection, agency_id: uuid.UUID, *,
                    logo_url: str | None = None, accent: str | None = None,
                    host_name: str | None = None) -> Brand:
    """Change the given parts of an agency's branding (None: unchanged; "" clears it)."""
    async with connection.transaction():
        agency = await _kind(connection, agency_id)
        if agency is None or agency["kind"] != "agency":
            raise AgencyError(f"{agency_id} is not an agency")
        try:
            row = await connection.fetchrow(
                """UPDATE organizations
                   SET brand_logo_url = CASE WHEN $2::text IS NULL THEN brand_logo_url
                                             ELSE nullif($2, '') END,
                       brand_accent = CASE WHEN $3::text IS NULL THEN brand_accent
                                           ELSE nullif($3, '') END,
                       host_name = CASE WHEN $4::text IS NULL THEN host_name
                                        ELSE nullif($4, '') END
                   WHERE id = $1
                   RETURNING id, name, brand_logo_url, brand_accent""",
                agency_id, logo_url, accent, host_name)
        except asyncpg.UniqueViolationError:
            raise AgencyError(f"the host name {host_name!r} is another agency's") from None
    return Brand(row["id"], row["name"], row["brand_logo_url"], row["brand_accent"])


async def clients(db: asyncpg.Connection | asyncpg.Pool, agency_id: uuid.UUID
                  ) -> list[Client]:
    rows = await db.fetch(
        """SELECT id, name, markup_percent FROM organizations WHERE agency_id = $1
           ORDER BY lower(name), id""", agency_id)
    return [Client(r["id"], r["name"], r["markup_percent"]) for r in rows]


_BRAND_COLUMNS = "a.id, a.name, a.brand_logo_url, a.brand_accent"


def _brand(row: asyncpg.Record | None) -> Brand | None:
    return None if row is None else Brand(row["id"], row["name"], row["brand_logo_url"],
                                          row["brand_accent"])


async def brand_of(db: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
                   ) -> Brand | None:
    """The branding an organization's dashboard carries: its agency's, or its own when it
    is an agency; None for a business of its own (the product's name)."""
    return _brand(await db.fetchrow(
        f"""SELECT {_BRAND_COLUMNS} FROM organizations o
            JOIN organizations a ON a.id = coalesce(o.agency_id, o.id) AND a.kind = 'agency'
            WHERE o.id = $1""", org_id))  # noqa: S608 - a constant column list


async def brand_for_host(db: asyncpg.Connection | asyncpg.Pool, host: str | None
                         ) -> Brand | None:
    """The agency whose host name this is (the sign-in page on its own address)."""
    if not host:
        return None
    return _brand(await db.fetchrow(
        f"SELECT {_BRAND_COLUMNS} FROM organizations a "  # noqa: S608 - constant columns
        "WHERE a.host_name = $1 AND a.kind = 'agency'", host))
