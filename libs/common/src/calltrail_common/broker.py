"""The one link to RabbitMQ of every service and the CLI: connect, declare, watch, reconnect.

aio-pika's `Connection.closed()` resolves only after an explicit `close()`: a connection
reset by the network, a broker restart or missed heartbeats leave it pending for ever, and a
consumer waiting on it stays idle for good. So no service waits on it. Each opens its
connection with `connect` (heartbeats on, so a half-open connection is found within a few
seconds) and waits on `watch(...)`, which resolves with a reason as soon as the connection
or any watched channel closes, however it closed, or the broker cancels a consumer (a
deleted queue). The service then drops everything and reconnects with back-off.

`BrokerLink` does all of it for a service: it connects, opens a confirming publisher channel,
declares the topology, hands a `LinkSession` to the service's own code, and when the link is
lost (or the service asks for a new one) closes everything and reconnects with back-off,
for as long as the service runs. The CLI and other short-lived users take one session
with `BrokerLink.session_once()`.

`AMQP_URL` names one broker or several: the nodes of a cluster, comma-separated
(`amqp://u:p@rabbit-1:5672/,amqp://u:p@rabbit-2:5672/`; a comma inside a password is written
`%2C`). `connect` tries them in turn, from a random one so replicas spread over the nodes,
and puts last the addresses that failed lately, so a reconnect after a node is lost goes to
a live one first instead of waiting on the dead one's connect timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from pamqp.commands import Basic

from calltrail_common.envelope import EventEnvelope
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology, declare_topology

log = get_logger("broker")


def with_heartbeat(url: str, heartbeat_seconds: int) -> str:
    """`url` asking for `heartbeat_seconds` heartbeats, unless it names its own."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(name == "heartbeat" for name, _ in query):
        return url
    query.append(("heartbeat", str(heartbeat_seconds)))
    return urlunsplit(parts._replace(query=urlencode(query)))


# An address that failed this recently is tried after the others.
FAILED_ADDRESS_MEMORY_SECONDS = 30.0
_failed_at: dict[str, float] = {}


def broker_addresses(url: str) -> list[str]:
    """The broker URLs `AMQP_URL` names: one, or a cluster's nodes separated by commas."""
    addresses = [part.strip() for part in url.split(",") if part.strip()]
    if not addresses:
        raise ValueError("AMQP_URL names no broker")
    return addresses


def _in_trying_order(addresses: list[str]) -> list[str]:
    start = random.randrange(len(addresses))
    rotated = addresses[start:] + addresses[:start]
    now = time.monotonic()

    def failed_lately(address: str) -> bool:
        return now - _failed_at.get(address, float("-inf")) < FAILED_ADDRESS_MEMORY_SECONDS

    return sorted(rotated, key=failed_lately)  # stable: the rotation stays within each half


async def connect(url: str, *, heartbeat_seconds: int,
                  connect_timeout_seconds: float = 10.0) -> AbstractConnection:
    """A plain (not robust) connection to the first broker of `url` that answers; the
    caller owns reconnecting, with `watch`. Raises the last address's error when none does.
    """
    error: BaseException | None = None
    for address in _in_trying_order(broker_addresses(url)):
        try:
            return await aio_pika.connect(with_heartbeat(address, heartbeat_seconds),
                                          timeout=connect_timeout_seconds)
        except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as failure:
            _failed_at[address] = time.monotonic()
            error = failure
    assert error is not None  # broker_addresses never returns an empty list
    raise error


async def watch(connection: AbstractConnection, *channels: AbstractChannel
                ) -> asyncio.Future[str]:
    """A future that resolves, with why, when the link is no longer usable.

    It resolves when `connection` or any of `channels` closes (reset, heartbeat timeout,
    broker shutdown, a channel closed by the broker for a protocol error) or when the broker
    cancels a consumer on one of `channels`. Never cancelled by the callbacks it registers;
    the caller cancels it when done.
    """
    lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def mark(reason: str) -> None:
        if not lost.done():
            lost.set_result(reason)

    def on_connection_close(_sender: Any, error: BaseException | None = None) -> None:
        mark(f"connection closed ({type(error).__name__ if error else 'no error'})")

    connection.close_callbacks.add(on_connection_close)
    for channel in channels:
        await _watch_channel(channel, mark)
    if connection.is_closed or any(channel.is_closed for channel in channels):
        mark("closed before it was watched")
    return lost


