"""Sign-in throttling: how long an account or an address must wait after too many failed
sign-ins. Pure: the failure times, a limit and a window in, a wait out.

A key (`account:<email>`, `address:<ip>`) may fail `limit` times within any `window`;
at the limit it waits until enough of those failures are older than the window that one
more fits. The times come from the database's clock, like `now`, so two replicas agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Limit:
    failures: int          # allowed within the window
    window: timedelta


def account_key(email: str) -> str:
    return f"account:{email}"


def address_key(host: str) -> str:
    return f"address:{host}"


def wait(failures: Sequence[datetime], now: datetime, limit: Limit) -> timedelta | None:
    """How long until one more attempt may be made; None: it may be made now.

    `failures` are the key's failure times (any order, older ones ignored)."""
    recent = sorted(at for at in failures if now - limit.window < at <= now)
    if len(recent) < limit.failures:
        return None
    # The attempt fits once all but limit-1 of the recent failures are out of the window.
    frees_at = recent[len(recent) - limit.failures] + limit.window
    return frees_at - now


def minutes(duration: timedelta) -> int:
    """A wait as whole minutes, rounded up and at least 1 (what the page says)."""
    return max(1, math.ceil(duration.total_seconds() / 60))
