"""The failure tables of metrics-sync: what becomes of an account whose run failed, and of
a sync-now command that could not be taken, one row per kind of failure."""

from __future__ import annotations

import random

import aio_pika
import asyncpg
import pytest

from calltrail_common.crypto import CryptoError
from calltrail_common.vapi import (
    VapiBadResponse,
    VapiNotFound,
    VapiRateLimited,
    VapiUnauthorized,
    VapiUnavailable,
)
from metrics_sync.errors import BrokerUnavailable, KeyMissing, LeaseLost
from metrics_sync.failures import (
    ANY_OTHER,
    INFRASTRUCTURE_RETRY_SECONDS,
    RUN_FAILURES,
    Settle,
    Then,
    command_failure,
    run_failure,
    run_rule,
)
from metrics_sync.schedule import backoff_seconds

INTERVAL = 300.0
FAILURES = 3  # in a row, this one included
BACKED_OFF = backoff_seconds(FAILURES, None, random.Random(0))


@pytest.mark.parametrize(("error", "reason", "then", "retry_in"), [
    (VapiUnauthorized("401", status=401), "invalid_api_key", Then.DISCONNECT, 0.0),
    (VapiRateLimited("429", retry_after=None), "rate_limited", Then.BACK_OFF, BACKED_OFF),
    (VapiRateLimited("429", retry_after=3600.0), "rate_limited", Then.BACK_OFF, 3600.0),
    (VapiUnavailable("503", status=503), "vapi_unavailable", Then.BACK_OFF, BACKED_OFF),
    (VapiBadResponse("not a list"), "vapi_bad_response: not a list", Then.BACK_OFF,
     BACKED_OFF),
    (VapiNotFound("no such call"), "vapi_bad_response: no such call", Then.BACK_OFF,
     BACKED_OFF),
    (KeyMissing("gone"), "no_api_key", Then.WAIT_INTERVAL, INTERVAL),
    (CryptoError("wrong key"), "api_key_unreadable: CryptoError", Then.WAIT_INTERVAL,
     INTERVAL),
    (LeaseLost("taken"), "lease_lost", Then.LET_GO, 0.0),
    (TimeoutError("slow"), "timeout", Then.BACK_OFF, BACKED_OFF),
    (BrokerUnavailable("down"), "broker_unavailable", Then.RETRY_SOON,
     INFRASTRUCTURE_RETRY_SECONDS),
    (aio_pika.exceptions.ChannelClosed(), "broker_unavailable", Then.RETRY_SOON,
     INFRASTRUCTURE_RETRY_SECONDS),
    (ConnectionRefusedError(), "database_unavailable", Then.RETRY_SOON,
     INFRASTRUCTURE_RETRY_SECONDS),
    (asyncpg.CannotConnectNowError("starting up"), "database_unavailable", Then.RETRY_SOON,
     INFRASTRUCTURE_RETRY_SECONDS),
    (KeyError("surprise"), "error: KeyError", Then.BACK_OFF, BACKED_OFF),
])
def test_what_becomes_of_an_account_whose_run_failed(
        error: Exception, reason: str, then: Then, retry_in: float) -> None:
    failure = run_failure(error, FAILURES, INTERVAL, random.Random(0))
    assert (failure.reason, failure.then, failure.retry_in) == (reason, then, retry_in)
    assert failure.kind == reason.split(":", 1)[0]  # the metric's label
    assert failure.disconnects == (then is Then.DISCONNECT)


def test_every_row_of_the_run_table_is_reachable() -> None:
    """No row is hidden by an earlier one: an error of each row's first type finds it."""
    for rule in RUN_FAILURES:
        assert all(run_rule(_instance(kind)) is rule for kind in rule.errors[:1]), rule
    assert run_rule(Exception()) is ANY_OTHER


def _instance(kind: type[BaseException]) -> BaseException:
    if issubclass(kind, VapiRateLimited):
        return kind("429", retry_after=None)
    return kind.__new__(kind)


@pytest.mark.parametrize(("error", "settle", "reason"), [
    (asyncpg.ForeignKeyViolationError("no such organization"), Settle.DEAD_LETTER,
     "organization does not exist"),
    (ConnectionRefusedError(), Settle.RETRY_LATER, None),
    (asyncpg.CannotConnectNowError("starting up"), Settle.RETRY_LATER, None),
    (RuntimeError("anything else"), Settle.RETRY_LATER, None),
])
def test_what_becomes_of_a_command_that_could_not_be_taken(
        error: Exception, settle: Settle, reason: str | None) -> None:
    failure = command_failure(error)
    assert (failure.settle, failure.reason) == (settle, reason)
