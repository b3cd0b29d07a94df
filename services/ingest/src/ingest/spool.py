"""The local spool: an append-only, fsynced log of accepted events the broker has not taken.

Layout under `SPOOL_DIR`:

    slot-<n>/lock               flock held by the ingest process that owns the slot
    slot-<n>/<seq>.seg          segments, appended in order; a frame is
                                b"CT" | u32 length | u32 crc32 | payload
    slot-<n>/cursor             "<seq> <offset>": how far the replay has got

Each process claims the first slot whose lock is free, so replicas sharing a `SPOOL_DIR`
never write to the same files, and a slot whose process died (kill -9 releases its flock)
is adopted and drained by whichever ingest finds it next.

Writes are group-committed: concurrent `append` calls share one write + fsync in a worker
thread, and none returns before its frame is on disk. A frame torn by a crash was never
acknowledged, so reading stops at the first incomplete frame at the tail of the last segment.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import itertools
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import orjson

from calltrail_common.envelope import HEADER_PARTITION, EventEnvelope, partition_of
from calltrail_common.logging import get_logger
from ingest.payload import AcceptedEvent, read_envelope

log = get_logger(__name__)

_MAGIC = b"CT"
_FRAME_HEAD = struct.Struct(">2sII")
_META_LENGTH = struct.Struct(">I")
_SEGMENT_NAME = re.compile(r"^(\d{12})\.seg$")
_SLOT_NAME = re.compile(r"^slot-(\d+)$")
DEFAULT_SEGMENT_BYTES = 32 * 1024 * 1024
# Below this much free space the spool reports itself unwritable (readiness), before appends
# start failing: the room for a few large webhooks.
_MIN_FREE_BYTES = 1024 * 1024


class SpoolUnavailable(Exception):
    """The spool could not make an event durable (disk full, directory gone, ...)."""


def encode_frame(event: AcceptedEvent) -> bytes:
    meta = orjson.dumps({"id": event.message_id, "h": event.envelope.headers()})
    payload = _META_LENGTH.pack(len(meta)) + meta + event.body
    return _FRAME_HEAD.pack(_MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> AcceptedEvent:
    (meta_length,) = _META_LENGTH.unpack_from(payload)
    meta = orjson.loads(payload[_META_LENGTH.size:_META_LENGTH.size + meta_length])
    body = payload[_META_LENGTH.size + meta_length:]
    envelope = EventEnvelope.read(meta["id"], meta["h"])
    if HEADER_PARTITION not in meta["h"]:
        # Spooled by a release before partitions: the body says which (ingest read it once).
        envelope = replace(envelope, partition=partition_of(read_envelope(body).caller_key,
                                                            envelope.message_id))
    return AcceptedEvent(envelope, body)


def iter_frames(data: bytes, start: int = 0) -> Iterator[tuple[AcceptedEvent, int]]:
    """Yield (event, offset after it) for each whole, intact frame from `start`."""
    offset = start
    while offset + _FRAME_HEAD.size <= len(data):
        magic, length, crc = _FRAME_HEAD.unpack_from(data, offset)
        end = offset + _FRAME_HEAD.size + length
        if magic != _MAGIC or end > len(data):
            return
        payload = data[offset + _FRAME_HEAD.size:end]
        if zlib.crc32(payload) != crc:
            return
        yield _decode_payload(payload), end
        offset = end


@dataclass
class _Position:
    segment: int
    offset: int


class Spool:
    """One slot of the spool: appended by its owner, read and trimmed by the replayer.

    `backlog` counts events appended (or being appended) and not yet committed as
    re-published, and `backlog_of(partition)` those of one processor partition: while it is
    above zero, the outbox spools that partition's new events too, so that the broker
    receives each partition's events in the order they were accepted.
    """

    def __init__(self, directory: Path, lock_fd: int, *, writable: bool,
                 segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> None:
        self.directory = directory
        self.writable = writable
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._file: int | None = None  # fd of the segment being appended to
        self._write_segment = 0
        self._write_size = 0
        self._durable_size: dict[int, int] = {}  # segment -> bytes known to be on disk
        self._read = _Position(0, 0)
        self.backlog = 0
        self._by_partition: collections.Counter[int] = collections.Counter()
        self._recover()

    # -- start-up ---------------------------------------------------------------------

    def _segments(self) -> list[int]:
        found = []
        for entry in os.listdir(self.directory):
            match = _SEGMENT_NAME.match(entry)
            if match:
                found.append(int(match.group(1)))
        return sorted(found)

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"{segment:012d}.seg"

    def _recover(self) -> None:
        segments = self._segments()
        cursor = self.directory / "cursor"
        if cursor.exists():
            seq, offset = cursor.read_text().split()
            self._read = _Position(int(seq), int(offset))
        for segment in segments:
            if segment < self._read.segment:
                self._segment_path(segment).unlink()  # replayed, deletion was interrupted
                continue
            data = self._segment_path(segment).read_bytes()
            start = self._read.offset if segment == self._read.segment else 0
            end = start
            for event, end in iter_frames(data, start):  # noqa: B007
                self.backlog += 1
                self._by_partition[event.envelope.partition] += 1
            if end < len(data):
                # A torn tail was never acknowledged (its fsync never returned): cut it.
                log.warning("spool_truncated_torn_tail", segment=segment,
                            kept_bytes=end, dropped_bytes=len(data) - end)
                with open(self._segment_path(segment), "r+b") as f:
                    f.truncate(end)
            self._durable_size[segment] = end
        if segments:
            self._write_segment = segments[-1]
            if self._read.segment < segments[0]:
                self._read = _Position(segments[0], 0)
        else:
            self._write_segment = self._read.segment

    # -- writing ----------------------------------------------------------------------

    async def append(self, event: AcceptedEvent) -> None:
        """Return once `event` is fsynced; raise `SpoolUnavailable` when it cannot be."""
        if not self.writable:
            raise SpoolUnavailable("this spool slot is only being drained")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((encode_frame(event), future))
        partition = event.envelope.partition
        self.backlog += 1
        self._by_partition[partition] += 1
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            await asyncio.shield(future)
        except SpoolUnavailable:
            self.backlog -= 1
            self._by_partition[partition] -= 1
            raise

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                frames = [frame for frame, _ in batch]
                try:
                    await loop.run_in_executor(self._executor, self._write_and_sync, frames)
                except OSError as error:
                    self._abandon_segment()
                    for _, future in batch:
                        future.set_exception(SpoolUnavailable(str(error)))
                    log.error("spool_write_failed", error=str(error), events=len(batch))
                    continue
                self._durable_size[self._write_segment] = self._write_size
                for _, future in batch:
                    future.set_result(None)
        finally:
            self._flusher = None

    def _write_and_sync(self, frames: list[bytes]) -> None:
        # Runs in the spool's single worker thread.
        if self._file is not None and self._write_size >= self._segment_bytes:
            self._close_file()
            self._write_segment += 1
            self._write_size = 0
        if self._file is None:
            self._file = os.open(self._segment_path(self._write_segment),
                                 os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._write_size = os.fstat(self._file).st_size
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # the new file's name is durable too
            finally:
                os.close(dir_fd)
        data = b"".join(frames)
        written = 0
        while written < len(data):
            written += os.write(self._file, data[written:])
        os.fsync(self._file)
        self._write_size += len(data)

    def _abandon_segment(self) -> None:
        """After a failed write (disk full, read-only, I/O error) the segment may end in part
        of a frame: it is cut back where it can be, and in any case nothing more is appended
        to it. Readers stop at its last durable byte; the next append opens a new segment, so
        no later frame sits behind a torn one where the replay could never reach it."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._file, self._write_size)
        self._close_file()
        self._durable_size.setdefault(self._write_segment, self._write_size)
        self._write_segment += 1
        self._write_size = 0

    def _close_file(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                os.close(self._file)
            self._file = None

    # -- replaying --------------------------------------------------------------------

    @property
    def read_position(self) -> _Position:
        """Where the replay has got: the position after the last committed event."""
        return _Position(self._read.segment, self._read.offset)

    def read_batch(self, max_events: int, max_bytes: int = 8 * 1024 * 1024,
                   start: _Position | None = None) -> tuple[list[AcceptedEvent], _Position]:
        """Events after the cursor (or after `start`, a position `read_batch` returned and
        not yet committed: the replay reads ahead), in order, and the position after the
        last one."""
        events: list[AcceptedEvent] = []
        position = _Position(*(astuple(start) if start is not None
                               else (self._read.segment, self._read.offset)))
        for segment in self._segments():
            if segment < position.segment:
                continue
            if segment > position.segment:
                position = _Position(segment, 0)
            # Only bytes whose fsync returned: a segment the flusher has just opened has no
            # durable size yet, and what it holds may still be cut off by a full disk (its
            # webhooks answered 503). Publishing those drove the backlog below zero, which
            # stopped the replay with accepted events still on disk (make chaos, spool-full).
            durable = self._durable_size.get(segment, 0)
            with open(self._segment_path(segment), "rb") as f:
                base, budget = position.offset, max_bytes
                while True:
                    f.seek(base)
                    data = f.read(max(0, min(durable - base, budget)))
                    # Decoded one by one as taken: the budget holds far more frames than a
                    # batch (decoding them all, each batch, was most of the replay's time).
                    frames = iter_frames(data)
                    first = next(frames, None)
                    if first is not None or base + len(data) >= durable:
                        break
                    budget *= 2  # one frame larger than the budget: read it whole
            for event, end in itertools.chain([first] if first is not None else [], frames):
                events.append(event)
                position = _Position(segment, base + end)
                if len(events) >= max_events:
                    return events, position
            if position.offset < durable:
                return events, position  # the byte budget ran out inside this segment
        return events, position

    def backlog_of(self, partition: int) -> int:
        return self._by_partition[partition]

    def commit(self, events: Sequence[AcceptedEvent], position: _Position) -> None:
        """Record that `events`, up to `position`, reached the broker; trim what is done."""
        self._read = position
        self.backlog -= len(events)
        self._by_partition.subtract(event.envelope.partition for event in events)
        for segment in self._segments():
            if segment < position.segment:
                self._segment_path(segment).unlink()
                self._durable_size.pop(segment, None)
        if self.backlog == 0 and not self._pending and self._flusher is None:
            # Everything accepted has been re-published: start afresh.
            self._close_file()
            for segment in self._segments():
                self._segment_path(segment).unlink()
            self._durable_size.clear()
            self._write_segment = max(self._write_segment, position.segment) + 1
            self._write_size = 0
            self._read = _Position(self._write_segment, 0)
            with contextlib.suppress(FileNotFoundError):
                (self.directory / "cursor").unlink()
            return
        tmp = self.directory / "cursor.tmp"
        try:
            tmp.write_text(f"{position.segment} {position.offset}")
            os.replace(tmp, self.directory / "cursor")
        except OSError:
            # A full disk: the cursor on disk stays behind (a crash now re-publishes a few
            # events, which processing dedupes); the replay itself goes on and frees space.
            with contextlib.suppress(OSError):
                tmp.unlink()

    def is_writable(self) -> bool:
        """Whether an append can succeed now: a writable directory (not a read-only mount)
        with room for at least one more large event."""
        if not (self.writable and self.directory.is_dir()
                and os.access(self.directory, os.W_OK)):
            return False
        try:
            stats = os.statvfs(self.directory)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize >= _MIN_FREE_BYTES

    def close(self) -> None:
        self._close_file()
        self._executor.shutdown(wait=True)
        os.close(self._lock_fd)  # releases the flock


def _try_lock(slot: Path) -> int | None:
    slot.mkdir(parents=True, exist_ok=True)
    fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def claim_slot(root: Path, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> Spool:
    """Lock the first free slot under `root` and open it for appending."""
    root.mkdir(parents=True, exist_ok=True)
    index = 0
    while True:
        slot = root / f"slot-{index}"
        fd = _try_lock(slot)
        if fd is not None:
            return Spool(slot, fd, writable=True, segment_bytes=segment_bytes)
        index += 1


def adopt_orphans(root: Path, own: Spool) -> list[Spool]:
    """Lock every other slot whose owner is gone and that still holds events."""
    adopted: list[Spool] = []
    if not root.is_dir():
        return adopted
    for entry in sorted(os.listdir(root)):
        slot = root / entry
        if not _SLOT_NAME.match(entry) or slot == own.directory:
            continue
        if not any(_SEGMENT_NAME.match(name) for name in os.listdir(slot)):
            continue
        fd = _try_lock(slot)
        if fd is None:
            continue  # a live process owns it
        spool = Spool(slot, fd, writable=False)
        if spool.backlog:
            adopted.append(spool)
        else:
            spool.close()
    return adopted
