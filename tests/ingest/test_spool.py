"""The spool keeps every appended event, in order, across crashes and partial replays."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calltrail_common.envelope import EventEnvelope
from ingest.payload import AcceptedEvent
from ingest.spool import SpoolUnavailable, adopt_orphans, claim_slot, encode_frame


def event(n: int, size: int = 10) -> AcceptedEvent:
    return AcceptedEvent(
        EventEnvelope(message_id=f"m{n}", message_type="status-update", received_at_ms=n,
                      endpoint_id="shared", partition=n % 16, dedupe_key=f"k{n}"),
        b'{"n":%d,"pad":"%s"}' % (n, b"x" * size))


def replay_all(spool, batch: int = 1000) -> list[AcceptedEvent]:
    seen = []
    # Bounded (issue 16): each batch takes one event at least, so a backlog that does not go
    # down as events are committed fails the test instead of looping.
    for _ in range(spool.backlog):
        if not spool.backlog:
            break
        events, position = spool.read_batch(batch)
        assert events, "backlog says there is more, but nothing is readable"
        seen.extend(events)
        spool.commit(events, position)
    assert spool.backlog == 0, f"a backlog of {spool.backlog} after every event was replayed"
    return seen


async def test_appended_events_come_back_in_order_and_then_the_spool_is_empty(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path, segment_bytes=200)  # several segments
    for n in range(20):
        await spool.append(event(n))
    assert spool.backlog == 20
    assert [e.message_id for e in replay_all(spool, batch=3)] == [f"m{n}" for n in range(20)]
    assert not [p for p in spool.directory.iterdir() if p.suffix == ".seg"]
    await spool.append(event(99))
    assert [e.body for e in replay_all(spool)] == [event(99).body]
    spool.close()


async def test_the_replay_reads_ahead_of_its_commits_and_a_crash_replays_the_rest(
        tmp_path: Path) -> None:
    """Several batches are published before the first is confirmed: reading goes on from
    where the last read ended; only commits move the cursor, so after a crash everything
    not committed comes back, and nothing committed does."""
    spool = claim_slot(tmp_path, segment_bytes=300)  # batches cross segments
    for n in range(30):
        await spool.append(event(n))
    first, after_first = spool.read_batch(7)
    second, after_second = spool.read_batch(7, start=after_first)
    third, _ = spool.read_batch(7, start=after_second)
    assert [e.message_id for e in first + second + third] == [f"m{n}" for n in range(21)]
    spool.commit(first, after_first)  # only the first was confirmed
    spool.close()
    again = claim_slot(tmp_path, segment_bytes=300)
    assert [e.message_id for e in replay_all(again, batch=4)] == \
        [f"m{n}" for n in range(7, 30)]
    again.close()


async def test_a_torn_tail_is_cut_and_the_rest_survives_a_crash(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    for n in range(3):
        await spool.append(event(n))
    segment = next(p for p in spool.directory.iterdir() if p.suffix == ".seg")
    spool.close()  # as a crash would: nothing replayed, lock released
    with segment.open("ab") as f:
        f.write(encode_frame(event(3))[:-5])  # the write a crash interrupted
    reopened = claim_slot(tmp_path)
    assert reopened.directory == spool.directory
    assert [e.message_id for e in replay_all(reopened)] == ["m0", "m1", "m2"]
    reopened.close()


async def test_bytes_whose_fsync_has_not_returned_are_never_replayed(tmp_path: Path) -> None:
    """A segment the flusher has just opened holds bytes whose fsync has not returned, and
    a full disk may still cut them off (their webhooks answered 503). Replaying them counted
    them twice: the backlog went below zero and the replay stopped with accepted events
    still on disk (found by `make chaos`, spool-full)."""
    spool = claim_slot(tmp_path)
    await spool.append(event(0))
    last = max(int(p.stem) for p in spool.directory.iterdir() if p.suffix == ".seg")
    in_flight = spool.directory / f"{last + 1:012d}.seg"
    in_flight.write_bytes(encode_frame(event(1)))  # written, its fsync not yet returned
    events, position = spool.read_batch(100)
    assert [e.message_id for e in events] == ["m0"]
    spool.commit(events, position)
    assert spool.backlog == 0
    spool.close()


async def test_a_second_process_gets_its_own_slot_and_adopts_a_dead_ones(
        tmp_path: Path) -> None:
    first = claim_slot(tmp_path)
    second = claim_slot(tmp_path)
    assert first.directory != second.directory
    await first.append(event(1))
    assert adopt_orphans(tmp_path, second) == []  # first is alive: its lock is held
    first.close()  # first dies
    (orphan,) = adopt_orphans(tmp_path, second)
    assert [e.message_id for e in replay_all(orphan)] == ["m1"]
    orphan.close()
    second.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=st.lists(st.tuples(st.sampled_from(["append", "replay", "crash"]),
                               st.integers(1, 6)), max_size=25),
       segment_bytes=st.sampled_from([150, 400, 1 << 20]))
async def test_any_mix_of_appends_replays_and_crashes_loses_and_reorders_nothing(
        tmp_path_factory, plan, segment_bytes) -> None:
    root = tmp_path_factory.mktemp("spool")
    spool = claim_slot(root, segment_bytes=segment_bytes)
    appended: list[str] = []
    replayed: list[str] = []
    counter = 0
    for action, n in plan:
        if action == "append":
            for _ in range(n):
                await spool.append(event(counter, size=counter % 50))
                appended.append(f"m{counter}")
                counter += 1
        elif action == "replay":
            events, position = spool.read_batch(n)
            replayed.extend(e.message_id for e in events)
            spool.commit(events, position)
        else:
            spool.close()
            spool = claim_slot(root, segment_bytes=segment_bytes)
    replayed.extend(e.message_id for e in replay_all(spool))
    spool.close()
    assert replayed == appended
    assert not [p for p in os.listdir(spool.directory) if p.endswith(".seg")]


@contextlib.contextmanager
def small_disk(tmp_path: Path, size_kib: int) -> Iterator[Path]:
    """A tmpfs of `size_kib` KiB: a disk that really fills up (root only; CI runs as root)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs",
                    str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
async def test_a_full_disk_refuses_events_and_once_space_is_back_every_accepted_one_replays(
        tmp_path: Path) -> None:
    with small_disk(tmp_path, 256) as disk:
        spool = claim_slot(disk / "spool")
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (256 * 1024 - 24 * 1024))  # leave about 24 KiB
        accepted, refused = [], 0
        for n in range(40):  # ~2 KiB each: the disk fills part-way through a group
            try:
                await spool.append(event(n, size=2000))
                accepted.append(f"m{n}")
            except SpoolUnavailable:
                refused += 1
        assert refused and accepted, (accepted, refused)
        assert spool.backlog == len(accepted)
        assert not spool.is_writable()  # ingest's /readyz says so while the disk is full
        filler.unlink()  # an operator frees space
        for n in range(100, 105):
            await spool.append(event(n, size=2000))
            accepted.append(f"m{n}")
        # Nothing refused comes back, nothing accepted is missing, order is kept, and the
        # replay is not stuck behind a torn frame the full disk left in a segment.
        assert [e.message_id for e in replay_all(spool, batch=7)] == accepted
        spool.close()

