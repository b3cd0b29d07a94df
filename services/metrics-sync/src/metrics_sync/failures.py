"""What a failure means, as two tables: a sync run's (failure -> what becomes of the account)
and a sync-now command's (failure -> what becomes of the message). Pure: no I/O here; the
scheduler (`worker`) and the command consumer (`commands`) do what the tables say.

A run's failures, first matching row first (the reason is recorded on the runs; its first
word labels the `calltrail_sync_failures` metric):

| failure                                 | reason                  | then            |
|-----------------------------------------|-------------------------|-----------------|
| Vapi 401 or 403                         | invalid_api_key         | disconnect      |
| Vapi 429 (Retry-After is a floor)       | rate_limited            | back off        |
| Vapi 5xx, timeout, connection error     | vapi_unavailable        | back off        |
| Vapi answered what it does not document | vapi_bad_response: ...  | back off        |
| no stored key (disconnected meanwhile)  | no_api_key              | wait an interval |
| the key does not open (key ring)        | api_key_unreadable: ... | wait an interval |
| the lease was lost                      | lease_lost              | let go          |
| the run took too long                   | timeout                 | back off        |
| broker gone                             | broker_unavailable      | retry soon      |
| database gone                           | database_unavailable    | retry soon      |
| anything else                           | error: ...              | back off        |

A command's failures: one that is not a sync-now command, or names no organization, is
dead-lettered with its reason; any other failure (Postgres down) sends it to the retry
queue (`calltrail_common.settlement`).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

import asyncpg
from aio_pika.exceptions import AMQPError

from calltrail_common.crypto import CryptoError
from calltrail_common.db import TRANSIENT_ERRORS
from calltrail_common.vapi import (
    VapiBadResponse,
    VapiRateLimited,
    VapiUnauthorized,
    VapiUnavailable,
)
from metrics_sync.errors import BrokerUnavailable, KeyMissing, LeaseLost
from metrics_sync.schedule import backoff_seconds

INFRASTRUCTURE_RETRY_SECONDS = 5.0  # the broker or Postgres failed a run: not the account


class Then(enum.Enum):
    """What becomes of an account whose run failed."""

    DISCONNECT = "disconnect"  # disconnected as invalid_api_key: its polling stops
    BACK_OFF = "back off"  # tried again after `backoff_seconds` (failures in a row)
    WAIT_INTERVAL = "wait an interval"  # tried again an interval later: sooner fails the same
    RETRY_SOON = "retry soon"  # the infrastructure failed, not the account
    LET_GO = "let go"  # another replica has the account: nothing is recorded


class Detail(enum.Enum):
    """What the reason says after its kind."""

    NONE = "none"
    MESSAGE = "message"  # the error's text (never holds a key: Vapi's own words)
    TYPE = "type"  # the error's type name


@dataclass(frozen=True)
class RunRule:
    errors: tuple[type[BaseException], ...]
    kind: str
    then: Then
    detail: Detail = Detail.NONE


RUN_FAILURES: tuple[RunRule, ...] = (
    RunRule((VapiUnauthorized,), "invalid_api_key", Then.DISCONNECT),
    RunRule((VapiRateLimited,), "rate_limited", Then.BACK_OFF),
    RunRule((VapiUnavailable,), "vapi_unavailable", Then.BACK_OFF),
    RunRule((VapiBadResponse,), "vapi_bad_response", Then.BACK_OFF, Detail.MESSAGE),
    RunRule((KeyMissing,), "no_api_key", Then.WAIT_INTERVAL),
    RunRule((CryptoError,), "api_key_unreadable", Then.WAIT_INTERVAL, Detail.TYPE),
    RunRule((LeaseLost,), "lease_lost", Then.LET_GO),
    RunRule((TimeoutError,), "timeout", Then.BACK_OFF),
    RunRule((BrokerUnavailable, AMQPError), "broker_unavailable", Then.RETRY_SOON),
    RunRule(TRANSIENT_ERRORS, "database_unavailable", Then.RETRY_SOON),
)
ANY_OTHER = RunRule((Exception,), "error", Then.BACK_OFF, Detail.TYPE)


@dataclass(frozen=True)
class RunFailure:
    kind: str  # the metric's label
    reason: str  # recorded on the runs
    then: Then
    retry_in: float  # seconds before the account is tried again (0: not backed off)

    @property
    def disconnects(self) -> bool:
        return self.then is Then.DISCONNECT


def run_rule(error: BaseException) -> RunRule:
    return next((rule for rule in RUN_FAILURES if isinstance(error, rule.errors)), ANY_OTHER)


def run_failure(error: BaseException, failures: int, interval_seconds: float,
                rng: random.Random | None = None) -> RunFailure:
    """What becomes of an account whose run failed with `error`, the `failures`-th failure
    in a row (this one included)."""
    rule = run_rule(error)
    reason = {Detail.NONE: rule.kind, Detail.MESSAGE: f"{rule.kind}: {error}",
              Detail.TYPE: f"{rule.kind}: {type(error).__name__}"}[rule.detail]
    if rule.then is Then.BACK_OFF:
        retry_after = error.retry_after if isinstance(error, VapiRateLimited) else None
        retry_in = backoff_seconds(failures, retry_after, rng)
    elif rule.then is Then.WAIT_INTERVAL:
        retry_in = float(interval_seconds)
    elif rule.then is Then.RETRY_SOON:
        retry_in = INFRASTRUCTURE_RETRY_SECONDS
    else:
        retry_in = 0.0
    return RunFailure(rule.kind, reason, rule.then, retry_in)


class Settle(enum.Enum):
    """What becomes of a sync-now command that could not be taken."""

    DEAD_LETTER = "dead letter"  # it can never be taken: kept with its reason
    RETRY_LATER = "retry later"  # the retry queue, then the dead letters past the limit


@dataclass(frozen=True)
class CommandFailure:
    settle: Settle
    reason: str | None  # the dead letter's reason


NOT_A_COMMAND = CommandFailure(Settle.DEAD_LETTER, "not a sync-now command")


def command_failure(error: BaseException) -> CommandFailure:
    """What becomes of a sync-now command whose queued run could not be written."""
    if isinstance(error, asyncpg.ForeignKeyViolationError):
        return CommandFailure(Settle.DEAD_LETTER, "organization does not exist")
    return CommandFailure(Settle.RETRY_LATER, None)
