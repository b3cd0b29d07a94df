"""The live board's wire message (decision 46): which calls a committed batch changed. Pure.

The call processor publishes one message per committed batch to the live exchange
(topology.py), naming each call it changed with its organization; each api process reads
the calls' rows from the database and sends them to the boards open on that organization.
The message carries ids only: the database is the truth (a board shows nothing that was not
committed, and a message that is lost costs nothing a resync does not bring back), and the
processor's batch path only adds a few bytes of JSON.

    {"calls": [["<org uuid>", "<call id>"], ...]}
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import orjson

CONTENT_TYPE = "application/json"
# A batch changes at most PROCESSOR_BATCH_SIZE (<= 5000) calls, snapshots bundled in it more:
# past this a message is not ours.
MAX_CALLS = 50_000
MAX_CALL_ID_LENGTH = 200

ChangedCall = tuple[uuid.UUID, str]  # (organization, call id)


class NotALiveMessage(ValueError):
    """A message on the live exchange that is not one of ours."""


def encode_changes(calls: Iterable[ChangedCall]) -> bytes:
    return orjson.dumps({"calls": [[str(org), call_id] for org, call_id in calls]})


def decode_changes(body: bytes) -> list[ChangedCall]:
    """The calls a message names, in its order, each once."""
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotALiveMessage("not JSON") from None
    calls = message.get("calls") if isinstance(message, dict) else None
    if not isinstance(calls, list) or len(calls) > MAX_CALLS:
        raise NotALiveMessage("no list of calls")
    found: dict[ChangedCall, None] = {}
    for item in calls:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], str) and 0 < len(item[1]) <= MAX_CALL_ID_LENGTH):
            raise NotALiveMessage("a call is not [organization, call id]")
        try:
            org = uuid.UUID(item[0])
        except ValueError:
            raise NotALiveMessage("an organization is not a uuid") from None
        found[(org, item[1])] = None
    return list(found)
