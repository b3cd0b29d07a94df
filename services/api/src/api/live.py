"""The live board's server side (decision 46): the api process's feed of call changes and
its fan-out to the boards open on it, as Server-Sent Events.

Feed. `LiveFeed` keeps a broker link of its own and reads the live exchange through a queue
of this process's (`topology.declare_live_queue`: exclusive, auto-delete, transient). Each
message names the calls a committed batch changed (`calltrail_common.live`); the hub reads
the rows of those calls whose organization is watched here, in one query, and sends them.

Hub. `LiveHub` holds the open boards by organization. Every event it sends has an id
`<epoch>.<seq>`: the epoch is this process's (random at start), the sequence counts the
events it made, so ids only grow within a process. Each board has a bounded outbox
(`BOARD_OUTBOX`): a board whose browser does not keep up is dropped (its stream ends, the
browser reconnects), never waited for, so it slows no other board.

What a board gets when it (re)connects:
- first a `clock` event (the server's time and the linger: the browser ticks durations
  and removes ended calls by the server's clock, whatever its own says);
- then, when its `Last-Event-ID` is of this process and every event of its organization
  since is still kept (`Resumable`: the organization's last `RING` events, kept while a
  board is open and `RESUME_GRACE_SECONDS` after the last closes), those events: a resume
  loses nothing and costs no query;
- otherwise a `snapshot` event: the calls not ended and the calls ended within the linger,
  read from the database, which replaces whatever the board showed;
- then the changes as `calls` events (the changed calls' rows, as the snapshot's), at most
  one per organization every `FLUSH_SECONDS`: the rows read meanwhile are merged (the
  latest row of each call), so a board is written to a few times a second however many
  batches commit, and one encoding serves every board of the organization.
A board subscribes before it reads its snapshot, so a change committed meanwhile is sent
after it; a row may then be older than the snapshot's, which the browser ignores (a call's
status only moves forward; live.js).

When the feed may have missed changes (the broker link was lost, or the hub fell behind),
every board is dropped and every ring forgotten: the boards reconnect and resync.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import secrets
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from aio_pika.abc import AbstractIncomingMessage

from api.metrics import ApiMetrics
from api.outcomes import ended_reason_bucket, is_success
from calltrail_common.broker import BrokerLink, LinkSession
from calltrail_common.live import ChangedCall, NotALiveMessage, decode_changes
from calltrail_common.logging import get_logger
from calltrail_common.topology import Topology, declare_live_queue

log = get_logger("api")

BOARD_OUTBOX = 256  # events waiting for one browser; past it the board is dropped
RING = 512  # events kept per organization for resumes
RESUME_GRACE_SECONDS = 60.0
KEEPALIVE_SECONDS = 15.0
# A stream ends after this long (the browser reconnects at once and resumes): its session or
# token is checked again, so a signed-out session or a revoked token stops being served.
STREAM_SECONDS = 600.0
RECONNECT_MS = 2000  # the browser's reconnect delay (SSE `retry:`)
FEED_BACKLOG = 1000  # broker messages waiting for the hub; past it the boards resync
# Changes wait this long to be sent together: with 1,000 boards, a write to every board per
# processor batch (tens a second) was the api's whole CPU (bench.live, py-spy).
FLUSH_SECONDS = 0.1

Rows = Callable[[Sequence[ChangedCall]], Awaitable[list[asyncpg.Record]]]


def _ms(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1000)


def board_call(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """A call as a board shows it: who, which assistant, where it stands, and how it ended."""
    reason, evaluation = row["ended_reason"], row["success_evaluation"]
    return {
        "id": row["id"], "direction": row["direction"], "status": row["status"],
        "caller": row["caller_name"] or row["customer_number"],
        "number": row["customer_number"], "assistant": row["assistant_id"],
        "createdAt": _ms(row["created_at"]), "startedAt": _ms(row["started_at"]),
        "endedAt": _ms(row["ended_at"]), "endedReason": reason,
        "outcome": None if reason is None else ended_reason_bucket(reason),
        "success": None if evaluation is None else is_success(evaluation),
    }


def sse(event: str, data: object, event_id: str | None = None) -> bytes:
    """One Server-Sent Event (the data is one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data) + b"\n\n"


KEEPALIVE = b": keepalive\n\n"


