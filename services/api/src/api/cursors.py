"""Opaque pagination cursors (keyset positions). Pure.

A cursor is the sort key of the last row of a page, so the next page starts strictly after
it: rows inserted meanwhile never shift a page, so none is skipped or repeated. The key must
be one that never changes for a row: (created_at, id) for calls and leads. A call whose
creation time is not known yet sorts first (newest); the key of such a row is (None, id).

Format: "<kind>1." + base64url(JSON [iso instant or null, id]), kind "c" (calls), "l"
(leads) or "d" (an outbound webhook endpoint's deliveries), so a cursor of one list is
refused by the others.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import orjson

from api.errors import InvalidParameter

Kind = Literal["c", "l", "d"]
MAX_CURSOR_LENGTH = 512


@dataclass(frozen=True)
class Position:
    created_at: datetime | None
    id: str


def encode(kind: Kind, position: Position) -> str:
    instant = None if position.created_at is None else position.created_at.isoformat()
    payload = base64.urlsafe_b64encode(orjson.dumps([instant, position.id])).rstrip(b"=")
    return f"{kind}1.{payload.decode()}"


def decode(kind: Kind, cursor: str) -> Position:
    """The position a cursor names; InvalidParameter("cursor") for anything else."""
    prefix = f"{kind}1."
    if len(cursor) > MAX_CURSOR_LENGTH or not cursor.startswith(prefix):
        raise InvalidParameter("cursor", "not a cursor of this list")
    text = cursor[len(prefix):]
    try:
        value = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        raise InvalidParameter("cursor", "not a cursor of this list") from None
    if (not isinstance(value, list) or len(value) != 2 or not isinstance(value[1], str)
            or not (value[0] is None or isinstance(value[0], str))):
        raise InvalidParameter("cursor", "not a cursor of this list")
    created_at = None
    if value[0] is not None:
        try:
            created_at = datetime.fromisoformat(value[0])
        except ValueError:
            raise InvalidParameter("cursor", "not a cursor of this list") from None
        if created_at.tzinfo is None:
            raise InvalidParameter("cursor", "not a cursor of this list")
    return Position(created_at, value[1])
