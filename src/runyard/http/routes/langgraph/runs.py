"""LangGraph runs are runyard runs: created (in a thread, or stateless in a new
session), streamed, waited for, read, listed, cancelled and joined through the
same ``Runtime`` calls as ``/v1/runs``. A ``command`` with ``resume`` answers
the question (``ctx.ask``) the thread's run waits on: that run goes on, and
its stream continues from where it stopped."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import Response

from runyard.errors import InvalidCursor, InvalidRequest, PipelineNotFound, RunFinished, RunNotFound, RunNotWaiting
from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.responses import StrictJSONRoute, json_response, runtime_of
from runyard.http.routes.langgraph.parts import MODES, asks
from runyard.http.routes.langgraph.shapes import run_json
from runyard.http.routes.langgraph.streams import parse_event_id, run_parts, settle, sse_body, values_of
from runyard.http.schemas import Metadata, _check_input, _check_metadata
from runyard.http.streaming import EventStreamResponse, StreamSlots
from runyard.models import MAX_AFTER_S, Multitask, Run, RunStatus
from runyard.observability.tracing import incoming
from runyard.runtime import Runtime
from runyard.session_ids import public_session_id
from runyard.sessions import IfExists

router = APIRouter(
    route_class=StrictJSONRoute, tags=["langgraph"], responses=errors(400, 401, 404, 409, 413, 422, 429, 503)
)
JOIN_MODES = ("values", "updates", "messages-tuple", "custom")  # a join that names no mode
STREAM: dict[int | str, dict[str, Any]] = {
    200: {"description": "LangGraph stream parts over SSE", "content": {"text/event-stream": {}}}
}


class Command(BaseModel):
    model_config = ConfigDict(extra="ignore")
    resume: Any = None
    goto: Any = None
    update: Any = None


class RunCreate(BaseModel):
    """The body ``runs.create``, ``runs.stream`` and ``runs.wait`` send. Fields
    runyard has no counterpart for are refused when they would change what
    runs (``checkpoint``, ``interrupt_before``...), ignored when they only tune
    LangGraph's own machinery (``durability``, ``config``...)."""

    model_config = ConfigDict(extra="ignore")

    assistant_id: Annotated[str, Field(min_length=1, max_length=128, description="a pipeline's name")]
    input: Any = None
    command: Command | None = None
    metadata: Metadata | None = None
    stream_mode: (
        Annotated[str, Field(max_length=64)]
        | Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=16)]
    ) = "values"
    stream_subgraphs: bool = False
    stream_resumable: bool = False  # every runyard stream is resumable
    webhook: Annotated[str | None, Field(max_length=2048)] = None
    multitask_strategy: Literal["reject", "interrupt", "rollback", "enqueue"] = "enqueue"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["cancel", "continue"] = "continue"
    after_seconds: Annotated[float | None, Field(ge=0, le=MAX_AFTER_S)] = None
    checkpoint: Any = None
    checkpoint_id: Any = None
    interrupt_before: Any = None
    interrupt_after: Any = None

    _metadata = field_validator("metadata")(_check_metadata)
    _input = field_validator("input")(_check_input)

    def modes(self) -> list[str]:
        asked = [self.stream_mode] if isinstance(self.stream_mode, str) else self.stream_mode
        return [mode for mode in asked if mode in MODES]

    def checkpoint_named(self) -> str | None:
        """The checkpoint the run is to start from, if one is named."""
        named = self.checkpoint_id or (
            self.checkpoint.get("checkpoint_id") if isinstance(self.checkpoint, dict) else None
        )
        return str(named) if named else None

    def refuse_unsupported(self) -> None:
        for name in ("interrupt_before", "interrupt_after"):
            if getattr(self, name):
                raise InvalidRequest(f"{name} is not supported by runyard's LangGraph API")
        if self.multitask_strategy == "rollback":
            raise InvalidRequest("multitask_strategy rollback is not supported: use interrupt, reject or enqueue")
        if self.command is not None and (self.command.goto is not None or self.command.update is not None):
            raise InvalidRequest("command: only resume is supported (goto and update are not)")
        if self.command is not None and self.input is not None:
            raise InvalidRequest("give input or command, not both")


