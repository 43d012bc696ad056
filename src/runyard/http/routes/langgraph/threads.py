"""LangGraph threads are runyard sessions: created under the client's id or
the server's (``if_exists``), read with their latest run's values, searched by
metadata, deleted (their unfinished runs cancelled), and followed as one
stream of every run's parts (``GET /threads/{id}/stream``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.routes.langgraph.parts import INTERRUPT, LAST
from runyard.http.routes.langgraph.runs import JOIN_MODES, STREAM
from runyard.http.routes.langgraph.shapes import state_json, thread_json
from runyard.http.routes.langgraph.streams import parse_event_id, sse_body, thread_parts, values_of
from runyard.http.schemas import Metadata, SessionId, _check_metadata
from runyard.http.streaming import EventStreamResponse, StreamSlots
from runyard.models import Run, Session
from runyard.runtime import Runtime
from runyard.session_ids import public_session_id
from runyard.sessions import IfExists

router = APIRouter(
    route_class=StrictJSONRoute, tags=["langgraph"], responses=errors(400, 401, 404, 409, 413, 422, 429, 503)
)
MAX_LISTED = 1000  # limit + offset of a search


class ThreadCreate(BaseModel):
    model_config = ConfigDict(extra="ignore")  # supersteps, ttl: LangGraph's own
    thread_id: SessionId | None = None
    metadata: Metadata | None = None
    if_exists: Literal["raise", "do_nothing"] = "raise"

    _metadata = field_validator("metadata")(_check_metadata)


class ThreadSearch(BaseModel):
    model_config = ConfigDict(extra="ignore")  # sort_by, sort_order, select, extract
    metadata: Annotated[dict[Annotated[str, Field(max_length=128)], Any], Field(max_length=16)] | None = None
    ids: Annotated[list[SessionId], Field(max_length=100)] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    values: dict[str, Any] | None = Field(None, max_length=0, description="not supported: search by metadata")
    limit: Annotated[int, Field(ge=1, le=200)] = 10
    offset: Annotated[int, Field(ge=0, le=MAX_LISTED)] = 0


async def latest_run(runtime: Runtime, owner: str, thread_id: str) -> Run | None:
    runs = await runtime.list_runs(owner, session_id=thread_id, limit=1)
    return runs[0] if runs else None


async def _thread(runtime: Runtime, owner: str, session: Session, status: str) -> dict[str, Any]:
    """The thread with its values: its latest run's, as a stream of it showed them last."""
    latest = await latest_run(runtime, owner, public_session_id(session.session_id))
    values = _state(await values_of(runtime, latest)) if latest is not None else None
    return thread_json(session, status, values, latest)


def _state(values: dict[str, Any]) -> dict[str, Any]:
    """Values as a thread's state shows them: without the interrupt or the error, which it shows apart."""
    return {key: value for key, value in values.items() if key not in (INTERRUPT, "__error__")}


@router.post("/threads", summary="Create a thread (a session)")
async def create_thread(request: Request, body: ThreadCreate | None = None) -> Response:
    body = body or ThreadCreate()
    runtime, owner = runtime_of(request), owner_of(request)
    if_exists = IfExists.DO_NOTHING if body.if_exists == "do_nothing" else IfExists.RAISE
    session, created = await runtime.sessions.create(owner, body.metadata, body.thread_id, if_exists)
    if created:
        return json_response(thread_json(session, "idle"))
    view, _ = await runtime.sessions.get(owner, public_session_id(session.session_id))
    return json_response(await _thread(runtime, owner, view.session, view.status))


@router.post("/threads/search", summary="The caller's threads, newest activity first")
async def search_threads(request: Request, body: ThreadSearch | None = None) -> Response:
    return json_response(await _search(request, body or ThreadSearch()))


@router.post("/threads/count", summary="How many of the caller's threads a search finds (at most 1,000)")
async def count_threads(request: Request, body: ThreadSearch | None = None) -> Response:
    search = (body or ThreadSearch()).model_copy(update={"limit": MAX_LISTED, "offset": 0})
    return json_response(len(await _search(request, search, bound=MAX_LISTED)))


async def _search(request: Request, body: ThreadSearch, bound: int = 200) -> list[dict[str, Any]]:
    runtime, owner = runtime_of(request), owner_of(request)
    # a string equal to it, or another JSON value whose compact JSON text is it (``SessionQuery``)
    filters = {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in (body.metadata or {}).items()}
    views, _ = await runtime.sessions.list(owner, min(body.limit + body.offset, bound + body.offset), None, filters)
    found: list[dict[str, Any]] = []
    for view in views:
        if body.ids is not None and view.session_id not in body.ids:
            continue
        latest = await latest_run(runtime, owner, view.session_id) if body.status in ("interrupted", "error") else None
        thread = thread_json(view.session, view.status, None, latest)
        if body.status is None or thread["status"] == body.status:
            found.append(thread)
    return found[body.offset : body.offset + min(body.limit, bound)]


@router.get("/threads/{thread_id}", summary="A thread, with its latest run's values")
async def get_thread(request: Request, thread_id: str) -> Response:
    runtime, owner = runtime_of(request), owner_of(request)
    view, _ = await runtime.sessions.get(owner, thread_id)
    return json_response(await _thread(runtime, owner, view.session, view.status))


@router.delete("/threads/{thread_id}", status_code=204, summary="Delete a thread (its unfinished runs are cancelled)")
async def delete_thread(request: Request, thread_id: str) -> Response:
    await runtime_of(request).delete_session(owner_of(request), thread_id)
    return Response(status_code=204)


async def _state_of(request: Request, thread_id: str) -> dict[str, Any]:
    runtime, owner = runtime_of(request), owner_of(request)
    await runtime.sessions.visible(owner, thread_id)
    latest = await latest_run(runtime, owner, thread_id)
    values = _state(await values_of(runtime, latest)) if latest is not None else {}
    return state_json(thread_id, values, latest)


@router.get("/threads/{thread_id}/state", summary="A thread's state: its latest run's values and interrupts")
async def get_state(request: Request, thread_id: str) -> Response:
    return json_response(await _state_of(request, thread_id))


@router.post("/threads/{thread_id}/history", summary="A thread's states, newest first (runyard keeps the latest)")
async def get_history(request: Request, thread_id: str) -> Response:
    return json_response([await _state_of(request, thread_id)])


@router.get("/threads/{thread_id}/stream", summary="Follow every run of a thread", responses=STREAM)
async def join_thread_stream(
    request: Request,
    thread_id: str,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """Every run's parts as they come (``metadata`` as each run begins), open
    until the thread is deleted or expires; ``Last-Event-ID`` resumes exactly."""
    runtime, owner = runtime_of(request), owner_of(request)
    cursor = parse_event_id(last_event_id)
    # the session stream's cursor; the event a part's id is inside of is read again
    after = 0 if cursor is None else cursor[0] if cursor[1] >= LAST else cursor[0] - 1
    frames = await runtime.follow_session(owner, thread_id, max(after, 0))  # 404 before a slot is taken
    slots: StreamSlots = request.app.state.stream_slots
    try:
        slot = await slots.take(owner)
    except BaseException:
        await frames.aclose()
        raise
    del stream_mode  # LangGraph's thread modes (run_modes, lifecycle, state_update): the run modes are sent
    return EventStreamResponse(sse_body(thread_parts(frames, cursor, JOIN_MODES), JOIN_MODES), slot)
