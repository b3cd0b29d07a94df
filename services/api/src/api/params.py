"""Rules over query parameters, after FastAPI has parsed their types. Pure.

Ids in paths are names: one that is malformed names nothing, so it answers 404 like an
unknown id or another organization's (never 400, never 403). Ids used as filters (`leadId`)
are parameters: a malformed one is a 400 naming it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal, TypeVar, get_args

from api.errors import InvalidParameter, NotFound

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 30
DEFAULT_PAGE_LIMIT = 25
MAX_PAGE_LIMIT = 100
MAX_SEARCH_LENGTH = 100
MAX_CALL_ID_LENGTH = 200

# The calls' filters: `direction` (each stands for a Vapi call type) and `status`.
Direction = Literal["inbound", "outbound", "web"]
CallStatus = Literal["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"]
DIRECTIONS: dict[Direction, str] = {"inbound": "inboundPhoneCall",
                                    "outbound": "outboundPhoneCall", "web": "webCall"}
CALL_TYPE_DIRECTIONS = {v: k for k, v in DIRECTIONS.items()}
STATUSES: tuple[CallStatus, ...] = get_args(CallStatus)
_Choice = TypeVar("_Choice", bound=str)


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date  # inclusive

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def date_range(start: date | None, end: date | None, today: date) -> DateRange:
    """[startDate, endDate], both inclusive; endDate defaults to `today` (UTC) and
    startDate to 30 days up to endDate."""
    end = today if end is None else end
    if start is None:
        if end.toordinal() < DEFAULT_RANGE_DAYS:  # 30 days before 0001-01-01 is no date
            raise InvalidParameter("endDate", "is out of range")
        start = end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    if start > end:
        raise InvalidParameter("startDate", "is after endDate")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise InvalidParameter("endDate", f"the range is over {MAX_RANGE_DAYS} days")
    return DateRange(start, end)


def as_utc(value: datetime) -> datetime:
    """An instant without an offset is read as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _instant(parameter: str, value: datetime | None) -> datetime | None:
    """An instant in UTC; one that is not in 1..9999 once in UTC is refused (Postgres and
    Python hold no other year)."""
    if value is None:
        return None
    try:
        return as_utc(value).astimezone(UTC)
    except OverflowError:
        raise InvalidParameter(parameter, "is out of range") from None


def instant_range(start: datetime | None, end: datetime | None
                  ) -> tuple[datetime | None, datetime | None]:
    """The `from` (inclusive) and `to` (exclusive) filters on a call's creation time."""
    start, end = _instant("from", start), _instant("to", end)
    if start is not None and end is not None and start > end:
        raise InvalidParameter("from", "is after to")
    return start, end


def search_term(q: str | None) -> str | None:
    """A `q` search as an ILIKE pattern matching it anywhere; None when there is none."""
    if q is None or not q.strip():
        return None
    q = q.strip()
    if len(q) > MAX_SEARCH_LENGTH:
        raise InvalidParameter("q", f"longer than {MAX_SEARCH_LENGTH} characters")
    if "\x00" in q:  # no Postgres text holds one: it would fail the query, not match
        raise InvalidParameter("q", "holds a NUL character")
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def path_uuid(value: str) -> uuid.UUID:
    """A uuid id from a path; a malformed one names nothing: NotFound."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such id") from None


def path_call_id(value: str) -> str:
    if not value or len(value) > MAX_CALL_ID_LENGTH:
        raise NotFound("no such call")
    return value


def filter_uuid(name: str, value: str | None) -> uuid.UUID | None:
    if value is None:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidParameter(name, "is not a valid id") from None


def as_direction(value: str | None) -> Direction | None:
    """A `direction` filter given as text (the dashboard's form): None for every direction."""
    return _one_of("direction", value, tuple(DIRECTIONS))


def as_status(value: str | None) -> CallStatus | None:
    """A `status` filter given as text (the dashboard's form): None for every status."""
    return _one_of("status", value, STATUSES)


def _one_of(parameter: str, value: str | None, allowed: tuple[_Choice, ...]) -> _Choice | None:
    if value is None:
        return None
    for choice in allowed:
        if choice == value:
            return choice
    raise InvalidParameter(parameter, f"is not one of {', '.join(allowed)}")
