"""The api's side of RabbitMQ: the sync-now command (contract section 6).

The `queued` row in sync_runs is what counts; the command only wakes a metrics-sync replica
at once. So the broker is optional here: while it is down, requests are answered all the
same and metrics-sync finds the run on its next tick. One connection, opened on first use
and again after a failure (not more often than every few seconds).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from aio_pika.abc import AbstractChannel, AbstractConnection

from calltrail_common import broker
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology, declare_topology
from calltrail_common.vapi_accounts import publish_sync_command

log = get_logger(__name__)

CONNECT_TIMEOUT_SECONDS = 3.0
RETRY_AFTER_FAILURE_SECONDS = 5.0


class SyncCommands:
    def __init__(self, amqp_url: str, topology: Topology, heartbeat_seconds: int) -> None:
        self._amqp_url = amqp_url
        self.topology = topology
        self._heartbeat_seconds = heartbeat_seconds
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._failed_at = float("-inf")

    async def channel(self) -> AbstractChannel | None:
        """A confirmed channel with the topology declared; None while the broker is down."""
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            if time.monotonic() - self._failed_at < RETRY_AFTER_FAILURE_SECONDS:
                return None
            await self._drop()
            try:
                self._connection = await broker.connect(
                    self._amqp_url, heartbeat_seconds=self._heartbeat_seconds,
                    connect_timeout_seconds=CONNECT_TIMEOUT_SECONDS)
                channel = await self._connection.channel(publisher_confirms=True)
                await declare_topology(channel, self.topology)
            except Exception as error:  # any failure means "down for now"
                self._failed_at = time.monotonic()
                await self._drop()
                log.warning("broker_unavailable", error=type(error).__name__)
                return None
            self._channel = channel
            return channel

    async def publish_sync(self, org_id: uuid.UUID, sync_id: uuid.UUID) -> bool:
        """Wake metrics-sync for this run; False when the broker could not take it."""
        channel = await self.channel()
        if channel is None:
            return False
        try:
            await publish_sync_command(channel, self.topology, org_id, sync_id)
        except Exception as error:
            self.lost(error)
            return False
        return True

    def lost(self, error: BaseException) -> None:
        """The channel failed under a caller: open a new one next time."""
        log.warning("sync_command_not_published", error=type(error).__name__)
        self._channel = None

    async def _drop(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except Exception:  # closing a broken connection: nothing more to do
                log.debug("broker_close_failed")

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
