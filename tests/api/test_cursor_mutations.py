"""Cursors, to the letter (issue 16, mutation testing): each way a cursor can be wrong is a
400 naming the `cursor` parameter with the same message, a cursor carries no base64
padding, and the longest one there can be is still read."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from api import cursors
from api.errors import InvalidParameter

T = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _cursor(value: object, prefix: str = "c1.") -> str:
    return prefix + base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()


@pytest.mark.parametrize("cursor", [
    "",
    "c1",
    "l1." + _cursor([None, "x"], prefix=""),  # the other list's
    "c2." + _cursor([None, "x"], prefix=""),  # another format
    "c1.%%%",  # not base64
    "c1.AAAA",  # base64, not JSON
    "c1." + "A" * (cursors.MAX_CURSOR_LENGTH - 3 + 1),  # one character too long
    _cursor({"at": None, "id": "x"}),  # not a list
    _cursor([None]),
    _cursor([None, "x", "y"]),
    _cursor([None, 7]),  # the id not a string
    _cursor([12, "x"]),  # the instant neither null nor a string
    _cursor([["2026-05-01"], "x"]),
    _cursor(["yesterday", "x"]),  # not an instant
    _cursor(["2026-05-01T12:00:00", "x"]),  # an instant without its offset
])
def test_a_wrong_cursor_is_an_invalid_cursor_parameter(cursor: str) -> None:
    with pytest.raises(InvalidParameter) as refused:
        cursors.decode("c", cursor)
    assert refused.value.parameter == "cursor"
    assert str(refused.value) == "cursor: not a cursor of this list"


@pytest.mark.parametrize("row_id", ["", "a", "ab", "abc", "abcd", "é"])
def test_a_cursor_has_no_padding_and_reads_back_whatever_its_length(row_id: str) -> None:
    for created_at in (None, T):
        position = cursors.Position(created_at, row_id)
        cursor = cursors.encode("c", position)
        assert cursor.startswith("c1.") and "=" not in cursor
        assert cursors.decode("c", cursor) == position


def test_the_longest_cursor_there_can_be_is_read() -> None:
    # "c1." and unpadded base64 never make 512 characters (3 + 4k + 2 is the nearest): 511.
    (longest,) = [cursor for n in range(cursors.MAX_CURSOR_LENGTH)
                  if len(cursor := cursors.encode("c", cursors.Position(None, "x" * n)))
                  == cursors.MAX_CURSOR_LENGTH - 1]
    assert cursors.decode("c", longest).id.startswith("x")

