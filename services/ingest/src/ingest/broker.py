"""Ingest's side of RabbitMQ: the broker link's confirming channel, kept up in the background.

`publish` never waits for a connection: when there is none, or the broker does not confirm
within the timeout, it raises `BrokerUnavailable` at once and the outbox spools the event.
The link (`calltrail_common.broker.BrokerLink`) declares the topology on every (re)connect,
so ingest starts and takes webhooks even while the broker is unreachable, and recreates
what an operator deleted; it reconnects whenever the link is lost however it was lost, and
after a failed publish, so a half-dead or misconfigured link is replaced rather than
trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from calltrail_common.broker import BrokerLink, LinkSession, publish_event
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology
from ingest.payload import AcceptedEvent

log = get_logger(__name__)


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
        self._link = BrokerLink(amqp_url, topology, heartbeat_seconds=heartbeat_seconds,
                                connect_timeout_seconds=5, name="ingest")
        self._topology = topology
        self._confirm_timeout = confirm_timeout
        # Called after every (re)connect; the outbox sets it to start draining the spool.
        self.on_connected: Callable[[], None] | None = None
        self._observe_publish = observe_publish
        self._link_session: LinkSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._reconnect = asyncio.Event()
        # A confirm that is late is not a dead link: under load (or a broker catching up after
        # an outage) confirms can take seconds, and reconnecting then only adds churn (ingest
        # flapped for 50 s that way). A link is given up when nothing was confirmed for this
        # long; a dead one is found by heartbeats anyway.
        self._silence_limit = max(3.0 * heartbeat_seconds, 2.0 * confirm_timeout)
        self._last_confirm = time.monotonic()

    @property
    def connected(self) -> bool:
        return self._link_session is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._link.run(self._session), name="broker-link")

    async def close(self) -> None:
        self._link.stop()
        self._reconnect.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError,
                                     asyncio.TimeoutError):
                await asyncio.wait_for(self._task, 5)

    async def _session(self, link: LinkSession) -> None:
        """Publish on this session's channel until a publish fails on it (or it is lost:
        then the link cancels this)."""
        self._reconnect.clear()
        self._last_confirm = time.monotonic()
        self._link_session = link
        if self.on_connected is not None:
            self.on_connected()
        try:
            await self._reconnect.wait()
        finally:
            self._link_session = None

    async def publish(self, event: AcceptedEvent) -> None:
        link = self._link_session
        if link is None:
            raise BrokerUnavailable("not connected")
        started = time.perf_counter()
        try:
            # Each partition on its channel: a queue that cannot confirm (its leader frozen)
            # holds back its own partition's events, not the others'.
            channel = await link.publisher_for(event.envelope.partition)
            await publish_event(channel, self._topology.events_exchange, event.envelope,
                                event.body, confirm_timeout=self._confirm_timeout)
        except TimeoutError:
            # A broker that stopped confirming altogether may be half-dead: reconnect to find
            # out. One that is only slow keeps its link.
            if time.monotonic() - self._last_confirm > self._silence_limit:
                self._request_reconnect(link)
            raise BrokerUnavailable("no confirm in time") from None
        except Exception as error:
            # Refused, returned (a binding gone: the reconnect declares it again), closed, or
            # anything else the client library raises mid-failure (aiormq can raise a bare
            # Exception from a dying channel): the event is spooled, never answered 500.
            self._request_reconnect(link)
            raise BrokerUnavailable(type(error).__name__) from None
        except asyncio.CancelledError:
            # aiormq cancels the confirm futures of a connection it closes (a heartbeat
            # timeout in a partition): that is the link failing, not this request being
            # cancelled. Spool it, unless the request itself is being cancelled.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            self._request_reconnect(link)
            raise BrokerUnavailable("confirm cancelled: the connection closed") from None
        self._last_confirm = time.monotonic()
        if self._observe_publish is not None:
            self._observe_publish(time.perf_counter() - started)

    def _request_reconnect(self, failed_on: LinkSession) -> None:
        # Only for a failure on the current link: publishes still failing on a replaced one
        # must not tear down the new link too (that made ingest flap after an outage).
        if failed_on is self._link_session:
            self._reconnect.set()
