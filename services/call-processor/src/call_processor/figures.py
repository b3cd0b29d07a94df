"""What a batch adds to its organizations' daily figures: pure arithmetic over call states.

For each call a batch changes, its contribution before the batch is subtracted and its
contribution after is added, on the organization's own day (in the zone its figures count
by, read under the lock the rebuild takes: decision 45): to the daily statistics (calls by
direction, minutes, cost), to the outcomes breakdown (ended reason and success evaluation),
to the assistants breakdown and to the success signals (each boolean structured output and
scorecard score, with the call's success evaluation:
`calltrail_common.structured_outputs.success_signals`).
The sums of these deltas over every batch are the aggregates over the calls, whatever order
the batches committed in; new leads are counted where leads are refreshed
(repository.REFRESH_LEADS), from each lead's first inbound call before and after.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from call_processor.calls import CallState, DayContribution, contribution
from calltrail_common.structured_outputs import success_signals


@dataclass
class StatsDelta:
    calls: int = 0
    inbound: int = 0
    outbound: int = 0
    web: int = 0
    duration_seconds: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)

    def add(self, part: DayContribution, sign: int) -> None:
        self.calls += sign * part.calls
        self.inbound += sign * part.inbound
        self.outbound += sign * part.outbound
        self.web += sign * part.web
        self.duration_seconds += sign * part.duration_seconds
        self.cost += sign * part.cost

    def is_zero(self) -> bool:
        return not (self.calls or self.inbound or self.outbound or self.web
                    or self.duration_seconds or self.cost)


StatsKey = tuple[uuid.UUID, dt.date]
OutcomeKey = tuple[uuid.UUID, dt.date, str | None, str | None]
AssistantKey = tuple[uuid.UUID, dt.date, str | None]
# (organization, day, kind, source id, value, success evaluation)
SignalKey = tuple[uuid.UUID, dt.date, str, str, Decimal, str | None]


@dataclass
class DailyFigures:
    """The deltas of one batch, keyed by organization and day (and breakdown value)."""

    stats: dict[StatsKey, StatsDelta] = field(
        default_factory=lambda: defaultdict(StatsDelta))
    outcomes: dict[OutcomeKey, int] = field(default_factory=lambda: defaultdict(int))
    assistants: dict[AssistantKey, StatsDelta] = field(
        default_factory=lambda: defaultdict(StatsDelta))
    signals: dict[SignalKey, int] = field(default_factory=lambda: defaultdict(int))

    def add_change(self, org_id: uuid.UUID, before: CallState | None,
                   after: CallState, where: dt.tzinfo = dt.UTC) -> None:
        """A call of `org_id` went from `before` (None: not stored) to `after`; its days
        are the organization's, in `where`, the zone its figures count by (decision 45)."""
        for state, sign in ((before, -1), (after, 1)):
            part = contribution(state, where)
            if state is None or part is None:
                continue
            self.stats[(org_id, part.day)].add(part, sign)
            self.outcomes[(org_id, part.day, state.get("ended_reason"),
                           state.get("success_evaluation"))] += sign
            self.assistants[(org_id, part.day, state.get("assistant_id"))].add(part, sign)
            for signal in success_signals(state.get("structured_outputs"),
                                          state.get("scorecards")):
                self.signals[(org_id, part.day, signal.kind, signal.source_id, signal.value,
                              state.get("success_evaluation"))] += sign

    def stats_rows(self) -> list[tuple[StatsKey, StatsDelta]]:
        return sorted((k, d) for k, d in self.stats.items() if not d.is_zero())

    def outcome_rows(self) -> list[tuple[OutcomeKey, int]]:
        return [(k, n) for k, n in self.outcomes.items() if n]

    def assistant_rows(self) -> list[tuple[AssistantKey, StatsDelta]]:
        return [(k, d) for k, d in self.assistants.items() if not d.is_zero()]

    def signal_rows(self) -> list[tuple[SignalKey, int]]:
        return [(k, n) for k, n in self.signals.items() if n]