@dataclass(eq=False)
class Board:
    """One open stream: its organization and its bounded outbox."""

    org_id: uuid.UUID
    outbox: collections.deque[bytes] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    dropped: bool = False

    def offer(self, chunk: bytes) -> bool:
        if self.dropped:
            return False
        if len(self.outbox) >= BOARD_OUTBOX:
            self.drop()
            return False
        self.outbox.append(chunk)
        self.wake.set()
        return True

    def gone(self) -> bool:
        """Dropped (it may have been while its stream waited)."""
        return self.dropped

    def drop(self) -> None:
        self.dropped = True
        self.outbox.clear()
        self.wake.set()


@dataclass
class _Ring:
    """An organization's latest events: every one with a sequence above `since` is here."""

    since: int
    events: collections.deque[tuple[int, bytes]] = field(
        default_factory=lambda: collections.deque(maxlen=RING))
    idle_since: float | None = None  # when its last board closed

    def add(self, seq: int, chunk: bytes) -> None:
        if len(self.events) == RING:
            self.since = self.events[0][0]
        self.events.append((seq, chunk))


def parse_event_id(value: str | None, epoch: str) -> int | None:
    """The sequence of a `Last-Event-ID` this process gave; None for any other."""
    if not value:
        return None
    found_epoch, _, seq = value.strip().partition(".")
    if found_epoch != epoch or not seq.isdigit() or len(seq) > 18:
        return None
    return int(seq)


_HUBS: weakref.WeakSet[LiveHub] = weakref.WeakSet()


def end_all_streams() -> None:
    """The server is shutting down: every board's stream ends now and new ones end at once
    (their browsers reconnect, to another replica), so the drain never waits on them."""
    for hub in list(_HUBS):
        hub.stopping = True
        hub.resync("shutting down")


class LiveHub:
    def __init__(self, rows: Rows, metrics: ApiMetrics | None = None,
                 epoch: str | None = None) -> None:
        _HUBS.add(self)
        self.stopping = False
        self._rows = rows
        self._metrics = metrics
        self.epoch = epoch or secrets.token_hex(4)
        self.seq = 0
        self._boards: dict[uuid.UUID, set[Board]] = {}
        self._rings: dict[uuid.UUID, _Ring] = {}
        # Rows read and not yet sent, by organization and call (the latest read of each).
        self._pending: dict[uuid.UUID, dict[str, dict[str, Any]]] = {}
        self._flush: asyncio.TimerHandle | None = None

    def event_id(self, seq: int) -> str:
        return f"{self.epoch}.{seq}"

    def open(self, org_id: uuid.UUID, last_event_id: str | None
             ) -> tuple[Board, list[bytes] | None, str]:
        """Subscribe a board; the events it missed since `last_event_id` when they are all
        kept here (None: it needs a snapshot), and the id its snapshot takes."""
        board = Board(org_id)
        if self.stopping:
            board.drop()
        self._boards.setdefault(org_id, set()).add(board)
        ring = self._rings.get(org_id)
        if ring is not None and ring.idle_since is not None \
                and time.monotonic() - ring.idle_since > RESUME_GRACE_SECONDS:
            ring = None
        # A ring begun now knows nothing of what changed before: the organization's changes
        # were not read while nothing watched it, so no id resumes (even the latest one).
        fresh = ring is None
        if ring is None:
            ring = self._rings[org_id] = _Ring(since=self.seq)
        ring.idle_since = None
        self._count_boards()
        last = parse_event_id(last_event_id, self.epoch)
        missed = None
        if last is not None and not fresh and ring.since <= last <= self.seq:
            missed = [chunk for seq, chunk in ring.events if seq > last]
        return board, missed, self.event_id(self.seq)

    def close(self, board: Board) -> None:
        boards = self._boards.get(board.org_id)
        if boards is None:
            return
        boards.discard(board)
        if not boards:
            del self._boards[board.org_id]
            ring = self._rings.get(board.org_id)
            if ring is not None:
                ring.idle_since = time.monotonic()
        self._count_boards()

    def _count_boards(self) -> None:
        if self._metrics is not None:
            self._metrics.live_boards.set(sum(len(b) for b in self._boards.values()))

    def _watched(self, org_id: uuid.UUID) -> bool:
        if org_id in self._boards:
            return True
        ring = self._rings.get(org_id)
        if ring is None:
            return False
        if ring.idle_since is not None \
                and time.monotonic() - ring.idle_since > RESUME_GRACE_SECONDS:
            del self._rings[org_id]
            return False
        return True

    async def changed(self, calls: Sequence[ChangedCall]) -> None:
        """Read the rows of the changed calls of watched organizations; they are sent to the
        boards within `FLUSH_SECONDS` (`flush`)."""
        wanted = [call for call in calls if self._watched(call[0])]
        if not wanted:
            return
        for row in await self._rows(wanted):
            self._pending.setdefault(row["org_id"], {})[row["id"]] = board_call(row)
        if self._pending and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Send what `changed` read: one `calls` event per organization to its boards."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        pending, self._pending = self._pending, {}
        for org_id, by_call in pending.items():
            self.seq += 1
            chunk = sse("calls", {"calls": list(by_call.values())}, self.event_id(self.seq))
            ring = self._rings.get(org_id)
            if ring is not None:
                ring.add(self.seq, chunk)
            for board in list(self._boards.get(org_id, ())):
                if not board.offer(chunk) and self._metrics is not None:
                    self._metrics.live_dropped.labels("slow").inc()

    def resync(self, reason: str) -> None:
        """Changes may have been missed: every board reconnects and reads a snapshot."""
        boards = [b for group in self._boards.values() for b in group]
        self._rings.clear()
        self._pending.clear()  # every board reads a snapshot instead
        # Changes may have been missed without taking a number: no id given before this may
        # resume, even one that names the latest event.
        self.seq += 1
        for board in boards:
            board.drop()
        if boards:
            log.warning("live_boards_resync", reason=reason, boards=len(boards))
            if self._metrics is not None:
                self._metrics.live_dropped.labels("resync").inc(len(boards))


