"""Vercel AI SDK UI message streams (``useChat`` with ``DefaultChatTransport``):
``POST /v1/ai-sdk/{pipeline}`` runs the pipeline on the chat's last user
message in the session named by the chat's id (created on first use) and
answers with the run as a UI message stream; ``GET
/v1/ai-sdk/{pipeline}/{chat_id}/stream`` (what ``resume: true`` calls) streams
the chat's unfinished run again from its start, or answers 204 when there is none.

A stream is the run's durable event stream translated (``chat_runs.run_events``):
replayed from the store, then live, so a resumed answer is whole, each part once.
The client leaving ends its stream, never the run (``POST /v1/runs/{id}/cancel`` does).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from runyard.events.sse import DONE, PING
from runyard.http.answers import errors
from runyard.http.auth import owner_of
from runyard.http.chat_runs import (
    END,
    HEARTBEAT,
    SERVER_STOPPING,
    TOKEN,
    Ending,
    create_in_session,
    output_text,
    pipeline_of,
    run_events,
    token_text,
)
from runyard.http.responses import StrictJSONRoute, runtime_of
from runyard.http.routes.ai_sdk import wire
from runyard.http.routes.ai_sdk.wire import ChatRequest
from runyard.http.streaming import EventStreamResponse, StreamSlot, StreamSlots
from runyard.models import Run
from runyard.observability.tracing import incoming
from runyard.runtime import Runtime

router = APIRouter(
    prefix="/v1/ai-sdk", tags=["ai-sdk"], route_class=StrictJSONRoute, responses=errors(400, 401, 404, 413, 422, 503)
)

UI_MESSAGE_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A UI message stream (x-vercel-ai-ui-message-stream: v1): one JSON chunk per data: line, "
        "then data: [DONE]",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **errors(429),
}


@router.post(
    "/{pipeline}",
    summary="Run a pipeline on an AI SDK chat's last message, as a UI message stream",
    responses=UI_MESSAGE_STREAM,
)
async def chat(request: Request, pipeline: str, body: ChatRequest) -> Response:
    runtime = runtime_of(request)
    owner = owner_of(request)
    spec = pipeline_of(runtime, pipeline)
    message = body.pipeline_input()
    spec.validate_input(message)  # a bad request creates nothing
    slot = await _slot(request, owner)  # taken before the run exists: a refusal leaves none
    try:
        run = await create_in_session(runtime, owner, pipeline, message, body.id, incoming(request.headers))
    except BaseException:
        slot.release()
        raise
    return _stream(runtime, run, slot)


@router.get(
    "/{pipeline}/{chat_id}/stream",
    summary="The chat's unfinished run, streamed again from its start (204: none)",
    responses={**UI_MESSAGE_STREAM, 204: {"description": "The chat has no unfinished run of this pipeline"}},
)
async def resume(request: Request, pipeline: str, chat_id: str) -> Response:
    """A chat that has not been used yet, or another owner's, has no unfinished
    run either: 204, as the SDK expects of a chat with nothing to resume."""
    runtime = runtime_of(request)
    owner = owner_of(request)
    pipeline_of(runtime, pipeline)  # 404 for a name that is no pipeline
    runs = [run for run in await runtime.sessions.unfinished(owner, chat_id) if run.pipeline == pipeline]
    if not runs:
        return Response(status_code=204)
    slot = await _slot(request, owner)
    return _stream(runtime, runs[-1], slot)  # the newest: the answer to the chat's last message


async def _slot(request: Request, owner: str) -> StreamSlot:
    slots: StreamSlots = request.app.state.stream_slots
    return await slots.take(owner)


def _stream(runtime: Runtime, run: Run, slot: StreamSlot) -> EventStreamResponse:
    response = EventStreamResponse(_ui_message_stream(runtime, run), slot)
    response.raw_headers.append(wire.STREAM_HEADER)
    return response


async def _ui_message_stream(runtime: Runtime, run: Run) -> AsyncGenerator[bytes, None]:
    """The run from its first event as one assistant message (its id: the run's):
    ``token`` events as one text part, other events as ``data-<type>`` parts, an
    ``error`` part if it failed (``abort`` if it was cancelled), then the finish."""
    text_id = f"{run.run_id}-text"
    texting = False
    end = SERVER_STOPPING
    yield wire.start(run.run_id)
    yield wire.START_STEP
    async with contextlib.aclosing(run_events(runtime, run, heartbeats=True)) as events:
        async for event in events:
            if event.type == TOKEN:
                if not texting:
                    texting = True
                    yield wire.text_start(text_id)
                yield wire.text_delta(text_id, token_text(event.data))
            elif event.type == END:
                end = Ending.of(event.data)
            elif event is HEARTBEAT:
                yield PING  # a comment line: the SDK's parser skips it
            else:
                yield wire.data_part(event.type, str(event.seq), event.data)
    if not texting and end.succeeded and end.output is not None:
        # a run that streamed nothing still answers: with its output
        texting = True
        yield wire.text_start(text_id)
        yield wire.text_delta(text_id, output_text(end.output))
    if texting:
        yield wire.text_end(text_id)
    for chunk in _ending(end):
        yield chunk


def _ending(end: Ending) -> list[bytes]:
    if end.succeeded:
        return [wire.FINISH_STEP, wire.finish("stop"), DONE]
    if end.status == "cancelled" and end is not SERVER_STOPPING:
        return [wire.abort(end.message), wire.FINISH_STEP, wire.finish("other"), DONE]
    return [wire.error(f"{end.code}: {end.message}"), wire.FINISH_STEP, wire.finish("error"), DONE]


__all__ = ["router"]
