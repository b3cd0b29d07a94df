"""An agency's roll-up over its clients: each client's figures over a period, the totals,
and the order a person asked for. Pure: rows in, figures out.

The figures are the ones each client's own overview answers (`/api/stats/overview`): calls,
minutes, new leads and cost from the daily figures, the success rate by the client's own
success measure and how calls were evaluated (`api.outcomes.success_counts`). A client's
billed cost is its exact cost with its markup (`calltrail_common.agencies.billed`); the
total billed is the sum of the clients'.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from api.errors import InvalidParameter
from api.outcomes import success_counts
from calltrail_common.agencies import billed
from calltrail_common.success_measures import SuccessMeasure

SortKey = Literal["name", "calls", "minutes", "cost", "billed", "leads", "success"]
SORT_KEYS: tuple[SortKey, ...] = ("name", "calls", "minutes", "cost", "billed", "leads",
                                  "success")
DEFAULT_SORT: tuple[SortKey, bool] = ("name", False)


@dataclass(frozen=True)
class ClientFigures:
    org_id: uuid.UUID
    name: str
    markup_percent: Decimal
    calls: int
    seconds: Decimal
    cost: Decimal
    new_leads: int
    evaluated: int
    succeeded: int

    @property
    def billed(self) -> Decimal:
        return billed(self.cost, self.markup_percent)

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.evaluated, 6) if self.evaluated else None


@dataclass(frozen=True)
class Totals:
    calls: int
    seconds: Decimal
    cost: Decimal
    billed: Decimal
    new_leads: int
    evaluated: int
    succeeded: int

    @property
    def success_rate(self) -> float | None:
        return round(self.succeeded / self.evaluated, 6) if self.evaluated else None


def client_figures(row: Mapping[str, Any]) -> ClientFigures:
    """One client's row of the roll-up query: sums, its evaluations with their calls, and
    its success measure with what the calls carrying its source say."""
    measure = None if row["measure_kind"] is None else SuccessMeasure(
        row["measure_kind"], row["measure_source_id"], row["pass_mark"])
    evaluated, succeeded = success_counts(
        zip(row["verdicts"], row["verdict_calls"], strict=True),
        zip(row["signal_values"], row["signal_evaluations"], row["signal_calls"],
            strict=True), measure)
    return ClientFigures(row["id"], row["name"], row["markup_percent"], int(row["calls"]),
                         Decimal(row["seconds"]), Decimal(row["cost"]),
                         int(row["new_leads"]), evaluated, succeeded)


def totals(clients: Iterable[ClientFigures]) -> Totals:
    listed = list(clients)
    return Totals(calls=sum(c.calls for c in listed),
                  seconds=sum((c.seconds for c in listed), Decimal(0)),
                  cost=sum((c.cost for c in listed), Decimal(0)),
                  billed=sum((c.billed for c in listed), Decimal(0)),
                  new_leads=sum(c.new_leads for c in listed),
                  evaluated=sum(c.evaluated for c in listed),
                  succeeded=sum(c.succeeded for c in listed))


def parse_sort(value: str | None) -> tuple[SortKey, bool]:
    """`?sort=calls` (ascending) or `?sort=-calls` (descending); by name when absent."""
    if not value:
        return DEFAULT_SORT
    descending = value.startswith("-")
    key = value[1:] if descending else value
    for known in SORT_KEYS:
        if key == known:
            return known, descending
    raise InvalidParameter("sort", f"must be one of {', '.join(SORT_KEYS)}, with - first "
                           "for descending")


def _value(figures: ClientFigures, key: SortKey) -> Any:
    if key == "name":
        return figures.name.lower()
    if key == "minutes":
        return figures.seconds
    if key == "leads":
        return figures.new_leads
    if key == "success":
        return figures.success_rate
    return getattr(figures, key)


def sort_clients(clients: Sequence[ClientFigures], key: SortKey, descending: bool
                 ) -> list[ClientFigures]:
    """Ordered by `key`; ties by name, then id, so the order is stable. A client without
    a success rate comes last in either direction."""
    by_name = sorted(clients, key=lambda c: (c.name.lower(), str(c.org_id)))
    known = [c for c in by_name if _value(c, key) is not None]
    unknown = [c for c in by_name if _value(c, key) is None]
    return sorted(known, key=lambda c: _value(c, key), reverse=descending) + unknown