async def close_quietly(connection: AbstractConnection | None,
                        wait_seconds: float = 2.0) -> None:
    """Close `connection` if it is open, waiting at most `wait_seconds`; never raises (a
    link that is already gone is what we wanted)."""
    if connection is None or connection.is_closed:
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), wait_seconds)


# Reconnect back-off: short, so processing resumes within seconds of an outage's end (a
# refused connect costs nothing; at 5 s, the broker's return waited up to 5 s to be seen).
RECONNECT_INITIAL_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 2.0


@dataclass
class LinkSession:
    """One connection's worth of the link: the connection, a confirming publisher channel
    (an unroutable publish raises) with the topology declared, and `lost`, which resolves
    with a reason when any of it is gone."""

    connection: AbstractConnection
    publisher: AbstractChannel
    lost: asyncio.Future[str]
    _unwatch: dict[int, Callable[[], None]] = field(default_factory=dict)
    _publishers: dict[int, AbstractChannel] = field(default_factory=dict)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def publisher_for(self, partition: int) -> AbstractChannel:
        """A confirming channel of the partition's own (opened on first use, watched). The
        broker confirms a channel's messages in order: one that a queue cannot confirm (its
        leader node frozen) holds back every later confirm on its channel, so events of one
        partition, on one channel, never wait on another partition's queue."""
        channel = self._publishers.get(partition)
        if channel is not None:
            return channel
        async with self._opening:
            channel = self._publishers.get(partition)
            if channel is None:
                channel = await self.connection.channel(publisher_confirms=True,
                                                        on_return_raises=True)
                self._unwatch[id(channel)] = await _watch_channel(channel, self._mark)
                self._publishers[partition] = channel
            return channel

    async def channel(self, *, prefetch: int | None = None) -> AbstractChannel:
        """Another channel on the connection, watched like the first (its loss, or a
        consumer the broker cancels on it, resolves `lost`) until `close_channel`."""
        channel = await self.connection.channel()
        if prefetch is not None:
            await channel.set_qos(prefetch_count=prefetch)
        self._unwatch[id(channel)] = await _watch_channel(channel, self._mark)
        return channel

    async def close_channel(self, channel: AbstractChannel, wait_seconds: float = 5.0) -> None:
        """Close a channel from `channel()` on purpose: not a lost link."""
        unwatch = self._unwatch.pop(id(channel), None)
        if unwatch is not None:
            unwatch()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(channel.close(), wait_seconds)

    def _mark(self, reason: str) -> None:
        if not self.lost.done():
            self.lost.set_result(reason)


Session = Callable[[LinkSession], Awaitable[None]]


