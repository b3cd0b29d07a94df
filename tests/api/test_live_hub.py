"""The live board's hub without a server (api.live, decision 46): a board's bounded outbox,
the events kept per organization for resumes, which organizations' rows are read, and how
changes are merged into one event per organization."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from api import live
from api.live import BOARD_OUTBOX, RING, Board, LiveHub, board_call, sse, stream
from api.metrics import ApiMetrics
from calltrail_common.live import ChangedCall


class Rows:
    """The hub's reader of changed calls, recording what it was asked for."""

    def __init__(self) -> None:
        self.asked: list[list[ChangedCall]] = []
        self.status = "ringing"

    async def __call__(self, calls: Sequence[ChangedCall]) -> list[dict[str, Any]]:
        self.asked.append(list(calls))
        return [row(org, call_id, self.status) for org, call_id in calls]


def row(org: uuid.UUID, call_id: str, status: str = "ringing") -> dict[str, Any]:
    return {"org_id": org, "id": call_id, "direction": "inboundPhoneCall", "status": status,
            "ended_reason": None, "success_evaluation": None, "created_at": None,
            "started_at": None, "ended_at": None, "customer_number": "+14155550100",
            "assistant_id": "a1", "caller_name": None}


class Clock:
    """The hub's monotonic clock, set by the test (the event loop keeps its own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(live, "time", self)

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def events(chunk: bytes) -> list[tuple[str | None, str, Any]]:
    """(id, event, data) of each Server-Sent Event in `chunk`."""
    found = []
    for block in chunk.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            found.append((fields.get("id"), fields["event"], orjson.loads(fields["data"])))
    return found


def test_an_event_is_one_line_of_json_with_its_id_when_it_has_one() -> None:
    assert sse("calls", {"a": 1}, "e.3") == b'id: e.3\nevent: calls\ndata: {"a":1}\n\n'
    assert sse("clock", [1]) == b"event: clock\ndata: [1]\n\n"


def test_a_board_holds_its_outbox_up_to_the_bound_then_is_dropped() -> None:
    board = Board(uuid.uuid4())
    for index in range(BOARD_OUTBOX):
        assert board.offer(b"%d" % index)
    assert len(board.outbox) == BOARD_OUTBOX and not board.dropped
    board.wake.clear()
    assert not board.offer(b"one too many")
    assert board.dropped and board.gone() and not board.outbox and board.wake.is_set()
    assert not board.offer(b"after") and not board.outbox


def test_a_board_shows_the_caller_by_name_else_number_and_how_the_call_went() -> None:
    ended = dt.datetime(2026, 12, 6, 9, 30, tzinfo=dt.UTC)
    call = board_call({**row(uuid.uuid4(), "c1", "ended"), "caller_name": "Ana",
                       "ended_reason": "customer-ended-call", "success_evaluation": "true",
                       "ended_at": ended})
    assert (call["caller"], call["number"], call["endedAt"]) == (
        "Ana", "+14155550100", int(ended.timestamp() * 1000))
    assert call["outcome"] is not None and call["success"] is True
    ringing = board_call(row(uuid.uuid4(), "c2"))
    assert (ringing["caller"], ringing["outcome"], ringing["success"], ringing["endedAt"]) \
        == ("+14155550100", None, None, None)


async def test_only_watched_organizations_are_read_and_one_event_is_sent_per_flush() -> None:
    rows, org, other = Rows(), uuid.uuid4(), uuid.uuid4()
    hub = LiveHub(rows, epoch="e1")  # type: ignore[arg-type]
    await hub.changed([(other, "x")])
    assert rows.asked == []  # no board, nothing kept: not even read
    board, missed, snapshot_id = hub.open(org, None)
    assert (missed, snapshot_id) == (None, "e1.0")
    await hub.changed([(org, "c1"), (other, "x"), (org, "c2")])
    assert rows.asked == [[(org, "c1"), (org, "c2")]]
    rows.status = "in-progress"
    await hub.changed([(org, "c1")])  # read again before the flush: the latest row wins
    hub.flush()
    hub.flush()  # nothing pending: nothing sent
    [(event_id, name, data)] = events(b"".join(board.outbox))
    assert (event_id, name) == ("e1.1", "calls")
    assert {c["id"]: c["status"] for c in data["calls"]} == {"c1": "in-progress",
                                                            "c2": "ringing"}
    assert hub.seq == 1


async def test_changes_are_flushed_on_their_own_within_the_flush_interval(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "FLUSH_SECONDS", 0.01)
    rows, org = Rows(), uuid.uuid4()
    hub = LiveHub(rows, epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(org, None)
    await hub.changed([(org, "c1")])
    await board.wake.wait()
    assert [name for _, name, _ in events(b"".join(board.outbox))] == ["calls"]


async def test_an_organization_left_without_boards_is_read_until_its_grace_ends(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    rows, org = Rows(), uuid.uuid4()
    hub = LiveHub(rows, epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(org, None)
    hub.close(board)
    clock.now += live.RESUME_GRACE_SECONDS  # still within the grace: kept for a resume
    await hub.changed([(org, "c1")])
    hub.flush()
    assert len(rows.asked) == 1
    _, missed, _ = hub.open(org, "e1.0")
    assert missed is not None and len(missed) == 1  # the event sent while it was away
    hub.close(next(iter(hub._boards[org])))
    clock.now += live.RESUME_GRACE_SECONDS + 0.1  # past it: forgotten, no longer read
    await hub.changed([(org, "c2")])
    assert len(rows.asked) == 1
    _, missed, _ = hub.open(org, "e1.1")
    assert missed is None  # a snapshot


async def test_a_resume_is_possible_while_every_later_event_is_kept() -> None:
    rows, org = Rows(), uuid.uuid4()
    hub = LiveHub(rows, epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(org, None)
    for index in range(RING + 5):
        await hub.changed([(org, f"c{index}")])
        hub.flush()
        board.outbox.clear()
    # Events 1..5 fell out of the ring: from event 5 on, every later one is still kept.
    _, missed, _ = hub.open(org, "e1.5")
    assert missed is not None and len(missed) == RING
    assert events(missed[0])[0][0] == "e1.6"
    _, missed, _ = hub.open(org, "e1.4")
    assert missed is None
    _, missed, snapshot_id = hub.open(org, f"e1.{RING + 5}")
    assert missed == [] and snapshot_id == f"e1.{RING + 5}"


async def test_boards_are_counted_and_a_stopping_hub_drops_new_ones() -> None:
    metrics = ApiMetrics()
    org = uuid.uuid4()
    hub = LiveHub(Rows(), metrics, epoch="e1")  # type: ignore[arg-type]

    def open_boards() -> float:
        return metrics.live_boards._value.get()  # type: ignore[attr-defined,no-any-return]

    first, _, _ = hub.open(org, None)
    second, _, _ = hub.open(uuid.uuid4(), None)
    assert open_boards() == 2
    hub.close(first)
    hub.close(first)  # closing twice changes nothing
    assert open_boards() == 1
    hub.stopping = True
    late, _, _ = hub.open(org, None)
    assert late.dropped
    hub.resync("test")
    assert second.dropped


async def test_a_stream_sends_what_came_first_then_its_outbox_with_keepalives_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.01)
    hub = LiveHub(Rows(), epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(uuid.uuid4(), None)
    chunks = stream(hub, board, [b"clock;", b"snapshot;"])
    assert await asyncio.wait_for(anext(chunks), 2) == b"clock;snapshot;"
    for _ in range(2):  # idle: a keep-alive each time, and the stream goes on
        assert await asyncio.wait_for(anext(chunks), 2) == live.KEEPALIVE
    board.offer(b"one;")
    board.offer(b"two;")
    assert await asyncio.wait_for(anext(chunks), 2) == b"one;two;"
    await chunks.aclose()
    assert hub._boards == {}  # a stream that ends closes its board


async def test_a_stream_ends_when_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    monkeypatch.setattr(live, "KEEPALIVE_SECONDS", 0.01)
    hub = LiveHub(Rows(), epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(uuid.uuid4(), None)
    chunks = stream(hub, board, [b"first"])
    assert await asyncio.wait_for(anext(chunks), 2) == b"first"
    assert await asyncio.wait_for(anext(chunks), 2) == live.KEEPALIVE  # its time starts
    clock.now += live.STREAM_SECONDS - 0.5  # half a second left: still served
    assert await asyncio.wait_for(anext(chunks), 2) == live.KEEPALIVE
    clock.now += 0.5  # no time left: the stream ends (the browser reconnects)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(chunks), 2)
    assert hub._boards == {}


def test_an_event_id_is_this_process_epoch_and_at_most_18_digits() -> None:
    assert live.parse_event_id(" e1.7 ", "e1") == 7
    assert live.parse_event_id("e1." + "1" * 18, "e1") == int("1" * 18)
    assert live.parse_event_id("e1." + "1" * 19, "e1") is None
    assert live.parse_event_id("e1.1.2", "e1") is None


async def test_drops_are_counted_by_why_and_a_resync_takes_one_number() -> None:
    metrics = ApiMetrics()
    org = uuid.uuid4()
    hub = LiveHub(Rows(), metrics, epoch="e1")  # type: ignore[arg-type]

    def dropped(reason: str) -> float:
        return metrics.live_dropped.labels(reason)._value.get()  # type: ignore[no-any-return]

    slow, _, _ = hub.open(org, None)
    quick, _, _ = hub.open(org, None)
    for index in range(BOARD_OUTBOX + 1):
        await hub.changed([(org, f"c{index}")])
        hub.flush()
        quick.outbox.clear()
    assert slow.dropped and not quick.dropped
    assert (dropped("slow"), dropped("resync")) == (1, 0)
    seq = hub.seq
    with capture_logs() as logs:
        hub.resync("test")
    assert quick.dropped and dropped("resync") == 2  # both boards still subscribed
    assert logs == [{"event": "live_boards_resync", "reason": "test", "boards": 2,
                     "log_level": "warning"}]
    assert hub.seq == seq + 1
    board, missed, snapshot_id = hub.open(org, f"e1.{seq}")
    assert missed is None and snapshot_id == f"e1.{seq + 1}"
    assert not board.dropped and not hub.stopping


def test_a_ring_idle_past_its_grace_is_not_resumed_from_when_a_board_opens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(monkeypatch)
    org = uuid.uuid4()
    hub = LiveHub(Rows(), epoch="e1")  # type: ignore[arg-type]
    board, _, snapshot_id = hub.open(org, None)
    hub.close(board)
    clock.now += live.RESUME_GRACE_SECONDS + 0.1
    _, missed, _ = hub.open(org, snapshot_id)
    assert missed is None