async def stream(hub: LiveHub, board: Board, first: Iterable[bytes]
                 ) -> AsyncIterator[bytes]:
    """What one board is sent: `first`, then its outbox as it fills, keep-alives between,
    until it is dropped or its time is up."""
    try:
        yield b"".join(first)
        ends = time.monotonic() + STREAM_SECONDS
        while not board.dropped:
            left = ends - time.monotonic()
            if left <= 0:
                return
            board.wake.clear()
            if not board.outbox:
                try:  # asyncio.timeout, not wait_for: no task per wait (a fifth of the CPU)
                    async with asyncio.timeout(min(KEEPALIVE_SECONDS, left)):
                        await board.wake.wait()
                except TimeoutError:
                    yield KEEPALIVE
                    continue
            if board.gone():
                return
            chunks = b"".join(board.outbox)
            board.outbox.clear()
            yield chunks
    finally:
        hub.close(board)


def clock_event(linger_seconds: float) -> bytes:
    return (f"retry: {RECONNECT_MS}\n".encode()
            + sse("clock", {"now": int(time.time() * 1000), "lingerSeconds": linger_seconds}))


class LiveFeed:
    """This process's link to the live exchange, feeding the hub in order."""

    def __init__(self, amqp_url: str, topology: Topology, heartbeat_seconds: int,
                 hub: LiveHub) -> None:
        self._topology = topology
        self._hub = hub
        self._process = f"api-{os.getpid()}-{hub.epoch}"
        self._sessions = 0  # a queue name per session: an old one may outlive its link
        self._link = BrokerLink(amqp_url, topology, heartbeat_seconds=heartbeat_seconds,
                                connect_timeout_seconds=3.0, name="api-live")
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self, wait_seconds: float = 3.0) -> None:
        """Start the link, and give it a moment to bind this process's queue (boards opened
        before that are resynced once it is)."""
        self._task = asyncio.create_task(self._link.run(self._session), name="live-feed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), wait_seconds)

    async def _session(self, link: LinkSession) -> None:
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        behind = False
        channel = await link.channel()
        self._sessions += 1
        queue = await declare_live_queue(channel, self._topology,
                                         f"{self._process}-{self._sessions}")
        # Changes made while no queue of ours was bound are lost: the boards resync.
        self._hub.resync("live feed (re)connected")

        async def arrived(message: AbstractIncomingMessage) -> None:
            nonlocal behind
            if inbox.qsize() < FEED_BACKLOG:
                inbox.put_nowait(message.body)
            elif not behind:  # the hub is behind: drop what comes, resync, go on
                behind = True
                inbox.put_nowait(None)

        await queue.consume(arrived, no_ack=True, exclusive=True)
        self.connected.set()
        try:
            while True:
                body = await inbox.get()
                if body is None:
                    while not inbox.empty():
                        inbox.get_nowait()
                    behind = False
                    self._hub.resync("live feed fell behind")
                    continue
                try:
                    calls = decode_changes(body)
                except NotALiveMessage as error:
                    log.warning("live_message_ignored", reason=str(error))
                    continue
                try:
                    await self._hub.changed(calls)
                except (OSError, asyncpg.PostgresError, TimeoutError) as error:
                    log.warning("live_rows_not_read", error=type(error).__name__)
                    self._hub.resync("rows not read")
        finally:
            self.connected.clear()

    async def close(self) -> None:
        self._link.stop()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 5)
