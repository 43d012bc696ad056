"""OpenAI-compatible chat completions: ``POST /v1/chat/completions`` runs the
pipeline named by ``model`` on ``{"message": <last user message>}`` in the
session named by ``user`` (or a new one), and ``GET /v1/models`` lists the
pipelines, so that code written against the OpenAI SDK only changes its base URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from runyard.errors import InvalidRequest, PipelineNotFound, SessionNotFound
from runyard.http.auth import owner_of
from runyard.http.responses import json_response, runtime_of
from runyard.http.routes.openai_compat.wire import (
    DONE,
    AboutParam,
    Answer,
    ChatRequest,
    OpenAIRoute,
    RunFailed,
    RunUnfinished,
    chunk,
    completion,
    content_of,
    data_line,
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
from runyard.sessions import IfExists

router = APIRouter(
    prefix="/v1", tags=["openai"], route_class=OpenAIRoute, responses=errors(400, 401, 404, 413, 422, 503)
)
# the frames of a run that make a reply; the rest of its events are not OpenAI's to show
TOKEN, USAGE, END = b"token", b"usage", b"end"
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
    """The run, in the ``user``'s session (created on first use). The model and
    the input are checked before that session is made, so an unknown model or a
    bad input leaves nothing behind (a refusal by quota or rate limit may leave
    the new session, empty, as ``POST /v1/sessions`` would have)."""
    spec = runtime.pipelines.get(body.model)
    if spec is None:
        raise PipelineNotFound(f"no pipeline named {body.model!r}")
    message = body.pipeline_input()
    spec.validate_input(message)
    if body.user is None:
        return await runtime.create_run(owner, body.model, message, trace=trace)
    try:
        await runtime.sessions.create(owner, None, body.user, IfExists.DO_NOTHING)
        return await runtime.create_run(owner, body.model, message, session_id=body.user, trace=trace)
    except (InvalidRequest, SessionNotFound) as exc:
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
    return json_response(completion(run, answer, end.get("output"), public_session_id(run.session_id)))


async def _gather(runtime: Runtime, run: Run, answer: Answer) -> dict[str, Any]:
    """Collect the run's tokens and usage into ``answer``; the ``end`` event's data."""
    async with contextlib.aclosing(_events(runtime, run)) as events:
        async for kind, data in events:
            if kind == TOKEN:
                answer.tokens.append(_text(data))
            elif kind == USAGE:
                answer.usage.add(data)
            elif kind == END:
                return dict(data) if isinstance(data, dict) else {}
    return {"status": "cancelled", "error": {"code": "stream_closed", "message": "the server is stopping"}}


async def _chunks(runtime: Runtime, run: Run, include_usage: bool) -> AsyncGenerator[bytes, None]:
    """The run as ``chat.completion.chunk`` frames: a role, each ``token`` as
    content, then a ``stop`` (or the run's error as OpenAI's error frame), the
    usage if asked, and ``[DONE]``."""
    answer = Answer()
    extra = {"usage": None} if include_usage else {}
    yield chunk(run, {"role": "assistant", "content": ""}, **extra)
    end: dict[str, Any] = {"status": "cancelled", "error": {"code": "stream_closed", "message": "server stopping"}}
    async with contextlib.aclosing(_events(runtime, run, pings=True)) as events:
        async for kind, data in events:
            if kind == TOKEN:
                answer.tokens.append(_text(data))
                yield chunk(run, {"content": answer.tokens[-1]}, **extra)
            elif kind == USAGE:
                answer.usage.add(data)
            elif kind == END:
                end = dict(data) if isinstance(data, dict) else {}
            else:
                yield b": ping\n\n"
    try:
        _raise_unless_succeeded(end)
    except RunFailed as exc:
        yield data_line(error_body(exc.status, exc.code, exc.message))
        yield DONE
        return
    if not answer.tokens and end.get("output") is not None:
        # a run that streamed nothing still answers: with its output
        yield chunk(run, {"content": content_of(answer, end["output"])}, **extra)
    yield chunk(run, {}, "stop", **extra)
    if include_usage:
        yield usage_chunk(run, answer.usage)
    yield DONE


async def _events(runtime: Runtime, run: Run, pings: bool = False) -> AsyncGenerator[tuple[bytes, Any], None]:
    """The run's ``token``, ``usage`` and ``end`` events as (type, data), from its
    first; with ``pings``, (b"", None) for each heartbeat."""
    async with contextlib.aclosing(runtime.follow(run, 0)) as batches:
        async for batch in batches:
            if not batch and pings:
                yield b"", None
            for _, _, frame in batch:
                # a frame is "id: N\nevent: TYPE\ndata: EVENT\n\n" (runyard.events.sse)
                _, kind_line, data_line_ = frame.split(b"\n", 2)
                kind = kind_line.removeprefix(b"event: ")
                if kind in (TOKEN, USAGE, END):
                    yield kind, orjson.loads(data_line_.removeprefix(b"data: "))["data"]


def _text(data: Any) -> str:
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else ""


def _raise_unless_succeeded(end: dict[str, Any]) -> None:
    if end.get("status") == "succeeded":
        return
    error = end.get("error")
    if not isinstance(error, dict):
        error = {}
    code = str(error.get("code") or end.get("status") or "run_failed")
    raise RunFailed(code, str(error.get("message") or f"the run ended {end.get('status')}"))


__all__ = ["router"]
