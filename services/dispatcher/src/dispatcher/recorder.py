"""The delivery log, written in batches: every attempt's outcome (and every skip) goes to its
delivery row and to its endpoint's health before its message is settled.

One writer: outcomes that arrive while a batch is being written wait and go in the next
(group commit), so a busy dispatcher writes hundreds of attempts per transaction and an
idle one writes each at once. While Postgres is unreachable the batch is retried in place
with back-off; the messages wait unsettled (a message is acknowledged only after its outcome
is committed, so a crash sends it again rather than losing its log).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg

from calltrail_common.db import TRANSIENT_ERRORS
from calltrail_common.logging import get_logger
from dispatcher import repository
from dispatcher.attempts import Outcome, delivery_updates, endpoint_health

log = get_logger("dispatcher")

MAX_BATCH = 1000
_PAUSE_MAX_SECONDS = 5.0
_POOL_ACQUIRE_TIMEOUT_SECONDS = 10.0


class OutcomeRecorder:
    def __init__(self, database: Callable[[], Awaitable[asyncpg.Pool]], *,
                 disable_after_seconds: float,
                 on_disabled: Callable[[list[uuid.UUID]], None],
                 on_paused: Callable[[bool], None]) -> None:
        self._database = database
        self._disable_after = disable_after_seconds
        self._on_disabled = on_disabled
        self._on_paused = on_paused
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._closing = False

    async def record(self, outcome: Outcome) -> None:
        """Return once `outcome` is committed. Raises when it could not be written for a
        reason other than the database being away (a bug: the caller logs it)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        self._wake.set()
        # Shielded: a caller cancelled (its link lost) does not unwrite the attempt it made.
        await asyncio.shield(future)

    async def run(self) -> None:
        """Write batches until `close()`, then what is left, and return."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._write_next()
            if self._closing:
                return

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _write_next(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        outcomes = [outcome for outcome, _ in batch]
        futures = [future for _, future in batch]
        try:
            disabled = await self._write(outcomes)
        except Exception as error:
            log.error("delivery_log_not_written", error=type(error).__name__,
                      deliveries=len(outcomes))
            for future in futures:
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: a cancelled caller no longer awaits it
            return
        except BaseException:
            self._pending[:0] = batch  # cancelled mid-write (the process is ending)
            raise
        for future in futures:
            if not future.done():
                future.set_result(None)
        if disabled:
            self._on_disabled(disabled)

    async def _write(self, outcomes: list[Outcome]) -> list[uuid.UUID]:
        deliveries, health = delivery_updates(outcomes), endpoint_health(outcomes)
        attempt = 0
        while True:
            try:
                pool = await self._database()
                async with pool.acquire(timeout=_POOL_ACQUIRE_TIMEOUT_SECONDS) as connection:
                    disabled = await repository.record(connection, deliveries, health,
                                                       self._disable_after)
                self._on_paused(False)
                return disabled
            except TRANSIENT_ERRORS as error:
                self._on_paused(not isinstance(error, asyncpg.PostgresError))
                attempt += 1
                pause = min(0.1 * 2 ** attempt, _PAUSE_MAX_SECONDS)
                log.warning("delivery_log_paused", error=type(error).__name__,
                            attempt=attempt, retry_in=pause, deliveries=len(outcomes))
                await asyncio.sleep(pause)
