"""What the spool tells an operator (issue 16, mutation testing): a torn tail cut at a
restart, and a write that failed, each in one log line with its numbers; a clean restart
says nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from ingest.spool import SpoolUnavailable, claim_slot, encode_frame
from tests.ingest.test_spool import event

# The failing fsync of test_spool_fsync.py, its fixture included.
from tests.ingest.test_spool_fsync import SegmentFsync, segment_fsync  # noqa: F401


async def test_a_torn_tail_cut_at_a_restart_is_logged_with_what_was_kept_and_dropped(
        tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    await spool.append(event(1))
    (segment,) = [p for p in spool.directory.iterdir() if p.suffix == ".seg"]
    spool.close()
    kept = segment.stat().st_size
    torn = encode_frame(event(2))[:-3]
    with segment.open("ab") as f:
        f.write(torn)
    with capture_logs() as logs:
        claim_slot(tmp_path).close()
    assert logs == [{"event": "spool_truncated_torn_tail", "log_level": "warning",
                     "segment": int(segment.stem), "kept_bytes": kept,
                     "dropped_bytes": len(torn)}]


async def test_a_clean_restart_logs_nothing(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    await spool.append(event(1))
    spool.close()
    with capture_logs() as logs:
        claim_slot(tmp_path).close()
    assert logs == []


async def test_a_failed_write_is_logged_with_its_error_and_how_many_events(
        tmp_path: Path, segment_fsync: SegmentFsync) -> None:  # noqa: F811
    spool = claim_slot(tmp_path)
    segment_fsync.failing = True
    with capture_logs() as logs, pytest.raises(SpoolUnavailable):
        await spool.append(event(1))
    spool.close()
    assert logs == [{"event": "spool_write_failed", "log_level": "error", "events": 1,
                     "error": "[Errno 5] Input/output error (the test's failing fsync)"}]
