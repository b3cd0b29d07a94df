"""The spool across restarts and at its edges (issue 16, mutation testing): frames from a
release before partitions, what a restart counts and deletes, a frame larger than a read,
failed writes in a row, and the cursor of a spool that was emptied."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

import orjson
import pytest

from calltrail_common.envelope import HEADER_PARTITION, partition_of
from ingest.payload import read_envelope
from ingest.spool import (
    SpoolUnavailable,
    adopt_orphans,
    claim_slot,
    encode_frame,
    iter_frames,
)
from tests.ingest.test_spool import event, replay_all

# The failing fsync of test_spool_fsync.py, its fixture included.
from tests.ingest.test_spool_fsync import SegmentFsync, segment_fsync  # noqa: F401

CALLER_BODY = orjson.dumps({"message": {"type": "status-update", "status": "ringing",
                                        "call": {"id": "call-7"},
                                        "customer": {"number": "+14155550100"}}})


def test_a_frame_spooled_before_partitions_takes_its_partition_from_its_body() -> None:
    headers = {k: v for k, v in event(1).envelope.headers().items() if k != HEADER_PARTITION}
    meta = orjson.dumps({"id": "m-old", "h": headers})
    payload = len(meta).to_bytes(4, "big") + meta + CALLER_BODY
    frame = b"CT" + len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big")
    ((old, end),) = list(iter_frames(frame + payload))
    assert end == len(frame) + len(payload)
    assert old.message_id == "m-old" and old.body == CALLER_BODY
    expected = partition_of(read_envelope(CALLER_BODY).caller_key, "m-old")
    assert old.envelope.partition == expected
    assert expected != partition_of(None, "m-old")  # the caller decides, not the message id


def test_a_frame_spooled_before_partitions_without_a_caller_takes_its_message_ids() -> None:
    headers = {k: v for k, v in event(1).envelope.headers().items() if k != HEADER_PARTITION}
    meta = orjson.dumps({"id": "m-chatter", "h": headers})
    chatter = orjson.dumps({"message": {"type": "speech-update"}})
    payload = len(meta).to_bytes(4, "big") + meta + chatter
    frame = b"CT" + len(payload).to_bytes(4, "big") + zlib.crc32(payload).to_bytes(4, "big")
    ((old, _),) = list(iter_frames(frame + payload))
    assert old.envelope.partition == partition_of(None, "m-chatter")


def test_a_frame_with_another_magic_is_not_a_frame() -> None:
    frame = bytearray(encode_frame(event(1)))
    frame[:2] = b"XX"  # the checksum covers the payload only: it still matches
    assert list(iter_frames(bytes(frame))) == []


async def test_a_restart_counts_each_partitions_backlog(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    for n in (3, 19, 35, 4):  # partitions 3, 3, 3 and 4
        await spool.append(event(n))
    spool.close()
    again = claim_slot(tmp_path)
    assert (again.backlog, again.backlog_of(3), again.backlog_of(4), again.backlog_of(5)) == (
        4, 3, 1, 0)
    again.close()


async def test_a_restart_deletes_replayed_segments_and_keeps_every_later_one(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path, segment_bytes=150)  # a segment for each event or two
    for n in range(8):
        await spool.append(event(n))
    events, position = spool.read_batch(3)
    spool.commit(events, position)
    replayed = spool.directory / f"{position.segment - 1:012d}.seg"
    replayed.write_bytes(encode_frame(event(99)))  # its deletion was interrupted
    spool.close()
    again = claim_slot(tmp_path, segment_bytes=150)
    assert not replayed.exists()
    assert again.backlog == 5
    assert [e.message_id for e in replay_all(again)] == [f"m{n}" for n in range(3, 8)]
    again.close()


async def test_a_frame_larger_than_a_read_is_read_whole(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    for n in range(3):
        await spool.append(event(n, size=5000))
    events, _ = spool.read_batch(10, max_bytes=100)
    assert [e.message_id for e in events] == ["m0"]
    assert [e.message_id for e in replay_all(spool, batch=2)] == ["m0", "m1", "m2"]
    spool.close()


async def test_a_slot_being_drained_refuses_appends_and_keeps_its_counts(
        tmp_path: Path) -> None:
    dead = claim_slot(tmp_path)
    await dead.append(event(3))
    dead.close()
    live = claim_slot(tmp_path / "elsewhere")
    (orphan,) = adopt_orphans(tmp_path, live)
    with pytest.raises(SpoolUnavailable, match=r"^this spool slot is only being drained$"):
        await orphan.append(event(19))
    assert (orphan.backlog, orphan.backlog_of(3)) == (1, 1)
    orphan.close()
    live.close()


async def test_only_dead_slots_holding_events_are_adopted_whatever_comes_before_them(
        tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a slot")
    (tmp_path / "a-dir").mkdir()
    own, alive, empty, dead, replayed, dead_too = [claim_slot(tmp_path) for _ in range(6)]
    assert [s.directory.name for s in (own, dead_too)] == ["slot-0", "slot-5"]
    await alive.append(event(1))  # slot-1: another process's, alive
    await dead.append(event(2))  # slot-3: dead with events
    await replayed.append(event(4))  # slot-4: a segment left, every event replayed
    replay_all(replayed)
    (replayed.directory / "000000000009.seg").write_bytes(b"")
    await dead_too.append(event(5))  # slot-5
    for spool in (empty, dead, replayed, dead_too):  # slot-2: dead with nothing
        spool.close()
    adopted = adopt_orphans(tmp_path, own)
    assert sorted(s.directory.name for s in adopted) == ["slot-3", "slot-5"]
    assert [e.message_id for s in adopted for e in replay_all(s)] == ["m2", "m5"]
    for spool in (*adopted, alive, own):
        spool.close()


async def test_failed_writes_in_a_row_lose_and_reorder_nothing_accepted(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:  # noqa: F811
    spool = claim_slot(tmp_path)
    accepted = []
    for n, fails in enumerate([False, True, False, True, True, False, True, False]):
        segment_fsync.failing = fails
        if fails:
            with pytest.raises(SpoolUnavailable, match="Input/output error"):
                await spool.append(event(n))
        else:
            await spool.append(event(n))
            accepted.append(f"m{n}")
    segment_fsync.failing = False
    assert spool.backlog == len(accepted)
    assert sum(spool.backlog_of(p) for p in range(16)) == len(accepted)
    assert spool.backlog_of(1) == 0  # m1, refused, counts nowhere
    spool.close()  # a crash: what is on disk is all there is
    again = claim_slot(tmp_path)
    assert [e.message_id for e in replay_all(again)] == accepted
    again.close()


async def test_an_append_queued_behind_a_failed_write_is_still_written(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:  # noqa: F811
    spool = claim_slot(tmp_path)
    segment_fsync.fail_times = 1
    segment_fsync.release.clear()
    first = asyncio.create_task(spool.append(event(1)))
    try:
        assert await asyncio.to_thread(segment_fsync.entered.wait, 10)
        second = asyncio.create_task(spool.append(event(2)))  # queued meanwhile
        await asyncio.sleep(0.05)
    finally:
        segment_fsync.release.set()
    with pytest.raises(SpoolUnavailable):
        await asyncio.wait_for(first, 10)
    await asyncio.wait_for(second, 5)
    assert [e.message_id for e in replay_all(spool)] == ["m2"]
    spool.close()


async def test_appends_made_together_are_written_together_and_read_back_apart(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    await asyncio.gather(*(spool.append(event(n)) for n in range(20)))
    assert [e.message_id for e in replay_all(spool)] == [f"m{n}" for n in range(20)]
    spool.close()


async def test_what_the_spool_writes_only_its_owner_can_read(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    await spool.append(event(1))
    for path in spool.directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path.name
    spool.close()


async def test_an_emptied_spool_leaves_no_cursor_behind_to_mislead_a_restart(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    for n in range(3):
        await spool.append(event(n))
    first, position = spool.read_batch(1)
    spool.commit(first, position)  # a cursor is written
    assert (spool.directory / "cursor").exists()
    replay_all(spool)  # everything replayed: the spool starts afresh
    assert sorted(os.listdir(spool.directory)) == ["lock"]
    spool.close()
    again = claim_slot(tmp_path)
    await again.append(event(7))
    again.close()
    third = claim_slot(tmp_path)
    assert [e.message_id for e in replay_all(third)] == ["m7"]
    third.close()


async def test_a_read_from_inside_a_segment_stops_at_its_last_durable_byte(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    await spool.append(event(0))
    await spool.append(event(1))
    first, position = spool.read_batch(1)
    spool.commit(first, position)  # the next read starts inside the segment
    (segment,) = [p for p in spool.directory.iterdir() if p.suffix == ".seg"]
    with segment.open("ab") as f:  # written, its fsync not yet returned
        f.write(encode_frame(event(2)))
    events, _ = spool.read_batch(100)
    assert [e.message_id for e in events] == ["m1"]
    spool.close()


async def test_segments_keep_counting_up_after_the_spool_empties_and_fills_again(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:  # noqa: F811
    """A spool emptied by its replay starts on a later segment; new segments, whether the
    last one filled up or a write failed, come after it, never before the replay's
    position, where they would be skipped for ever."""
    spool = claim_slot(tmp_path, segment_bytes=150)
    for n in range(3):
        await spool.append(event(n))
    assert [e.message_id for e in replay_all(spool)] == ["m0", "m1", "m2"]
    for n in range(3, 6):  # fills a segment or two again
        await spool.append(event(n))
    assert [e.message_id for e in replay_all(spool)] == ["m3", "m4", "m5"]
    segment_fsync.fail_times = 1
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(6))
    await spool.append(event(7))
    assert [e.message_id for e in replay_all(spool)] == ["m7"]
    spool.close()
