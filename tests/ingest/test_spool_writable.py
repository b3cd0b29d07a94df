"""When the spool says it can take an event (ingest's readiness while the broker is away):
its own slot, a directory, writable, with room (issue 16, mutation testing)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ingest.spool import adopt_orphans, claim_slot
from tests.ingest.test_spool import event


def test_a_slot_of_its_own_on_a_disk_with_room_is_writable(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    assert spool.is_writable()
    spool.close()


async def test_an_adopted_slot_is_only_drained(tmp_path: Path) -> None:
    dead = claim_slot(tmp_path)
    await dead.append(event(1))
    dead.close()
    live = claim_slot(tmp_path / "other")
    (orphan,) = adopt_orphans(tmp_path, live)
    assert not orphan.is_writable()
    orphan.close()
    live.close()


def test_a_directory_gone_or_replaced_by_a_file_is_not_writable(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    shutil.rmtree(spool.directory)
    assert not spool.is_writable()
    spool.directory.write_text("a file where the slot was")  # writable, but no directory
    assert os.access(spool.directory, os.W_OK)
    assert not spool.is_writable()
    spool.directory.unlink()
    spool.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_a_directory_without_write_permission_is_not_writable(tmp_path: Path) -> None:
    spool = claim_slot(tmp_path)
    spool.directory.chmod(0o500)
    try:
        assert not spool.is_writable()
    finally:
        spool.directory.chmod(0o700)
        spool.close()
