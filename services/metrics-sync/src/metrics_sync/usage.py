"""What one call in Vapi's call list contributes to its account's daily usage. No I/O here.

Minutes come from `endedAt - startedAt` (Vapi has no duration field), kept as exact seconds
(microsecond resolution) per call; a day's minutes are its calls' seconds summed, over 60,
rounded to 6 places, so the figure is exact and the same whichever order calls arrive in.
The day is the day of `createdAt` (the field Vapi's call list is walked by) in the
organization's time zone (decision 45): `call_usage` gives the UTC day, `on_day_of` the
organization's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from calltrail_common.time_zones import local_day

MINUTES_QUANTUM = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class CallUsage:
    call_id: str
    day: dt.date
    seconds: Decimal
    cost: Decimal
    cost_breakdown: Mapping[str, Decimal]
    updated_at: dt.datetime | None
    created_at: dt.datetime | None = None  # `day` is its UTC day; stored for decision 45

    def on_day_of(self, where: dt.tzinfo) -> CallUsage:
        """The same usage on the organization's day of its creation, in `where`."""
        if self.created_at is None:
            return self
        return replace(self, day=local_day(self.created_at, where))


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def money(value: Any) -> Decimal | None:
    """A cost as the exact decimal Vapi wrote (`0.1` is 0.1, not the float's binary value)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return amount if amount.is_finite() else None


def call_seconds(started: dt.datetime | None, ended: dt.datetime | None) -> Decimal:
    if started is None or ended is None or ended < started:
        return Decimal(0)
    delta = ended - started
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return Decimal(micros).scaleb(-6)


def call_usage(call: Mapping[str, Any]) -> CallUsage | None:
    """The usage of one call of the list; None for a row that is not a usable call (no id or
    no createdAt: it cannot be put on a day)."""
    call_id = call.get("id")
    created = parse_time(call.get("createdAt"))
    if not isinstance(call_id, str) or not call_id or created is None:
        return None
    breakdown = call.get("costBreakdown")
    components: dict[str, Decimal] = {}
    if isinstance(breakdown, Mapping):
        for name, value in breakdown.items():
            amount = money(value) if isinstance(value, int | float) else None
            if isinstance(name, str) and amount is not None:
                components[name] = amount
    return CallUsage(
        call_id=call_id,
        day=created.date(),
        seconds=call_seconds(parse_time(call.get("startedAt")), parse_time(call.get("endedAt"))),
        cost=money(call.get("cost")) or Decimal(0),
        cost_breakdown=components,
        updated_at=parse_time(call.get("updatedAt")),
        created_at=created,
    )


def day_minutes(total_seconds: Decimal) -> Decimal:
    """A day's minutes from its calls' summed seconds (the same rounding SQL's round() does
    for positive numbers)."""
    return (total_seconds / 60).quantize(MINUTES_QUANTUM, rounding=ROUND_HALF_UP)
