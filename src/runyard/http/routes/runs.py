"""``/v1/runs``: create, read, follow and cancel runs."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from pydantic import AwareDatetime
from starlette.responses import Response

from runyard.errors import InvalidCursor, InvalidQuery, RunFinished
from runyard.http.answers import EVENT_STREAM, EventsPage, RunList, RunSnapshot, errors
from runyard.http.auth import owner_of, principal_of
from runyard.http.responses import StrictJSONRoute, json_response, parse_cursor, runtime_of
from runyard.http.schemas import AnswerRequest, Id, OwnerParameter, RunRequest, SessionId, StreamRunRequest
from runyard.http.streaming import StreamSlot, StreamSlots, give_back_when_taken, sse_response
from runyard.models import Run, RunStatus
from runyard.observability.tracing import incoming
from runyard.runtime import Idempotency

router = APIRouter(
    prefix="/v1/runs", tags=["runs"], route_class=StrictJSONRoute, responses=errors(400, 401, 404, 413, 422, 503)
)

EVENTS_PAGE_MAX = 10_000


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="A repeat within 24 h returns the first request's run instead of creating another",
    ),
]
CREATION_ERRORS = errors(409, 429)
STREAM_ERRORS = errors(429)  # too_many_streams


async def _stream_slot(request: Request) -> StreamSlot:
    """A place among the caller's open streams, or 429 ``too_many_streams``."""
    slots: StreamSlots = request.app.state.stream_slots
    return await slots.take(owner_of(request))


async def _create(request: Request, body: RunRequest, idempotency_key: str | None) -> Run:
    return await runtime_of(request).create_run(
        owner_of(request),
        body.pipeline,
        body.input,
        session_id=body.session_id,
        metadata=body.metadata,
        timeout_s=body.timeout_s,
        multitask=body.multitask,
        after_s=body.after_s,
        idempotency=None if idempotency_key is None else Idempotency.of(idempotency_key, _fields(body)),
        webhook=body.webhook,
        trace=incoming(request.headers),  # the caller's W3C traceparent, continued by the run
    )


def _fields(body: RunRequest) -> dict[str, object]:
    """What an idempotency key's fingerprint covers: the run's fields, not how the
    caller follows it (dumped only for a request with a key)."""
    return body.model_dump(mode="json", include=set(RunRequest.model_fields))


@router.post("", status_code=201, summary="Create a run", response_model=RunSnapshot, responses=CREATION_ERRORS)
async def create_run(request: Request, body: RunRequest, idempotency_key: IdempotencyKey = None) -> Response:
    run = await _create(request, body, idempotency_key)
    return json_response(run.snapshot(), 201, headers={"Location": f"/v1/runs/{run.run_id}"})


@router.post("/stream", summary="Create a run and stream its events", responses={**EVENT_STREAM, **CREATION_ERRORS})
async def create_and_stream(
    request: Request,
    body: StreamRunRequest,
    pad: Annotated[int | None, Query(ge=0, le=65536)] = None,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    runtime = runtime_of(request)
    slot = await _stream_slot(request)  # before the run exists: a refused stream leaves no run behind
    try:
        run = await _create(request, body, idempotency_key)
    except BaseException:
        slot.release()
        raise
    pad = pad if pad is not None else runtime.settings.sse_pad_bytes

    async def cancel_if_asked() -> None:
        if body.on_disconnect == "cancel":
            with contextlib.suppress(RunFinished):
                await runtime.cancel_run(run.owner, run.run_id)

    response = sse_response(runtime, run, 0, pad, slot, on_disconnect=cancel_if_asked)
    response.headers["Location"] = f"/v1/runs/{run.run_id}"
    return response


@router.post(
    "/wait",
    summary="Create a run and answer once it has finished",
    response_model=RunSnapshot,
    responses={
        202: {"model": RunSnapshot, "description": "Still unfinished after RUNYARD_WAIT_MAX_S"},
        **CREATION_ERRORS,
    },
)
async def create_and_wait(request: Request, body: RunRequest, idempotency_key: IdempotencyKey = None) -> Response:
    runtime = runtime_of(request)
    run = await _create(request, body, idempotency_key)
    finished = await runtime.wait(run, runtime.settings.wait_max_s)
    if finished is None:
        current = await runtime.get_run(run.owner, run.run_id)
        return json_response(current.snapshot(), 202, headers={"Location": f"/v1/runs/{run.run_id}"})
    return json_response(finished.snapshot(), 200)


@router.get("", summary="List the caller's runs, newest first", response_model=RunList, responses=errors(403))
async def list_runs(
    request: Request,
    session_id: SessionId | None = None,
    status: RunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Id | None = None,
    owner: OwnerParameter = None,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="runs whose id, session id, owner, input or error (as JSON text) contain this, any case",
        ),
    ] = None,
    since: Annotated[AwareDatetime | None, Query(description="created at or after this time (RFC 3339)")] = None,
    until: Annotated[AwareDatetime | None, Query(description="created before this time (RFC 3339)")] = None,
) -> Response:
    if since is not None and until is not None and since >= until:
        raise InvalidQuery("since must be before until")
    runs = await runtime_of(request).list_runs(
        principal_of(request).listed_owner(owner),
        session_id=session_id,
        status=status,
        limit=limit + 1,
        before=before,
        text=q,
        since=None if since is None else since.timestamp(),
        until=None if until is None else until.timestamp(),
    )
    page = runs[:limit]
    next_cursor = page[-1].run_id if len(runs) > limit else None
    everyone = owner is not None and owner != principal_of(request).owner  # the page shows whose each run is
    listed = [{**run.snapshot(), "owner": run.owner} if everyone else run.snapshot() for run in page]
    return json_response({"runs": listed, "next": next_cursor})


