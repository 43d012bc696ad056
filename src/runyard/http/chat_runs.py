"""What the chat-shaped protocol adapters share (OpenAI's chat completions, the
AI SDK's UI message streams): a run created for a chat message in a session of
the client's choosing, created on first use, and the run's events read back
from its durable stream as ``(seq, type, data)``, from its first, each once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from runyard.errors import PipelineNotFound
from runyard.models import Run
from runyard.pipeline import Pipeline
from runyard.runtime import Runtime
from runyard.sessions import IfExists

TOKEN, END = "token", "end"


class RunEvent(NamedTuple):
    seq: int
    type: str  # "" for a heartbeat: nothing happened for a while
    data: Any


HEARTBEAT = RunEvent(0, "", None)


@dataclass(frozen=True, slots=True)
class Ending:
    """How a run ended, from its ``end`` event."""

    status: str
    code: str
    message: str
    output: Any = None

    @classmethod
    def of(cls, data: Any) -> Ending:
        end = data if isinstance(data, dict) else {}
        status = str(end.get("status") or "failed")
        error = end.get("error")
        if not isinstance(error, dict):
            error = {}
        code = str(error.get("code") or status)
        return cls(status, code, str(error.get("message") or f"the run ended {status}"), end.get("output"))

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"


# what a stream reports when the server stops before the run's end (the run goes on)
SERVER_STOPPING = Ending("cancelled", "stream_closed", "the server is stopping; the run goes on")


def pipeline_of(runtime: Runtime, name: str) -> Pipeline:
    """The pipeline called ``name``, or ``PipelineNotFound``."""
    spec = runtime.pipelines.get(name)
    if spec is None:
        raise PipelineNotFound(f"no pipeline named {name!r}")
    return spec


async def create_in_session(
    runtime: Runtime, owner: str, pipeline: str, input: Any, session_id: str | None, trace: str | None
) -> Run:
    """The run of ``pipeline`` on ``input`` in the owner's session ``session_id``,
    created on first use (None: a new session). Check the input first
    (``pipeline_of(...).validate_input``) so that a bad request creates nothing;
    a refusal by quota or rate limit may leave the new session, empty, as ``POST
    /v1/sessions`` would have."""
    if session_id is None:
        return await runtime.create_run(owner, pipeline, input, trace=trace)
    await runtime.sessions.create(owner, None, session_id, IfExists.DO_NOTHING)
    return await runtime.create_run(owner, pipeline, input, session_id=session_id, trace=trace)


async def run_events(
    runtime: Runtime, run: Run, types: frozenset[str] | None = None, heartbeats: bool = False
) -> AsyncGenerator[RunEvent, None]:
    """The run's events (of ``types``, else all) from its first, until its ``end``,
    replayed from the store then live (``Runtime.follow``): gap-free, each once.
    With ``heartbeats``, ``HEARTBEAT`` after each stretch of silence."""
    wanted = None if types is None else {kind.encode() for kind in types}
    async with contextlib.aclosing(runtime.follow(run, 0)) as batches:
        async for batch in batches:
            if not batch and heartbeats:
                yield HEARTBEAT
            for seq, _, frame in batch:
                # a frame is "id: N\nevent: TYPE\ndata: EVENT\n\n" (runyard.events.sse)
                _, kind_line, data_line = frame.split(b"\n", 2)
                kind = kind_line.removeprefix(b"event: ")
                if wanted is None or kind in wanted:
                    yield RunEvent(seq, kind.decode(), orjson.loads(data_line.removeprefix(b"data: "))["data"])


def token_text(data: Any) -> str:
    """The text a ``token`` event carries."""
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else ""


def output_text(output: Any) -> str:
    """A run's output as a reply's text, for a run that streamed no tokens: as is
    when it is a string, else as JSON."""
    if isinstance(output, str):
        return output
    return "" if output is None else orjson.dumps(output).decode()
