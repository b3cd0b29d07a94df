"""Each organization's own day (decision 45): its IANA time zone, how a zone is chosen, and
the day a moment falls on there. The owner of `organizations.time_zone`; the call
processor's rebuild writes `figures_time_zone`, metrics-sync's re-keying `usage_time_zone`
(migration 0018).

Zones come from the `tzdata` package, not the host's files, so a name valid on one host is
valid on all. A change is written with the audit log in its transaction; the daily figures
still count by the old zone until the call processor's rebuild re-keys them
(`call_processor.rebuild`), and `figures_time_zone` says which zone they count by.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
import zoneinfo
from dataclasses import dataclass
from importlib import resources

import asyncpg
import tzdata

from calltrail_common import audit

DEFAULT_TIME_ZONE = "UTC"

_FIND = """
    SELECT time_zone, figures_time_zone, usage_time_zone FROM organizations WHERE id = $1"""
# The figures and the usage are re-keyed in the background while their zones differ.
_CHOOSE = """
    UPDATE organizations SET time_zone = $2 WHERE id = $1
    RETURNING time_zone, figures_time_zone, usage_time_zone"""
_KNOWN_TO_POSTGRES = "SELECT now() AT TIME ZONE $1"


class InvalidTimeZone(ValueError):
    """Not an IANA time zone name the tzdata package knows."""


@dataclass(frozen=True, slots=True)
class OrganizationZone:
    time_zone: str  # the zone chosen
    figures_time_zone: str  # the zone the daily figures count by now
    usage_time_zone: str = DEFAULT_TIME_ZONE  # the zone usage per day counts by now

    @property
    def rebuilding(self) -> bool:
        """The figures or the usage are being re-keyed to the chosen zone."""
        return not self.time_zone == self.figures_time_zone == self.usage_time_zone


@functools.cache
def _known_names() -> frozenset[str]:
    return frozenset(resources.files(tzdata).joinpath("zones").read_text().split())


@functools.lru_cache(maxsize=256)
def zone(name: str) -> zoneinfo.ZoneInfo:
    """The zone called `name`, an IANA name the tzdata package lists, read from that package
    (never from the host's files, which may be older or missing); InvalidTimeZone
    otherwise."""
    if name not in _known_names():
        raise InvalidTimeZone("that is not an IANA time zone name (such as Europe/Paris "
                              "or UTC)")
    data = resources.files(tzdata).joinpath("zoneinfo", *name.split("/"))
    with data.open("rb") as file:
        return zoneinfo.ZoneInfo.from_file(file, key=name)


def local_day(moment: dt.datetime, where: dt.tzinfo) -> dt.date:
    """The day an aware `moment` falls on in `where` (a DST change day lasts 23 or 25 hours:
    every moment of it is still that day)."""
    return moment.astimezone(where).date()


def today(where: dt.tzinfo, now: dt.datetime | None = None) -> dt.date:
    return local_day(now or dt.datetime.now(dt.UTC), where)


async def find(connection: asyncpg.Connection | asyncpg.Pool, org_id: uuid.UUID
               ) -> OrganizationZone:
    row = await connection.fetchrow(_FIND, org_id)
    if row is None:
        return OrganizationZone(DEFAULT_TIME_ZONE, DEFAULT_TIME_ZONE)
    return OrganizationZone(**dict(row))


async def choose(connection: asyncpg.Connection, org_id: uuid.UUID, name: str,
                 actor: audit.Actor) -> OrganizationZone:
    """Set the organization's zone (validated: InvalidTimeZone), audited in the same
    transaction; its figures are rebuilt in the background."""
    zone(name)
    try:  # new leads are counted by Postgres' own zone database (decision 45)
        await connection.execute(_KNOWN_TO_POSTGRES, name)
    except asyncpg.InvalidParameterValueError:
        raise InvalidTimeZone("that time zone is not one this database knows") from None
    async with connection.transaction():
        row = await connection.fetchrow(_CHOOSE, org_id, name)
        if row is None:
            return OrganizationZone(DEFAULT_TIME_ZONE, DEFAULT_TIME_ZONE)
        await audit.record(connection, org_id, actor, "time_zone.set", name)
    return OrganizationZone(**dict(row))
