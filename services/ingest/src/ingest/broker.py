"""Ingest's side of RabbitMQ: one connection, one confirm channel, kept up in the background.

`publish` never waits for a connection: when there is none, or the broker does not confirm
within the timeout, it raises `BrokerUnavailable` at once and the outbox spools the event.
The connection loop declares the topology on every (re)connect, so ingest starts and takes
webhooks even while the broker is unreachable, and recreates what an operator deleted.
It reconnects whenever the link is lost however it was lost (`calltrail_common.broker.watch`:
reset, broker restart, missed heartbeats, a channel the broker closed) and after any failed
publish, so a half-dead or misconfigured link is replaced rather than trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from calltrail_common import broker
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology, declare_topology
from ingest.payload import AcceptedEvent

log = get_logger(__name__)

_BACKOFF_INITIAL_SECONDS = 0.2
_BACKOFF_MAX_SECONDS = 5.0


class BrokerUnavailable(Exception):
    """The broker did not take the event: not connected, refused, returned, or too slow."""


class BrokerPublisher:
    def __init__(
        self,
        amqp_url: str,
        topology: Topology,
        *,
        confirm_timeout: float,
        heartbeat_seconds: int = 3,
        observe_publish: Callable[[float], None] | None = None,
    ) -> None:
        self._url = amqp_url
        self._heartbeat = heartbeat_seconds
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        # Called after every (re)connect; the outbox sets it to start draining the spool.
        self.on_connected: Callable[[], None] | None = None
        self._observe_publish = observe_publish
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._task: asyncio.Task[None] | None = None
        self._reconnect = asyncio.Event()
        self._closing = False
        # A confirm that is late is not a dead link: under load (or a broker catching up after
        # an outage) confirms can take seconds, and reconnecting then only adds churn (ingest
        # flapped for 50 s that way). A link is given up when nothing was confirmed for this
        # long; a dead one is found by heartbeats anyway.
        self._silence_limit = max(3.0 * heartbeat_seconds, 2.0 * confirm_timeout)
        self._last_confirm = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._exchange is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="broker-connection")

    async def close(self) -> None:
        # A cancelled connect can surface as a connection error rather than a cancellation,
        # so the loop also checks this flag; and shutdown never waits on it for long.
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError,
                                     asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 5)
        await self._drop_connection()

    async def publish(self, event: AcceptedEvent) -> None:
        exchange = self._exchange
        if exchange is None:
            raise BrokerUnavailable("not connected")
        message = aio_pika.Message(
            event.body,
            headers=event.headers,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=event.message_id,
        )
        started = time.perf_counter()
        try:
            await exchange.publish(message, event.routing_key, mandatory=True,
                                   timeout=self._confirm_timeout)
        except TimeoutError:
            # A broker that stopped confirming altogether may be half-dead: reconnect to find
            # out. One that is only slow keeps its link.
            if time.monotonic() - self._last_confirm > self._silence_limit:
                self._request_reconnect(exchange)
            raise BrokerUnavailable("no confirm in time") from None
        except Exception as error:
            # Refused, returned (a binding gone: the reconnect declares it again), closed, or
            # anything else the client library raises mid-failure (aiormq can raise a bare
            # Exception from a dying channel): the event is spooled, never answered 500.
            self._request_reconnect(exchange)
            raise BrokerUnavailable(type(error).__name__) from None
        except asyncio.CancelledError:
            # aiormq cancels the confirm futures of a connection it closes (a heartbeat
            # timeout in a partition): that is the link failing, not this request being
            # cancelled. Spool it, unless the request itself is being cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self._request_reconnect(exchange)
            raise BrokerUnavailable("confirm cancelled: the connection closed") from None
        self._last_confirm = time.monotonic()
        if self._observe_publish is not None:
            self._observe_publish(time.perf_counter() - started)

    def _request_reconnect(self, failed_on: AbstractExchange) -> None:
        # Only for a failure on the current link: publishes still failing on a replaced one
        # must not tear down the new link too (that made ingest flap after an outage).
        if failed_on is self._exchange:
            self._reconnect.set()

    async def _keep_connected(self) -> None:
        backoff = _BACKOFF_INITIAL_SECONDS
        while not self._closing:
            try:
                self._connection = await broker.connect(
                    self._url, heartbeat_seconds=self._heartbeat, connect_timeout_seconds=5)
                self._channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                exchange = await declare_topology(self._channel, self._topology)
                lost = await broker.watch(self._connection, self._channel)
            except Exception as error:
                # Whatever a dying broker raises (aiormq raises StopAsyncIteration when the
                # node is shutting down): this loop must never end, or ingest spools for ever
                # and never replays.
                log.warning("broker_connect_failed", error=type(error).__name__,
                            retry_in=round(backoff, 2))
                await self._drop_connection()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
                continue
            backoff = _BACKOFF_INITIAL_SECONDS
            self._reconnect.clear()
            self._last_confirm = time.monotonic()
            self._exchange = exchange
            log.info("broker_connected")
            if self.on_connected is not None:
                self.on_connected()
            reconnect: asyncio.Future[Any] = asyncio.ensure_future(self._reconnect.wait())
            try:
                await asyncio.wait([lost, reconnect], return_when=asyncio.FIRST_COMPLETED)
            finally:
                reconnect.cancel()
                lost.cancel()
            log.warning("broker_connection_lost",
                        reason=lost.result() if lost.done() and not lost.cancelled()
                        else "reconnect requested")
            await self._drop_connection()

    async def _drop_connection(self) -> None:
        self._exchange = None
        self._channel = None
        connection, self._connection = self._connection, None
        await broker.close_quietly(connection)
