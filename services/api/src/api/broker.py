"""The api's side of RabbitMQ: the sync-now command (contract section 6).

The `queued` row in sync_runs is what counts; the command only wakes a metrics-sync replica
at once. So the broker is optional here: while it is down, requests are answered all the
same and metrics-sync finds the run on its next tick. The link
(`calltrail_common.broker.BrokerLink`) is kept up in the background; a request never waits
for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid

from aio_pika.abc import AbstractChannel

from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.logging import get_logger
from calltrail_common.sync_runs import publish_command
from calltrail_common.topology import Topology

log = get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0


class SyncCommands:
    def __init__(self, amqp_url: str, topology: Topology, heartbeat_seconds: int) -> None:
        self.topology = topology
        self._link = BrokerLink(amqp_url, topology, heartbeat_seconds=heartbeat_seconds,
                                connect_timeout_seconds=CONNECT_TIMEOUT_SECONDS, name="api")
        self._channel: AbstractChannel | None = None
        self._renew = asyncio.Event()
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the link, and give it a moment (at most CONNECT_TIMEOUT_SECONDS) so that the
        first requests' commands are not left to metrics-sync's next tick."""
        self._task = asyncio.create_task(self._link.run(self._session), name="broker-link")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._up.wait(), CONNECT_TIMEOUT_SECONDS)

    async def _session(self, link: LinkSession) -> None:
        self._renew.clear()
        self._channel = link.publisher
        self._up.set()
        try:
            await self._renew.wait()
        finally:
            self._up.clear()
            self._channel = None

    async def channel(self) -> AbstractChannel | None:
        """A confirmed channel with the topology declared; None while the broker is down."""
        channel = self._channel
        return channel if channel is not None and not channel.is_closed else None

    async def publish_sync(self, org_id: uuid.UUID, sync_id: uuid.UUID) -> bool:
        """Wake metrics-sync for this run; False when the broker could not take it."""
        channel = await self.channel()
        if channel is None:
            return False
        try:
            await publish_command(channel, self.topology, org_id, sync_id)
        except Exception as error:
            self.lost(error)
            return False
        return True

    def lost(self, error: BaseException) -> None:
        """The channel failed under a caller: the link is renewed."""
        log.warning("sync_command_not_published", error=type(error).__name__)
        self._renew.set()

    async def close(self) -> None:
        self._link.stop()
        self._renew.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
