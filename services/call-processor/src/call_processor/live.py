"""Telling the live boards which calls a committed batch changed (decision 46).

After a batch commits, the consumer hands its changed calls to `LivePublisher.changed`,
which only appends them to a bounded list: it never waits, never raises, and costs the
batch a list append. A task of the broker session (`serve`) publishes them to the live
exchange on a channel of its own, transient (not persistent, not confirmed, not
mandatory): a board that misses one resyncs from the database when it reconnects.

Whatever goes wrong here drops live messages and counts them
(`calltrail_processor_live_dropped_total`, by reason): the broker down or the channel gone,
more waiting than `MAX_PENDING`, or a publish that takes longer than
`PUBLISH_TIMEOUT_SECONDS` (a blocked broker). The channel is not watched by the link: losing
it reopens it here and never renews the processor's session, so batches go on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Sequence

from aio_pika.abc import AbstractChannel

from call_processor.metrics import ProcessorMetrics
from calltrail_common.broker import LinkSession, publish_transient
from calltrail_common.live import CONTENT_TYPE, ChangedCall, encode_changes
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology

log = get_logger("call_processor")

MAX_PENDING = 1000  # batches' worth of changes waiting to be published
PUBLISH_TIMEOUT_SECONDS = 2.0
_REOPEN_SECONDS = 1.0


class LivePublisher:
    def __init__(self, topology: Topology, metrics: ProcessorMetrics) -> None:
        self._exchange = topology.live_exchange
        self._metrics = metrics
        self._pending: collections.deque[Sequence[ChangedCall]] = collections.deque()
        self._wake = asyncio.Event()
        self._serving = False

    def changed(self, calls: Sequence[ChangedCall]) -> None:
        """A batch committed these changes: publish them soon, or drop them (counted)."""
        if not calls:
            return
        if not self._serving:
            self._metrics.live_dropped.labels("broker_down").inc()
        elif len(self._pending) >= MAX_PENDING:
            self._metrics.live_dropped.labels("backlog").inc()
        else:
            self._pending.append(calls)
            self._wake.set()

    async def serve(self, link: LinkSession) -> None:
        """Publish what batches hand over while this broker session lasts."""
        self._serving = True
        channel: AbstractChannel | None = None
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._pending:
                    if channel is not None and channel.is_closed:
                        # Closed by the broker after a publish it refused (a deleted
                        # exchange): that message is lost.
                        self._metrics.live_dropped.labels("publish_failed").inc()
                        log.warning("live_channel_closed")
                        channel = None
                    if channel is None:
                        channel = await self._open(link)
                        if channel is None:
                            continue
                    calls = self._pending.popleft()
                    try:
                        await asyncio.wait_for(
                            publish_transient(channel, self._exchange, encode_changes(calls),
                                              content_type=CONTENT_TYPE),
                            PUBLISH_TIMEOUT_SECONDS)
                    except Exception as error:  # a dying channel raises anything
                        self._metrics.live_dropped.labels("publish_failed").inc()
                        log.warning("live_not_published", error=type(error).__name__)
                        with contextlib.suppress(Exception):
                            await asyncio.wait_for(channel.close(), 1)
                        channel = None
                    else:
                        self._metrics.live_published.inc()
        finally:
            self._serving = False
            if self._pending:
                self._metrics.live_dropped.labels("broker_down").inc(len(self._pending))
                self._pending.clear()

    async def _open(self, link: LinkSession) -> AbstractChannel | None:
        """A channel for live messages; None (what waits is dropped) when none opens."""
        try:
            return await asyncio.wait_for(link.connection.channel(), PUBLISH_TIMEOUT_SECONDS)
        except Exception as error:
            self._metrics.live_dropped.labels("broker_down").inc(len(self._pending))
            self._pending.clear()
            log.warning("live_channel_not_opened", error=type(error).__name__)
            await asyncio.sleep(_REOPEN_SECONDS)
            return None