@router.get("/{run_id}", summary="A run's snapshot", response_model=RunSnapshot)
async def get_run(request: Request, run_id: str) -> Response:
    run = await runtime_of(request).get_run(owner_of(request), run_id)
    return json_response(run.snapshot())


@router.get("/{run_id}/events", summary="A page of a run's events", response_model=EventsPage)
async def list_events(
    request: Request,
    run_id: str,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=EVENTS_PAGE_MAX)] = 1000,
) -> Response:
    runtime = runtime_of(request)
    run = await runtime.get_run(owner_of(request), run_id)
    cursor = parse_cursor(after)
    if cursor > run.last_seq:
        raise InvalidCursor(f"cursor {cursor} is past the run's last event ({run.last_seq})")
    events = await runtime.store.read_events(run.run_id, cursor, limit)
    next_after = events[-1].seq if events else cursor
    body = b'{"events":[%s],"next_after":%d,"status":"%s"}' % (
        b",".join(event.to_json() for event in events),
        next_after,
        run.status.value.encode(),
    )
    return Response(body, media_type="application/json")


@router.get("/{run_id}/stream", summary="Follow a run's events over SSE", responses={**EVENT_STREAM, **STREAM_ERRORS})
async def stream_run(
    request: Request,
    run_id: str,
    after: str | None = None,
    pad: Annotated[int | None, Query(ge=0, le=65536)] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    runtime, owner = runtime_of(request), owner_of(request)
    # The slot is taken beside the run's read: in a fleet, its round trip to Redis
    # no longer waits for the channel's and the store's. A stream refused for its
    # run or its cursor still answers that (404, 400) and gives the slot back.
    slots: StreamSlots = request.app.state.stream_slots
    taking = slots.taking(owner)
    try:
        run, joined = await runtime.join_run(owner, run_id)  # the channel first: events.stream.Joined
    except BaseException:
        give_back_when_taken(taking)
        raise
    try:
        cursor = parse_cursor(last_event_id if last_event_id is not None else after)
        if cursor > run.last_seq:
            raise InvalidCursor(f"cursor {cursor} is past the run's last event ({run.last_seq})")
        slot = await taking
    except BaseException:
        joined.leave()
        give_back_when_taken(taking)
        raise
    pad_bytes = pad if pad is not None else runtime.settings.sse_pad_bytes
    return sse_response(runtime, run, cursor, pad_bytes, slot, joined=joined)


@router.post(
    "/{run_id}/cancel", status_code=202, summary="Cancel a run", response_model=RunSnapshot, responses=errors(409)
)
async def cancel_run(request: Request, run_id: str) -> Response:
    run = await runtime_of(request).cancel_run(owner_of(request), run_id)
    return json_response(run.snapshot(), 202)


@router.post(
    "/{run_id}/input",
    status_code=202,
    summary="Answer the question a waiting run asked (ctx.ask)",
    response_model=RunSnapshot,
    responses=errors(409),
)
async def answer_run(request: Request, run_id: str, body: AnswerRequest) -> Response:
    run = await runtime_of(request).answer(owner_of(request), run_id, body.value, body.ask_id)
    return json_response(run.snapshot(), 202)