class BrokerLink:
    """A service's link to the broker, kept up while `run` runs.

    `run(session)` calls `session(link_session)` after every (re)connect. The link is
    renewed when `session` returns or raises, or when the connection, a channel or a
    consumer is lost (then `session` is cancelled). `stop()` ends `run`: a connect in
    progress is given up, and the session is cancelled, unless `run` was told the session
    drains on its own (`drains=True`: the processor finishes its batches, then returns).
    `connected` says whether a session is up now.
    """

    def __init__(self, url: str, topology: Topology, *, heartbeat_seconds: int,
                 connect_timeout_seconds: float = 10.0, name: str = "broker") -> None:
        self._url = url
        self.topology = topology
        self._heartbeat = heartbeat_seconds
        self._connect_timeout = connect_timeout_seconds
        self._name = name
        self._stopping = asyncio.Event()
        self.connected = False

    def stop(self) -> None:
        self._stopping.set()

    async def run(self, session: Session, *, drains: bool = False) -> None:
        backoff = RECONNECT_INITIAL_SECONDS
        while not self._stopping.is_set():
            attempt = asyncio.ensure_future(self._attempt(session, drains))
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
            try:
                await asyncio.wait([attempt, stopping], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
            if not attempt.done() and not self.connected:
                attempt.cancel()  # stopped while connecting: nothing to finish
            try:
                reason, served = await attempt
            except asyncio.CancelledError:
                if not self._stopping.is_set():
                    raise
                break
            if self._stopping.is_set():
                break
            if served:
                backoff = RECONNECT_INITIAL_SECONDS
            log.warning("broker_link_lost", link=self._name, reason=reason,
                        retry_in=round(backoff, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_SECONDS)

    async def _attempt(self, session: Session, drains: bool) -> tuple[str, bool]:
        """One connection: connect, serve the session on it; why it ended, and whether it
        got as far as serving."""
        served = False
        try:
            async with self._session() as link:
                self.connected = served = True
                log.info("broker_connected", link=self._name)
                return await self._serve(session, link, drains), served
        except Exception as error:
            # Whatever a dying broker raises (aiormq raises StopAsyncIteration when the
            # node shuts down, a bare Exception from a dying channel): the loop must never
            # end while the service runs.
            return type(error).__name__, served
        finally:
            self.connected = False

    async def _serve(self, session: Session, link: LinkSession, drains: bool) -> str:
        task: asyncio.Future[None] = asyncio.ensure_future(session(link))
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
        waiting: list[asyncio.Future[Any]] = [task, link.lost, stopping]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not task.done() and (link.lost.done() or not drains):
            task.cancel()
        # A session that drains finishes on its own when asked to stop; a lost one is
        # cancelled.
        results = await asyncio.gather(task, return_exceptions=True)
        if link.lost.done():
            return link.lost.result()
        if isinstance(results[0], BaseException) \
                and not isinstance(results[0], asyncio.CancelledError):
            return f"session failed: {type(results[0]).__name__}"
        return "session ended"

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[LinkSession]:
        connection = await connect(self._url, heartbeat_seconds=self._heartbeat,
                                   connect_timeout_seconds=self._connect_timeout)
        try:
            publisher = await connection.channel(publisher_confirms=True,
                                                 on_return_raises=True)
            await declare_topology(publisher, self.topology)
            lost = await watch(connection, publisher)
            link = LinkSession(connection, publisher, lost)
            try:
                yield link
            finally:
                lost.cancel()
        finally:
            await close_quietly(connection, 5)

    @contextlib.asynccontextmanager
    async def session_once(self) -> AsyncIterator[LinkSession]:
        """One session for a short-lived user (a CLI command): raises when no node of
        `AMQP_URL` answers, closes the connection on exit."""
        async with self._session() as link:
            yield link


async def _watch_channel(channel: AbstractChannel, mark: Callable[[str], None]
                         ) -> Callable[[], None]:
    """Call `mark` with a reason when `channel` closes or the broker cancels a consumer on
    it; return what stops watching it."""
    def on_channel_close(_sender: Any, error: BaseException | None = None) -> None:
        mark(f"channel closed ({type(error).__name__ if error else 'no error'})")

    def on_consumer_cancel(_frame: Any) -> None:
        mark("consumer cancelled by the broker")

    channel.close_callbacks.add(on_channel_close)
    underlay = await channel.get_underlay_channel()
    underlay.on_consumer_cancel_callbacks.add(on_consumer_cancel)

    def unwatch() -> None:
        channel.close_callbacks.discard(on_channel_close)
        underlay.on_consumer_cancel_callbacks.discard(on_consumer_cancel)

    return unwatch


class PublishRefused(Exception):
    """The broker did not take an event: it was returned (no queue bound to its route) or
    refused (nack)."""


async def publish_event(channel: AbstractChannel, exchange: str, envelope: EventEnvelope,
                        body: bytes, *, routing_key: str | None = None,
                        confirm_timeout: float | None = None) -> None:
    """Publish one event, persistent and mandatory, on a confirming channel; return once the
    broker confirmed it. Straight on aiormq's channel: building aio-pika's message and going
    through its exchange was a sixth of metrics-sync's CPU in a backfill (py-spy).

    Raises `PublishRefused`, TimeoutError, or what a closed channel raises."""
    wire = await channel.get_underlay_channel()
    try:
        confirmation = await wire.basic_publish(
            body, exchange=exchange,
            routing_key=envelope.routing_key if routing_key is None else routing_key,
            properties=envelope.properties(), mandatory=True, timeout=confirm_timeout)
    except aiormq.exceptions.PublishError:
        raise PublishRefused("returned: no queue is bound to its route") from None
    if not isinstance(confirmation, Basic.Ack):
        raise PublishRefused(f"not confirmed: {type(confirmation).__name__}")


async def publish_transient(channel: AbstractChannel, exchange: str, body: bytes, *,
                            content_type: str, routing_key: str = "") -> None:
    """Publish a message that may be lost (the live board's, decision 46): not persistent,
    not mandatory, on a channel without confirms. Returns once it is written to the
    connection; a caller that must not wait bounds it with a timeout."""
    wire = await channel.get_underlay_channel()
    await wire.basic_publish(body, exchange=exchange, routing_key=routing_key,
                             properties=Basic.Properties(content_type=content_type,
                                                         delivery_mode=1))