async def start(request: Request, thread_id: str | None, body: RunCreate) -> tuple[Run, int]:
    """The run ``body`` asks for and the seq its stream starts after: a new run
    (0), or the thread's waiting run answered by ``command.resume`` (its last)."""
    runtime, owner = runtime_of(request), owner_of(request)
    spec = runtime.pipelines.get(body.assistant_id)  # what is missing first (404), then what is wrong (422)
    if spec is None:
        raise PipelineNotFound(f"no assistant {body.assistant_id!r} (assistants are the pipelines)")
    body.refuse_unsupported()
    await _check_checkpoint(runtime, owner, thread_id, body.checkpoint_named())
    if body.command is not None:
        return await _resume(runtime, owner, thread_id, body.command.resume)
    run_input = {} if body.input is None else body.input
    spec.validate_input(run_input)  # before a thread is made for it
    if thread_id is not None and body.if_not_exists == "create":
        await runtime.sessions.create(owner, None, thread_id, IfExists.DO_NOTHING)
    run = await runtime.create_run(
        owner,
        body.assistant_id,
        run_input,
        session_id=thread_id,
        metadata=body.metadata,
        multitask=Multitask(body.multitask_strategy),
        after_s=body.after_seconds,
        webhook=body.webhook,
        trace=incoming(request.headers),  # the caller's W3C traceparent, continued by the run
    )
    return run, 0


async def _check_checkpoint(runtime: Runtime, owner: str, thread_id: str | None, named: str | None) -> None:
    """A thread's only checkpoint is its latest state (its id, its latest run's):
    a run may start from it (``useStream`` names it), from no other."""
    if named is None:
        return
    latest = await runtime.list_runs(owner, session_id=thread_id, limit=1) if thread_id is not None else []
    if not latest or latest[0].run_id != named:
        raise InvalidRequest(f"checkpoint {named!r}: a run starts from its thread's latest state only")


async def _resume(runtime: Runtime, owner: str, thread_id: str | None, value: Any) -> tuple[Run, int]:
    if thread_id is None:
        raise InvalidRequest("command.resume answers a thread's interrupt: create the run in that thread")
    await runtime.sessions.visible(owner, thread_id)  # 404 for a thread that is not the caller's
    waiting = await runtime.list_runs(owner, session_id=thread_id, status=RunStatus.WAITING, limit=1)
    if not waiting or waiting[0].waiting is None:
        raise RunNotWaiting(f"no run of thread {thread_id!r} waits for an answer")
    run, ask_id = waiting[0], waiting[0].waiting.id
    if isinstance(value, dict) and list(value) == [ask_id]:
        value = value[ask_id]  # resume by interrupt id: {id: answer}
    answered = await runtime.answer(owner, run.run_id, value, ask_id)
    return answered, answered.last_seq


def _paths(run: Run, modes: list[str] | None = None) -> dict[str, str]:
    """``Content-Location``: the run (the SDKs read its ids there); ``Location``:
    where to resume, its stream in these modes, or its ``join`` without modes."""
    base = f"/threads/{public_session_id(run.session_id)}/runs/{run.run_id}"
    query = "?" + "&".join(f"stream_mode={mode}" for mode in modes) if modes else ""
    return {"Content-Location": base, "Location": f"{base}/stream{query}" if modes is not None else f"{base}/join"}


async def _create(request: Request, thread_id: str | None, body: RunCreate) -> Response:
    run, _ = await start(request, thread_id, body)
    return json_response(run_json(run), headers={"Content-Location": _paths(run)["Content-Location"]})


async def _stream(request: Request, thread_id: str | None, body: RunCreate) -> Response:
    runtime, owner = runtime_of(request), owner_of(request)
    slots: StreamSlots = request.app.state.stream_slots
    slot = await slots.take(owner)  # before the run exists: a refused stream leaves no run behind
    try:
        run, start_after = await start(request, thread_id, body)
    except BaseException:
        slot.release()
        raise

    async def cancel_if_asked() -> None:
        if body.on_disconnect == "cancel":
            with contextlib.suppress(RunFinished):
                await runtime.cancel_run(run.owner, run.run_id)

    modes = body.modes()
    parts = run_parts(runtime, run, None, modes, start_after)
    response = EventStreamResponse(sse_body(parts, modes), slot, cancel_if_asked)
    response.headers.update(_paths(run, modes))
    return response


async def _wait(request: Request, thread_id: str | None, body: RunCreate) -> Response:
    run, _ = await start(request, thread_id, body)
    return await _values_once_settled(runtime_of(request), run)


async def _values_once_settled(runtime: Runtime, run: Run) -> Response:
    """The run's final values once it has ended or asks; after RUNYARD_WAIT_MAX_S,
    202 with its values so far (as ``/v1/runs/wait`` answers) and the run goes on."""
    settled = await settle(runtime, run, runtime.settings.wait_max_s)
    status = 200 if settled.status.finished or asks(settled) else 202
    return json_response(await values_of(runtime, settled), status, headers=_paths(run))


@router.post("/threads/{thread_id}/runs", summary="Create a run in a thread")
async def create_run(request: Request, thread_id: str, body: RunCreate) -> Response:
    return await _create(request, thread_id, body)


@router.post("/runs", summary="Create a stateless run (in a new thread)")
async def create_stateless_run(request: Request, body: RunCreate) -> Response:
    return await _create(request, None, body)


