"""The live board: the calls in progress now, as they change (decision 46).

`/live` is the page, a table that `static/live.js` fills from `GET /api/live`, a stream of
Server-Sent Events (`api.live` says what a stream sends, and what a reconnect with
`Last-Event-ID` gets). The stream takes an API token (`Authorization: Bearer`) or, as a
browser's EventSource sends no header, the dashboard's session cookie; either way it shows
only the organization's own calls. It is no JSON answer, so it is left out of the OpenAPI
document (`docs/api.md` describes it).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Request, Security
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials

from api import routes as json_api
from api.auth import bearer_token
from api.dashboard.page import api_state, find_session, open_page, render
from api.errors import Unauthorized
from api.live import board_call, clock_event, sse, stream
from calltrail_common import organizations

router = APIRouter()

# A call lasts at most this long (Vapi's longest maxDurationSeconds is 12 hours): an older
# call whose end never came is no longer shown as in progress.
LONGEST_CALL_SECONDS = 12 * 3600
BOARD_LIMIT = 500  # calls a snapshot holds at most, newest first


@router.get("/live")
async def live_page(request: Request) -> Response:
    current = await open_page(request)
    return render(request, "live.html", {
        "title": "Live", "nav": "live",
        "linger": api_state(request).settings.live_linger_seconds}, current=current)


async def _viewer(request: Request,
                  credentials: HTTPAuthorizationCredentials | None) -> uuid.UUID:
    """The organization whose calls the stream shows: the token's, or when no
    Authorization header is sent, the signed-in session's."""
    state = api_state(request)
    if credentials is not None or "authorization" in request.headers:
        token = bearer_token(None if credentials is None else credentials.credentials)
        holder = await organizations.authenticate_token(state.pool, token)
        if holder is None:
            raise Unauthorized("the token is not valid")
        return holder.org_id
    found = await find_session(request)
    if found is None:
        raise Unauthorized("an Authorization: Bearer <token> header with a valid token, or "
                           "a dashboard session, is required")
    return found.org_id


@router.get("/api/live", include_in_schema=False)
async def live_stream(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None,
                               Security(json_api._bearer)],
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID",
                                                    max_length=64)] = None,
) -> Response:
    org_id = await _viewer(request, credentials)
    state = api_state(request)
    linger = state.settings.live_linger_seconds
    hub = state.live
    board, missed, snapshot_id = hub.open(org_id, last_event_id)
    try:
        first = [clock_event(linger)]
        if missed is not None:
            first.extend(missed)
        else:
            rows = await state.repository.live_board(
                org_id, since_seconds=LONGEST_CALL_SECONDS, linger_seconds=linger,
                limit=BOARD_LIMIT)
            first.append(sse("snapshot", {"calls": [board_call(r) for r in rows]},
                             snapshot_id))
    except BaseException:
        hub.close(board)
        raise
    return StreamingResponse(stream(hub, board, first), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
