"""The live board's hub without a server (api.live, decision 46): a board's bounded outbox,
the events kept per organization for resumes, which organizations' rows are read, and how
changes are merged into one event per organization."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from api import live
from api.live import BOARD_OUTBOX, RING, Board, LiveHub, board_call, sse
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
    clock = [1000.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    rows, org = Rows(), uuid.uuid4()
    hub = LiveHub(rows, epoch="e1")  # type: ignore[arg-type]
    board, _, _ = hub.open(org, None)
    hub.close(board)
    clock[0] += live.RESUME_GRACE_SECONDS  # still within the grace: kept for a resume
    await hub.changed([(org, "c1")])
    hub.flush()
    assert len(rows.asked) == 1
    _, missed, _ = hub.open(org, "e1.0")
    assert missed is not None and len(missed) == 1  # the event sent while it was away
    hub.close(next(iter(hub._boards[org])))
    clock[0] += live.RESUME_GRACE_SECONDS + 0.1  # past it: forgotten, no longer read
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
