"""Pure rules for when an account is synced and how a failing one backs off. No I/O here.

Spread: each account has a fixed phase within the interval, taken from its organization id,
so N accounts connected at the same moment are synced at N different moments of every
interval instead of all at once (contract section 6: "spread over the interval").
"""

from __future__ import annotations

import datetime as dt
import random
import uuid

# Back-off of an account whose sync failed for a transient reason (429, 5xx, timeouts):
# doubled per failure in a row, from the first delay to the ceiling, with jitter.
FIRST_BACKOFF_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 600.0


def phase_seconds(org_id: uuid.UUID, interval_seconds: float) -> float:
    """Where in every interval this account's sync falls, in [0, interval)."""
    return (org_id.int % 1_000_000) / 1_000_000 * interval_seconds


def next_sync_after(org_id: uuid.UUID, now: dt.datetime, interval_seconds: float
                    ) -> dt.datetime:
    """The account's first slot strictly after `now`, at least half an interval away (a run
    that ends just before its own slot is not run again at once)."""
    epoch = now.timestamp()
    phase = phase_seconds(org_id, interval_seconds)
    slots_done = (epoch - phase) // interval_seconds
    slot = phase + (slots_done + 1) * interval_seconds
    if slot - epoch < interval_seconds / 2:
        slot += interval_seconds
    return dt.datetime.fromtimestamp(slot, tz=dt.UTC)


def backoff_seconds(failures: int, retry_after: float | None = None,
                    rng: random.Random | None = None) -> float:
    """Delay before an account that failed `failures` times in a row is tried again; never
    sooner than the API's `Retry-After`."""
    ceiling = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2.0 ** min(30, max(0, failures - 1)))
    jitter: float = (rng or random.Random()).uniform(0, ceiling / 2)
    return max(ceiling / 2 + jitter, retry_after or 0.0)
