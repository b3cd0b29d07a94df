"""Where the outbox makes an event durable: the broker, the spool, or neither (503).

The broker here is a small hand-written fake (it only says whether it is connected and
records what it took); the spool is the real one, on a real disk that fills up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from ingest.broker import BrokerUnavailable
from ingest.errors import Unavailable
from ingest.outbox import Kept, Outbox
from ingest.payload import AcceptedEvent
from ingest.spool import claim_slot
from tests.ingest.test_spool import event, small_disk


class FakeBroker:
    def __init__(self, connected: bool) -> None:
        self.connected = connected
        self.on_connected = None
        self.published: list[str] = []

    async def publish(self, accepted: AcceptedEvent) -> None:
        if not self.connected:
            raise BrokerUnavailable("not connected")
        self.published.append(accepted.message_id)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
async def test_with_a_backlog_on_a_full_disk_the_broker_takes_events_and_without_it_503(
        tmp_path: Path) -> None:
    with small_disk(tmp_path, 256) as disk:
        spool = claim_slot(disk / "spool")
        broker = FakeBroker(connected=False)
        outbox = Outbox(broker, spool, disk / "spool")  # type: ignore[arg-type]
        assert await outbox.keep(event(1)) is Kept.SPOOLED  # broker away: spooled
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as filler:
            filler.write(b"\0" * (256 * 1024))  # as much as fits
        with pytest.raises(Unavailable):  # broker away and the disk full: 503, not a 200
            await outbox.keep(event(2, size=4000))
        assert not outbox.ready()
        # The broker is back while the spool still holds a backlog on a full disk: the
        # broker takes new events, so no 503.
        broker.connected = True
        assert await outbox.keep(event(3, size=4000)) is Kept.PUBLISHED
        assert broker.published == ["m3"] and spool.backlog == 1
        spool.close()


async def test_new_events_go_to_the_broker_while_the_spool_drains_behind_them(
        tmp_path: Path) -> None:
    """After an outage a new call must not wait behind the backlog (the processor is
    order-free): the broker takes it at once, and the replay still delivers the backlog."""
    spool = claim_slot(tmp_path / "spool")
    broker = FakeBroker(connected=False)
    outbox = Outbox(broker, spool, tmp_path / "spool")  # type: ignore[arg-type]
    for number in (1, 2):
        assert await outbox.keep(event(number)) is Kept.SPOOLED
    broker.connected = True
    assert await outbox.keep(event(3)) is Kept.PUBLISHED
    assert broker.published == ["m3"] and spool.backlog == 2
    outbox.start()
    try:
        outbox.wake()
        for _ in range(200):
            if spool.backlog == 0:
                break
            await asyncio.sleep(0.01)
        assert broker.published == ["m3", "m1", "m2"] and spool.backlog == 0
    finally:
        await outbox.close()
        spool.close()
