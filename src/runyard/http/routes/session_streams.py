"""``GET /v1/sessions/{session_id}/stream``: every event of every run of a session, over SSE."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.responses import Response

from runyard.http.answers import EVENT_STREAM, errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, parse_cursor, runtime_of
from runyard.http.streaming import StreamSlots, frames_response

router = APIRouter(
    prefix="/v1/sessions",
    tags=["sessions"],
    route_class=StrictJSONRoute,
    responses=errors(400, 401, 404, 413, 422, 503),
)


@router.get(
    "/{session_id}/stream",
    summary="Follow every run of a session over SSE",
    responses={**EVENT_STREAM, **errors(429)},
)
async def stream_session(
    request: Request,
    session_id: str,
    after: str | None = None,
    pad: Annotated[int | None, Query(ge=0, le=65536)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Each frame's event carries ``run_id`` besides ``seq``; its ``id:`` is the
    stream's cursor (opaque: give it back as ``Last-Event-ID`` or ``?after=`` to
    resume exactly). The stream stays open across runs, with heartbeats, until
    the session is deleted or expires."""
    runtime = runtime_of(request)
    cursor = parse_cursor(last_event_id if last_event_id is not None else after)
    owner = owner_of(request)
    frames = await runtime.follow_session(owner, session_id, cursor)  # 404 before any slot is taken
    slots: StreamSlots = request.app.state.stream_slots
    pad_bytes = pad if pad is not None else runtime.settings.sse_pad_bytes
    try:
        slot = await slots.take(owner)
    except BaseException:
        await frames.aclose()  # refused: the follower it opened goes now
        raise
    return frames_response(frames, pad_bytes, slot)
