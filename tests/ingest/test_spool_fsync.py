"""A spooled event's 200 waits for its fsync, and an fsync that fails is a 503, never a 200.

A spool that skipped the fsync passed every other test (issue 16): the bytes were written,
so they read back, and only a power cut would have lost them. Here the segment's fsync is
made to fail or to wait (`os.fsync` replaced for the segment files alone; the write before
it and the directory's fsync are the real ones), and what the spool and ingest answer is
checked against it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import pytest

from ingest.spool import SpoolUnavailable, claim_slot
from tests.conftest import WEBHOOK_SECRET, make_settings, serve_ingest
from tests.ingest.test_spool import event, replay_all

# Nothing listens there: ingest never reaches a broker, so every event goes to the spool.
NO_BROKER = "amqp://guest:guest@127.0.0.1:9/"
AUTH = {"x-vapi-secret": WEBHOOK_SECRET, "content-type": "application/json"}
WAIT = 10.0  # seconds any one step may take before the test fails


class SegmentFsync:
    """`os.fsync` for the spool's segment files: fails, waits, or does the real fsync."""

    def __init__(self, real: Callable[[int], None]) -> None:
        self._real = real
        self.failing = False
        self.fail_times = 0  # the next this many fail, then `failing` decides
        self.entered = threading.Event()  # a segment's fsync has started
        self.release = threading.Event()  # ... and may return (set: never waits)
        self.release.set()

    def __call__(self, fd: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".seg"):
            self.entered.set()
            if not self.release.wait(WAIT):
                raise AssertionError("the test never released the fsync")
            if self.fail_times > 0:
                self.fail_times -= 1
                raise OSError(errno.EIO, "Input/output error (the test's failing fsync)")
            if self.failing:
                raise OSError(errno.EIO, "Input/output error (the test's failing fsync)")
        self._real(fd)


@pytest.fixture
def segment_fsync(monkeypatch: pytest.MonkeyPatch) -> SegmentFsync:
    fsync = SegmentFsync(os.fsync)
    monkeypatch.setattr(os, "fsync", fsync)
    return fsync


async def test_a_failed_fsync_refuses_the_event_and_it_is_never_replayed(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:
    spool = claim_slot(tmp_path)
    await spool.append(event(1))
    segment_fsync.failing = True
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(2))
    assert spool.backlog == 1
    segment_fsync.failing = False
    await spool.append(event(3))
    assert [e.message_id for e in replay_all(spool)] == ["m1", "m3"]
    spool.close()


async def test_an_append_returns_only_once_its_fsync_has(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:
    spool = claim_slot(tmp_path)
    segment_fsync.release.clear()
    append = asyncio.create_task(spool.append(event(1)))
    try:
        assert await asyncio.to_thread(segment_fsync.entered.wait, WAIT), "no fsync was issued"
        await asyncio.sleep(0.2)
        assert not append.done(), "the append returned before its fsync did"
    finally:
        segment_fsync.release.set()
    await asyncio.wait_for(append, WAIT)
    spool.close()


async def test_with_the_broker_away_a_failed_fsync_is_a_503_never_a_200(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:
    settings = make_settings(amqp_url=NO_BROKER, amqp_prefix="fsync-test",
                             spool_dir=tmp_path / "spool")
    async with serve_ingest(settings) as ingest:
        segment_fsync.failing = True
        for n in range(3):
            response = await ingest.client.post("/webhooks/vapi", content=_webhook(n),
                                                headers=AUTH)
            assert (response.status_code, response.json()) == (503, {"error": "unavailable"})
        segment_fsync.failing = False
        response = await ingest.client.post("/webhooks/vapi", content=_webhook(3),
                                            headers=AUTH)
        assert response.status_code == 200, response.text


async def test_with_the_broker_away_the_200_waits_for_the_fsync(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:
    settings = make_settings(amqp_url=NO_BROKER, amqp_prefix="fsync-test",
                             spool_dir=tmp_path / "spool")
    async with serve_ingest(settings) as ingest:
        segment_fsync.release.clear()
        post = asyncio.create_task(ingest.client.post("/webhooks/vapi", content=_webhook(1),
                                                      headers=AUTH))
        try:
            assert await asyncio.to_thread(segment_fsync.entered.wait, WAIT), \
                "the webhook was answered without an fsync"
            await asyncio.sleep(0.3)
            assert not post.done(), f"answered before the fsync returned: {post.result()}"
        finally:
            segment_fsync.release.set()
        response: httpx.Response = await asyncio.wait_for(post, WAIT)
        assert response.status_code == 200, response.text


def _webhook(n: int) -> bytes:
    return orjson.dumps({"message": {"type": "status-update", "status": "in-progress",
                                     "call": {"id": f"call-{n}"}}})


async def test_an_event_refused_by_its_fsync_does_not_come_back_after_a_restart(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:
    """Its bytes were written before the fsync failed: they are cut off, so a restart
    cannot find a whole frame there and replay an event whose webhook got a 503."""
    spool = claim_slot(tmp_path)
    await spool.append(event(1))
    segment_fsync.failing = True
    with pytest.raises(SpoolUnavailable):
        await spool.append(event(2))
    segment_fsync.failing = False
    spool.close()  # a crash: nothing replayed
    restarted = claim_slot(tmp_path)
    assert [e.message_id for e in replay_all(restarted)] == ["m1"]
    restarted.close()
