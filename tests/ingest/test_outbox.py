"""Where the outbox makes an event durable: the broker, the spool, or neither (503).

The broker here is a small hand-written fake (it only says whether it is connected and
records what it took); the spool is the real one, on a real disk that fills up.
"""

from __future__ import annotations

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
        # The broker is back while the spool still holds a backlog of the event's partition:
        # it would queue behind it, but the spool cannot take it; the broker can: no 503.
        broker.connected = True
        assert event(17).envelope.partition == event(1).envelope.partition
        assert await outbox.keep(event(17, size=4000)) is Kept.PUBLISHED
        assert broker.published == ["m17"] and spool.backlog == 1
        spool.close()


async def test_only_the_partitions_with_a_backlog_queue_behind_it(tmp_path: Path) -> None:
    """A partition whose events the broker did not confirm (its queue's leader frozen, say)
    holds back its own later events, in order, and no other partition's."""
    spool = claim_slot(tmp_path / "spool")
    broker = FakeBroker(connected=False)
    outbox = Outbox(broker, spool, tmp_path / "spool")  # type: ignore[arg-type]
    assert await outbox.keep(event(3)) is Kept.SPOOLED
    broker.connected = True
    assert await outbox.keep(event(19)) is Kept.SPOOLED  # partition 3: behind its backlog
    assert await outbox.keep(event(4)) is Kept.PUBLISHED  # partition 4: straight on
    assert broker.published == ["m4"] and spool.backlog == 2
    events, position = spool.read_batch(10)
    spool.commit(events, position)  # replayed: partition 3 goes straight on again
    assert await outbox.keep(event(35)) is Kept.PUBLISHED
    spool.close()
