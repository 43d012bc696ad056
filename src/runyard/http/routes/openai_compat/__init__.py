"""OpenAI-compatible chat completions: ``POST /v1/chat/completions`` runs the
pipeline named by ``model`` on ``{"message": <last user message>}`` in the
session named by ``user`` (or a new one), and ``GET /v1/models`` lists the
pipelines, so that code written against the OpenAI SDK only changes its base URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from fastapi import APIRouter, Request
from starlette.responses import Response

from runyard.errors import InvalidRequest, PipelineNotFound, SessionNotFound
from runyard.events.sse import DONE, PING, data_line
from runyard.http.auth import owner_of
from runyard.http.chat_runs import (
    END,
    HEARTBEAT,
    SERVER_STOPPING,
    TOKEN,
    Ending,
    create_in_session,
    pipeline_of,
    run_events,
    token_text,
)
from runyard.http.responses import json_response, runtime_of
from runyard.http.routes.openai_compat.wire import (
    AboutParam,
    Answer,
    ChatRequest,
    OpenAIRoute,
    RunFailed,
    RunUnfinished,
    chunk,
    completion,
    content_of,
    error_body,
    errors,
    model_json,
    usage_chunk,
)
from runyard.http.streaming import EventStreamResponse, StreamSlots
from runyard.models import Run
from runyard.observability.tracing import incoming
from runyard.runtime import Runtime
from runyard.session_ids import public_session_id

router = APIRouter(
    prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=errors(400, 401, 404, 413, 422, 503)
)
# the events of a run that make a reply; the rest are not OpenAI's to show
USAGE = "usage"
REPLY = frozenset({TOKEN, USAGE, END})
COMPLETION = {
    200: {
        "description": "A chat.completion; with stream: chat.completion.chunk SSE frames, then data: [DONE]",
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    },
    **errors(409, 429, 502, 504),
}


@router.get("/models", summary="The pipelines, as OpenAI models", responses=errors(401))
async def list_models(request: Request) -> Response:
    request.app.state.auth.check(request)
    names = runtime_of(request).pipelines
    return json_response({"object": "list", "data": [model_json(name) for name in names]})


@router.get("/models/{model}", summary="A pipeline, as an OpenAI model", responses=errors(401))
async def get_model(request: Request, model: str) -> Response:
    request.app.state.auth.check(request)
    if model not in runtime_of(request).pipelines:
        raise PipelineNotFound(f"no pipeline named {model!r}")
    return json_response(model_json(model))


@router.post("/chat/completions", summary="Run a pipeline as an OpenAI chat completion", responses=COMPLETION)
async def chat_completions(request: Request, body: ChatRequest) -> Response:
    runtime = runtime_of(request)
    owner = owner_of(request)
    slots: StreamSlots = request.app.state.stream_slots
    slot = await slots.take(owner) if body.stream else None  # taken before the run exists: a refusal leaves none
    try:
        run = await _create(runtime, owner, body, incoming(request.headers))  # the caller's traceparent
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    if slot is None:
        return await _complete(runtime, run)
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return EventStreamResponse(_chunks(runtime, run, include_usage), slot)


async def _create(runtime: Runtime, owner: str, body: ChatRequest, trace: str | None) -> Run:
    """The run, in the ``user``'s session (created on first use)."""
    spec = pipeline_of(runtime, body.model)
    message = body.pipeline_input()
    spec.validate_input(message)  # before anything is created
    try:
        return await create_in_session(runtime, owner, body.model, message, body.user, trace)
    except (InvalidRequest, SessionNotFound) as exc:
        if body.user is None:
            raise
        raise AboutParam(exc, "user") from None


async def _complete(runtime: Runtime, run: Run) -> Response:
    """The whole reply once the run has ended (within RUNYARD_WAIT_MAX_S)."""
    answer = Answer()
    try:
        async with asyncio.timeout(runtime.settings.wait_max_s):
            end = await _gather(runtime, run, answer)
    except TimeoutError:
        raise RunUnfinished(
            f"run {run.run_id} has not finished within {runtime.settings.wait_max_s:g} s; "
            f"it goes on: GET /v1/runs/{run.run_id}"
        ) from None
    _raise_unless_succeeded(end)
    return json_response(completion(run, answer, end.output, public_session_id(run.session_id)))


async def _gather(runtime: Runtime, run: Run, answer: Answer) -> Ending:
    """Collect the run's tokens and usage into ``answer``; how it ended."""
    async with contextlib.aclosing(run_events(runtime, run, REPLY)) as events:
        async for event in events:
            if event.type == TOKEN:
                answer.tokens.append(token_text(event.data))
            elif event.type == USAGE:
                answer.usage.add(event.data)
            elif event.type == END:
                return Ending.of(event.data)
    return SERVER_STOPPING


async def _chunks(runtime: Runtime, run: Run, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The run as ``chat.completion.chunk`` frames: a role, each ``token`` as
    content, then a ``stop`` (or the run's error as OpenAI's error frame), the
    usage if asked, and ``[DONE]``."""
    answer = Answer()
    extra = {"usage": None} if include_usage else {}
    yield chunk(run, {"role": "assistant", "content": ""}, **extra)
    end = SERVER_STOPPING
    async with contextlib.aclosing(run_events(runtime, run, REPLY, heartbeats=True)) as events:
        async for event in events:
            if event.type == TOKEN:
                answer.tokens.append(token_text(event.data))
                yield chunk(run, {"content": answer.tokens[-1]}, **extra)
            elif event.type == USAGE:
                answer.usage.add(event.data)
            elif event.type == END:
                end = Ending.of(event.data)
            elif event is HEARTBEAT:
                yield PING
    try:
        _raise_unless_succeeded(end)
    except RunFailed as exc:
        yield data_line(error_body(exc.status, exc.code, exc.message))
        yield DONE
        return
    if not answer.tokens and end.output is not None:
        # a run that streamed nothing still answers: with its output
        yield chunk(run, {"content": content_of(answer, end.output)}, **extra)
    yield chunk(run, {}, "stop", **extra)
    if include_usage:
        yield usage_chunk(run, answer.usage)
    yield DONE


def _raise_unless_succeeded(end: Ending) -> None:
    if not end.succeeded:
        raise RunFailed(end.code, end.message)


__all__ = ["router"]