@router.post("/threads/{thread_id}/runs/stream", summary="Create a run and stream it", responses=STREAM)
async def stream_run(request: Request, thread_id: str, body: RunCreate) -> Response:
    return await _stream(request, thread_id, body)


@router.post("/runs/stream", summary="Create a stateless run and stream it", responses=STREAM)
async def stream_stateless_run(request: Request, body: RunCreate) -> Response:
    return await _stream(request, None, body)


@router.post("/threads/{thread_id}/runs/wait", summary="Create a run and answer with its final values")
async def wait_run(request: Request, thread_id: str, body: RunCreate) -> Response:
    return await _wait(request, thread_id, body)


@router.post("/runs/wait", summary="Create a stateless run and answer with its final values")
async def wait_stateless_run(request: Request, body: RunCreate) -> Response:
    return await _wait(request, None, body)


@router.get("/threads/{thread_id}/runs", summary="A thread's runs, newest first")
async def list_runs(
    request: Request,
    thread_id: str,
    limit: Annotated[int, Query(ge=1, le=200)] = 10,
    offset: Annotated[int, Query(ge=0, le=10_000)] = 0,
    status: str | None = None,
) -> Response:
    runtime, owner = runtime_of(request), owner_of(request)
    await runtime.sessions.visible(owner, thread_id)
    runs = await runtime.list_runs(owner, session_id=thread_id, limit=min(limit + offset, 10_200))
    shown = [run_json(run) for run in runs[offset:]]
    return json_response([run for run in shown if status is None or run["status"] == status][:limit])


async def _run_of(request: Request, thread_id: str, run_id: str) -> Run:
    run = await runtime_of(request).get_run(owner_of(request), run_id)
    if public_session_id(run.session_id) != thread_id:
        raise RunNotFound(f"no run {run_id!r} in thread {thread_id!r}")
    return run


@router.get("/threads/{thread_id}/runs/{run_id}", summary="A run")
async def get_run(request: Request, thread_id: str, run_id: str) -> Response:
    return json_response(run_json(await _run_of(request, thread_id, run_id)))


@router.post("/threads/{thread_id}/runs/{run_id}/cancel", status_code=202, summary="Cancel a run")
async def cancel_run(
    request: Request, thread_id: str, run_id: str, wait: str = "0", action: str = "interrupt"
) -> Response:
    runtime = runtime_of(request)
    run = await runtime.cancel_run(owner_of(request), (await _run_of(request, thread_id, run_id)).run_id)
    if wait.lower() in ("1", "true", "yes"):
        return await _values_once_settled(runtime, run)
    return Response(status_code=202)


@router.get("/threads/{thread_id}/runs/{run_id}/join", summary="Wait for a run; its final values")
async def join_run(request: Request, thread_id: str, run_id: str) -> Response:
    return await _values_once_settled(runtime_of(request), await _run_of(request, thread_id, run_id))


@router.get("/threads/{thread_id}/runs/{run_id}/stream", summary="Join a run's stream", responses=STREAM)
async def join_stream(
    request: Request,
    thread_id: str,
    run_id: str,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: str = "false",
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """From the run's first event (every runyard stream is resumable), or after
    ``Last-Event-ID``; in the modes named (repeated, or a JSON list), else the usual ones."""
    runtime, owner = runtime_of(request), owner_of(request)
    run = await _run_of(request, thread_id, run_id)
    cursor = parse_event_id(last_event_id)
    if cursor is not None and cursor[0] > run.last_seq:
        raise InvalidCursor(f"Last-Event-ID {last_event_id!r} is past the run's last event ({run.last_seq})")
    modes = _query_modes(stream_mode)
    slots: StreamSlots = request.app.state.stream_slots
    slot = await slots.take(owner)

    async def cancel_if_asked() -> None:
        if cancel_on_disconnect.lower() in ("1", "true", "yes"):
            with contextlib.suppress(RunFinished):
                await runtime.cancel_run(owner, run.run_id)

    response = EventStreamResponse(sse_body(run_parts(runtime, run, cursor, modes), modes), slot, cancel_if_asked)
    response.headers.update(_paths(run, modes))
    return response


def _query_modes(asked: list[str] | None) -> list[str]:
    modes: list[str] = []
    for value in asked or ():
        if value.startswith("["):
            try:
                listed = orjson.loads(value)
            except orjson.JSONDecodeError:
                raise InvalidRequest(f"stream_mode {value[:60]!r} is not a JSON list") from None
            if isinstance(listed, list):
                modes.extend(str(mode) for mode in listed)
        else:
            modes.append(value)
    return [mode for mode in modes if mode in MODES] or list(JOIN_MODES)
