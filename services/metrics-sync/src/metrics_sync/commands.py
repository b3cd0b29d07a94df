"""metrics-sync's command consumer: "sync now" requests from `{prefix}.metrics-sync.commands`.

Each command names a queued run (`calltrail_common.sync_runs`); the command only wakes the
scheduler (the queued row in Postgres is what counts), so it is acknowledged once the row
is known to exist. What a command that cannot be taken becomes is `failures.command_failure`:
dead-lettered when it can never be taken, else sent to the retry queue
(`calltrail_common.settlement`, the processor's policy too).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage

from calltrail_common import sync_runs
from calltrail_common.broker import LinkSession
from calltrail_common.logging import get_logger
from calltrail_common.settlement import Settlement
from calltrail_common.topology import METRICS_SYNC_COMMANDS, Topology
from metrics_sync.failures import NOT_A_COMMAND, CommandFailure, Settle, command_failure

log = get_logger("metrics_sync")

PREFETCH = 20


class SyncCommands:
    """Takes sync-now commands on a link: `ensure_queued` writes the run a command names
    (it is there already unless the command came first), then `wake` tells the scheduler."""

    def __init__(self, topology: Topology,
                 ensure_queued: Callable[[uuid.UUID, uuid.UUID], Awaitable[None]],
                 wake: Callable[[], None]) -> None:
        self._topology = topology
        self._ensure_queued = ensure_queued
        self._wake = wake
        self._settlement: Settlement | None = None

    async def consume(self, link: LinkSession) -> None:
        """Start consuming on a channel of the link's own; commands are settled on the link's
        publisher channel."""
        consuming = await link.channel(prefetch=PREFETCH)
        queue = await consuming.get_queue(self._topology.queue(METRICS_SYNC_COMMANDS),
                                          ensure=False)
        self._settlement = Settlement(link.publisher, self._topology, METRICS_SYNC_COMMANDS)
        await queue.consume(self.on_message)

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            org_id, run_id = sync_runs.read_command(message.body)
        except ValueError:
            await self._settle(message, NOT_A_COMMAND, None)
            return
        try:
            await self._ensure_queued(run_id, org_id)
        except Exception as error:
            await self._settle(message, command_failure(error), error)
            return
        self._wake()
        with contextlib.suppress(Exception):
            await message.ack()

    async def _settle(self, message: AbstractIncomingMessage, failure: CommandFailure,
                      error: Exception | None) -> None:
        """A settlement that fails (the link is going) leaves the message unacknowledged:
        it is delivered again on the next link."""
        settlement = self._settlement
        assert settlement is not None  # set before consuming starts
        settling: Awaitable[object]
        if failure.settle is Settle.DEAD_LETTER:
            settling = settlement.dead_letter(message, failure.reason or "")
        else:
            assert error is not None
            log.warning("command_deferred", error=type(error).__name__)
            settling = settlement.retry_later(message, error)
        with contextlib.suppress(Exception):
            await settling
